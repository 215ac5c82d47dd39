//! Splits a byte stream into top-level JSON texts ("frames") without trusting its file name.
//!
//! Azure writes four envelopes (`{"records":[…]}`, JSON Lines, a bare array, a single object),
//! pretty or compact. The framer reads line by line: a line that holds complete JSON values is a
//! frame of its own (JSON Lines, compact envelopes); a line that opens a structure it does not
//! close starts a multi-line frame that runs until the structure closes (pretty-printed files).
//! Once a file has shown a complete first line it is treated as line-oriented, so one truncated
//! line can never swallow the good lines after it. Memory is bounded by the largest frame.

use std::io::{self, BufRead};

/// One top-level JSON text and where it came from. `bytes` borrows the reader's buffer when
/// the frame is one line that lies whole in it (the JSON Lines case), so most frames are never
/// copied; it lives until the next call to [`Framer::next_frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    pub bytes: &'a [u8],
    pub first_line: u64,
    pub last_line: u64,
    /// Spans several lines: on a syntax error the parser retries it line by line.
    pub multiline: bool,
    /// Set when the frame was cut at the size limit; `bytes` holds only its start.
    pub oversized: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Unknown,
    Lines,
    Multi,
}

/// Structural scan state carried across lines: bracket depth and string/escape state.
#[derive(Debug, Default, Clone, Copy)]
struct Scan {
    depth: i64,
    in_string: bool,
    escape: bool,
    started: bool,
}

impl Scan {
    fn feed(&mut self, bytes: &[u8]) {
        for &c in bytes {
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if c == b'\\' {
                    self.escape = true;
                } else if c == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match c {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    self.started = true;
                }
                b'}' | b']' => self.depth -= 1,
                _ => {}
            }
        }
    }

    fn open(&self) -> bool {
        self.started && (self.depth > 0 || self.in_string)
    }
}

/// The frame of an in-memory input that is one line (a Kafka message's envelope, usually
/// hundreds of kilobytes): the same frame [`Framer`] would return, borrowed instead of
/// copied and without the structural scan, which cannot change anything when no other line
/// follows. `None` when the input needs the framer: several lines, only blanks, or a line
/// over `max`.
pub fn single_line(input: &[u8], max: usize) -> Option<Frame<'_>> {
    let line = match memchr::memchr(b'\n', input) {
        None => input,
        Some(nl) if input[nl + 1..].iter().all(u8::is_ascii_whitespace) => &input[..nl],
        Some(_) => return None,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(line);
    if line.len() > max || line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(Frame {
        bytes: line,
        first_line: 1,
        last_line: 1,
        multiline: false,
        oversized: None,
    })
}

/// Default cap on one frame: larger inputs are quarantined as oversized, never buffered whole.
pub const DEFAULT_MAX_FRAME: usize = 256 << 20;

pub struct Framer<R> {
    r: R,
    line: u64,
    mode: Mode,
    max: usize,
    /// Frames that had to be assembled (multi-line, split across reads) live here.
    buf: Vec<u8>,
    line_buf: Vec<u8>,
    /// Bytes of the reader's buffer lent out by the last frame, consumed on the next call.
    lent: usize,
}

impl<R: BufRead> Framer<R> {
    pub fn new(r: R) -> Self {
        Self::with_max(r, DEFAULT_MAX_FRAME)
    }

    pub fn with_max(r: R, max: usize) -> Self {
        Self {
            r,
            line: 0,
            mode: Mode::Unknown,
            max,
            buf: Vec::new(),
            line_buf: Vec::new(),
            lent: 0,
        }
    }

    /// Forces line-oriented framing (JSON Lines files, Kafka messages split by line).
    pub fn lines_only(mut self) -> Self {
        self.mode = Mode::Lines;
        self
    }

    /// Numbers lines from `n + 1`: for a reader that starts after `n` lines of its input.
    pub fn after_line(mut self, n: u64) -> Self {
        self.line = n;
        self
    }

    /// Lines read so far.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Whether the input has shown itself line-oriented (known after the first frame).
    pub fn is_line_oriented(&self) -> bool {
        self.mode == Mode::Lines
    }

    /// Reads one line (without its terminator) into `buf`, keeping at most `max` bytes.
    /// Returns `None` at end of input, else the line's full length.
    fn read_line(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<u64>> {
        buf.clear();
        let mut total: u64 = 0;
        let mut any = false;
        loop {
            let avail = match self.r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                break;
            }
            any = true;
            let (chunk, done) = match memchr::memchr(b'\n', avail) {
                Some(i) => (&avail[..i], Some(i + 1)),
                None => (avail, None),
            };
            let room = self.max.saturating_sub(buf.len());
            buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            total += chunk.len() as u64;
            let used = done.unwrap_or(avail.len());
            self.r.consume(used);
            if done.is_some() {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        self.line += 1;
        if buf.last() == Some(&b'\r') {
            buf.pop();
            total -= 1;
        }
        if self.line == 1 && buf.starts_with(&[0xEF, 0xBB, 0xBF]) {
            buf.drain(..3);
        }
        Ok(Some(total))
    }

    /// In line mode, the next non-blank line when it lies whole in the reader's buffer:
    /// `(start, end)` of its content there (terminator and BOM excluded), with the length to
    /// consume recorded in `lent`. `None` when the line must be assembled by [`Self::read_line`].
    fn borrow_line(&mut self) -> io::Result<Option<(usize, usize)>> {
        loop {
            let avail = match self.r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let Some(nl) = memchr::memchr(b'\n', avail) else {
                return Ok(None);
            };
            if nl > self.max {
                return Ok(None);
            }
            let mut start = 0;
            if self.line == 0 && avail.starts_with(&[0xEF, 0xBB, 0xBF]) {
                start = 3;
            }
            let end = if nl > start && avail[nl - 1] == b'\r' {
                nl - 1
            } else {
                nl
            };
            self.line += 1;
            if avail[start..end].iter().all(u8::is_ascii_whitespace) {
                self.r.consume(nl + 1);
                continue;
            }
            self.lent = nl + 1;
            return Ok(Some((start, end)));
        }
    }

    /// The next frame, or `None` at end of input.
    pub fn next_frame(&mut self) -> io::Result<Option<Frame<'_>>> {
        self.r.consume(std::mem::take(&mut self.lent));
        if self.mode == Mode::Lines
            && let Some((start, end)) = self.borrow_line()?
        {
            let line = self.line;
            return Ok(Some(Frame {
                bytes: &self.r.fill_buf()?[start..end],
                first_line: line,
                last_line: line,
                multiline: false,
                oversized: None,
            }));
        }
        let mut buf = std::mem::take(&mut self.buf);
        let first = loop {
            let Some(len) = self.read_line(&mut buf)? else {
                self.buf = buf;
                return Ok(None);
            };
            if buf.iter().all(u8::is_ascii_whitespace) && len as usize <= self.max {
                continue;
            }
            if len as usize > self.max {
                self.buf = buf;
                return Ok(Some(Frame {
                    bytes: &self.buf,
                    first_line: self.line,
                    last_line: self.line,
                    multiline: false,
                    oversized: Some(len),
                }));
            }
            break self.line;
        };
        // Once a file has shown itself line-oriented, lines are not scanned at all. Nor is a
        // line that does not open a JSON structure (a caption, a note saved with the records):
        // it is a frame of its own, and it does not decide the file's mode, so a stray quote in
        // it cannot open a "string" that swallows the records after it.
        let opens = matches!(
            buf.iter().find(|c| !c.is_ascii_whitespace()),
            Some(b'{' | b'[')
        );
        let mut scan = Scan::default();
        if self.mode != Mode::Lines && opens {
            scan.feed(&buf);
        }
        // A line that is only `[` opens a pretty-printed array (what `az … -o json`, jq and
        // most JSON writers print): its items are framed one by one, so an export of any size
        // streams instead of becoming one frame bounded by the frame limit. The bracket
        // itself, and the `]` at the end, parse as nothing.
        let bare_bracket = self.mode != Mode::Lines && buf.trim_ascii() == b"[";
        if self.mode == Mode::Lines || !scan.open() || scan.in_string || bare_bracket {
            if bare_bracket {
                self.mode = Mode::Multi;
            } else if self.mode == Mode::Unknown && opens && !scan.open() {
                self.mode = Mode::Lines;
            }
            self.buf = buf;
            return Ok(Some(Frame {
                bytes: &self.buf,
                first_line: first,
                last_line: first,
                multiline: false,
                oversized: None,
            }));
        }
        self.mode = Mode::Multi;
        let mut line = std::mem::take(&mut self.line_buf);
        let mut total = buf.len() as u64;
        let mut oversized = None;
        while let Some(len) = self.read_line(&mut line)? {
            total += len + 1;
            if total as usize > self.max {
                // Keep what we have for the quarantine sample and drop the rest of the frame.
                oversized = Some(total);
                break;
            }
            buf.push(b'\n');
            buf.extend_from_slice(&line);
            scan.feed(&line);
            // A JSON string cannot span lines: one still open at a line's end is a cut or
            // garbled record, and following it further would swallow the records after it.
            if !scan.open() || scan.in_string {
                break;
            }
        }
        self.line_buf = line;
        self.buf = buf;
        Ok(Some(Frame {
            bytes: &self.buf,
            first_line: first,
            last_line: self.line,
            multiline: oversized.is_some() || first != self.line,
            oversized,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &str) -> Vec<(String, u64, u64)> {
        let mut f = Framer::new(input.as_bytes());
        let mut out = Vec::new();
        while let Some(fr) = f.next_frame().unwrap() {
            out.push((
                String::from_utf8(fr.bytes.to_vec()).unwrap(),
                fr.first_line,
                fr.last_line,
            ));
        }
        out
    }

    #[test]
    fn single_line_matches_the_framer() {
        let rec = "{\"records\":[{\"a\":\"x\\\"}\"}]}";
        for input in [
            rec.to_owned(),
            format!("{rec}\n"),
            format!("{rec}\r\n \n\t"),
            format!("\u{feff}{rec}"),
            format!("  {rec}  "),
            "{\"open\": [1, 2".to_owned(),
        ] {
            let fast = single_line(input.as_bytes(), 1 << 20).expect(&input);
            let mut f = Framer::new(input.as_bytes());
            assert_eq!(Some(fast), f.next_frame().unwrap(), "{input:?}");
            assert_eq!(f.next_frame().unwrap(), None);
        }
        for input in [format!("{rec}\n{rec}"), " \n".to_owned(), String::new()] {
            assert_eq!(single_line(input.as_bytes(), 1 << 20), None, "{input:?}");
        }
        assert_eq!(
            single_line(rec.as_bytes(), 4),
            None,
            "over the limit: the framer cuts it"
        );
    }

    #[test]
    fn json_lines_one_frame_per_line() {
        let f = frames("{\"a\":1}\n\n{\"a\":2}\r\n{\"a\":3}");
        assert_eq!(f.len(), 3);
        assert_eq!(f[1], ("{\"a\":2}".into(), 3, 3));
    }

    #[test]
    fn pretty_envelope_is_one_frame() {
        let f = frames("{\n  \"records\": [\n    {\"a\": \"}\"}\n  ]\n}\n{\"records\":[]}\n");
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].1, f[0].2), (1, 5));
        assert_eq!(f[1].1, 6);
    }

    #[test]
    fn truncated_line_does_not_swallow_the_rest_in_line_mode() {
        let f = frames("{\"a\":1}\n{\"a\":\"tru\n{\"a\":3}\n");
        assert_eq!(f.len(), 3);
        assert_eq!(f[2].0, "{\"a\":3}");
    }

    #[test]
    fn oversized_line_is_cut() {
        let mut fr = Framer::with_max("{\"a\":\"0123456789\"}\n{}\n".as_bytes(), 8);
        let first = fr.next_frame().unwrap().unwrap();
        assert_eq!(first.oversized, Some(18));
        assert_eq!(first.bytes.len(), 8);
        let second = fr.next_frame().unwrap().unwrap();
        assert_eq!(second.bytes, b"{}");
    }

    #[test]
    fn a_pretty_array_is_framed_item_by_item() {
        let f = frames("[\n  {\n    \"a\": 1\n  },\n  {\n    \"a\": \"]\"\n  }\n]\n");
        let texts: Vec<&str> = f.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            texts,
            [
                "[",
                "  {\n    \"a\": 1\n  },",
                "  {\n    \"a\": \"]\"\n  }",
                "]"
            ]
        );
        assert_eq!((f[1].1, f[1].2), (2, 4));
    }

    #[test]
    fn bom_is_skipped() {
        let f = frames("\u{feff}{\"a\":1}\n");
        assert_eq!(f[0].0, "{\"a\":1}");
    }
}
