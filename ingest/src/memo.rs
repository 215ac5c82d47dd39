//! A small, bounded memo for pure functions of a string.
//!
//! Audit records repeat themselves: a vault's records share one resource ID, a caller's share
//! one identity block, an application reads the same few secret URIs all day. Deriving columns
//! from those values (splitting the resource ID, parsing the URI, walking the claims) is a
//! large share of normalising a record, so the results are kept in a direct-mapped table keyed
//! by the exact input text. A hit costs one hash and one compare of the text; a miss computes
//! and replaces the slot. The table has a fixed number of slots and refuses long keys, so its
//! memory is bounded whatever the input, and a stream of distinct values only costs the hash.

/// Keys longer than this are not memoised (computed every time): a memo of huge values would
/// hold on to memory an adversarial record chose.
pub const MAX_KEY: usize = 2048;

/// One slot: the exact key text and the value computed from it.
type Slot<V> = Option<(Box<str>, V)>;

pub struct Memo<V> {
    slots: Box<[Slot<V>]>,
}

impl<V: Clone> Memo<V> {
    /// A memo of `slots` entries (rounded up to a power of two).
    pub fn new(slots: usize) -> Self {
        let n = slots.max(1).next_power_of_two();
        Self {
            slots: (0..n).map(|_| None).collect(),
        }
    }

    /// `f(key)` for an `f` that cannot fail; see [`get_or`](Self::get_or).
    pub fn get(&mut self, key: &str, f: impl FnOnce(&str) -> V) -> V {
        match self.get_or(key, |k| Ok::<_, std::convert::Infallible>(f(k))) {
            Ok(v) => v,
            Err(e) => match e {},
        }
    }

    /// `f(key)`, from the memo when the same text was seen last in its slot. `f` must be a pure
    /// function of `key`; `Err` results are not kept.
    pub fn get_or<E>(&mut self, key: &str, f: impl FnOnce(&str) -> Result<V, E>) -> Result<V, E> {
        if key.len() > MAX_KEY {
            return f(key);
        }
        let i = (hash(key.as_bytes()) as usize) & (self.slots.len() - 1);
        if let Some((k, v)) = &self.slots[i]
            && **k == *key
        {
            return Ok(v.clone());
        }
        let v = f(key)?;
        self.slots[i] = Some((key.into(), v.clone()));
        Ok(v)
    }
}

/// Word-at-a-time multiplicative hash (the FxHash step). Not collision-resistant, and it need
/// not be: a collision only evicts a slot, and every hit is confirmed by comparing the text.
fn hash(b: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = b.len() as u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8-byte chunk"));
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    // Fold the high bits, which the multiply mixes best, into the low bits used as the index.
    h ^ (h >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::convert::Infallible;

    #[test]
    fn hits_return_the_stored_value_and_misses_compute() {
        let calls = Cell::new(0);
        let mut m: Memo<usize> = Memo::new(4);
        let f = |k: &str| {
            calls.set(calls.get() + 1);
            Ok::<_, Infallible>(k.len())
        };
        assert_eq!(m.get_or("abc", f).unwrap(), 3);
        assert_eq!(m.get_or("abc", f).unwrap(), 3);
        assert_eq!(calls.get(), 1, "second lookup of the same text is a hit");
        assert_eq!(m.get("abc", |_| unreachable!("a hit does not compute")), 3);
        // Many distinct keys through 4 slots: every answer is still right.
        for i in 0..100 {
            let k = "x".repeat(i);
            assert_eq!(m.get_or(&k, f).unwrap(), i);
            assert_eq!(m.get_or(&k, f).unwrap(), i);
        }
    }

    #[test]
    fn errors_are_not_kept_and_long_keys_are_not_stored() {
        let mut m: Memo<u8> = Memo::new(8);
        assert!(m.get_or("k", |_| Err::<u8, _>("bad")).is_err());
        assert_eq!(m.get_or("k", |_| Ok::<_, ()>(7)), Ok(7));
        let long = "y".repeat(MAX_KEY + 1);
        let mut calls = 0;
        for _ in 0..3 {
            m.get_or(&long, |_| {
                calls += 1;
                Ok::<_, ()>(1)
            })
            .unwrap();
        }
        assert_eq!(calls, 3);
        assert!(m.slots.iter().flatten().all(|(k, _)| k.len() <= MAX_KEY));
    }
}
