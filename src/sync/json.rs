//! A small strict JSON reader for the sync wire format ([`super::wire`]). The browser's IndexedDB
//! engine will carry the sync client, and serde_json costs it tens of kB gzipped (see
//! `src/json.rs`), so the wire is read with this instead; writing reuses `crate::json::write_str`.
//!
//! What it accepts is RFC 8259 JSON in UTF-8, with these refusals on top, each documented in
//! the wire format:
//! - **numbers are integers** in JavaScript's safe range, `-(2^53 - 1) ..= 2^53 - 1`: every
//!   number of the protocol is a time, a sequence number, a count or a limit, so a fraction, an
//!   exponent or a larger integer is a malformed body, never a rounding;
//! - **object keys are unique**: JSON leaves duplicates undefined and parsers disagree on which
//!   one wins, which is how a validator and an applier come to see different requests;
//! - **strings are Unicode**: a `\u` escape of a lone surrogate is refused (it has no UTF-8 form);
//! - **limits** ([`Limits`]): nesting depth, the decoded length of one string, the number of
//!   values. With them, a hostile body costs time and memory in proportion to its size, and
//!   nesting never goes deeper than [`MAX_DEPTH_CAP`] frames of recursion.
//!
//! Errors carry the byte offset where reading stopped and a fixed reason; they never quote the
//! input. Reading is byte-wise and never slices a `str` by index (that would pull core's
//! char-boundary panic formatting into the wasm).

use std::collections::HashSet;
use std::fmt;

/// The largest integer JavaScript represents exactly, `2^53 - 1`.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// The deepest nesting any [`Limits`] allows: each level is one frame of recursion, and this
/// many fit any stack the engines run on.
pub const MAX_DEPTH_CAP: usize = 256;

/// A JSON value within the accepted subset. Objects keep their members in text order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Bool(bool),
    /// Always within `-MAX_SAFE_INTEGER ..= MAX_SAFE_INTEGER`.
    Int(i64),
    Str(String),
    Array(Vec<Value>),
    /// Keys are unique.
    Object(Vec<(String, Value)>),
}

/// Bounds on what one text may hold, checked while reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Arrays and objects nested inside each other; the top level is depth 1. Values above
    /// [`MAX_DEPTH_CAP`] count as [`MAX_DEPTH_CAP`].
    pub max_depth: usize,
    /// Bytes of one string (a key or a value) once unescaped, as UTF-8.
    pub max_string_bytes: usize,
    /// Values of every kind in the whole text (each key counts as one too).
    pub max_values: usize,
}

/// Why a text was refused, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset in the input where reading stopped.
    pub offset: usize,
    pub kind: JsonErrorKind,
}

/// Whether a refused text is not JSON at all, or JSON outside the subset this reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonErrorKind {
    /// Not RFC 8259 JSON (or not UTF-8): every conforming parser refuses it too.
    Syntax(&'static str),
    /// Valid JSON that this reader refuses on purpose: a non-integer or unsafe number, a
    /// duplicate key, a limit of [`Limits`].
    Refused(&'static str),
}

impl JsonError {
    pub fn reason(&self) -> &'static str {
        match self.kind {
            JsonErrorKind::Syntax(reason) | JsonErrorKind::Refused(reason) => reason,
        }
    }

    pub fn is_syntax(&self) -> bool {
        matches!(self.kind, JsonErrorKind::Syntax(_))
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.reason(), self.offset)
    }
}

impl std::error::Error for JsonError {}

/// Read one JSON text: a value, with only whitespace around it.
pub fn parse(input: &[u8], limits: &Limits) -> Result<Value, JsonError> {
    let mut reader = Reader {
        bytes: input,
        at: 0,
        values: 0,
        limits: Limits {
            max_depth: limits.max_depth.min(MAX_DEPTH_CAP),
            ..*limits
        },
    };
    reader.skip_whitespace();
    let value = reader.value(1)?;
    reader.skip_whitespace();
    if reader.at < input.len() {
        return Err(reader.syntax("there is more after the JSON value"));
    }
    Ok(value)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    values: usize,
    limits: Limits,
}

impl Reader<'_> {
    fn syntax(&self, reason: &'static str) -> JsonError {
        JsonError {
            offset: self.at,
            kind: JsonErrorKind::Syntax(reason),
        }
    }

    fn refused(&self, reason: &'static str) -> JsonError {
        JsonError {
            offset: self.at,
            kind: JsonErrorKind::Refused(reason),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn count_value(&mut self) -> Result<(), JsonError> {
        self.values += 1;
        if self.values > self.limits.max_values {
            return Err(self.refused("the text holds too many values"));
        }
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8], value: Value) -> Result<Value, JsonError> {
        let end = self.at + word.len();
        if self.bytes.get(self.at..end) == Some(word) {
            self.at = end;
            Ok(value)
        } else {
            Err(self.syntax("an unexpected character where a value should start"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.count_value()?;
        match self.peek() {
            None => Err(self.syntax("the text ends where a value should start")),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'"') => self.string().map(Value::Str),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => self.array(depth),
            Some(b'{') => self.object(depth),
            Some(_) => Err(self.syntax("an unexpected character where a value should start")),
        }
    }

    fn enter(&mut self, depth: usize) -> Result<(), JsonError> {
        if depth > self.limits.max_depth {
            return Err(self.refused("arrays and objects are nested too deeply"));
        }
        self.at += 1; // the `[` or `{`
        self.skip_whitespace();
        Ok(())
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.enter(depth)?;
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.skip_whitespace();
                }
                Some(b']') => {
                    self.at += 1;
                    return Ok(Value::Array(items));
                }
                None => return Err(self.syntax("an array is not closed")),
                Some(_) => return Err(self.syntax("expected ',' or ']' in an array")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        let start = self.at;
        self.enter(depth)?;
        let mut members: Vec<(String, Value)> = Vec::new();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Value::Object(members));
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.syntax("expected a string key in an object"));
            }
            self.count_value()?;
            let key = self.string()?;
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.syntax("expected ':' after a key"));
            }
            self.at += 1;
            self.skip_whitespace();
            let value = self.value(depth + 1)?;
            members.push((key, value));
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.skip_whitespace();
                }
                Some(b'}') => {
                    self.at += 1;
                    break;
                }
                None => return Err(self.syntax("an object is not closed")),
                Some(_) => return Err(self.syntax("expected ',' or '}' in an object")),
            }
        }
        if has_duplicate_key(&members) {
            return Err(JsonError {
                offset: start,
                kind: JsonErrorKind::Refused("an object has the same key twice"),
            });
        }
        Ok(Value::Object(members))
    }

    /// A string starting at the opening quote; the reader ends after the closing one.
    fn string(&mut self) -> Result<String, JsonError> {
        self.at += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            // Copy the run of plain bytes up to the next quote, backslash or control byte.
            let run = self
                .bytes
                .get(self.at..)
                .unwrap_or_default()
                .iter()
                .take_while(|&&b| b != b'"' && b != b'\\' && b >= 0x20)
                .count();
            out.extend_from_slice(self.bytes.get(self.at..self.at + run).unwrap_or_default());
            self.at += run;
            if out.len() > self.limits.max_string_bytes {
                return Err(self.refused("a string is too long"));
            }
            match self.peek() {
                None => return Err(self.syntax("a string is not closed")),
                Some(b'"') => {
                    self.at += 1;
                    break;
                }
                Some(b'\\') => {
                    self.at += 1;
                    self.escape(&mut out)?;
                }
                Some(_) => return Err(self.syntax("a string holds a raw control character")),
            }
        }
        if out.len() > self.limits.max_string_bytes {
            return Err(self.refused("a string is too long"));
        }
        String::from_utf8(out).map_err(|_| self.syntax("a string is not valid UTF-8"))
    }

    /// One escape after its backslash, appended as UTF-8.
    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), JsonError> {
        let byte = match self.peek() {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                self.at += 1;
                let unit = self.hex4()?;
                let code = match unit {
                    0xd800..=0xdbff => {
                        if self.bytes.get(self.at..self.at + 2) != Some(b"\\u") {
                            return Err(self.syntax("a \\u escape is a lone surrogate"));
                        }
                        self.at += 2;
                        let low = self.hex4()?;
                        if !(0xdc00..=0xdfff).contains(&low) {
                            return Err(self.syntax("a \\u escape is a lone surrogate"));
                        }
                        0x10000 + ((u32::from(unit) - 0xd800) << 10) + (u32::from(low) - 0xdc00)
                    }
                    0xdc00..=0xdfff => {
                        return Err(self.syntax("a \\u escape is a lone surrogate"));
                    }
                    _ => u32::from(unit),
                };
                let c = char::from_u32(code)
                    .ok_or_else(|| self.syntax("a \\u escape is a lone surrogate"))?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                return Ok(());
            }
            None => return Err(self.syntax("a string is not closed")),
            Some(_) => return Err(self.syntax("a string holds an unknown escape")),
        };
        self.at += 1;
        out.push(byte);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u16, JsonError> {
        let mut unit = 0u16;
        for _ in 0..4 {
            let digit = match self.peek() {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                _ => return Err(self.syntax("a \\u escape needs four hex digits")),
            };
            unit = unit << 4 | u16::from(digit);
            self.at += 1;
        }
        Ok(unit)
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    /// RFC 8259's number grammar in full (so that what is not JSON is a syntax error), then the
    /// integer-only, safe-range refusal.
    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let int_start = self.at;
        match self.digits() {
            0 => return Err(self.syntax("a number has no digits")),
            n if n > 1 && self.bytes.get(int_start) == Some(&b'0') => {
                self.at = int_start + 1;
                return Err(self.syntax("a number has a leading zero"));
            }
            _ => {}
        }
        let int_end = self.at;
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.at += 1;
            integer = false;
            if self.digits() == 0 {
                return Err(self.syntax("a number has no digits after its decimal point"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            integer = false;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(self.syntax("a number has no digits in its exponent"));
            }
        }
        let refused = |reason| JsonError {
            offset: start,
            kind: JsonErrorKind::Refused(reason),
        };
        if !integer {
            return Err(refused("numbers must be integers"));
        }
        // At most 16 digits can be within the safe range; more would overflow the sum below.
        let digits = self.bytes.get(int_start..int_end).unwrap_or_default();
        if digits.len() > 16 {
            return Err(refused("an integer is outside JavaScript's safe range"));
        }
        let magnitude = digits
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
        if magnitude > MAX_SAFE_INTEGER {
            return Err(refused("an integer is outside JavaScript's safe range"));
        }
        Ok(Value::Int(if negative { -magnitude } else { magnitude }))
    }
}

/// Linear for the small objects of the protocol, hashed past a few members so that a hostile
/// object with many keys costs in proportion to its size.
fn has_duplicate_key(members: &[(String, Value)]) -> bool {
    if members.len() <= 8 {
        members
            .iter()
            .enumerate()
            .any(|(i, (key, _))| members.iter().skip(i + 1).any(|(other, _)| other == key))
    } else {
        let mut seen = HashSet::with_capacity(members.len());
        !members.iter().all(|(key, _)| seen.insert(key.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOSE: Limits = Limits {
        max_depth: 64,
        max_string_bytes: 1 << 20,
        max_values: 1 << 20,
    };

    fn ok(text: &str) -> Value {
        parse(text.as_bytes(), &LOOSE).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn err(text: &[u8]) -> JsonError {
        parse(text, &LOOSE).expect_err(&format!("{text:?} should be refused"))
    }

    #[test]
    fn reads_every_kind_of_value() {
        assert_eq!(
            ok(
                r#" {"a": [1, -2, 0, true, false, null, "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"], "b": {}} "#
            ),
            Value::Object(vec![
                (
                    "a".into(),
                    Value::Array(vec![
                        Value::Int(1),
                        Value::Int(-2),
                        Value::Int(0),
                        Value::Bool(true),
                        Value::Bool(false),
                        Value::Null,
                        Value::Str("x\"\\/\u{8}\u{c}\n\r\té😀".into()),
                    ])
                ),
                ("b".into(), Value::Object(vec![])),
            ])
        );
        assert_eq!(ok("-0"), Value::Int(0));
        assert_eq!(ok("9007199254740991"), Value::Int(MAX_SAFE_INTEGER));
        assert_eq!(ok("-9007199254740991"), Value::Int(-MAX_SAFE_INTEGER));
        assert_eq!(ok("\"ünï\""), Value::Str("ünï".into()));
        assert_eq!(ok("[]"), Value::Array(vec![]));
    }

    #[test]
    fn syntax_errors_are_syntax_errors() {
        for bad in [
            &b""[..],
            b" ",
            b"01",
            b"-",
            b"1.",
            b"1e",
            b".5",
            b"+1",
            b"[1,]",
            b"[1 2]",
            b"{\"a\" 1}",
            b"{\"a\":1,}",
            b"{a:1}",
            b"'x'",
            b"\"\\x\"",
            b"\"\\u12\"",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"\\ud800\\u0041\"",
            b"\"a\x01\"",
            b"\"\xff\"",
            b"\xef\xbb\xbf1",
            b"nul",
            b"[1] x",
            b"1 2",
            b"\"unclosed",
            b"[",
            b"{",
        ] {
            assert!(err(bad).is_syntax(), "{bad:?}: {}", err(bad));
        }
    }

    #[test]
    fn the_subset_refuses_valid_json_on_purpose() {
        for bad in [
            "1.5",
            "1e3",
            "1E+0",
            "9007199254740992",
            "-9007199254740992",
            "123456789012345678901234567890",
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"a":0}"#,
        ] {
            let e = err(bad.as_bytes());
            assert!(!e.is_syntax(), "{bad}: {e}");
        }
    }

    #[test]
    fn limits_hold_and_errors_point_at_the_place() {
        let tight = Limits {
            max_depth: 2,
            max_string_bytes: 3,
            max_values: 4,
        };
        assert!(parse(b"[[1]]", &tight).is_ok());
        assert_eq!(
            parse(b"[[[1]]]", &tight).unwrap_err().reason(),
            "arrays and objects are nested too deeply"
        );
        assert!(parse(br#""abc""#, &tight).is_ok());
        assert_eq!(
            parse(br#""ab\u00e9""#, &tight).unwrap_err().reason(),
            "a string is too long"
        );
        assert!(parse(b"[1,2,3]", &tight).is_ok());
        assert_eq!(
            parse(b"[1,2,3,4]", &tight).unwrap_err().reason(),
            "the text holds too many values"
        );
        let e = parse(b"[1, 2, x]", &LOOSE).unwrap_err();
        assert_eq!(e.offset, 7);
        assert_eq!(
            e.to_string(),
            "an unexpected character where a value should start (at byte 7)"
        );
        // Depth is capped whatever a caller asks for: the stack stays bounded.
        let deep = vec![b'['; 100_000];
        let huge = Limits {
            max_depth: usize::MAX,
            ..LOOSE
        };
        assert_eq!(
            parse(&deep, &huge).unwrap_err().offset,
            MAX_DEPTH_CAP,
            "refused on entering level {}",
            MAX_DEPTH_CAP + 1
        );
    }
}
