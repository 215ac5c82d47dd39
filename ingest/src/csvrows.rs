//! CSV exports of Log Analytics tables (the portal's "Export to CSV"): a header row names the
//! columns, quoting follows RFC 4180, dynamic columns hold JSON text. Each row becomes the JSON
//! object of its non-empty columns and is parsed like a row exported as JSON, so both forms
//! give the same rows.

use serde_json::{Map, Value};
use std::io;

const BOM: &[u8] = &[0xEF, 0xBB, 0xBF];

/// Does an input that starts with `head` look like a CSV export of a Log Analytics table: a
/// first line that is not JSON, with comma-separated names one of which is `TimeGenerated`?
pub fn looks_like_csv(head: &[u8]) -> bool {
    let head = head.strip_prefix(BOM).unwrap_or(head);
    let Some(first) = head
        .split(|&b| b == b'\n')
        .map(|l| l.trim_ascii())
        .find(|l| !l.is_empty())
    else {
        return false;
    };
    if matches!(first.first(), Some(b'{' | b'[')) {
        return false;
    }
    let line = String::from_utf8_lossy(first);
    line.contains(',')
        && line
            .split(',')
            .any(|c| c.trim().trim_matches('"').starts_with("TimeGenerated"))
}

/// One data row of a CSV export: the JSON object of its non-empty columns, or why it could
/// not be read (with its fields joined back for the quarantine).
pub enum Row<'a> {
    Json(&'a str),
    Unreadable { why: String, raw: String },
}

/// Reads a CSV export, calling `row` with each data row and its line; returns the number of
/// lines read. An I/O error (or a malformed CSV stream) ends the input.
pub fn read_rows(r: impl io::Read, mut row: impl FnMut(u64, Row<'_>)) -> io::Result<u64> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(r);
    let headers: Vec<String> = match rdr.byte_headers() {
        Ok(h) => h
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let name = name.strip_prefix(BOM).unwrap_or(name);
                let name = String::from_utf8_lossy(name).trim().to_owned();
                if name.is_empty() {
                    format!("column{}", i + 1)
                } else {
                    name
                }
            })
            .collect(),
        Err(e) => return Err(csv_io(e)),
    };
    let mut rec = csv::ByteRecord::new();
    let mut lines = 1;
    let mut text = String::new();
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_io(e)),
        }
        let line = rec.position().map_or(lines + 1, |p| p.line());
        lines = line;
        let mut obj = Map::new();
        let mut bad = None;
        for (i, field) in rec.iter().enumerate() {
            if field.is_empty() {
                continue;
            }
            let name = headers
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("column{}", i + 1));
            match std::str::from_utf8(field) {
                Ok(v) => {
                    obj.insert(name, Value::String(v.to_owned()));
                }
                Err(e) => {
                    bad = Some(format!("invalid UTF-8 in column {name}: {e}"));
                    break;
                }
            }
        }
        match bad {
            None => {
                text.clear();
                text.push_str(&Value::Object(obj).to_string());
                row(line, Row::Json(&text));
            }
            Some(why) => {
                let raw: Vec<String> = rec
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect();
                row(
                    line,
                    Row::Unreadable {
                        why,
                        raw: raw.join(","),
                    },
                );
            }
        }
    }
    Ok(lines)
}

fn csv_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_exports_not_json() {
        assert!(looks_like_csv(
            b"\xEF\xBB\xBFTimeGenerated [UTC],OperationName\n1/2/2024, 1:00:00 AM,SecretGet\n"
        ));
        assert!(looks_like_csv(b"\n\"TenantId\",\"TimeGenerated\"\r\n"));
        assert!(!looks_like_csv(b"{\"TimeGenerated\":1,\"a\":2}\n"));
        assert!(!looks_like_csv(b"RL AuditEvent, then some records\n{"));
        assert!(!looks_like_csv(b""));
    }
}
