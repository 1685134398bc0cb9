//! How values and keys are laid out in sled.
//!
//! Values are bincode 2 (serde mode, standard config): compact, and the same bytes on every
//! node. Log keys are big-endian `u64` so that sled's byte order is index order, which makes
//! range scans, `first()` and `last()` mean "lowest/highest index".

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::StorageError;

pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StorageError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|source| StorageError::Encode { what, source })
}

pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StorageError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|source| StorageError::Decode { what, source })?;
    // Trailing bytes mean the value was not written by this codec: refuse rather than guess.
    if read != bytes.len() {
        return Err(StorageError::Corrupt(format!(
            "{what}: {} trailing bytes after the encoded value",
            bytes.len() - read
        )));
    }
    Ok(value)
}

/// The sled key of the log entry at `index`.
pub(crate) fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The log index stored in a sled key written by [`index_key`].
pub(crate) fn key_index(key: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StorageError::Corrupt(format!("log key of {} bytes, want 8", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_like_indexes() {
        let mut keys: Vec<[u8; 8]> = [300u64, 2, 1 << 40, 0, 255, 256].map(index_key).to_vec();
        keys.sort();
        let back: Vec<u64> = keys.iter().map(|k| key_index(k).unwrap()).collect();
        assert_eq!(back, vec![0, 2, 255, 256, 300, 1 << 40]);
    }

    #[test]
    fn decode_rejects_trailing_bytes() {
        let mut bytes = encode("n", &7u64).unwrap();
        assert_eq!(decode::<u64>("n", &bytes).unwrap(), 7);
        bytes.push(0);
        assert!(matches!(
            decode::<u64>("n", &bytes),
            Err(StorageError::Corrupt(_))
        ));
    }
}
