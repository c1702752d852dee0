//! The safetensors header: an 8-byte little-endian length `n`, then `n` bytes of JSON mapping
//! each tensor name to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the end
//! of the header) plus an optional `__metadata__` map of strings.
//!
//! [`parse`] validates everything a reader relies on, with checked arithmetic, so that random
//! or truncated bytes give an error, never a panic (a property test feeds it random bytes).

use std::collections::BTreeMap;

use crate::dtype::Dtype;

/// Largest header we accept (the reference implementation uses the same 100 MB bound).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor's entry, with offsets made absolute (from the start of the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Absolute byte offset of the first element.
    pub start: usize,
    /// Absolute byte offset one past the last element.
    pub end: usize,
}

impl TensorEntry {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Tensors in the order of their data in the file.
    pub tensors: Vec<TensorEntry>,
    /// The `__metadata__` map, if any.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Absolute offset where tensor data begins (`8 + n`).
    pub data_start: usize,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

/// Parses and validates the header of a safetensors file whose full contents are `bytes`.
/// The error is a reason meant to follow the file's name.
pub fn parse(bytes: &[u8]) -> Result<Header, String> {
    let file_len = bytes.len();
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(format!(
            "file is {file_len} bytes, shorter than the 8-byte header length"
        ));
    };
    let mut n8 = [0u8; 8];
    n8.copy_from_slice(len_bytes);
    let n = u64::from_le_bytes(n8);
    if n > MAX_HEADER_BYTES {
        return Err(format!(
            "header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit"
        ));
    }
    let n = n as usize;
    let data_start = 8 + n;
    let Some(json) = bytes.get(8..data_start) else {
        return Err(format!(
            "truncated: header says {n} bytes of JSON but the file has only {}",
            file_len - 8
        ));
    };
    let raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(json).map_err(|e| {
        format!(
            "header JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let data_len = file_len - data_start;
    let mut metadata = None;
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        if name == "__metadata__" {
            let m: BTreeMap<String, String> = serde_json::from_value(value)
                .map_err(|e| format!("`__metadata__` must map strings to strings: {e}"))?;
            metadata = Some(m);
            continue;
        }
        let e: RawEntry =
            serde_json::from_value(value).map_err(|e| format!("tensor `{name}`: {e}"))?;
        let dtype: Dtype = e
            .dtype
            .parse()
            .map_err(|m| format!("tensor `{name}`: {m}"))?;
        let [begin, end] = e.data_offsets;
        if begin > end {
            return Err(format!(
                "tensor `{name}`: data_offsets [{begin}, {end}] are reversed"
            ));
        }
        let numel = e
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("tensor `{name}`: shape {:?} overflows", e.shape))?;
        let nbytes = numel
            .checked_mul(dtype.size())
            .ok_or_else(|| format!("tensor `{name}`: shape {:?} overflows", e.shape))?;
        if end - begin != nbytes {
            return Err(format!(
                "tensor `{name}`: {dtype} {:?} needs {nbytes} bytes but data_offsets span {}",
                e.shape,
                end - begin
            ));
        }
        if end > data_len {
            return Err(format!(
                "truncated: tensor `{name}` ends at data byte {end} but the file holds only \
                 {data_len} bytes of data"
            ));
        }
        tensors.push(TensorEntry {
            name,
            dtype,
            shape: e.shape,
            start: data_start + begin,
            end: data_start + end,
        });
    }
    tensors.sort_by_key(|t| (t.start, t.end));
    for pair in tensors.windows(2) {
        if pair[1].start < pair[0].end {
            return Err(format!(
                "tensors `{}` and `{}` overlap in the data section",
                pair[0].name, pair[1].name
            ));
        }
    }
    Ok(Header {
        tensors,
        metadata,
        data_start,
    })
}

/// Serialises a header for tensors laid out back to back in `entries` order. Returns the
/// bytes to write at the start of the file (length prefix included, JSON padded with spaces to
/// a multiple of 8 so tensor data is aligned) and each tensor's absolute start offset.
pub fn serialize(
    entries: &[(String, Dtype, Vec<usize>)],
    metadata: Option<&BTreeMap<String, String>>,
) -> (Vec<u8>, Vec<usize>, usize) {
    let mut map = serde_json::Map::new();
    if let Some(m) = metadata {
        let m: serde_json::Map<String, serde_json::Value> = m
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        map.insert("__metadata__".into(), serde_json::Value::Object(m));
    }
    let mut offset = 0usize;
    let mut rel = Vec::with_capacity(entries.len());
    for (name, dtype, shape) in entries {
        let nbytes = shape.iter().product::<usize>() * dtype.size();
        rel.push(offset);
        map.insert(
            name.clone(),
            serde_json::json!({
                "dtype": dtype.as_str(),
                "shape": shape,
                "data_offsets": [offset, offset + nbytes],
            }),
        );
        offset += nbytes;
    }
    let mut json = serde_json::Value::Object(map).to_string().into_bytes();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    let data_start = out.len();
    let starts = rel.into_iter().map(|r| r + data_start).collect();
    (out, starts, data_start + offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(entries: &[(String, Dtype, Vec<usize>)]) -> Vec<u8> {
        let (mut bytes, _, total) = serialize(entries, None);
        bytes.resize(total, 7);
        bytes
    }

    #[test]
    fn round_trip_and_reference_reader_agrees() {
        let entries = vec![
            ("b".to_string(), Dtype::F32, vec![2, 3]),
            ("a".to_string(), Dtype::BF16, vec![5]),
            ("scalar".to_string(), Dtype::F16, vec![]),
        ];
        let bytes = file(&entries);
        let h = parse(&bytes).unwrap();
        let names: Vec<_> = h.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["b", "a", "scalar"]);
        assert_eq!(h.tensors[0].end - h.tensors[0].start, 24);
        assert_eq!(h.data_start % 8, 0);
        // The reference `safetensors` crate reads what we write.
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("a").unwrap().shape(), &[5]);
        assert_eq!(st.tensor("scalar").unwrap().data().len(), 2);
    }

    #[test]
    fn truncation_is_reported() {
        let bytes = file(&[("w".to_string(), Dtype::F32, vec![4])]);
        let err = parse(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(err.contains("truncated: tensor `w`"), "{err}");
        let err = parse(&bytes[..20]).unwrap_err();
        assert!(err.contains("truncated: header says"), "{err}");
        assert!(parse(&bytes[..3]).unwrap_err().contains("shorter than"));
    }

    #[test]
    fn inconsistent_entries_are_rejected() {
        let bad = |json: &str| {
            let mut b = (json.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(json.as_bytes());
            b.extend_from_slice(&[0u8; 64]);
            parse(&b).unwrap_err()
        };
        let e = bad(r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#);
        assert!(e.contains("needs 12 bytes but data_offsets span 8"), "{e}");
        let e = bad(r#"{"w":{"dtype":"Q4","shape":[3],"data_offsets":[0,8]}}"#);
        assert!(e.contains("unknown dtype `Q4`"), "{e}");
        let e = bad(r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}"#);
        assert!(e.contains("unknown field `x`"), "{e}");
        let e = bad(
            r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"v":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}"#,
        );
        assert!(e.contains("overlap"), "{e}");
        let e = bad(r#"{"w": [1, 2"#);
        assert!(e.contains("line 1"), "{e}");
        let e =
            bad(r#"{"w":{"dtype":"F32","shape":[4611686018427387904, 8],"data_offsets":[0,4]}}"#);
        assert!(e.contains("overflows"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn random_json_after_valid_length_never_panics(s in "\\PC{0,120}") {
            let mut b = (s.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(s.as_bytes());
            let _ = parse(&b);
        }

        #[test]
        fn corrupting_a_valid_file_never_panics(pos in 0usize..200, byte in any::<u8>(), cut in 0usize..200) {
            let mut bytes = file(&[("layer.0.w".to_string(), Dtype::BF16, vec![3, 4]), ("b".to_string(), Dtype::F32, vec![2])]);
            let p = pos % bytes.len();
            bytes[p] = byte;
            bytes.truncate(bytes.len().saturating_sub(cut % 40));
            let _ = parse(&bytes);
        }
    }
}
