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
        let c = parser.finish();
        prop_assert_eq!(c.records, c.events + c.activity + c.quarantined);
        prop_assert_eq!(sink.events, c.events);
        prop_assert_eq!(sink.activity, c.activity);
        prop_assert_eq!(sink.quarantine, c.quarantined);
    }
}

/// Whether serde_json takes `t` as one JSON value, and `kvwatch`'s scanner agrees; for an
/// object, the scanner's members rebuild the same value.
fn agrees_with_serde(t: &str) -> Result<(), TestCaseError> {
    use kvwatch_ingest::scan::{Raw, RawObject};
    let ours = Raw::parse(t);
    let theirs = serde_json::from_str::<&serde_json::value::RawValue>(t);
    prop_assert_eq!(
        ours.is_ok(),
        theirs.is_ok(),
        "{:?}: scanner {:?} serde {:?}",
        t,
        ours.as_ref().err(),
        theirs.as_ref().err().map(|e| e.to_string())
    );
    let split = RawObject::parse(t);
    let map =
        serde_json::from_str::<std::collections::HashMap<String, &serde_json::value::RawValue>>(t);
    prop_assert_eq!(
        split.is_ok(),
        map.is_ok(),
        "{:?} split as an object: {:?}",
        t,
        split.err()
    );
    if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
        prop_assert_eq!(ours.get(), theirs.get());
        if let Ok(obj) = RawObject::parse(t) {
            let mut rebuilt = String::from("{");
            for (i, (k, v)) in obj.fields.iter().enumerate() {
                if i > 0 {
                    rebuilt.push(',');
                }
                rebuilt.push_str(&serde_json::to_string(k).unwrap());
                rebuilt.push(':');
                rebuilt.push_str(v.get());
            }
            rebuilt.push('}');
            // A number beyond f64 (`1e999`) is valid JSON that a `Value` cannot hold.
            if let Ok(a) = serde_json::from_str::<serde_json::Value>(t) {
                let b: serde_json::Value = serde_json::from_str(&rebuilt).unwrap();
                prop_assert_eq!(a, b);
            }
        }
    }
    Ok(())
}

/// Small JSON documents, then up to three edits with the tokens that break JSON subtly.
fn json_ish() -> impl Strategy<Value = String> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-zé\\\"/\u{1}\u{7f}✓ ]{0,12}".prop_map(Value::String),
    ];
    let doc = leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec(("[a-z\\\"]{0,3}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    });
    let edit = prop_oneof![
        Just(""),
        Just("{"),
        Just("}"),
        Just("["),
        Just("]"),
        Just("\""),
        Just(","),
        Just(":"),
        Just(" "),
        Just("\\"),
        Just("\\u00e9"),
        Just("\\ud800"),
        Just("\\x"),
        Just("\\u12"),
        Just("0"),
        Just("-"),
        Just("."),
        Just("e"),
        Just("+"),
        Just("tru"),
        Just("\t"),
        Just("\n"),
        Just("\u{1}"),
        Just("\u{1f}"),
    ];
    let edits = proptest::collection::vec((any::<usize>(), 0usize..3, edit), 0..3);
    (doc, edits, 0u8..8).prop_map(|(doc, edits, trailing)| {
        let mut t = serde_json::to_string(&doc).unwrap();
        // A trailing comma is the classic near-miss; random edits rarely make one.
        let close = match trailing {
            0 => t.rfind('}'),
            1 => t.rfind(']'),
            _ => None,
        };
        if let Some(i) = close {
            t.insert(i, ',');
        }
        for (at, delete, token) in edits {
            let mut i = at % (t.len() + 1);
            while !t.is_char_boundary(i) {
                i -= 1;
            }
            let mut end = (i + delete).min(t.len());
            while !t.is_char_boundary(end) {
                end += 1;
            }
            t.replace_range(i..end, token);
        }
        t
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, .. ProptestConfig::default() })]

    #[test]
    fn scanner_accepts_exactly_what_serde_json_accepts(t in json_ish()) {
        agrees_with_serde(&t)?;
    }

    #[test]
    fn scanner_agrees_on_mutated_records(muts in proptest::collection::vec(mutation(), 0..4), pick in any::<usize>()) {
        let corpus = corpus();
        let lines: Vec<&[u8]> = corpus.split(|b| *b == b'\n').filter(|l| l.len() > 2).collect();
        let mut line = lines[pick % lines.len()].to_vec();
        for m in &muts {
            apply(&mut line, m);
        }
        if let Ok(t) = std::str::from_utf8(&line) {
            agrees_with_serde(t)?;
        }
    }
}
