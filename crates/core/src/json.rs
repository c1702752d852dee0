//! JSON and JSON Lines bytes, written one way everywhere: pretty JSON with a trailing newline
//! (serde_json keeps struct field order, so the bytes are stable), and JSON Lines as one
//! compact object per line, each line ending in `\n`.

use serde::Serialize;

/// Pretty-printed JSON of `value` with a trailing newline.
pub fn to_pretty(value: &impl Serialize) -> serde_json::Result<Vec<u8>> {
    let mut v = serde_json::to_vec_pretty(value)?;
    v.push(b'\n');
    Ok(v)
}

/// JSON Lines of `values`: one compact object per line.
pub fn to_lines<T: Serialize>(values: &[T]) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::new();
    for v in values {
        serde_json::to_writer(&mut out, v)?;
        out.push(b'\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_and_lines() {
        let v = serde_json::json!({"b": 1, "a": [2]});
        assert_eq!(
            to_pretty(&v).unwrap(),
            b"{\n  \"a\": [\n    2\n  ],\n  \"b\": 1\n}\n"
        );
        assert_eq!(to_lines(&[1, 2]).unwrap(), b"1\n2\n");
        assert_eq!(to_lines::<u8>(&[]).unwrap(), b"");
    }
}
