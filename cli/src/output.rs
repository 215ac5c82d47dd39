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
