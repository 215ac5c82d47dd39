//! A validating JSON splitter: one pass over a text checks that it is well-formed JSON and
//! returns an object's members or an array's items as undecoded text ([`Raw`]).
//!
//! Why not serde_json: a record used to be split by serde_json, then its `properties`,
//! `identity` and `identity.claim` were split again, and each split re-validated every byte
//! through the generic `Deserializer` machinery: about half of the whole parse cost. Here a
//! record is validated once, at the top, and a [`Raw`] can only be made from validated text,
//! so splitting a nested value again only has to find where its members end.
//!
//! What is accepted is what serde_json accepts (RFC 8259: no trailing commas, no comments,
//! no control characters in strings, `\u` escapes with four hex digits, no leading zeros),
//! which a property test checks against serde_json itself; nesting deeper than
//! [`MAX_DEPTH`] is refused.

use std::borrow::Cow;
use std::fmt;

/// Deepest nesting accepted. Key Vault records nest four levels; this only bounds garbage.
pub const MAX_DEPTH: usize = 1024;

/// The text of one well-formed JSON value (no surrounding whitespace). Only this module
/// makes them, from text it has validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw<'a> {
    text: &'a str,
    /// A string with backslash escapes (always false for other values): the scanner has
    /// seen every byte already, so decoding need not look for them again.
    escapes: bool,
}

impl<'a> Raw<'a> {
    /// Validates `text` as exactly one JSON value, surrounding whitespace allowed.
    pub fn parse(text: &'a str) -> Result<Raw<'a>, SyntaxError> {
        let mut s = Scanner::<true>::new(text);
        s.ws();
        let start = s.pos;
        let escapes = s.value()?;
        let end = s.pos;
        s.end()?;
        Ok(Raw {
            text: &text[start..end],
            escapes,
        })
    }

    /// The value's JSON text.
    pub fn get(self) -> &'a str {
        self.text
    }

    /// The JSON kind of the value, for messages.
    pub fn kind(self) -> &'static str {
        match self.text.as_bytes().first() {
            Some(b'"') => "string",
            Some(b'{') => "object",
            Some(b'[') => "array",
            Some(b't' | b'f') => "boolean",
            Some(b'n') => "null",
            _ => "number",
        }
    }

    /// For a string value, its contents when they need no decoding.
    pub fn plain_str(self) -> Option<&'a str> {
        match self.text.as_bytes().first() {
            Some(b'"') if !self.escapes => Some(&self.text[1..self.text.len() - 1]),
            _ => None,
        }
    }
}

/// Why a text is not well-formed JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Byte offset of the problem in the scanned text.
    pub at: usize,
    pub line: usize,
    pub column: usize,
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The text ended inside a value.
    Eof,
    /// Something else was found where this was expected.
    Expected(&'static str),
    ControlCharacter,
    InvalidEscape,
    InvalidNumber,
    TooDeep,
    TrailingCharacters,
}

impl SyntaxError {
    /// True when the text ended early (a truncated record rather than a garbled one).
    pub fn is_eof(&self) -> bool {
        self.kind == ErrorKind::Eof
    }
}

impl std::error::Error for SyntaxError {}

impl SyntaxError {
    /// What is wrong, without where.
    pub fn what(&self) -> String {
        match self.kind {
            ErrorKind::Eof => "input ends inside a value".into(),
            ErrorKind::Expected(what) => format!("expected {what}"),
            ErrorKind::ControlCharacter => "control character inside a string".into(),
            ErrorKind::InvalidEscape => "invalid escape in a string".into(),
            ErrorKind::InvalidNumber => "invalid number".into(),
            ErrorKind::TooDeep => format!("nested deeper than {MAX_DEPTH} levels"),
            ErrorKind::TrailingCharacters => "trailing characters after the value".into(),
        }
    }
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.what(),
            self.line,
            self.column
        )
    }
}

/// A JSON object split into its keys and undecoded values, in input order.
#[derive(Debug, Default)]
pub struct RawObject<'a> {
    pub fields: Vec<(Cow<'a, str>, Raw<'a>)>,
}

impl<'a> RawObject<'a> {
    /// Validates and splits `text`, which must be one JSON object.
    pub fn parse(text: &'a str) -> Result<Self, SyntaxError> {
        let mut s = Scanner::<true>::new(text);
        let obj = s.object_at_start()?;
        s.end()?;
        Ok(obj)
    }

    /// Splits a value already validated; fails only when it is not an object.
    pub fn of(raw: Raw<'a>) -> Result<Self, SyntaxError> {
        Scanner::<false>::new(raw.text).object_at_start()
    }

    /// First value under `key` (exact match).
    pub fn get(&self, key: &str) -> Option<Raw<'a>> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// First value under `key`, compared ASCII case-insensitively.
    pub fn get_ci(&self, key: &str) -> Option<Raw<'a>> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| *v)
    }
}

/// The items of a validated value; fails only when it is not an array.
pub fn array_items(raw: Raw<'_>) -> Result<Vec<Raw<'_>>, SyntaxError> {
    Scanner::<false>::new(raw.text).array_at_start()
}

/// A top-level JSON value, split one level deep in the same pass that validates it.
#[derive(Debug)]
pub enum Top<'a> {
    Object(RawObject<'a>),
    Array(Vec<Raw<'a>>),
    Other(&'static str),
}

/// The JSON values of a text, one after another (JSON Lines, concatenated envelopes, a
/// pretty-printed document). Stops after the first error.
pub struct TopValues<'a> {
    s: Scanner<'a, true>,
    failed: bool,
}

impl<'a> TopValues<'a> {
    pub fn new(text: &'a str) -> Self {
        Self {
            s: Scanner::new(text),
            failed: false,
        }
    }
}

impl<'a> Iterator for TopValues<'a> {
    /// The value and its text, or where the bad value starts and why.
    type Item = Result<(Top<'a>, &'a str), (usize, SyntaxError)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let s = &mut self.s;
        s.ws();
        let start = s.pos;
        let top = match s.peek()? {
            b'{' => s.object_at_start().map(Top::Object),
            b'[' => s.array_at_start().map(Top::Array),
            _ => s.scalar().and_then(|escapes| {
                s.scalar_end()?;
                let raw = Raw {
                    text: &s.text[start..s.pos],
                    escapes,
                };
                Ok(Top::Other(raw.kind()))
            }),
        };
        match top {
            Ok(t) => Some(Ok((t, &s.text[start..s.pos]))),
            Err(e) => {
                self.failed = true;
                Some(Err((start, e)))
            }
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `w` that is `"`, `\` or (when `CHECK`) below 0x20. Borrows
/// can set bits above a true match, never below it, so the lowest set bit is exact.
#[inline(always)]
fn specials<const CHECK: bool>(w: u64) -> u64 {
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let m = zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')));
    if CHECK {
        m | (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
    } else {
        m
    }
}

/// Nesting of the containers around the current position: one bit per level, set for
/// objects. The first 64 levels need no allocation.
struct Nesting {
    depth: usize,
    low: u64,
    high: Vec<u64>,
}

impl Nesting {
    fn new() -> Self {
        Self {
            depth: 0,
            low: 0,
            high: Vec::new(),
        }
    }
    fn word(&mut self, d: usize) -> &mut u64 {
        if d < 64 {
            return &mut self.low;
        }
        let w = d / 64 - 1;
        if self.high.len() <= w {
            self.high.resize(w + 1, 0);
        }
        &mut self.high[w]
    }
    /// The caller checks `depth < MAX_DEPTH` first.
    fn push(&mut self, object: bool) {
        let (d, b) = (self.depth, self.depth % 64);
        let w = self.word(d);
        *w = (*w & !(1 << b)) | (u64::from(object) << b);
        self.depth += 1;
    }
    fn top(&self) -> Option<bool> {
        let d = self.depth.checked_sub(1)?;
        let w = if d < 64 {
            self.low
        } else {
            self.high[d / 64 - 1]
        };
        Some((w >> (d % 64)) & 1 == 1)
    }
    fn pop(&mut self) {
        self.depth -= 1;
    }
}

/// `CHECK` = validate everything (untrusted text); without it, the text is known to be valid
/// and only value boundaries are found.
struct Scanner<'a, const CHECK: bool> {
    text: &'a str,
    b: &'a [u8],
    pos: usize,
}

impl<'a, const CHECK: bool> Scanner<'a, CHECK> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            b: text.as_bytes(),
            pos: 0,
        }
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    #[cold]
    fn error_at(&self, at: usize, kind: ErrorKind) -> SyntaxError {
        let at = at.min(self.b.len());
        let before = &self.b[..at];
        let line = before.iter().filter(|&&c| c == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |p| p + 1);
        let column = self.text[line_start..at].chars().count() + 1;
        SyntaxError {
            at,
            line,
            column,
            kind,
        }
    }

    #[cold]
    fn error(&self, kind: ErrorKind) -> SyntaxError {
        self.error_at(self.pos, kind)
    }

    /// An error at the current position: EOF when there is no more input.
    #[cold]
    fn unexpected(&self, expected: &'static str) -> SyntaxError {
        match self.peek() {
            None => self.error(ErrorKind::Eof),
            Some(_) => self.error(ErrorKind::Expected(expected)),
        }
    }

    /// Only whitespace may follow.
    fn end(&mut self) -> Result<(), SyntaxError> {
        self.ws();
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error(ErrorKind::TrailingCharacters)),
        }
    }

    /// After a top-level number or literal, serde_json requires a delimiter: `12x` is one
    /// bad value, not a number followed by garbage.
    fn scalar_end(&self) -> Result<(), SyntaxError> {
        match self.peek() {
            None
            | Some(b' ' | b'\n' | b'\r' | b'\t' | b'"' | b'[' | b']' | b'{' | b'}' | b',' | b':') => {
                Ok(())
            }
            Some(_) => Err(self.error(ErrorKind::TrailingCharacters)),
        }
    }

    /// From `i`, skips 8 bytes at a time while none is special. Every byte before the returned
    /// index is plain; the byte there is special, or fewer than 8 bytes were left to test.
    #[inline(always)]
    fn skip_plain(b: &[u8], mut i: usize) -> usize {
        while let Some(chunk) = b.get(i..i + 8) {
            let m = specials::<CHECK>(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
            if m != 0 {
                return i + (m.trailing_zeros() / 8) as usize;
            }
            i += 8;
        }
        i
    }

    /// At an opening quote: moves past the closing one and returns whether there are escapes.
    /// The common string (no escapes) stays inline.
    #[inline(always)]
    fn string(&mut self) -> Result<bool, SyntaxError> {
        let i = Self::skip_plain(self.b, self.pos + 1);
        if self.b.get(i) == Some(&b'"') {
            self.pos = i + 1;
            return Ok(false);
        }
        self.string_rest(i, false)
    }

    /// The rest of a string from `i`: escapes, control characters, the last few bytes.
    #[inline(never)]
    fn string_rest(&mut self, mut i: usize, mut escaped: bool) -> Result<bool, SyntaxError> {
        let b = self.b;
        loop {
            i = Self::skip_plain(b, i);
            let c = loop {
                match b.get(i) {
                    None => return Err(self.error_at(i, ErrorKind::Eof)),
                    Some(&c) if c == b'"' || c == b'\\' || (CHECK && c < 0x20) => break c,
                    Some(_) => i += 1,
                }
            };
            match c {
                b'"' => {
                    self.pos = i + 1;
                    return Ok(escaped);
                }
                b'\\' => {
                    escaped = true;
                    match b.get(i + 1) {
                        None => return Err(self.error_at(i + 1, ErrorKind::Eof)),
                        Some(b'u') if CHECK => {
                            for j in i + 2..i + 6 {
                                match b.get(j) {
                                    None => return Err(self.error_at(j, ErrorKind::Eof)),
                                    Some(h) if h.is_ascii_hexdigit() => {}
                                    Some(_) => {
                                        return Err(self.error_at(j, ErrorKind::InvalidEscape));
                                    }
                                }
                            }
                            i += 6;
                        }
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(_) if !CHECK => i += 2,
                        Some(_) => return Err(self.error_at(i + 1, ErrorKind::InvalidEscape)),
                    }
                }
                _ => return Err(self.error_at(i, ErrorKind::ControlCharacter)),
            }
        }
    }

    fn digits(&mut self) -> Result<(), SyntaxError> {
        match self.peek() {
            Some(b'0'..=b'9') => self.pos += 1,
            None => return Err(self.error(ErrorKind::Eof)),
            Some(_) => return Err(self.error(ErrorKind::InvalidNumber)),
        }
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        Ok(())
    }

    fn number(&mut self) -> Result<(), SyntaxError> {
        if !CHECK {
            while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
                self.pos += 1;
            }
            return Ok(());
        }
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.error(ErrorKind::InvalidNumber));
                }
            }
            _ => self.digits()?,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.digits()?;
        }
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), SyntaxError> {
        for (j, &w) in word.iter().enumerate() {
            match self.b.get(self.pos + j) {
                Some(&c) if c == w => {}
                None => return Err(self.error_at(self.pos + j, ErrorKind::Eof)),
                Some(_) => return Err(self.error_at(self.pos + j, ErrorKind::Expected("a value"))),
            }
        }
        self.pos += word.len();
        Ok(())
    }

    /// After `{` or `,` and whitespace: a key, whitespace and `:`. Returns the key's span
    /// (quotes included) and whether it has escapes.
    #[inline]
    fn key_colon(&mut self) -> Result<(usize, usize, bool), SyntaxError> {
        if self.peek() != Some(b'"') {
            return Err(self.unexpected("a string key"));
        }
        let start = self.pos;
        let escaped = self.string()?;
        let end = self.pos;
        self.ws();
        if self.peek() != Some(b':') {
            return Err(self.unexpected("`:`"));
        }
        self.pos += 1;
        Ok((start, end, escaped))
    }

    /// Skips a string, number or literal at the current position; returns whether a string
    /// had escapes.
    #[inline(always)]
    fn scalar(&mut self) -> Result<bool, SyntaxError> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'-' | b'0'..=b'9') => self.number().map(|()| false),
            Some(b't') => self.literal(b"true").map(|()| false),
            Some(b'f') => self.literal(b"false").map(|()| false),
            Some(b'n') => self.literal(b"null").map(|()| false),
            _ => Err(self.unexpected("a value")),
        }
    }

    /// Skips one value (after leading whitespace), validating it when `CHECK`; returns
    /// whether it is a string with escapes.
    #[inline(always)]
    fn value(&mut self) -> Result<bool, SyntaxError> {
        self.ws();
        match self.peek() {
            Some(b'{' | b'[') => self.container().map(|()| false),
            _ => self.scalar(),
        }
    }

    /// Skips the object or array at the current position.
    fn container(&mut self) -> Result<(), SyntaxError> {
        let mut nest = Nesting::new();
        'value: loop {
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    if nest.depth + 1 > MAX_DEPTH {
                        return Err(self.error(ErrorKind::TooDeep));
                    }
                    self.pos += 1;
                    self.ws();
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.pos += 1;
                    } else {
                        nest.push(open == b'{');
                        if open == b'{' {
                            self.key_colon()?;
                            self.ws();
                        }
                        continue 'value;
                    }
                }
                _ => {
                    self.scalar()?;
                }
            }
            // A value ended: close containers until one has a next member.
            loop {
                let Some(object) = nest.top() else {
                    return Ok(());
                };
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        self.ws();
                        if object {
                            self.key_colon()?;
                            self.ws();
                        }
                        continue 'value;
                    }
                    Some(b'}') if object => {
                        self.pos += 1;
                        nest.pop();
                    }
                    Some(b']') if !object => {
                        self.pos += 1;
                        nest.pop();
                    }
                    _ => {
                        return Err(self.unexpected(if object {
                            "`,` or `}`"
                        } else {
                            "`,` or `]`"
                        }));
                    }
                }
            }
        }
    }

    /// Splits the object starting here (after optional whitespace).
    fn object_at_start(&mut self) -> Result<RawObject<'a>, SyntaxError> {
        self.ws();
        if self.peek() != Some(b'{') {
            return Err(self.unexpected("an object"));
        }
        self.pos += 1;
        let mut fields = Vec::with_capacity(16);
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(RawObject { fields });
        }
        loop {
            let (ks, ke, escaped) = self.key_colon()?;
            let key = if escaped {
                // Rare: decode with serde_json so keys mean exactly what they always did.
                match serde_json::from_str::<String>(&self.text[ks..ke]) {
                    Ok(k) => Cow::Owned(k),
                    Err(_) => return Err(self.error_at(ks, ErrorKind::InvalidEscape)),
                }
            } else {
                Cow::Borrowed(&self.text[ks + 1..ke - 1])
            };
            self.ws();
            let vs = self.pos;
            let escapes = self.value()?;
            fields.push((
                key,
                Raw {
                    text: &self.text[vs..self.pos],
                    escapes,
                },
            ));
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(RawObject { fields });
                }
                _ => return Err(self.unexpected("`,` or `}`")),
            }
        }
    }

    /// Splits the array starting here (after optional whitespace).
    fn array_at_start(&mut self) -> Result<Vec<Raw<'a>>, SyntaxError> {
        self.ws();
        if self.peek() != Some(b'[') {
            return Err(self.unexpected("an array"));
        }
        self.pos += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(items);
        }
        loop {
            self.ws();
            let vs = self.pos;
            let escapes = self.value()?;
            items.push(Raw {
                text: &self.text[vs..self.pos],
                escapes,
            });
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => return Err(self.unexpected("`,` or `]`")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(t: &str) -> bool {
        Raw::parse(t).is_ok()
    }

    #[test]
    fn accepts_and_rejects_like_serde_json() {
        for t in [
            "{}",
            "[]",
            " {\"a\" : [1, -2.5e+3, true, false, null, \"x\\u00e9\\n\"] } ",
            "0",
            "-0.0e0",
            "\"\\ud800\"",
            "{\"k\":{\"n\":{\"m\":[[],{}]}}}",
            "\"ünïcödé ✓ 12345678 long enough for several words\"",
        ] {
            assert!(ok(t), "{t}");
            assert!(serde_json::from_str::<&serde_json::value::RawValue>(t).is_ok());
        }
        for t in [
            "",
            "{",
            "{\"a\":1,}",
            "[1,]",
            "01",
            "1.",
            "-",
            "1e",
            "tru",
            "nul",
            "{\"a\" 1}",
            "{a:1}",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"tab\there\"",
            "[1 2]",
            "{} {}",
            "\"unterminated",
            "[1,2",
        ] {
            assert!(!ok(t), "accepted {t:?}");
            assert!(
                serde_json::from_str::<&serde_json::value::RawValue>(t).is_err(),
                "serde accepts {t:?}"
            );
        }
    }

    #[test]
    fn errors_say_where_and_whether_truncated() {
        let e = RawObject::parse("{\"a\":1,\n  \"b\":}").unwrap_err();
        assert_eq!((e.line, e.column), (2, 7), "{e}");
        assert_eq!(e.kind, ErrorKind::Expected("a value"));
        assert!(RawObject::parse("{\"a\":[1,2").unwrap_err().is_eof());
        assert!(RawObject::parse("{\"a\":\"abc").unwrap_err().is_eof());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(Raw::parse(&deep).unwrap_err().kind, ErrorKind::TooDeep);
        let ok_deep = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(Raw::parse(&ok_deep).is_ok());
    }

    #[test]
    fn splits_members_and_decodes_escaped_keys() {
        let o = RawObject::parse(r#"{"a":1,"b\"c":{"x":[1,"]"]},"d":"e\"}"}"#).unwrap();
        let got: Vec<(&str, &str)> = o.fields.iter().map(|(k, v)| (&**k, v.get())).collect();
        assert_eq!(
            got,
            [("a", "1"), ("b\"c", r#"{"x":[1,"]"]}"#), ("d", r#""e\"}""#)]
        );
        let nested = RawObject::of(o.get("b\"c").unwrap()).unwrap();
        assert_eq!(nested.get("x").unwrap().get(), r#"[1,"]"]"#);
        let items = array_items(nested.get("x").unwrap()).unwrap();
        assert_eq!(
            items.iter().map(|r| r.get()).collect::<Vec<_>>(),
            ["1", "\"]\""]
        );
        assert!(RawObject::of(items[0]).is_err());
    }

    #[test]
    fn top_values_stream() {
        let t = "{\"a\":1}{\"b\":2}\n[1, 2] \"s\" 3 true\n{\"c\":";
        let mut it = TopValues::new(t);
        let mut kinds = Vec::new();
        for v in it.by_ref() {
            match v {
                Ok((Top::Object(o), _)) => kinds.push(format!("obj{}", o.fields.len())),
                Ok((Top::Array(a), _)) => kinds.push(format!("arr{}", a.len())),
                Ok((Top::Other(k), raw)) => kinds.push(format!("{k}:{raw}")),
                Err((at, e)) => {
                    assert!(e.is_eof());
                    kinds.push(format!("err@{at}"));
                }
            }
        }
        assert_eq!(
            kinds,
            [
                "obj1",
                "obj1",
                "arr2",
                "string:\"s\"",
                "number:3",
                "boolean:true",
                "err@33"
            ]
        );
        assert!(TopValues::new("12x").next().unwrap().is_err());
    }
}
