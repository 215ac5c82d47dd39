//! Lenient, allocation-light access to JSON objects.
//!
//! Key Vault records are parsed in two steps: first the object is split into `(key, raw value)`
//! pairs without interpreting any value ([`RawObject`], see [`crate::scan`]), then each value we map is decoded with a
//! small typed decoder that accepts the quirks Azure actually emits (numbers as strings, `null`
//! for absent, objects wrapping a `value`). Splitting first lets one pass route a record (audit
//! event, activity log, envelope) before committing to a shape, and lets every unmapped key be
//! kept verbatim instead of being lost.

pub use crate::scan::{Raw, RawObject, SyntaxError};
use std::borrow::Cow;
use std::fmt;

/// Why a mapped field could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub expected: &'static str,
    pub found: String,
}

impl std::error::Error for FieldError {}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "field `{}`: expected {}, found {}",
            self.field, self.expected, self.found
        )
    }
}

fn err(field: &str, expected: &'static str, raw: Raw<'_>) -> FieldError {
    let text = raw.get();
    let found = if text.len() > 40 {
        format!("{} {}…", raw.kind(), &text[..text.floor_char_boundary(40)])
    } else {
        format!("{} {}", raw.kind(), text)
    };
    FieldError {
        field: field.to_owned(),
        expected,
        found,
    }
}

/// Decodes a string; numbers and booleans are accepted as their text, `null` and `""` are absent.
pub fn opt_str<'a>(field: &str, raw: Raw<'a>) -> Result<Option<Cow<'a, str>>, FieldError> {
    if let Some(s) = raw.plain_str() {
        return Ok((!s.is_empty()).then_some(Cow::Borrowed(s)));
    }
    let t = raw.get();
    let b = t.as_bytes();
    match b.first() {
        // A string with escapes (plain ones were borrowed above).
        Some(b'"') => {
            let s: String = serde_json::from_str(t).map_err(|_| err(field, "a string", raw))?;
            Ok((!s.is_empty()).then_some(Cow::Owned(s)))
        }
        Some(b'n') => Ok(None),
        Some(b'{') | Some(b'[') => Err(err(field, "a string", raw)),
        Some(_) => Ok(Some(Cow::Borrowed(t))),
        None => Ok(None),
    }
}

/// Decodes a string that may also be wrapped as `{"value": "...", "localizedValue": ...}`, the
/// shape Activity Log REST exports use for `operationName`, `category` and `status`.
pub fn opt_str_or_value<'a>(field: &str, raw: Raw<'a>) -> Result<Option<Cow<'a, str>>, FieldError> {
    if raw.get().starts_with('{') {
        let obj = RawObject::of(raw).map_err(|_| err(field, "a string", raw))?;
        match obj.get("value") {
            Some(v) => opt_str(field, v),
            None => Err(err(field, "a string or {\"value\": string}", raw)),
        }
    } else {
        opt_str(field, raw)
    }
}

/// Decodes an integer from a JSON number or a numeric string (`"78"`); fractions are truncated.
pub fn opt_i64(field: &str, raw: Raw<'_>) -> Result<Option<i64>, FieldError> {
    let t = raw.get();
    let num = match t.as_bytes().first() {
        Some(b'n') => return Ok(None),
        Some(b'"') => {
            let inner = t[1..t.len() - 1].trim();
            if inner.is_empty() {
                return Ok(None);
            }
            inner
        }
        Some(b'{') | Some(b'[') | Some(b't') | Some(b'f') => {
            return Err(err(field, "a number or numeric string", raw));
        }
        _ => t,
    };
    if let Ok(v) = num.parse::<i64>() {
        return Ok(Some(v));
    }
    match num.parse::<f64>() {
        Ok(f) if f.is_finite() && f.abs() < 9.0e18 => Ok(Some(f as i64)),
        _ => Err(err(field, "a number or numeric string", raw)),
    }
}

/// Decodes a boolean from `true`/`false` or their string forms.
pub fn opt_bool(field: &str, raw: Raw<'_>) -> Result<Option<bool>, FieldError> {
    match raw.get() {
        "true" => Ok(Some(true)),
        "false" => Ok(Some(false)),
        "null" => Ok(None),
        t if t.eq_ignore_ascii_case("\"true\"") => Ok(Some(true)),
        t if t.eq_ignore_ascii_case("\"false\"") => Ok(Some(false)),
        "\"\"" => Ok(None),
        _ => Err(err(field, "a boolean", raw)),
    }
}

/// An object value as found: the value itself, or the text of the object a JSON string held.
#[derive(Debug)]
pub enum ObjectText<'a> {
    /// Already validated with the record.
    Raw(Raw<'a>),
    /// Decoded from a string, not validated yet.
    Decoded(String),
}

impl ObjectText<'_> {
    pub fn text(&self) -> &str {
        match self {
            ObjectText::Raw(r) => r.get(),
            ObjectText::Decoded(s) => s,
        }
    }

    /// Splits the object into members (validating it when it came from a string).
    pub fn split(&self) -> Result<RawObject<'_>, SyntaxError> {
        match self {
            ObjectText::Raw(r) => RawObject::of(*r),
            ObjectText::Decoded(s) => RawObject::parse(s),
        }
    }
}

/// Decodes an object; a JSON string holding an object (as Managed HSM emits `identity`, and the
/// Activity Log emits `requestbody`) is unwrapped. `null` is absent.
pub fn opt_object_text<'a>(
    field: &str,
    raw: Raw<'a>,
) -> Result<Option<ObjectText<'a>>, FieldError> {
    let t = raw.get();
    match t.as_bytes().first() {
        Some(b'{') => Ok(Some(ObjectText::Raw(raw))),
        Some(b'n') => Ok(None),
        Some(b'"') => {
            let s: String = serde_json::from_str(t).map_err(|_| err(field, "an object", raw))?;
            let trimmed = s.trim();
            if trimmed.is_empty() {
                Ok(None)
            } else if trimmed.starts_with('{') {
                Ok(Some(ObjectText::Decoded(s)))
            } else {
                Err(err(field, "an object or a JSON-encoded object", raw))
            }
        }
        _ => Err(err(field, "an object", raw)),
    }
}

/// Decodes a list of strings from a JSON array, a JSON-encoded array in a string, or a
/// comma-separated string. Non-string elements are kept as their JSON text.
pub fn str_list(field: &str, raw: Raw<'_>) -> Result<Vec<String>, FieldError> {
    let t = raw.get();
    match t.as_bytes().first() {
        Some(b'n') => Ok(Vec::new()),
        Some(b'[') => {
            let items =
                crate::scan::array_items(raw).map_err(|_| err(field, "a list of strings", raw))?;
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                if let Some(s) = opt_str(field, it)? {
                    out.push(s.into_owned());
                }
            }
            Ok(out)
        }
        Some(b'"') => {
            let s: String =
                serde_json::from_str(t).map_err(|_| err(field, "a list of strings", raw))?;
            let s = s.trim();
            if s.starts_with('[') {
                let inner: Vec<String> =
                    serde_json::from_str(s).map_err(|_| err(field, "a list of strings", raw))?;
                return Ok(inner);
            }
            Ok(s.split([',', ';', ' '])
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect())
        }
        _ => Err(err(field, "a list of strings", raw)),
    }
}

/// Appends `"key":raw` to a JSON object being built in `out`: empty means no member yet, and
/// the caller closes the object with `}` when it is not empty.
pub fn push_member(out: &mut String, key: &str, value: &str) {
    out.push(if out.is_empty() { '{' } else { ',' });
    if key.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\') {
        out.push('"');
        out.push_str(key);
        out.push('"');
    } else {
        // Keys come from parsed JSON, so serialising a &str cannot fail.
        out.push_str(&serde_json::to_string(key).unwrap_or_else(|_| "\"?\"".into()));
    }
    out.push(':');
    out.push_str(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Raw<'_> {
        Raw::parse(s).unwrap()
    }

    #[test]
    fn numbers_from_strings_and_numbers() {
        assert_eq!(opt_i64("d", raw("\"78\"")).unwrap(), Some(78));
        assert_eq!(opt_i64("d", raw("488")).unwrap(), Some(488));
        assert_eq!(opt_i64("d", raw("12.9")).unwrap(), Some(12));
        assert_eq!(opt_i64("d", raw("null")).unwrap(), None);
        let e = opt_i64("durationMs", raw("{\"a\":1}")).unwrap_err();
        assert!(e.to_string().contains("durationMs"), "{e}");
        assert!(opt_i64("d", raw("\"abc\"")).is_err());
    }

    #[test]
    fn strings_borrow_without_escapes() {
        let r = raw("\"plain\"");
        assert!(matches!(
            opt_str("s", r).unwrap(),
            Some(Cow::Borrowed("plain"))
        ));
        let r = raw("\"a\\\"b\"");
        assert_eq!(opt_str("s", r).unwrap().unwrap(), "a\"b");
        assert_eq!(opt_str("s", raw("\"\"")).unwrap(), None);
        assert!(opt_str("s", raw("[1]")).is_err());
        assert_eq!(
            opt_str_or_value("op", raw("{\"value\":\"X/Y\",\"localizedValue\":\"z\"}"))
                .unwrap()
                .unwrap(),
            "X/Y"
        );
    }

    #[test]
    fn lists_in_every_spelling() {
        assert_eq!(
            str_list("p", raw("[\"get\",\"list\"]")).unwrap(),
            ["get", "list"]
        );
        assert_eq!(
            str_list("p", raw("\"get, list\"")).unwrap(),
            ["get", "list"]
        );
        assert_eq!(str_list("p", raw("\"[\\\"get\\\"]\"")).unwrap(), ["get"]);
        assert!(str_list("p", raw("5")).is_err());
    }

    #[test]
    fn object_from_encoded_string() {
        let r = raw("\"{\\\"claim\\\":{}}\"");
        assert_eq!(
            opt_object_text("identity", r).unwrap().unwrap().text(),
            "{\"claim\":{}}"
        );
        assert!(opt_object_text("identity", raw("\"nope\"")).is_err());
    }
}
