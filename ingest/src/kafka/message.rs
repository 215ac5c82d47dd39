//! One Kafka message body → rows. A body is whatever Azure or a replay tool put there: an
//! `{"records":[…]}` envelope, a bare record, JSON Lines or an array, possibly gzip-compressed.
//! The file parser handles all of those; this module adds what is specific to messages: the
//! size limit, gzip bombs, empty bodies and the source label that names the exact offset.

use crate::gzip::Salvage;
use crate::parse::parse_bytes;
use crate::parse::{ParseCounts, RowSink};
use flate2::read::MultiGzDecoder;
use std::io::Read;

/// Source label of a message: rows get `{label}:{line}#{index}` appended by the parser, so a
/// stored row names topic, partition, offset and its place inside the message.
pub fn origin(topic: &str, partition: i32, offset: i64) -> String {
    format!("kafka:{topic}/{partition}@{offset}")
}

/// First bytes kept of a message that is quarantined whole.
const SAMPLE: usize = 4096;

fn sample(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(SAMPLE)]).into_owned()
}

/// Parses one message body into `sink`. Never fails: whatever cannot be stored is quarantined
/// with a reason and counted.
pub fn parse_message<S: RowSink>(
    payload: Option<&[u8]>,
    origin: &str,
    max_bytes: usize,
    sink: &mut S,
) -> ParseCounts {
    let quarantine = |sink: &mut S, reason: String, raw: String, bytes: usize| {
        sink.quarantine(origin, &reason, &raw);
        ParseCounts {
            records: 1,
            quarantined: 1,
            bytes: bytes as u64,
            ..Default::default()
        }
    };
    let body = match payload {
        None | Some([]) => {
            return quarantine(sink, "empty message".into(), String::new(), 0);
        }
        Some(b) => b,
    };
    if body.len() > max_bytes {
        return quarantine(
            sink,
            format!(
                "oversized message: {} bytes exceeds the limit of {max_bytes} (first {} kept)",
                body.len(),
                body.len().min(SAMPLE)
            ),
            sample(body),
            body.len(),
        );
    }
    if body.len() >= 2 && body[0] == 0x1f && body[1] == 0x8b {
        // Decompress with the same limit, so a small message cannot expand without bound.
        // A damaged stream keeps what decompressed before the damage: those records are
        // parsed, and the damage is one quarantine row of its own.
        let mut out = Vec::with_capacity(body.len() * 8);
        let (salvage, damage) = Salvage::new(MultiGzDecoder::new(body));
        let read = salvage.take(max_bytes as u64 + 1).read_to_end(&mut out);
        return match (read, damage.get()) {
            (Err(e), _) => quarantine(sink, format!("invalid gzip: {e}"), sample(body), body.len()),
            (Ok(n), _) if n > max_bytes => quarantine(
                sink,
                format!("oversized message: gzip expands beyond the limit of {max_bytes} bytes"),
                sample(&out),
                body.len(),
            ),
            (Ok(_), Some(why)) => {
                let mut c = quarantine(
                    sink,
                    format!("invalid gzip: {why}"),
                    sample(body),
                    body.len(),
                );
                if !out.is_empty() {
                    let salvaged = parse_body(&out, origin, max_bytes, sink);
                    c.add(&salvaged);
                    c.bytes = body.len() as u64;
                }
                c
            }
            (Ok(_), None) => parse_body(&out, origin, max_bytes, sink),
        };
    }
    parse_body(body, origin, max_bytes, sink)
}

fn parse_body<S: RowSink>(
    body: &[u8],
    origin: &str,
    max_bytes: usize,
    sink: &mut S,
) -> ParseCounts {
    // The parser quarantines everything it cannot use.
    parse_bytes(body, origin, sink, max_bytes.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::ActivityRow;
    use crate::audit::EventRow;
    use std::io::Write;

    #[derive(Default)]
    struct Rec {
        events: Vec<String>,
        quarantined: Vec<(String, String)>,
    }
    impl RowSink for Rec {
        fn event(&mut self, _row: &EventRow<'_>, source: &str) {
            self.events.push(source.to_owned());
        }
        fn activity(&mut self, _row: &ActivityRow, _source: &str) {}
        fn quarantine(&mut self, source: &str, reason: &str, _raw: &str) {
            self.quarantined
                .push((source.to_owned(), reason.to_owned()));
        }
    }

    const REC: &str = r#"{"time":"2026-01-01T00:00:00.1234567Z","resourceId":"/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/V1","operationName":"SecretGet","category":"AuditEvent","resultType":"Success","correlationId":"c1","callerIpAddress":"10.0.0.1","properties":{"id":"https://v1.vault.azure.net/secrets/s1/abc","httpStatusCode":200}}"#;

    #[test]
    fn envelopes_gzip_and_poison() {
        let o = origin("kv", 3, 42);
        assert_eq!(o, "kafka:kv/3@42");
        let env = format!(r#"{{"records":[{REC},{}]}}"#, REC.replace("c1", "c2"));
        let mut s = Rec::default();
        let c = parse_message(Some(env.as_bytes()), &o, 1 << 20, &mut s);
        assert_eq!((c.records, c.events), (2, 2));
        assert_eq!(s.events, ["kafka:kv/3@42:1#0", "kafka:kv/3@42:1#1"]);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(env.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let mut s = Rec::default();
        assert_eq!(parse_message(Some(&gz), &o, 1 << 20, &mut s).events, 2);
        // A gzip that expands beyond the limit is quarantined, not inflated.
        let mut s = Rec::default();
        let c = parse_message(Some(&gz), &o, 100, &mut s);
        assert_eq!(c.quarantined, 1);
        assert!(
            s.quarantined[0].1.contains("oversized"),
            "{:?}",
            s.quarantined
        );
        let mut s = Rec::default();
        parse_message(Some(&gz[..gz.len() / 2]), &o, 1 << 20, &mut s);
        assert!(s.quarantined[0].1.contains("gzip"), "{:?}", s.quarantined);

        for (body, why) in [
            (&b""[..], "empty"),
            (b"{not json", "JSON"),
            (b"42", "number"),
            (&[0xff, 0xfe, 0x00][..], "UTF-8"),
        ] {
            let mut s = Rec::default();
            let c = parse_message(Some(body), &o, 1 << 20, &mut s);
            assert_eq!((c.records, c.quarantined, c.events), (1, 1, 0), "{why}");
            assert!(
                s.quarantined[0].1.contains(why),
                "{why}: {:?}",
                s.quarantined
            );
            assert!(s.quarantined[0].0.starts_with("kafka:kv/3@42"));
        }
        let mut s = Rec::default();
        let c = parse_message(Some(env.as_bytes()), &o, 64, &mut s);
        assert_eq!(c.quarantined, 1);
        assert!(s.quarantined[0].1.starts_with("oversized message"));
    }
}
