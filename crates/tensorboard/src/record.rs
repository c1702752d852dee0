//! TFRecord framing and its masked CRC-32C.
//!
//! A record is `u64 length | u32 masked_crc32c(length bytes) | data | u32 masked_crc32c(data)`,
//! all little-endian (TensorFlow `core/lib/io/record_writer.cc`, as quoted in
//! `tensorflow/tensorboard` `tensorboard/data/server/tf_record.rs`). CRC-32C is the
//! Castagnoli CRC (reflected polynomial `0x82F63B78`, init and final xor `0xFFFFFFFF`),
//! computed by the `crc32c` crate; the mask is LevelDB's:
//! `masked = rotate_right(crc, 15) + 0xA282EAD8` (wrapping). The tests check both against
//! a bitwise CRC loop and the vectors of `tensorboard/data/server/masked_crc.rs`.

/// Bytes of framing before the data: the length and its CRC.
pub const HEADER_LEN: usize = 12;
/// Bytes of framing after the data: its CRC.
pub const FOOTER_LEN: usize = 4;

/// LevelDB's mask of a CRC-32C: rotate right by 15 bits, add `0xA282EAD8`.
pub fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xA282_EAD8)
}

/// The masked CRC-32C of `bytes`, as TFRecord stores it.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    mask(crc32c::crc32c(bytes))
}

/// Appends `data` framed as one record to `out`.
pub fn frame_into(data: &[u8], out: &mut Vec<u8>) {
    let len = (data.len() as u64).to_le_bytes();
    out.reserve(HEADER_LEN + data.len() + FOOTER_LEN);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The oracle: CRC-32C bit by bit (reflected polynomial 0x82F63B78).
    fn crc32c_bitwise(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn crc32c_check_values() {
        // The CRC-32C check value, and RFC 3720 B.4's 32 zero bytes.
        for crc in [crc32c::crc32c, crc32c_bitwise] {
            assert_eq!(crc(b"123456789"), 0xE306_9283);
            assert_eq!(crc(&[0u8; 32]), 0x8A91_36AA);
            assert_eq!(crc(&[0xFFu8; 32]), 0x62A8_AB43);
        }
    }

    #[test]
    fn masked_crc_vector() {
        // tensorboard/data/server/masked_crc.rs
        assert_eq!(masked_crc32c(b"\x1a\x11CRC test, one two"), 0x5794_D08A);
        assert_eq!(mask(0), 0xA282_EAD8);
    }

    /// The first record of a real event file (tensorboard/data/server/tf_record.rs).
    #[test]
    fn frames_file_version_record_byte_exact() {
        let mut data = vec![
            0x09, 0x00, 0x00, 0x80, 0x38, 0x99, 0xd6, 0xd7, 0x41, 0x1a, 0x0d,
        ];
        data.extend_from_slice(b"brain.Event:2");
        let mut out = Vec::new();
        frame_into(&data, &mut out);
        assert_eq!(&out[..8], &[0x18, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&out[8..12], &[0xa3, 0x7f, 0x4b, 0x22]);
        assert_eq!(&out[12..36], &data[..]);
        assert_eq!(&out[36..], &[0x12, 0x4b, 0x36, 0xab]);
    }

    proptest! {
        #[test]
        fn crate_crc_matches_bitwise_oracle(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(crc32c::crc32c(&bytes), crc32c_bitwise(&bytes));
            prop_assert_eq!(masked_crc32c(&bytes), crc32c_bitwise(&bytes).rotate_right(15).wrapping_add(0xA282_EAD8));
        }
    }
}
