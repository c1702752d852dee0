//! Reads an event file back, verifying both CRCs of every record (for tests and checks;
//! TensorBoard itself tolerates a truncated last record, this reader does not).

use std::path::Path;

use prost::Message;

use crate::proto::Event;
use crate::record::{FOOTER_LEN, HEADER_LEN, masked_crc32c};
use crate::{Result, TensorboardError};

/// Every event of the file at `path`, in order.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path).map_err(|e| TensorboardError::io(path, e))?;
    decode_events(path, &bytes)
}

/// Every event in `bytes`, the contents of the file `path` (named in errors).
pub fn decode_events(path: &Path, bytes: &[u8]) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let offset = at as u64;
        let truncated = |needed: u64| TensorboardError::Truncated {
            path: path.into(),
            offset,
            needed,
            available: rest.len() as u64,
        };
        let Some((len_bytes, len_crc)) = rest.get(..8).zip(rest.get(8..HEADER_LEN).map(le_u32))
        else {
            return Err(truncated(HEADER_LEN as u64));
        };
        let computed = masked_crc32c(len_bytes);
        if computed != len_crc {
            return Err(TensorboardError::LengthCrc {
                path: path.into(),
                offset,
                stored: len_crc,
                computed,
            });
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(len_bytes);
        let len = u64::from_le_bytes(len);
        let needed = len.saturating_add((HEADER_LEN + FOOTER_LEN) as u64);
        let end = match usize::try_from(needed) {
            Ok(n) if n <= rest.len() => n,
            _ => return Err(truncated(needed)),
        };
        let data = &rest[HEADER_LEN..end - FOOTER_LEN];
        let stored = le_u32(&rest[end - FOOTER_LEN..end]);
        let computed = masked_crc32c(data);
        if computed != stored {
            return Err(TensorboardError::DataCrc {
                path: path.into(),
                offset,
                stored,
                computed,
            });
        }
        let event = Event::decode(data).map_err(|source| TensorboardError::Decode {
            path: path.into(),
            offset,
            source,
        })?;
        events.push(event);
        at += end;
    }
    Ok(events)
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}
