//! Whether the data directory can be written, for `/readyz` and for clear write errors.
//!
//! A full or read-only disk must not break reads: alerts, keys and queries keep working from
//! what is stored, writes fail with a clear 503, and `/readyz` says why the service is not
//! ready. The prober checks the disk every few seconds (free space, read-only flag, and a
//! small write that is synced and removed) and clears the condition by itself once the disk
//! takes writes again; a write that fails in between marks the disk at once.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The disk's state as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disk {
    Writable,
    /// Writes fail or would: the reason, for `/readyz` and the log.
    Refusing(String),
}

/// Tracks whether the data directory takes writes.
pub struct DiskHealth {
    data: PathBuf,
    /// Free space below which the disk counts as full.
    min_free: u64,
    state: Mutex<Disk>,
}

/// Name of the probe file in the data directory.
const PROBE: &str = ".kvwatch-write-probe";

impl DiskHealth {
    pub fn new(data: PathBuf, min_free: u64) -> Self {
        Self {
            data,
            min_free,
            state: Mutex::new(Disk::Writable),
        }
    }

    pub fn state(&self) -> Disk {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, next: Disk) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if *s != next {
            match &next {
                Disk::Writable => tracing::info!(data = ?self.data, "disk.writable_again"),
                Disk::Refusing(r) => {
                    tracing::error!(data = ?self.data, reason = %r, "disk.refusing_writes")
                }
            }
            *s = next;
        }
    }

    /// A write failed because of the disk: mark it at once (the prober clears it later).
    pub fn write_failed(&self, what: &str, error: &dyn std::fmt::Display) {
        self.set(Disk::Refusing(format!(
            "{what} could not be written: {error}"
        )));
    }

    /// Checks the disk now and records the result.
    pub fn probe(&self) -> Disk {
        let next = check(&self.data, self.min_free);
        self.set(next.clone());
        next
    }

    /// Probes every `every` until `stop` resolves.
    pub async fn run(&self, every: Duration, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let data = self.data.clone();
            let min_free = self.min_free;
            if let Ok(next) = tokio::task::spawn_blocking(move || check(&data, min_free)).await {
                self.set(next);
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = &mut stop => return,
            }
        }
    }
}

fn check(data: &Path, min_free: u64) -> Disk {
    #[cfg(unix)]
    if let Some((free, read_only)) = statvfs(data) {
        if read_only {
            return Disk::Refusing("the data directory is on a read-only filesystem".into());
        }
        if free < min_free {
            return Disk::Refusing(format!(
                "the disk is full: {} MiB free, below the minimum of {} MiB",
                free >> 20,
                min_free >> 20
            ));
        }
    }
    let probe = data.join(PROBE);
    let written = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(&[0u8; 512])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    match written {
        Ok(()) => Disk::Writable,
        Err(e) => Disk::Refusing(format!("the data directory cannot be written: {e}")),
    }
}

/// Free bytes for unprivileged writers and whether the filesystem is mounted read-only.
#[cfg(unix)]
fn statvfs(path: &Path) -> Option<(u64, bool)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid C string and `s` a buffer of the right type for statvfs to fill.
    let rc = unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the buffer.
    let s = unsafe { s.assume_init() };
    let free = s.f_bavail.saturating_mul(s.f_frsize);
    Some((free, s.f_flag & libc::ST_RDONLY != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_directory_is_writable_and_a_missing_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let h = DiskHealth::new(dir.path().to_owned(), 0);
        assert_eq!(h.probe(), Disk::Writable);
        assert!(!dir.path().join(PROBE).exists());
        h.write_failed("the alert store", &"disk full");
        assert!(matches!(h.state(), Disk::Refusing(r) if r.contains("disk full")));
        assert_eq!(h.probe(), Disk::Writable, "a good probe clears the mark");
        let gone = DiskHealth::new(dir.path().join("missing"), 0);
        assert!(matches!(gone.probe(), Disk::Refusing(_)));
        let demanding = DiskHealth::new(dir.path().to_owned(), u64::MAX);
        assert!(matches!(demanding.probe(), Disk::Refusing(r) if r.contains("full")));
    }
}
