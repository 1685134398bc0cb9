//! The on-disk layout of one snapshot file.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "TALLYSNP"
//!      8     4  format version (u32 LE), currently 1
//!     12     8  order (u64 LE): the snapshot's last log index
//!     20     4  id length (u32 LE)
//!     24     8  meta length (u64 LE)
//!     32     8  data length (u64 LE)
//!     40    32  SHA-256 of bytes 0..40, then id, meta, data
//!     72     -  id (UTF-8), meta, data
//! ```
//!
//! The checksum covers the header fields too, so a flipped bit anywhere is caught; the file
//! length must equal exactly what the header announces, so truncation is caught before hashing.

use sha2::{Digest, Sha256};

pub(crate) const MAGIC: &[u8; 8] = b"TALLYSNP";
pub(crate) const VERSION: u32 = 1;
pub(crate) const HEADER_LEN: usize = 72;
const HASHED_HEADER_LEN: usize = 40;

/// What the fixed-size header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub order: u64,
    pub id_len: u32,
    pub meta_len: u64,
    pub data_len: u64,
    pub sha256: [u8; 32],
}

impl Header {
    /// Total file length this header announces, `None` if it overflows (a corrupt header).
    pub(crate) fn file_len(&self) -> Option<u64> {
        (HEADER_LEN as u64)
            .checked_add(u64::from(self.id_len))?
            .checked_add(self.meta_len)?
            .checked_add(self.data_len)
    }
}

/// The complete header for a snapshot with these parts.
pub(crate) fn encode_header(order: u64, id: &str, meta: &[u8], data: &[u8]) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&order.to_le_bytes());
    // Callers check that `id` fits a u32 (see `SnapshotFiles::save`).
    header.extend_from_slice(&(id.len() as u32).to_le_bytes());
    header.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    header.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let digest = checksum(&header, &[id.as_bytes(), meta, data]);
    header.extend_from_slice(&digest);
    header
}

/// Parses a header; `Err` says why the bytes are not one.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<Header, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "{} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        ));
    }
    if &bytes[0..8] != MAGIC {
        return Err("bad magic".into());
    }
    let version = u32::from_le_bytes(array(&bytes[8..12]));
    if version != VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    Ok(Header {
        order: u64::from_le_bytes(array(&bytes[12..20])),
        id_len: u32::from_le_bytes(array(&bytes[20..24])),
        meta_len: u64::from_le_bytes(array(&bytes[24..32])),
        data_len: u64::from_le_bytes(array(&bytes[32..40])),
        sha256: array(&bytes[40..72]),
    })
}

/// A whole file, verified, borrowed from its bytes.
#[derive(Debug)]
pub(crate) struct Decoded<'a> {
    pub header: Header,
    pub id: String,
    pub meta: &'a [u8],
    pub data: &'a [u8],
}

/// Splits a whole file into its parts after checking length and checksum.
pub(crate) fn decode_file(bytes: &[u8]) -> Result<Decoded<'_>, String> {
    let header = decode_header(bytes)?;
    if header.file_len() != Some(bytes.len() as u64) {
        return Err(format!(
            "file is {} bytes, header announces {:?}",
            bytes.len(),
            header.file_len()
        ));
    }
    let body = &bytes[HEADER_LEN..];
    let (id, rest) = body.split_at(header.id_len as usize);
    let (meta, data) = rest.split_at(header.meta_len as usize);
    if checksum(&bytes[..HASHED_HEADER_LEN], &[id, meta, data]) != header.sha256 {
        return Err("SHA-256 mismatch".into());
    }
    let id = String::from_utf8(id.to_vec()).map_err(|_| "snapshot id is not UTF-8".to_string())?;
    Ok(Decoded {
        header,
        id,
        meta,
        data,
    })
}

fn checksum(hashed_header: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(&hashed_header[..HASHED_HEADER_LEN]);
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(order: u64, id: &str, meta: &[u8], data: &[u8]) -> Vec<u8> {
        let mut bytes = encode_header(order, id, meta, data);
        bytes.extend_from_slice(id.as_bytes());
        bytes.extend_from_slice(meta);
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn roundtrip() {
        let bytes = file(42, "3-42-7", b"meta", b"data bytes");
        let decoded = decode_file(&bytes).unwrap();
        assert_eq!(decoded.header.order, 42);
        assert_eq!(decoded.id, "3-42-7");
        assert_eq!(decoded.meta, b"meta");
        assert_eq!(decoded.data, b"data bytes");
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = file(7, "a", b"m", b"dd");
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(
                decode_file(&bad).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn truncation_and_extension_are_detected() {
        let bytes = file(7, "a", b"m", b"dd");
        for len in 0..bytes.len() {
            assert!(decode_file(&bytes[..len]).is_err(), "truncated to {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_file(&longer).is_err());
    }

    #[test]
    fn absurd_lengths_do_not_overflow() {
        let mut bytes = file(7, "a", b"m", b"dd");
        bytes[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_file(&bytes).is_err());
    }
}
