//! The crate's single error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in durable storage.
///
/// The Raft traits speak `std::io::Error`; [`From<StorageError> for io::Error`] bridges the two
/// so openraft sees a storage failure (and stops the node) rather than a silent success.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A filesystem call failed; `path` says on what.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// sled reported an error (including its own I/O failures).
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),

    /// A value could not be encoded with bincode.
    #[error("encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: bincode::error::EncodeError,
    },

    /// Stored bytes could not be decoded: the store is damaged or was written by another format.
    #[error("decode {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: bincode::error::DecodeError,
    },

    /// Stored data violates an invariant (a hole in the log, a key of the wrong length, ...).
    #[error("corrupt storage: {0}")]
    Corrupt(String),

    /// An earlier flush/fsync failed. After a failed fsync the kernel may have dropped dirty
    /// pages, so a later "successful" fsync proves nothing: the store refuses further writes
    /// until the process restarts and recovers from what is really on disk.
    #[error("log store is unusable after an earlier sync failure: {0}")]
    SyncFailed(String),

    /// A caller passed an argument the store cannot accept.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl StorageError {
    /// Wraps an `io::Error` with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<StorageError> for io::Error {
    fn from(e: StorageError) -> Self {
        match e {
            // Keep the original kind (e.g. NotFound, StorageFull) visible to callers.
            StorageError::Io { source, path } => {
                io::Error::new(source.kind(), format!("{}: {source}", path.display()))
            }
            StorageError::Decode { .. } | StorageError::Corrupt(_) => {
                io::Error::new(io::ErrorKind::InvalidData, e)
            }
            StorageError::Invalid(_) => io::Error::new(io::ErrorKind::InvalidInput, e),
            other => io::Error::other(other),
        }
    }
}
