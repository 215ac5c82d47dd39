//! The diagnostic-settings archive read straight from a storage account:
//! `kvwatch ingest az://insights-logs-auditevent/resourceId=…` lists the blobs below the URL
//! and reads from each what lies beyond the position the store remembers for it, up to its
//! last complete line (Azure appends to the hour's `PT1H.json` while the hour lasts). The
//! positions are checkpoints (`archive:<url>/<blob>` → bytes read) committed with the rows
//! they cover, so a scheduled run picks up only new data, and a run killed half way reads the
//! same bytes again next time, which the store's de-duplication absorbs.
//!
//! What is read is staged in local files and handed to the ingest pipeline like any file, so
//! every log shape, salvage and quarantine rule applies unchanged.

use crate::files::{EXTENSIONS, Input};
use crate::location::{Location, LocationError, Remote, StorageOptions};
use crate::store::Manifest;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Why the archive could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Location(#[from] LocationError),
    #[error("{0} is a local path, not an object-store URL")]
    NotRemote(String),
    #[error("{url}: {source}")]
    Store {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The new part of an archive: staged inputs and the positions they bring the blobs to.
#[derive(Debug, Default)]
pub struct Fetched {
    pub inputs: Vec<Input>,
    pub checkpoints: Vec<(String, serde_json::Value)>,
    /// Blobs with nothing new.
    pub unchanged: usize,
    /// Blobs whose names end in nothing kvwatch reads.
    pub skipped: Vec<String>,
    pub bytes: u64,
}

/// The checkpoint key of a blob.
pub fn checkpoint_key(remote: &Remote, rel: &str) -> String {
    format!("archive:{}/{rel}", remote.url)
}

/// Reads what is new in the blobs below `url` (relative to `manifest`'s checkpoints) into
/// files under `staging`.
pub fn fetch(
    url: &str,
    options: &StorageOptions,
    manifest: &Manifest,
    staging: &Path,
) -> Result<Fetched, ArchiveError> {
    let Location::Remote(remote) = Location::parse(url, options)? else {
        return Err(ArchiveError::NotRemote(url.to_owned()));
    };
    let store_err = |source| ArchiveError::Store {
        url: remote.url.clone(),
        source,
    };
    std::fs::create_dir_all(staging).map_err(|source| ArchiveError::Io {
        path: staging.to_owned(),
        source,
    })?;
    // Labels start at the last segment the user named, as a walked directory's do.
    let name = remote.url.rsplit('/').next().unwrap_or_default().to_owned();
    let mut blobs = remote.list("").map_err(store_err)?;
    blobs.sort();
    let mut out = Fetched::default();
    for (i, (rel, size, _)) in blobs.into_iter().enumerate() {
        let lower = rel.to_ascii_lowercase();
        if !EXTENSIONS.iter().any(|e| lower.ends_with(&format!(".{e}"))) {
            out.skipped.push(rel);
            continue;
        }
        let key = checkpoint_key(&remote, &rel);
        let done = manifest
            .checkpoints
            .get(&key)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if size <= done {
            out.unchanged += 1;
            continue;
        }
        let gz = lower.ends_with(".gz");
        // A compressed blob cannot be read from the middle: it is read whole, once it has
        // grown (Azure does not append to compressed blobs).
        let from = if gz { 0 } else { done };
        let path = staging.join(format!("{i:06}{}", if gz { ".json.gz" } else { ".json" }));
        remote
            .download(&rel, from, size, &path)
            .map_err(store_err)?;
        let kept = if gz {
            size - from
        } else {
            complete_lines(&path).map_err(|source| ArchiveError::Io {
                path: path.clone(),
                source,
            })?
        };
        if kept == 0 {
            let _ = std::fs::remove_file(&path);
            out.unchanged += 1;
            continue;
        }
        let label = match (name.is_empty(), from) {
            (true, 0) => rel.clone(),
            (true, f) => format!("{rel}@{f}"),
            (false, 0) => format!("{name}/{rel}"),
            (false, f) => format!("{name}/{rel}@{f}"),
        };
        tracing::info!(blob = %rel, from, bytes = kept, "reading archive blob");
        out.bytes += kept;
        out.inputs.push(Input::File { path, label });
        out.checkpoints.push((key, serde_json::json!(from + kept)));
    }
    Ok(out)
}

/// Cuts the file at `path` after its last complete line, returning the bytes kept. A last
/// line without a newline is kept only if it is a complete JSON value (a blob that ends
/// without one), never if it is a record still being appended.
fn complete_lines(path: &Path) -> std::io::Result<u64> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let len = f.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; 64 << 10];
    let mut cut = None;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        if let Some(i) = memchr::memrchr(b'\n', chunk) {
            cut = Some(start + i as u64 + 1);
            break;
        }
        end = start;
    }
    let cut = cut.unwrap_or(0);
    if cut < len {
        let mut tail = Vec::new();
        f.seek(SeekFrom::Start(cut))?;
        f.read_to_end(&mut tail)?;
        let text = String::from_utf8_lossy(&tail);
        let t = text.trim();
        if !t.is_empty() && serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok() {
            f.seek(SeekFrom::End(0))?;
            f.write_all(b"\n")?;
            return Ok(len);
        }
        f.set_len(cut)?;
    }
    Ok(cut)
}

#[cfg(test)]
mod tests {
    use super::complete_lines;

    #[test]
    fn a_record_still_being_written_waits_for_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.json");
        for (text, kept) in [
            ("{\"a\":1}\n{\"a\":2}\n{\"a\"", 16),
            ("{\"a\":1}\n{\"a\":2}", 15),
            ("{\"a\":1}\r\n", 9),
            ("{\"a\":", 0),
            ("", 0),
        ] {
            std::fs::write(&p, text).unwrap();
            assert_eq!(complete_lines(&p).unwrap(), kept, "{text:?}");
        }
    }
}
