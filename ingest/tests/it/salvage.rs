//! Property test of salvage: valid records interleaved with free text, in the layouts people
//! save by hand (pretty records pasted with `},` between them, captions, an array that never
//! closes, BOM, CRLF, no final newline), yield exactly those records, in order, and each
//! stretch of text between records becomes one quarantine row naming its lines.

use kvwatch_ingest::activity::ActivityRow;
use kvwatch_ingest::audit::EventRow;
use kvwatch_ingest::parse::{RowSink, parse_stream};
use proptest::prelude::*;
use serde_json::{Value, json};

#[derive(Default)]
struct Seen {
    events: Vec<String>,
    activity: Vec<String>,
    quarantine: Vec<(String, String, String)>,
}

impl RowSink for Seen {
    fn event(&mut self, row: &EventRow<'_>, _source: &str) {
        self.events
            .push(row.correlation_id.as_deref().unwrap_or("").to_owned());
    }
    fn activity(&mut self, row: &ActivityRow, _source: &str) {
        self.activity
            .push(row.correlation_id.clone().unwrap_or_default());
    }
    fn quarantine(&mut self, source: &str, reason: &str, raw: &str) {
        self.quarantine
            .push((source.to_owned(), reason.to_owned(), raw.to_owned()));
    }
}

fn record(i: usize, shape: u8) -> Value {
    let cid = format!("cid-{i}");
    match shape % 3 {
        0 => json!({
            "time": format!("2025-03-04T10:{:02}:00.1234567Z", i % 60),
            "category": "AuditEvent", "operationName": "SecretGet", "resultType": "Success",
            "correlationId": cid, "callerIpAddress": "203.0.113.7",
            "identity": {"claim": {"oid": "6e1f4b7a-0000-4000-8000-2d9c5a8e3f10", "upn": "a@contoso.com"}},
            "properties": {"id": format!("https://kv1.vault.azure.net/secrets/s{i}/v"), "httpStatusCode": 200,
                           "clientInfo": "{curly} and \"quoted\" [text]"},
            "resourceId": "/SUBSCRIPTIONS/S/RESOURCEGROUPS/G/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/KV1"
        }),
        1 => json!({
            "time": "2025-03-04T11:00:00Z", "operationName": "VaultGet", "category": "AuditEvent",
            "correlationId": cid, "resourceId": "/subscriptions/s/resourceGroups/g/providers/Microsoft.KeyVault/vaults/kv2",
            "properties": {"httpStatusCode": 200}
        }),
        _ => json!({
            "eventTimestamp": "2025-03-04T12:00:00.5Z",
            "operationName": {"value": "Microsoft.KeyVault/vaults/write", "localizedValue": "Update key vault"},
            "status": {"value": "Succeeded"}, "caller": "eve@contoso.com", "correlationId": cid,
            "resourceId": "/subscriptions/s/resourceGroups/g/providers/Microsoft.KeyVault/vaults/kv3"
        }),
    }
}

#[derive(Debug, Clone)]
enum Piece {
    Record {
        shape: u8,
        pretty: bool,
    },
    /// Lines of free text: no `}` or `]`, so no stretch of it can close a JSON value.
    Text(Vec<String>),
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        3 => (any::<u8>(), any::<bool>()).prop_map(|(shape, pretty)| Piece::Record { shape, pretty }),
        2 => proptest::collection::vec("[A-Za-z][A-Za-z0-9 :.,#!?'\"(){\\[-]{0,30}", 1..4).prop_map(Piece::Text),
    ]
}

#[derive(Debug, Clone)]
struct Layout {
    pieces: Vec<Piece>,
    /// After each record: "\n", "\n\n" or ",\n".
    seps: Vec<u8>,
    open_array: bool,
    bom: bool,
    crlf: bool,
    final_newline: bool,
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        proptest::collection::vec(piece(), 1..12),
        proptest::collection::vec(0u8..3, 12),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(pieces, seps, open_array, bom, crlf, final_newline)| Layout {
                pieces,
                seps,
                open_array,
                bom,
                crlf,
                final_newline,
            },
        )
}

/// The file, the correlation IDs of its records in order, and each text stretch's line range
/// and lines.
type Rendered = (Vec<u8>, Vec<String>, Vec<(u64, u64, Vec<String>)>);

fn render(l: &Layout) -> Rendered {
    let mut lines: Vec<String> = Vec::new();
    let mut cids = Vec::new();
    let mut stretches: Vec<(u64, u64, Vec<String>)> = Vec::new();
    let mut in_text = false;
    if l.open_array {
        lines.push("[".into());
    }
    for (i, p) in l.pieces.iter().enumerate() {
        match p {
            Piece::Record { shape, pretty } => {
                in_text = false;
                let v = record(i, *shape);
                cids.push(format!("cid-{i}"));
                let text = if *pretty {
                    serde_json::to_string_pretty(&v).unwrap()
                } else {
                    v.to_string()
                };
                lines.extend(text.lines().map(str::to_owned));
                match l.seps[i % l.seps.len()] {
                    0 => {}
                    1 => lines.push(String::new()),
                    _ => lines.last_mut().unwrap().push(','),
                }
            }
            Piece::Text(t) => {
                let first = lines.len() as u64 + 1;
                lines.extend(t.iter().cloned());
                let last = lines.len() as u64;
                if in_text {
                    let s = stretches.last_mut().unwrap();
                    s.1 = last;
                    s.2.extend(t.iter().cloned());
                } else {
                    stretches.push((first, last, t.clone()));
                }
                in_text = true;
            }
        }
    }
    let nl = if l.crlf { "\r\n" } else { "\n" };
    let mut out = String::new();
    if l.bom {
        out.push('\u{feff}');
    }
    out.push_str(&lines.join(nl));
    if l.final_newline {
        out.push_str(nl);
    }
    (out.into_bytes(), cids, stretches)
}

fn lines_of(source: &str) -> (u64, u64) {
    let range = source.rsplit(':').next().unwrap();
    let range = range.split('#').next().unwrap();
    match range.split_once('-') {
        Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
        None => (range.parse().unwrap(), range.parse().unwrap()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn records_among_free_text_are_all_recovered(l in layout()) {
        let (file, cids, stretches) = render(&l);
        let mut seen = Seen::default();
        let counts = parse_stream(&file[..], "f", &mut seen, 1 << 20).unwrap();
        let mut got: Vec<String> = seen.events.clone();
        got.extend(seen.activity.iter().cloned());
        got.sort();
        let mut want = cids.clone();
        want.sort();
        prop_assert_eq!(&got, &want, "quarantine: {:?}", seen.quarantine);
        prop_assert_eq!(seen.quarantine.len(), stretches.len(), "{:?} vs {:?}", seen.quarantine, stretches);
        for ((source, reason, raw), (first, last, text)) in seen.quarantine.iter().zip(&stretches) {
            prop_assert_eq!(lines_of(source), (*first, *last), "{} {}", source, reason);
            let raw = raw.replace('\r', "");
            for t in text {
                prop_assert!(raw.contains(t.trim_end_matches([',', '[', ' '])), "{:?} not in {:?}", t, raw);
            }
        }
        prop_assert_eq!(counts.records, counts.events + counts.activity + counts.quarantined);
        prop_assert_eq!(counts.quarantined as usize, stretches.len());
    }
}
