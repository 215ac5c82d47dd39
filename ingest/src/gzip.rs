//! Reading a gzip stream that may be damaged (cut short, a bad checksum, garbage after the
//! member): everything that decompressed before the damage is handed out, and the damage is
//! kept as a reason for one quarantine row. Used by the file source and by Kafka messages.

use std::io::{self, Read};
use std::sync::Arc;

/// Where a [`Salvage`] reader leaves the error that ended its stream.
#[derive(Clone, Default)]
pub struct Damage(Arc<std::sync::Mutex<Option<String>>>);

impl Damage {
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A decompressor whose stream may be damaged (truncated, a bad CRC, trailing garbage): it
/// hands out everything decompressed before the damage and then ends, keeping the error in
/// [`Damage`]. The records before the break are parsed like any others, and the break itself
/// becomes one quarantine row, instead of the whole file failing.
pub struct Salvage<R> {
    inner: R,
    out: u64,
    damage: Damage,
}

impl<R> Salvage<R> {
    pub fn new(inner: R) -> (Self, Damage) {
        let damage = Damage::default();
        (
            Self {
                inner,
                out: 0,
                damage: damage.clone(),
            },
            damage,
        )
    }
}

impl<R: Read> Read for Salvage<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.damage.get().is_some() {
            return Ok(0);
        }
        match self.inner.read(buf) {
            Ok(n) => {
                self.out += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                *self.damage.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                    "damaged gzip stream after {} decompressed bytes: {e}; what followed could not be read",
                    self.out
                ));
                Ok(0)
            }
        }
    }
}
