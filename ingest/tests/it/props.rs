//! Property test: random mutations of valid records never panic, and every record found is
//! accounted for as an event, an activity row or a quarantine row.

use kvwatch_ingest::activity::ActivityRow;
use kvwatch_ingest::audit::EventRow;
use kvwatch_ingest::framing::Framer;
use kvwatch_ingest::parse::{Parser, RowSink};
use proptest::prelude::*;

#[derive(Default)]
struct Count {
    events: u64,
    activity: u64,
    quarantine: u64,
}

impl RowSink for Count {
    fn event(&mut self, row: &EventRow<'_>, _source: &str) {
        assert_eq!(row.event_id.len(), 32);
        self.events += 1;
    }
    fn activity(&mut self, _row: &ActivityRow, _source: &str) {
        self.activity += 1;
    }
    fn quarantine(&mut self, _source: &str, reason: &str, _raw: &str) {
        assert!(!reason.is_empty());
        self.quarantine += 1;
    }
}

fn corpus() -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/samples");
    let mut out = Vec::new();
    for f in [
        "PT1H.json",
        "array.json",
        "envelope-pretty.json",
        "activity.jsonl",
    ] {
        out.extend(std::fs::read(dir.join(f)).unwrap());
        out.push(b'\n');
    }
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let token = prop_oneof![
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b"[".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"\n".to_vec()),
        Just(b",".to_vec()),
        Just(b"null".to_vec()),
        Just(b"\"records\":".to_vec()),
        Just(b"{\"records\":5}".to_vec()),
        Just(vec![0xff, 0xfe]),
        Just("\u{feff}".as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 1..8),
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), token).prop_map(|(i, t)| Mutation::Insert(i, t)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..200).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    let len = data.len().max(1);
    match m {
        Mutation::Flip(i, b) => {
            let i = i % len;
            if i < data.len() {
                data[i] = *b;
            }
        }
        Mutation::Delete(i, n) => {
            let i = i % len;
            let end = (i + n).min(data.len());
            if i < end {
                data.drain(i..end);
            }
        }
        Mutation::Insert(i, t) => {
            let i = i % (data.len() + 1);
            data.splice(i..i, t.iter().copied());
        }
        Mutation::Truncate(i) => data.truncate(i % len),
        Mutation::Duplicate(i, n) => {
            let i = i % len;
            let end = (i + n).min(data.len());
            if i < end {
                let chunk = data[i..end].to_vec();
                data.splice(i..i, chunk);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn mutated_input_never_panics_and_nothing_vanishes(muts in proptest::collection::vec(mutation(), 1..12)) {
        let mut data = corpus();
        for m in &muts {
            apply(&mut data, m);
        }
        let mut sink = Count::default();
        let mut parser = Parser::new(&mut sink, "prop");
        let mut framer = Framer::new(&data[..]);
        while let Some(f) = framer.next_frame().unwrap() {
            parser.frame(&f);
        }
        let c = parser.counts;
        prop_assert_eq!(c.records, c.events + c.activity + c.quarantined);
        prop_assert_eq!(sink.events, c.events);
        prop_assert_eq!(sink.activity, c.activity);
        prop_assert_eq!(sink.quarantine, c.quarantined);
    }
}
