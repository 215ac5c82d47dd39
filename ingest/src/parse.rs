//! Routes frames to tables: every record becomes an event, an activity row, or a quarantine row
//! with a reason. Nothing is dropped silently; every outcome is counted.

use crate::activity::{self, ActivityRow};
use crate::audit::{self, EventRow};
use crate::csvrows;
use crate::framing::{Frame, Framer};
use crate::ids::decimal;
use crate::json::{self, Raw, RawObject};
use crate::loganalytics::{self, Shape};
use crate::scan::{Top, TopValues};
use serde::Serialize;
use std::fmt::Write as _;

/// Where parsed rows go.
pub trait RowSink {
    fn event(&mut self, row: &EventRow<'_>, source: &str);
    fn activity(&mut self, row: &ActivityRow, source: &str);
    fn quarantine(&mut self, source: &str, reason: &str, raw: &str);
}

/// What parsing saw. Every input record lands in exactly one of `events`, `activity`,
/// `quarantined` (which includes `other_category`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParseCounts {
    /// Records found (envelopes fanned out), plus unparseable fragments.
    pub records: u64,
    pub events: u64,
    pub activity: u64,
    pub quarantined: u64,
    /// Quarantined because their category is not one kvwatch stores (subset of `quarantined`).
    pub other_category: u64,
    pub bytes: u64,
}

impl ParseCounts {
    pub fn add(&mut self, o: &ParseCounts) {
        self.records += o.records;
        self.events += o.events;
        self.activity += o.activity;
        self.quarantined += o.quarantined;
        self.other_category += o.other_category;
        self.bytes += o.bytes;
    }
}

/// Largest raw sample kept for an oversized input.
const OVERSIZED_SAMPLE: usize = 4096;

/// Parses frames from one source into a sink.
pub struct Parser<'s, S: RowSink> {
    pub sink: &'s mut S,
    pub counts: ParseCounts,
    /// Source label prefix, e.g. a file path; rows get `{prefix}:{line}` or `…#{index}`.
    pub origin: String,
    src: String,
    /// Text that did not parse, kept until the next record or the end of the input.
    pending: Option<Pending>,
    /// What the input holds; `Auto` tells records from Log Analytics rows one by one.
    pub shape: Shape,
}

/// Deferred text and the lines it spans.
struct Pending {
    first: u64,
    last: u64,
    text: String,
}

/// Deferred text is salvaged at least this often, so memory stays bounded on garbage input.
const PENDING_MAX: usize = 16 << 20;

/// A stretch of text that is not a record: where it starts and why.
struct Junk {
    start: usize,
    why: String,
}

impl Junk {
    fn at(start: usize, why: impl Into<String>) -> Self {
        Self {
            start,
            why: why.into(),
        }
    }
}

/// Line numbers of byte offsets in a text, counted incrementally in either direction.
struct Lines<'t> {
    text: &'t [u8],
    pos: usize,
    line: u64,
}

impl<'t> Lines<'t> {
    fn new(text: &'t str, first: u64) -> Self {
        Self {
            text: text.as_bytes(),
            pos: 0,
            line: first,
        }
    }

    /// The line of the byte at `off` (the last line for the end of the text).
    fn at(&mut self, off: usize) -> u64 {
        let off = off.min(self.text.len());
        if off >= self.pos {
            self.line += memchr::memchr_iter(b'\n', &self.text[self.pos..off]).count() as u64;
        } else {
            self.line -= memchr::memchr_iter(b'\n', &self.text[off..self.pos]).count() as u64;
        }
        self.pos = off;
        self.line
    }
}

/// Is this value a record, an array of them or an envelope? Only such values end a stretch
/// of deferred text: a pretty-printed record's inner objects (`"identity": {…}` on lines of
/// their own) do not.
fn record_like(v: &Top<'_>) -> bool {
    const KEYS: [&str; 7] = [
        "records",
        "time",
        "timegenerated",
        "eventtimestamp",
        "category",
        "operationname",
        "operationnamevalue",
    ];
    match v {
        Top::Object(o) => o
            .fields
            .iter()
            .any(|(k, _)| KEYS.iter().any(|w| k.eq_ignore_ascii_case(w))),
        Top::Array(items) => !items.is_empty() && items.iter().all(|i| i.get().starts_with('{')),
        Top::Other(_) => false,
    }
}

impl<'s, S: RowSink> Parser<'s, S> {
    pub fn new(sink: &'s mut S, origin: impl Into<String>) -> Self {
        Self {
            sink,
            counts: ParseCounts::default(),
            origin: origin.into(),
            src: String::new(),
            pending: None,
            shape: Shape::Auto,
        }
    }

    /// Sets the source label `{origin}:{first}[-{last}][#{index}]`. Runs once or twice per
    /// record, so digits are written directly rather than through `fmt`.
    fn set_src(&mut self, first: u64, last: u64, index: Option<usize>) {
        let mut digits = [0u8; 20];
        self.src.clear();
        self.src.push_str(&self.origin);
        self.src.push(':');
        self.src.push_str(decimal(first, &mut digits));
        if first != last {
            self.src.push('-');
            self.src.push_str(decimal(last, &mut digits));
        }
        if let Some(i) = index {
            self.src.push('#');
            self.src.push_str(decimal(i as u64, &mut digits));
        }
    }

    fn quarantine(&mut self, reason: &str, raw: &str) {
        self.counts.records += 1;
        self.counts.quarantined += 1;
        let src = std::mem::take(&mut self.src);
        self.sink.quarantine(&src, reason, raw);
        self.src = src;
    }

    /// Quarantines one input row that could not be read as text (a CSV row with bad UTF-8).
    pub fn quarantine_at(&mut self, line: u64, reason: &str, raw: &str) {
        self.flush();
        self.set_src(line, line, None);
        self.quarantine(reason, raw);
    }

    /// Records that the input could not be read beyond `line` (a damaged compressed stream):
    /// one quarantine row, counted like a record, so the loss is seen and not silent.
    pub fn unreadable(&mut self, line: u64, reason: &str) {
        self.flush();
        self.set_src(line, line, None);
        self.quarantine(reason, "");
    }

    /// Parses one frame.
    pub fn frame(&mut self, f: &Frame) {
        self.counts.bytes += f.bytes.len() as u64;
        if let Some(size) = f.oversized {
            self.flush();
            self.set_src(f.first_line, f.last_line, None);
            let sample = String::from_utf8_lossy(&f.bytes[..f.bytes.len().min(OVERSIZED_SAMPLE)]);
            self.quarantine(
                &format!(
                    "oversized input: {size} bytes exceeds the frame limit (first {} kept)",
                    sample.len()
                ),
                &sample,
            );
            return;
        }
        let text = match std::str::from_utf8(f.bytes) {
            Ok(t) => t,
            Err(e) => {
                self.flush();
                self.set_src(f.first_line, f.last_line, None);
                let lossy = String::from_utf8_lossy(f.bytes).into_owned();
                self.quarantine(&format!("invalid UTF-8: {e}"), &lossy);
                return;
            }
        };
        self.values(text, f.first_line);
    }

    /// Stores every value of a frame that is a record or an envelope; anything else (text
    /// that is not JSON, a cut record, a fragment of a pretty-printed record in a
    /// line-oriented file) is deferred to [`Self::salvage`] with the text around it.
    fn values(&mut self, text: &str, first: u64) {
        let b = text.as_bytes();
        let mut lines = Lines::new(text, first);
        let mut at = 0;
        loop {
            // Commas between top-level values: records pasted as `},\n{` without an array.
            while at < b.len() && (b[at].is_ascii_whitespace() || b[at] == b',') {
                at += 1;
            }
            if at == b.len() {
                return;
            }
            match TopValues::new(&text[at..]).next() {
                Some(Ok((v, raw))) => {
                    let end = at + raw.len();
                    let take = match &v {
                        Top::Other(_) => false,
                        _ => self.pending.is_none() || record_like(&v),
                    };
                    if take {
                        self.flush();
                        self.set_src(lines.at(at), lines.at(end), None);
                        self.top(v, raw);
                    } else {
                        self.defer(raw, lines.at(at));
                    }
                    at = end;
                }
                Some(Err(_)) => {
                    self.defer(&text[at..], lines.at(at));
                    return;
                }
                None => return,
            }
        }
    }

    /// Holds text that is not a record, starting at `line`, until a record follows it.
    fn defer(&mut self, text: &str, line: u64) {
        let p = self.pending.get_or_insert_with(|| Pending {
            first: line,
            last: line,
            text: String::new(),
        });
        if !p.text.is_empty() {
            // Keep the file's line structure (blank lines the framer skipped included), so
            // what salvage finds is reported at its own lines.
            match line.saturating_sub(p.last) {
                0 => p.text.push(' '),
                gap => p.text.extend(std::iter::repeat_n('\n', gap as usize)),
            }
        }
        p.text.push_str(text);
        p.last = line + memchr::memchr_iter(b'\n', text.as_bytes()).count() as u64;
        if p.text.len() > PENDING_MAX {
            self.flush();
        }
    }

    /// Salvages the deferred text, if any.
    fn flush(&mut self) {
        if let Some(p) = self.pending.take() {
            self.salvage(&p.text, p.first);
        }
    }

    /// Finds every complete record in text that did not parse as a whole, the way an analyst
    /// would read it: a record may start at any `{` (or an array of records at any `[`), an
    /// array or envelope that never closes is read item by item, and each stretch between
    /// records that is not made of envelope punctuation becomes **one** quarantine row with
    /// its line range and why it is not a record.
    fn salvage(&mut self, text: &str, first: u64) {
        let b = text.as_bytes();
        let mut lines = Lines::new(text, first);
        let mut junk: Option<Junk> = None;
        // Failed attempts can rescan the text; bound the total so hostile input stays linear.
        let mut budget = text.len().saturating_mul(32).saturating_add(1 << 20);
        let mut pos = 0;
        while pos < b.len() {
            let c = b[pos];
            if c.is_ascii_whitespace() || c == b',' || (junk.is_none() && c == b']') {
                pos += 1;
                continue;
            }
            if (c == b'{' || c == b'[') && budget > 0 {
                match TopValues::new(&text[pos..]).next() {
                    Some(Ok((v, raw))) if record_like(&v) => {
                        self.junk(junk.take(), text, &mut lines, pos);
                        let end = pos + raw.len();
                        self.set_src(lines.at(pos), lines.at(end), None);
                        self.top(v, raw);
                        pos = end;
                    }
                    Some(Ok((_, raw))) => {
                        junk.get_or_insert_with(|| {
                            Junk::at(pos, "not a Key Vault record: JSON without record fields")
                        });
                        pos += raw.len();
                    }
                    Some(Err((_, e))) => {
                        budget = budget.saturating_sub(e.at + 1);
                        // An array that never closes (a cut file, a missing `]`): its items
                        // are tried one by one, and the bracket alone is not worth a row.
                        if junk.is_none() && c != b'[' {
                            let what = if e.is_eof() {
                                "truncated JSON"
                            } else {
                                "invalid JSON"
                            };
                            let line = lines.at(pos) + e.line.saturating_sub(1) as u64;
                            junk =
                                Some(Junk::at(pos, format!("{what}: {} (line {line})", e.what())));
                        }
                        pos += 1;
                    }
                    None => break,
                }
                continue;
            }
            junk.get_or_insert_with(|| match TopValues::new(&text[pos..]).next() {
                Some(Ok((Top::Other(kind), _))) => Junk::at(
                    pos,
                    format!("expected a JSON object or array, found {kind}"),
                ),
                _ => Junk::at(pos, "invalid JSON: free text, not a record"),
            });
            pos = memchr::memchr2(b'{', b'[', &b[pos + 1..]).map_or(b.len(), |i| pos + 1 + i);
        }
        self.junk(junk, text, &mut lines, b.len());
    }

    /// One quarantine row for a stretch of text that holds no record, ending before `end`.
    fn junk(&mut self, junk: Option<Junk>, text: &str, lines: &mut Lines, end: usize) {
        let Some(j) = junk else { return };
        let raw = text[j.start..end]
            .trim_end_matches(|c: char| c.is_ascii_whitespace() || matches!(c, ',' | '[' | ']'));
        if raw.is_empty() {
            return;
        }
        let (a, z) = (lines.at(j.start), lines.at(j.start + raw.len() - 1));
        self.set_src(a, z, None);
        self.quarantine(&j.why, raw);
    }

    /// Stores what is still deferred and returns the counts: call once the input has ended.
    pub fn finish(mut self) -> ParseCounts {
        self.flush();
        self.counts
    }

    /// One top-level value parsed in a single pass (the common case: one record per line).
    fn top(&mut self, v: Top<'_>, raw: &str) {
        match v {
            Top::Object(obj) => self.object(obj, raw),
            Top::Array(items) => self.records(&items),
            Top::Other(kind) => self.quarantine(
                &format!("expected a JSON object or array, found {kind}"),
                raw,
            ),
        }
    }

    fn object(&mut self, obj: RawObject<'_>, raw: &str) {
        if let Some(recs) = obj.get("records") {
            match crate::scan::array_items(recs) {
                Ok(items) => self.records(&items),
                Err(_) => self.quarantine(
                    &format!("envelope `records` is not an array (found {})", recs.kind()),
                    raw,
                ),
            }
        } else if let Some(rows) = obj.get("tables").and_then(|_| loganalytics::api_rows(&obj)) {
            let base = self.src.clone();
            for (i, row) in rows.iter().enumerate() {
                self.src.clear();
                let _ = write!(self.src, "{base}#{i}");
                match RawObject::parse(row) {
                    Ok(o) => self.object(o, row),
                    Err(e) => self.quarantine(&format!("invalid row: {e}"), row),
                }
            }
            self.src = base;
        } else if let Some(table) = loganalytics::table_of(&obj, self.shape) {
            // A Log Analytics row: rebuilt into the record Azure wrote, then read as one.
            let text = loganalytics::to_record(table, &obj);
            match text.as_deref().map(|t| (t, RawObject::parse(t))) {
                Ok((text, Ok(rec))) => self.record_obj(&rec, text, raw),
                Ok((_, Err(e))) => self.quarantine(&format!("invalid {table} row: {e}"), raw),
                Err(e) => self.quarantine(&format!("invalid {table} row: {e}"), raw),
            }
        } else {
            self.record_obj(&obj, raw, raw);
        }
    }

    fn records(&mut self, items: &[Raw<'_>]) {
        let base = self.src.clone();
        for (i, item) in items.iter().enumerate() {
            self.src.clear();
            let _ = write!(self.src, "{base}#{i}");
            let t = item.get();
            if !t.starts_with('{') {
                self.quarantine(
                    &format!("record is not a JSON object (found {})", item.kind()),
                    t,
                );
                continue;
            }
            match RawObject::of(*item) {
                Ok(obj) => self.object(obj, t),
                Err(e) => self.quarantine(&format!("invalid record: {e}"), t),
            }
        }
        self.src = base;
    }

    /// Routes one record by category / operation name. `raw` is the record's text, `original`
    /// what the input held (the Log Analytics row it was rebuilt from), kept if it is
    /// quarantined.
    fn record_obj(&mut self, obj: &RawObject<'_>, raw: &str, original: &str) {
        // One pass picks out the routing members: the first of each key, and the camelCase
        // spelling before the PascalCase one.
        let mut found: [Option<Raw<'_>>; 5] = [None; 5];
        for (k, v) in &obj.fields {
            let i = match k.as_ref() {
                "category" => 0,
                "Category" => 1,
                "operationName" => 2,
                "OperationName" => 3,
                "resourceId" => 4,
                _ => continue,
            };
            found[i].get_or_insert(*v);
        }
        let category = found[0]
            .or(found[1])
            .and_then(|v| json::opt_str_or_value("category", v).ok().flatten());
        let op = found[2]
            .or(found[3])
            .and_then(|v| json::opt_str_or_value("operationName", v).ok().flatten());
        let rid_v = found[4];
        let is_audit = match category.as_deref() {
            Some(c) => c.eq_ignore_ascii_case("AuditEvent"),
            // Some exports drop `category`; a Key Vault resource ID and an ObjectVerb
            // operation name identify an audit event just as well.
            None => {
                op.as_deref()
                    .is_some_and(|o| !activity::looks_like_activity(o))
                    && rid_v
                        .and_then(|v| json::opt_str("resourceId", v).ok().flatten())
                        .is_some_and(|r| r.to_ascii_lowercase().contains("/microsoft.keyvault/"))
            }
        };
        if is_audit {
            match audit::normalize(obj) {
                Ok(row) => {
                    self.counts.records += 1;
                    self.counts.events += 1;
                    self.sink.event(&row, &self.src);
                }
                Err(e) => self.quarantine(&format!("invalid audit event: {e}"), original),
            }
            return;
        }
        if op.as_deref().is_some_and(activity::looks_like_activity) {
            match activity::normalize(raw) {
                Ok(row) => {
                    self.counts.records += 1;
                    self.counts.activity += 1;
                    self.sink.activity(&row, &self.src);
                }
                Err(e) => self.quarantine(&format!("invalid activity log record: {e}"), original),
            }
            return;
        }
        self.counts.other_category += 1;
        let reason = match category {
            Some(c) => format!("unsupported category: {c}"),
            None => "unsupported category: record has no `category` and is neither a Key Vault audit event nor an Activity Log record".to_owned(),
        };
        self.quarantine(&reason, original);
    }
}

/// Parses one readable stream into a sink. Used by the file pipeline and by other sources
/// (Kafka messages) that hand over bytes.
pub fn parse_stream<S: RowSink>(
    reader: impl std::io::BufRead,
    origin: &str,
    sink: &mut S,
    max_frame: usize,
) -> std::io::Result<ParseCounts> {
    let mut parser = Parser::new(sink, origin);
    read_into(reader, &mut parser, max_frame)?;
    Ok(parser.finish())
}

/// Feeds a whole input to `parser`: JSON in any framing, or a CSV export of a Log Analytics
/// table (told apart by its header line). Returns the number of lines read.
pub fn read_into<S: RowSink>(
    mut reader: impl std::io::BufRead,
    parser: &mut Parser<'_, S>,
    max_frame: usize,
) -> std::io::Result<u64> {
    if csvrows::looks_like_csv(reader.fill_buf()?) {
        return csvrows::read_rows(reader, |line, row| match row {
            csvrows::Row::Json(text) => parser.frame(&Frame {
                bytes: text.as_bytes(),
                first_line: line,
                last_line: line,
                multiline: false,
                oversized: None,
            }),
            csvrows::Row::Unreadable { why, raw } => parser.quarantine_at(line, &why, &raw),
        });
    }
    let mut framer = Framer::with_max(reader, max_frame);
    while let Some(frame) = framer.next_frame()? {
        parser.frame(&frame);
    }
    Ok(framer.line())
}

/// Parses bytes held in memory: a one-line input (a Kafka message's envelope) is parsed in
/// place; anything else goes through [`parse_stream`]. Reading memory cannot fail.
pub fn parse_bytes<S: RowSink>(
    input: &[u8],
    origin: &str,
    sink: &mut S,
    max_frame: usize,
) -> ParseCounts {
    if let Some(frame) = crate::framing::single_line(input, max_frame) {
        let mut parser = Parser::new(sink, origin);
        parser.frame(&frame);
        return parser.finish();
    }
    parse_stream(input, origin, sink, max_frame).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::Framer;

    #[derive(Default)]
    struct Collect {
        events: Vec<(String, String)>,
        activity: Vec<String>,
        quarantine: Vec<(String, String)>,
    }

    impl RowSink for Collect {
        fn event(&mut self, row: &EventRow<'_>, source: &str) {
            self.events
                .push((row.operation.to_string(), source.to_owned()));
        }
        fn activity(&mut self, row: &ActivityRow, _source: &str) {
            self.activity.push(row.operation.clone());
        }
        fn quarantine(&mut self, source: &str, reason: &str, _raw: &str) {
            self.quarantine.push((source.to_owned(), reason.to_owned()));
        }
    }

    fn run(input: &str) -> (Collect, ParseCounts) {
        let mut sink = Collect::default();
        let mut p = Parser::new(&mut sink, "f");
        let mut fr = Framer::new(input.as_bytes());
        while let Some(f) = fr.next_frame().unwrap() {
            p.frame(&f);
        }
        let c = p.finish();
        (sink, c)
    }

    const REC: &str = r#"{"time":"2024-05-01T13:05:17.4111792Z","category":"AuditEvent","operationName":"SecretGet","resourceId":"/SUBSCRIPTIONS/S/RESOURCEGROUPS/G/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/KV","properties":{"httpStatusCode":200}}"#;

    #[test]
    fn envelopes_fan_out_with_sources() {
        let input =
            format!("{{\"records\":[{REC},{REC}]}}{{\"records\":[{REC}]}}\n[{REC}]\n{REC}\n");
        let (s, c) = run(&input);
        assert_eq!(c.events, 5);
        assert_eq!(s.events[1].1, "f:1#1");
        assert_eq!(s.events[4].1, "f:3");
    }

    #[test]
    fn bad_inputs_are_quarantined_with_reasons() {
        let bad_time = REC.replace("2024-05-01T13:05:17.4111792Z", "yesterday");
        let bad_type = REC.replace("{\"httpStatusCode\":200}", "{\"httpStatusCode\":{\"x\":1}}");
        let input = format!(
            "{REC}\nnot json at all\n{{\"records\": 5}}\n{}\n{bad_time}\n{bad_type}\n{{\"category\":\"Other\",\"operationName\":\"X\"}}\n{REC}\n",
            &REC[..40]
        );
        let (s, c) = run(&input);
        assert_eq!(c.events, 2);
        assert_eq!(c.quarantined, 6, "{:?}", s.quarantine);
        assert_eq!(c.other_category, 1);
        let reasons: Vec<&str> = s.quarantine.iter().map(|q| q.1.as_str()).collect();
        assert!(reasons[0].starts_with("invalid JSON"), "{reasons:?}");
        assert!(
            reasons[1].contains("`records` is not an array"),
            "{reasons:?}"
        );
        assert!(reasons[2].starts_with("truncated JSON"), "{reasons:?}");
        assert!(reasons[3].contains("invalid time"), "{reasons:?}");
        assert!(reasons[4].contains("httpStatusCode"), "{reasons:?}");
        assert!(
            reasons[5].contains("unsupported category: Other"),
            "{reasons:?}"
        );
        assert_eq!(s.quarantine[0].0, "f:2");
    }

    #[test]
    fn damaged_pretty_envelope_salvages_compact_records() {
        let input = format!("{{\n\"records\": [\n{REC},\n{{\"time\": \"broken\n{REC}\n]}}\n");
        let (s, c) = run(&input);
        assert_eq!(c.events, 2, "{:?}", s.quarantine);
        assert!(c.quarantined >= 1);
    }
}
