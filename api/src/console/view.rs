//! The console's one look: the page layout, human formats, the result table every page
//! uses, and the stylesheet and script (compiled in; the CSP allows nothing else).

use crate::auth::Role;
use crate::session::Session;
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

pub use crate::report::html::{human as cell, percent, thousands, when, when_text};

/// Percent-encodes one URL path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The link of an entity page, when the column names an entity.
pub fn entity_link(column: &str, value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    let kind = match column {
        "vault" | "vaults" => "vaults",
        "caller_ip" | "ip" | "ips" | "caller_ip_address" => "ips",
        "principal" | "principal_upn" | "principal_oid" | "principals" | "caller"
        | "granted_by" | "granted_to" | "grantee_oid" => "principals",
        _ => return None,
    };
    Some(format!("/{kind}/{}", enc(value)))
}

/// Rows (objects) as a table; entity columns are links.
pub fn table(columns: &[String], rows: &[Value], caption: Option<&str>) -> Markup {
    html! {
        @if rows.is_empty() {
            p.none { "No rows." }
        } @else {
            div.scroll {
                table {
                    @if let Some(c) = caption { caption { (c) } }
                    thead { tr { @for c in columns { th scope="col" { (c) } } } }
                    tbody {
                        @for r in rows {
                            tr {
                                @for c in columns {
                                    @let v = r.get(c).unwrap_or(&Value::Null);
                                    @let text = cell(v);
                                    @if v.is_number() {
                                        td.n { (text) }
                                    } @else if let Some(href) = v.as_str().and_then(|s| entity_link(c, s)) {
                                        td { a href=(href) { (text) } }
                                    } @else {
                                        td { (text) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A severity as a badge: the word is always printed, the colour only helps.
pub fn severity(s: &str) -> Markup {
    let s = s.to_ascii_lowercase();
    html! { span class={ "sev sev-" (s) } { (s) } }
}

/// The page frame: navigation, who is signed in, sign-out.
pub fn page(title: &str, sess: Option<&Session>, active: &str, body: Markup) -> Markup {
    let nav: &[(&str, &str, Role)] = &[
        ("alerts", "Alerts", Role::Reader),
        ("workbench", "Workbench", Role::Analyst),
        ("reports", "Reports", Role::Reader),
        ("rules", "Rules", Role::Reader),
        ("health", "Health", Role::Reader),
        ("admin", "Admin", Role::Admin),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — kvwatch" }
                link rel="stylesheet" href="/static/kvwatch.css";
                link rel="icon" href="/static/favicon.svg" type="image/svg+xml";
                script src="/static/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/alerts" { "kvwatch" }
                    @if let Some(s) = sess {
                        nav aria-label="Main" {
                            @for (id, label, need) in nav {
                                @if s.role >= *need {
                                    @if *id == active {
                                        a href={ "/" (id) } aria-current="page" { (label) }
                                    } @else {
                                        a href={ "/" (id) } { (label) }
                                    }
                                }
                            }
                        }
                        form.who method="post" action="/logout" {
                            span { (s.name) " · " (s.role.as_str()) }
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

/// A page that says what went wrong, in the frame.
pub fn problem(sess: Option<&Session>, title: &str, message: &str) -> Markup {
    page(
        title,
        sess,
        "",
        html! { h1 { (title) } p.error role="alert" { (message) } },
    )
}

/// The stylesheet: the reports' look plus the console's parts.
pub fn stylesheet() -> String {
    format!("{}{}", crate::report::html::CSS, CONSOLE_CSS)
}

const CONSOLE_CSS: &str = "\
body{max-width:none;margin:0;padding:0}main{padding:0 1.5em 2em;max-width:1400px;margin:0 auto}\
.skip{position:absolute;left:-999px}.skip:focus{left:1em;top:.5em;background:#fff;padding:.3em;z-index:9}\
header.top{display:flex;align-items:center;gap:1.5em;background:#14365d;color:#fff;padding:.5em 1.5em;flex-wrap:wrap}\
header.top a{color:#fff;text-decoration:none}header.top a.brand{font-weight:700;font-size:1.2em}\
header.top nav{display:flex;gap:1em;flex:1}header.top nav a[aria-current]{border-bottom:2px solid #fff}\
header.top nav a:focus,header.top nav a:hover{text-decoration:underline}\
form.who{display:flex;gap:.6em;align-items:center;font-size:.85em}\
button,input,select,textarea{font:inherit;font-size:.9em}button{cursor:pointer;padding:.25em .8em;border:1px solid #14365d;background:#14365d;color:#fff;border-radius:4px}\
button.plain{background:#fff;color:#14365d}\
a.button{display:inline-block;padding:.25em .8em;border:1px solid #14365d;border-radius:4px;text-decoration:none}\
:focus-visible{outline:3px solid #ff7f0e;outline-offset:1px}\
.sev{display:inline-block;padding:0 .45em;border-radius:3px;font-size:.85em;font-weight:600;border:1px solid}\
.sev-critical{background:#6b0f1a;color:#fff;border-color:#6b0f1a}.sev-high{background:#fde0e0;color:#8a1010;border-color:#d62728}\
.sev-medium{background:#fff1dc;color:#7a4100;border-color:#ff7f0e}.sev-low{background:#e8f1fb;color:#14365d;border-color:#1f77b4}\
.sev-informational{background:#f3f3f3;color:#333;border-color:#999}\
form.filters{display:flex;flex-wrap:wrap;gap:.5em 1em;align-items:end;margin:.8em 0;padding:.6em;background:#f3f6fa;border-radius:6px}\
form.filters label{display:flex;flex-direction:column;font-size:.8em;gap:.15em}\
.bulk{display:flex;gap:.6em;align-items:center;margin:.5em 0;flex-wrap:wrap}\
table.queue tr[aria-selected=true] td,table.queue tr:focus-within td{background:#fff7e0}\
table.queue td.sum{max-width:40em}.scroll{overflow-x:auto}\
.banner{background:#fff1dc;border:1px solid #ff7f0e;padding:.4em .8em;border-radius:4px;margin:.5em 0}\
.error{color:#8a1010;background:#fde0e0;padding:.5em;border-radius:4px}.ok{color:#1d5e20;background:#e3f4e4;padding:.5em;border-radius:4px}\
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(22em,1fr));gap:1em 2em}\
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em}dl.facts dt{font-weight:600}\
.workbench{display:grid;grid-template-columns:1fr 18em;gap:1em}.workbench textarea{width:100%;min-height:12em;font-family:ui-monospace,monospace}\
.schema{font-size:.8em;max-height:32em;overflow:auto;border:1px solid #ddd;padding:.4em}.schema ul{margin:.2em 0;padding-left:1.2em}\
.login{max-width:26em;margin:4em auto}.login label{display:block;margin:.8em 0 .3em}.login input{width:100%}\
.pager{display:flex;gap:1em;margin:.6em 0}.muted{color:#666}\
@media (max-width:900px){.workbench{grid-template-columns:1fr}}\
@media print{header.top,form.filters,.bulk,.pager,form.triage,button{display:none}main{padding:0}}";

/// The console's script: queue selection and keyboard moves, new alerts without reloading,
/// the workbench's keyboard run. No inline script anywhere, so the CSP can forbid it.
pub const SCRIPT: &str = r##""use strict";
(function () {
  function rows() { return Array.prototype.slice.call(document.querySelectorAll("table.queue tbody tr")); }
  function mark(tr) {
    var box = tr.querySelector("input[type=checkbox]");
    tr.setAttribute("aria-selected", box && box.checked ? "true" : "false");
  }
  function wire() {
    var all = document.getElementById("select-all");
    if (all) {
      all.addEventListener("change", function () {
        rows().forEach(function (tr) { var b = tr.querySelector("input[type=checkbox]"); if (b) { b.checked = all.checked; mark(tr); } });
      });
    }
    rows().forEach(function (tr) {
      var b = tr.querySelector("input[type=checkbox]");
      if (b) b.addEventListener("change", function () { mark(tr); });
    });
  }
  wire();
  // j/k move through the queue, x selects, o or Enter opens.
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (t && (t.tagName === "INPUT" && t.type !== "checkbox" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) {
      if (t.tagName === "TEXTAREA" && e.key === "Enter" && (e.ctrlKey || e.metaKey) && t.form) { t.form.requestSubmit(); }
      return;
    }
    var rs = rows();
    if (!rs.length) return;
    var i = rs.findIndex(function (tr) { return tr.contains(document.activeElement); });
    var go = function (j) { var a = rs[Math.max(0, Math.min(rs.length - 1, j))].querySelector("a.open"); if (a) a.focus(); };
    if (e.key === "j") { go(i + 1); e.preventDefault(); }
    else if (e.key === "k") { go(i < 0 ? 0 : i - 1); e.preventDefault(); }
    else if (e.key === "x" && i >= 0) { var b = rs[i].querySelector("input[type=checkbox]"); if (b) { b.checked = !b.checked; mark(rs[i]); } }
    else if (e.key === "o" && i >= 0) { var a = rs[i].querySelector("a.open"); if (a) a.click(); }
  });
  // New alerts: poll the store's change counter; refresh the rows in place unless the
  // analyst has selected some (then say how many changed and let them refresh).
  var q = document.querySelector("table.queue");
  if (q && q.dataset.head && Number(q.dataset.poll) > 0) {
    var head = Number(q.dataset.head);
    var busy = false;
    setInterval(function () {
      if (busy || document.hidden) return;
      busy = true;
      fetch("/console/head", { credentials: "same-origin" }).then(function (r) { return r.ok ? r.json() : null; }).then(function (j) {
        if (!j || j.head <= head) return;
        var selected = document.querySelectorAll("table.queue tbody input:checked").length > 0;
        var banner = document.getElementById("fresh");
        if (selected) {
          banner.textContent = "New or changed alerts: refresh to see them.";
          banner.hidden = false;
          return;
        }
        return fetch(location.href, { credentials: "same-origin" }).then(function (r) { return r.text(); }).then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          ["table.queue tbody", "#counts"].forEach(function (sel) {
            var a = document.querySelector(sel), b = doc.querySelector(sel);
            if (a && b) a.replaceWith(b);
          });
          head = j.head;
          banner.textContent = "Updated " + new Date().toLocaleTimeString() + ".";
          banner.hidden = false;
          wire();
        });
      }).catch(function () {}).then(function () { busy = false; });
    }, Number(q.dataset.poll));
  }
})();
"##;

/// A small shield, so the tab is recognisable.
pub const FAVICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><path d="M8 1l6 2v5c0 3.5-2.6 6-6 7-3.4-1-6-3.5-6-7V3z" fill="#14365d"/><path d="M5 8l2 2 4-4" stroke="#fff" stroke-width="1.6" fill="none"/></svg>"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_formats() {
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(-1000), "-1,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(percent(0.8712), "87.1 %");
        assert_eq!(percent(0.5), "50 %");
        assert_eq!(percent(0.0001), "< 0.1 %");
        assert_eq!(when(1_715_159_580_123_456_789), "2024-05-08 09:13:00 UTC");
        assert_eq!(
            when_text("2024-05-08T09:13:00.1234567Z"),
            "2024-05-08 09:13:00 UTC"
        );
        assert_eq!(cell(&serde_json::json!(12345)), "12,345");
        assert_eq!(enc("a b/c@d"), "a%20b%2Fc%40d");
        assert_eq!(
            entity_link("vault", "pay-kv").as_deref(),
            Some("/vaults/pay-kv")
        );
        assert_eq!(entity_link("operation", "SecretGet"), None);
    }
}
