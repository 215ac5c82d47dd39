//! Fault injection for the crash tests: named points where a test can make the process
//! abort. A leaf, so that every layer (the store, the Kafka source) can name its points without
//! depending on another.

/// Fault injection for crash tests: when `KVWATCH_TEST_CRASH` is `NAME` or `NAME:N`, the
/// process aborts (no unwinding, no flushing — like SIGKILL) the N-th time (default first)
/// it passes the point called `NAME`. Unset in production, where this is one relaxed load.
pub fn crash_point(name: &str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let spec = SPEC.get_or_init(|| {
        let v = std::env::var("KVWATCH_TEST_CRASH").ok()?;
        let (n, c) = v.split_once(':').unwrap_or((v.as_str(), "1"));
        Some((n.to_owned(), c.parse().unwrap_or(1)))
    });
    if let Some((n, at)) = spec
        && n == name
        && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *at
    {
        eprintln!("KVWATCH_TEST_CRASH: aborting at {name}");
        std::process::abort();
    }
}

/// Delay injection for the race tests: when `KVWATCH_TEST_PAUSE` is `NAME:MS`, the process
/// sleeps MS milliseconds every time it passes the point called `NAME` (so two writers that
/// read the same manifest are both made to commit on top of it). Unset in production.
pub fn pause_point(name: &str) {
    use std::sync::OnceLock;
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    let spec = SPEC.get_or_init(|| {
        let v = std::env::var("KVWATCH_TEST_PAUSE").ok()?;
        let (n, ms) = v.split_once(':')?;
        Some((n.to_owned(), ms.parse().ok()?))
    });
    if let Some((n, ms)) = spec
        && n == name
    {
        std::thread::sleep(std::time::Duration::from_millis(*ms));
    }
}
