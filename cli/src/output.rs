//! Rendering results for people (tables) and machines (CSV, JSON).

use anyhow::Result;
use clap::ValueEnum;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use serde::Deserialize;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Table,
    Csv,
    Json,
}

/// Writes query results in the chosen format. JSON is one array of objects keyed by column name.
pub fn write_batches(out: &mut dyn Write, batches: &[RecordBatch], format: Format) -> Result<()> {
    match format {
        Format::Table => {
            if batches.iter().all(|b| b.num_rows() == 0) {
                let cols: Vec<String> = kvwatch_ingest::query::column_names(batches);
                writeln!(out, "(no rows) {}", cols.join(", "))?;
            } else {
                writeln!(out, "{}", pretty_format_batches(batches)?)?;
            }
        }
        Format::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            let mut wrote = false;
            for b in batches {
                if b.num_rows() > 0 || !wrote {
                    w.write(b)?;
                    wrote = true;
                }
            }
        }
        Format::Json => {
            out.write_all(&kvwatch_ingest::query::batches_json(batches)?)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// Writes a query result; with no rows, its columns still show (CSV header, table note).
pub fn write_result(
    out: &mut dyn Write,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
    format: Format,
) -> Result<()> {
    if batches.is_empty() {
        return write_batches(out, &[RecordBatch::new_empty(schema.clone())], format);
    }
    write_batches(out, batches, format)
}

/// A two-column key/value table for summaries.
pub fn kv_table(out: &mut dyn Write, rows: &[(&str, String)]) -> Result<()> {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        writeln!(out, "  {k:<w$}  {v}")?;
    }
    Ok(())
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Log fields as `name=value`, every value with its control characters escaped (`\n`, `\r`,
/// `\u{1b}`…), so a value that holds a newline (an analyst's statement, a name read from the
/// logs) stays on its line and cannot pass for a log line of its own.
pub fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(write_escaped_field).delimited(" ")
}

fn write_escaped_field(
    w: &mut tracing_subscriber::fmt::format::Writer<'_>,
    field: &tracing::field::Field,
    value: &dyn std::fmt::Debug,
) -> std::fmt::Result {
    let text = format!("{value:?}");
    if field.name() != "message" {
        write!(w, "{}=", field.name())?;
    }
    w.write_str(&escape_controls(&text))
}

/// `text` with control characters (and the Unicode line and paragraph separators) written
/// as escapes.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !text.chars().any(bad) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if bad(c) => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain"), "plain");
        assert_eq!(
            escape_controls("a\n2026-01-01 INFO api.call\r\u{1b}[2J\u{2028}"),
            "a\\n2026-01-01 INFO api.call\\r\\u{1b}[2J\\u{2028}"
        );
    }
}
