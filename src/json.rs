//! The two pieces of JSON every engine needs: writing a snapshot, and reading the vault's `kdf`
//! settings row (FORMAT.md). Written out here instead of with serde_json because the IndexedDB
//! engine is what a browser downloads, and serde_json with the generic code it instantiates was
//! 36 kB of its gzipped size (issue 8's budget is 150 kB for everything). Reading snapshots,
//! which comes from anywhere and needs a full, strict parser, stays on serde_json in the engine
//! that carries `snapshot-import` (the browser loads that one only to open a snapshot).

use std::fmt::Write as _;

/// Append `s` as a JSON string, escaped exactly as serde_json escapes it (`"`, `\`, the named
/// control characters, other control characters as `\u00xx`), so that snapshots written here
/// and by earlier releases are byte for byte the same.
pub(crate) fn write_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `get`, not indexing: the bounds are at ASCII bytes, so it never misses, and indexing
        // would pull core's char-boundary panic (its message formatting) into the browser engine.
        out.push_str(s.get(start..i).unwrap_or_default());
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
    out.push('"');
}

/// Append a number or `null`.
pub(crate) fn write_opt_int(out: &mut String, n: Option<i64>) {
    match n {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push_str("null"),
    }
}

/// A value of a flat JSON object: a string without escapes, or an unsigned integer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flat<'a> {
    Str(&'a str),
    Uint(u64),
}

/// Why a flat object did not parse (no part of the text is quoted back).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FlatError(pub &'static str);

/// Parse `{"key": value, ...}` where every value is a string without escape sequences or an
/// unsigned integer of at most 15 digits, every key appears once, and nothing else is allowed:
/// what the `kdf` row holds. Strict on purpose: the row comes from storage anyone may have
/// written to.
pub(crate) fn parse_flat_object(text: &str) -> Result<Vec<(&str, Flat<'_>)>, FlatError> {
    let mut rest = text.trim_start();
    let mut fields: Vec<(&str, Flat<'_>)> = Vec::new();
    rest = rest
        .strip_prefix('{')
        .ok_or(FlatError("it is not a JSON object"))?;
    loop {
        rest = rest.trim_start();
        if fields.is_empty()
            && let Some(after) = rest.strip_prefix('}')
        {
            rest = after;
            break;
        }
        let (key, after) = string(rest)?;
        rest = after
            .trim_start()
            .strip_prefix(':')
            .ok_or(FlatError("a key is not followed by ':'"))?
            .trim_start();
        let value;
        (value, rest) = if rest.starts_with('"') {
            let (s, after) = string(rest)?;
            (Flat::Str(s), after)
        } else {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 15 || (digits > 1 && rest.starts_with('0')) {
                return Err(FlatError(
                    "a value is neither a string nor an unsigned integer",
                ));
            }
            // ASCII digits: the split is on a char boundary (and `split_at_checked` has no
            // panic path to carry, see `write_str`).
            let (number, after) = rest.split_at_checked(digits).unwrap_or((rest, ""));
            let n = number
                .parse()
                .map_err(|_| FlatError("an integer is out of range"))?;
            (Flat::Uint(n), after)
        };
        if fields.iter().any(|(k, _)| *k == key) {
            return Err(FlatError("a key appears twice"));
        }
        fields.push((key, value));
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if let Some(after) = rest.strip_prefix('}') {
            rest = after;
            break;
        } else {
            return Err(FlatError("the object is not closed"));
        }
    }
    if rest.trim_start().is_empty() {
        Ok(fields)
    } else {
        Err(FlatError("there is text after the object"))
    }
}

/// A string at the start of `text` (which starts with `"`), and what follows it.
fn string(text: &str) -> Result<(&str, &str), FlatError> {
    let body = text
        .strip_prefix('"')
        .ok_or(FlatError("a key or value is not a string"))?;
    let end = body
        .find(['"', '\\'])
        .ok_or(FlatError("a string is not closed"))?;
    let (inner, after) = body.split_at_checked(end).unwrap_or((body, ""));
    // `after` starts with the quote or backslash found; a backslash is an escape.
    match after.strip_prefix('"') {
        Some(after) if !inner.chars().any(char::is_control) => Ok((inner, after)),
        _ => Err(FlatError("a string holds an escape or a control character")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in [
            "",
            "plain",
            "quote \" and backslash \\",
            "\n\r\t\u{8}\u{c}",
            "\u{0}\u{1}\u{1f}\u{7f}",
            "ünïcødé 😀 \u{2028}",
            "tk_' OR 1=1; --",
        ] {
            let mut out = String::new();
            write_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn flat_objects_parse_strictly() {
        assert_eq!(
            parse_flat_object(r#" { "alg" : "pbkdf2-sha256", "iterations":600000,"salt":"AQ" } "#),
            Ok(vec![
                ("alg", Flat::Str("pbkdf2-sha256")),
                ("iterations", Flat::Uint(600_000)),
                ("salt", Flat::Str("AQ")),
            ])
        );
        assert_eq!(parse_flat_object("{}"), Ok(vec![]));
        for bad in [
            "",
            "[]",
            "{",
            "{,}",
            r#"{"a":1,}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":-1}"#,
            r#"{"a":1.5}"#,
            r#"{"a":01}"#,
            r#"{"a":1e3}"#,
            r#"{"a":1234567890123456}"#,
            r#"{"a":"x\"y"}"#,
            r#"{"a":"x\u0041"}"#,
            "{\"a\":\"x\ny\"}",
            r#"{"a":null}"#,
            r#"{"a":true}"#,
            r#"{"a":{}}"#,
            r#"{"a":1} x"#,
            r#"{a:1}"#,
        ] {
            assert!(parse_flat_object(bad).is_err(), "{bad:?}");
        }
    }
}
