//! The report as one self-contained HTML file: inline CSS, charts as inline SVG, no scripts,
//! fonts or external resources, readable on paper.

use super::defs::Chart;
use super::{Report, Table};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Nanoseconds since the epoch as `2024-05-08 09:13:00 UTC` (reports and console print
/// times to the second with the zone; CSV and JSON keep the exact value).
pub fn when(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ns.to_string())
}

/// An RFC 3339 text (as the stores print it) in the form of [`when`]; other text unchanged.
pub fn when_text(s: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(s) {
        Ok(t) => when(t.timestamp() * 1_000_000_000),
        Err(_) => s.to_owned(),
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A share (0..1) as a percentage: `0.8712` → `87.1 %`.
pub fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p != 0.0 && p.abs() < 0.1 {
        "< 0.1 %".to_owned()
    } else if (p - p.round()).abs() < 0.05 {
        format!("{:.0} %", p)
    } else {
        format!("{:.1} %", p)
    }
}

/// A value for people: numbers with separators, timestamps to the second, lists joined.
pub fn human(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) if s.len() >= 20 && s.as_bytes().get(4) == Some(&b'-') => when_text(s),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => thousands(i),
            None => n
                .as_f64()
                .map_or_else(|| n.to_string(), |f| format!("{f:.3}")),
        },
        Value::Array(a) => a.iter().map(human).collect::<Vec<_>>().join(", "),
        Value::Object(_) => v.to_string(),
    }
}

/// A headline number: a share as a percentage, a count with separators.
fn metric_text(label: &str, v: &Value) -> String {
    match v.as_f64() {
        Some(f) if label.to_ascii_lowercase().starts_with("share") && (0.0..=1.0).contains(&f) => {
            percent(f)
        }
        _ => human(v),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        other => other.to_string(),
    }
}

pub const PALETTE: [&str; 9] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22",
];

/// A stacked bar chart: one bar per category, one colour per series.
pub fn stacked_bars(
    title: &str,
    cats: &[String],
    series: &[(String, Vec<f64>)],
    colors: &[&str],
) -> String {
    let (w, h, left, bottom, top) = (760.0, 260.0, 50.0, 40.0, 20.0);
    let plot_h = h - bottom - top;
    let totals: Vec<f64> = (0..cats.len())
        .map(|i| series.iter().map(|(_, v)| v[i]).sum())
        .collect();
    let max = totals.iter().cloned().fold(0.0, f64::max).max(1.0);
    let bw = ((w - left - 10.0) / cats.len().max(1) as f64).min(60.0);
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {w} {h}" width="100%" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    for t in 0..=4 {
        let v = max * f64::from(t) / 4.0;
        let y = top + plot_h - plot_h * f64::from(t) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
            w - 5.0,
            left - 4.0,
            y + 3.0,
            v.round()
        );
    }
    for (i, c) in cats.iter().enumerate() {
        let x = left + i as f64 * bw + 2.0;
        let mut y = top + plot_h;
        for (si, (name, vals)) in series.iter().enumerate() {
            let bh = plot_h * vals[i] / max;
            if bh > 0.0 {
                y -= bh;
                let _ = write!(
                    svg,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{bh:.1}" fill="{}"><title>{} {}: {}</title></rect>"#,
                    (bw - 4.0).max(1.0),
                    colors[si % colors.len()],
                    esc(c),
                    esc(name),
                    vals[i]
                );
            }
        }
        if cats.len() <= 31 || i % (cats.len() / 15 + 1) == 0 {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{}" font-size="9" text-anchor="middle">{}</text>"#,
                x + bw / 2.0 - 2.0,
                h - bottom + 14.0,
                esc(c.get(5..10).unwrap_or(c))
            );
        }
    }
    svg.push_str("</svg><div class=\"legend\">");
    for (si, (name, _)) in series.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<span><svg width="10" height="10" aria-hidden="true"><rect width="10" height="10" fill="{}"/></svg> {}</span>"#,
            colors[si % colors.len()],
            esc(name)
        );
    }
    svg.push_str("</div></figure>");
    svg
}

/// Horizontal bars, largest first.
fn ranking(title: &str, items: &[(String, f64)]) -> String {
    let row = 18.0;
    let (w, left) = (760.0, 260.0);
    let h = row * items.len() as f64 + 10.0;
    let max = items.iter().map(|i| i.1).fold(0.0, f64::max).max(1.0);
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {w} {h}" width="100%" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    for (i, (label, v)) in items.iter().enumerate() {
        let y = 5.0 + i as f64 * row;
        let bw = (w - left - 60.0) * v / max;
        let short: String = label.chars().take(40).collect();
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text><rect x="{left}" y="{y:.1}" width="{bw:.1}" height="{:.1}" fill="#1f77b4"/><text x="{:.1}" y="{:.1}" font-size="11">{v}</text>"##,
            left - 6.0,
            y + 12.0,
            esc(&short),
            row - 4.0,
            left + bw + 4.0,
            y + 12.0
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// Pivots `day, <series>, <value>` rows into categories and series (top `keep` series by
/// total, the rest as "other").
fn pivot(
    t: &Table,
    category_col: &str,
    series_col: &str,
    value_col: &str,
    keep: usize,
) -> (Vec<String>, Vec<(String, Vec<f64>)>) {
    let mut days: Vec<String> = Vec::new();
    let mut cells: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut totals: BTreeMap<String, f64> = BTreeMap::new();
    for r in &t.rows {
        let day = text(r.get(category_col).unwrap_or(&Value::Null));
        let day = day.get(..10).unwrap_or(&day).to_owned();
        let s = text(r.get(series_col).unwrap_or(&Value::Null));
        let v = r.get(value_col).and_then(Value::as_f64).unwrap_or(0.0);
        if !days.contains(&day) {
            days.push(day.clone());
        }
        *cells.entry((day, s.clone())).or_default() += v;
        *totals.entry(s).or_default() += v;
    }
    days.sort();
    let mut names: Vec<(String, f64)> = totals.into_iter().collect();
    names.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let kept: Vec<String> = names.iter().take(keep).map(|n| n.0.clone()).collect();
    let mut series: Vec<(String, Vec<f64>)> = kept
        .iter()
        .map(|n| {
            let vals = days
                .iter()
                .map(|d| cells.get(&(d.clone(), n.clone())).copied().unwrap_or(0.0))
                .collect();
            (n.clone(), vals)
        })
        .collect();
    if names.len() > keep {
        let vals = days
            .iter()
            .map(|d| {
                cells
                    .iter()
                    .filter(|((day, s), _)| day == d && !kept.contains(s))
                    .map(|(_, v)| v)
                    .sum()
            })
            .collect();
        series.push(("other".into(), vals));
    }
    (days, series)
}

/// The chart a table's definition asks for, if any.
fn chart_html(out: &mut String, t: &Table) {
    match &t.chart {
        None => {}
        Some(Chart::StackedBars {
            title,
            category,
            series,
            value,
            max_series,
            order,
            colours,
        }) => {
            let (cats, mut data) = pivot(t, category, series, value, *max_series);
            if !order.is_empty() {
                data.sort_by_key(|(n, _)| order.iter().position(|o| o == n).unwrap_or(usize::MAX));
            }
            let colours: Vec<&str> = if colours.is_empty() {
                PALETTE.to_vec()
            } else {
                colours.iter().map(String::as_str).collect()
            };
            if !cats.is_empty() {
                out.push_str(&stacked_bars(title, &cats, &data, &colours));
            }
        }
        Some(Chart::Ranking {
            title,
            label,
            value,
            top,
        }) => {
            let items: Vec<(String, f64)> = t
                .rows
                .iter()
                .take(*top)
                .map(|r| {
                    (
                        text(r.get(label).unwrap_or(&Value::Null)),
                        r.get(value).and_then(Value::as_f64).unwrap_or(0.0),
                    )
                })
                .collect();
            if !items.is_empty() {
                out.push_str(&ranking(title, &items));
            }
        }
    }
}

fn table_html(out: &mut String, t: &Table, max: usize) {
    let _ = write!(out, "<h3>{}</h3>", esc(&t.title));
    if t.rows.is_empty() {
        out.push_str("<p class=\"none\">None in this period.</p>");
    } else {
        out.push_str("<table><thead><tr>");
        for c in &t.columns {
            let _ = write!(out, "<th>{}</th>", esc(c));
        }
        out.push_str("</tr></thead><tbody>");
        for r in t.rows.iter().take(max) {
            let flagged = r.get("human_on_production") == Some(&Value::Bool(true));
            out.push_str(if flagged {
                "<tr class=\"flag\">"
            } else {
                "<tr>"
            });
            for c in &t.columns {
                let v = r.get(c).unwrap_or(&Value::Null);
                let cls = if v.is_number() { " class=\"n\"" } else { "" };
                let _ = write!(out, "<td{cls}>{}</td>", esc(&human(v)));
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table>");
        if t.total_rows > max.min(t.rows.len()) {
            let _ = write!(
                out,
                "<p class=\"note\">Showing {} of {} rows; the JSON and CSV outputs carry up to the row limit.</p>",
                max.min(t.rows.len()),
                t.total_rows
            );
        }
    }
    let _ = write!(
        out,
        "<details><summary>SQL</summary><pre>{}</pre></details>",
        esc(&t.sql)
    );
}

/// The look of reports, which the console shares.
pub const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}\
h1{margin-bottom:.2em}h2{border-bottom:2px solid #1f77b4;padding-bottom:.2em;margin-top:2em}\
.meta{color:#555}.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}\
.card{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;min-width:10em}.card b{display:block;font-size:1.5em}\
table{border-collapse:collapse;width:100%;font-size:.8em;margin:.5em 0}th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}\
th{background:#f3f6fa}td.n{text-align:right;font-variant-numeric:tabular-nums}tr.flag td{background:#fde8e8}\
.legend span{margin-right:1em;font-size:.8em}.legend i{display:inline-block;width:.8em;height:.8em;margin-right:.3em}\
figure{margin:1em 0;max-width:100%;overflow-x:auto}figcaption{font-weight:600}pre{white-space:pre-wrap;font-size:.75em;background:#f7f7f7;padding:.5em}\
.none,.note{color:#666;font-size:.85em}\
@media print{details{display:none}h2{page-break-before:always}h2:first-of-type{page-break-before:avoid}tr{page-break-inside:avoid}}";

/// Renders the report.
pub fn render(r: &Report) -> String {
    let mut out = String::with_capacity(1 << 16);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} — kvwatch</title><style>{CSS}</style></head><body>",
        esc(&r.title)
    );
    let _ = write!(
        out,
        "<h1>{}</h1><p class=\"meta\">Period {} to {} · generated {} by kvwatch {} · vaults: {}</p>",
        esc(&r.title),
        esc(&when_text(&r.from)),
        esc(&when_text(&r.to)),
        esc(&when_text(&r.generated_at)),
        env!("CARGO_PKG_VERSION"),
        if r.vaults.is_empty() {
            "all".to_owned()
        } else {
            esc(&r.vaults.join(", "))
        }
    );
    out.push_str("<div class=\"cards\">");
    // A number two sections both headline (denied requests, say) is one tile.
    let mut shown = std::collections::HashSet::new();
    for m in r
        .summary
        .iter()
        .chain(r.sections.iter().flat_map(|s| s.summary.iter()))
        .filter(|m| shown.insert((m.label.clone(), m.value.to_string())))
    {
        let _ = write!(
            out,
            "<div class=\"card\" title=\"{}\"><b>{}</b>{}</div>",
            esc(&m.sql),
            esc(&metric_text(&m.label, &m.value)),
            esc(&m.label)
        );
    }
    out.push_str("</div>");
    for t in &r.overview {
        chart_html(&mut out, t);
    }
    for s in &r.sections {
        let _ = write!(
            out,
            "<h2 id=\"{}\">{}</h2><p>{}</p>",
            esc(&s.id),
            esc(&s.title),
            esc(&s.description)
        );
        for t in &s.tables {
            chart_html(&mut out, t);
        }
        for t in &s.tables {
            table_html(&mut out, t, 200);
        }
    }
    out.push_str("</body></html>\n");
    out
}
