//! Snapshots of any size travel in chunks (`/raft/snapshot-chunk`).
//!
//! One request per snapshot capped what could be installed (a request body is at most
//! 1 GiB) and made both sides hold the whole snapshot several times (the snapshot, the
//! encoded body, the received body, the decoded one). Now the sender posts the snapshot in
//! chunks of [`CHUNK_BYTES`]; the receiver appends each to a file in its data directory and,
//! after the last one, reads the file once and installs it. Memory per side: one chunk in
//! flight plus the snapshot itself, and nothing on the wire is larger than a chunk.
//!
//! A transfer is identified by the leader's vote and the snapshot's last log id. Chunks
//! must arrive in order: a chunk at offset 0 starts a transfer (dropping any unfinished
//! one); anything else that does not continue the current transfer is refused, and
//! openraft then sends the snapshot again from the start. The decisions are
//! [`decide`], a pure function.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use openraft::raft::SnapshotResponse;
use serde::{Deserialize, Serialize};

use crate::types::{LogId, SnapshotMeta, TypeConfig, Vote};

/// Default bytes of snapshot per chunk request (`raft.snapshot_chunk_bytes`).
pub const CHUNK_BYTES: usize = 8 << 20;

/// Largest chunk a node accepts (and so the largest `raft.snapshot_chunk_bytes`).
pub const MAX_CHUNK_BYTES: usize = 64 << 20;

/// Largest snapshot a node accepts (its file goes to the data directory before it is
/// installed): far beyond any analytic state that fits in memory, but a bound on what a
/// confused sender can make the receiver write.
pub const MAX_SNAPSHOT_BYTES: u64 = 256 << 30;

/// Body of `/raft/snapshot-chunk`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    /// Size of the whole snapshot.
    pub total_len: u64,
    /// Where `data` starts in it.
    pub offset: u64,
    pub data: Vec<u8>,
}

/// Answer to a chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkReply {
    /// Stored; the receiver expects the next chunk at this offset.
    Received { next_offset: u64 },
    /// That was the last chunk, and the snapshot was installed.
    Installed(SnapshotResponse<TypeConfig>),
}

/// The byte ranges the sender posts, in order: at least one (an empty snapshot is one
/// empty chunk), none larger than `chunk`.
pub fn chunk_ranges(total: usize, chunk: usize) -> Vec<Range<usize>> {
    let chunk = chunk.max(1);
    if total == 0 {
        return std::iter::once(0..0).collect();
    }
    (0..total)
        .step_by(chunk)
        .map(|start| start..(start + chunk).min(total))
        .collect()
}

/// What the receiver knows of the transfer in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferView {
    pub vote: Vote,
    pub last_log_id: Option<LogId>,
    pub total_len: u64,
    pub received: u64,
}

/// What to do with a chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start a new transfer with this chunk (offset 0), dropping any unfinished one.
    Start,
    /// Append it to the transfer in progress.
    Append,
    /// Refuse it; the sender starts over.
    Refuse(String),
}

/// The receiver's rule for one chunk, given the transfer in progress.
pub fn decide(current: Option<&TransferView>, chunk: &SnapshotChunk, max_bytes: u64) -> Decision {
    let len = chunk.data.len() as u64;
    if chunk.total_len > max_bytes {
        return Decision::Refuse(format!(
            "snapshot of {} bytes is larger than the {max_bytes} this node accepts",
            chunk.total_len
        ));
    }
    if chunk
        .offset
        .checked_add(len)
        .is_none_or(|end| end > chunk.total_len)
    {
        return Decision::Refuse(format!(
            "chunk at {} of {len} bytes runs past the snapshot's {} bytes",
            chunk.offset, chunk.total_len
        ));
    }
    if chunk.offset == 0 {
        return Decision::Start;
    }
    let Some(current) = current else {
        return Decision::Refuse(format!(
            "no snapshot transfer in progress for a chunk at offset {}; start at 0",
            chunk.offset
        ));
    };
    if current.vote != chunk.vote
        || current.last_log_id != chunk.meta.last_log_id
        || current.total_len != chunk.total_len
    {
        return Decision::Refuse("the chunk belongs to another snapshot transfer".into());
    }
    if current.received != chunk.offset {
        return Decision::Refuse(format!(
            "expected the chunk at offset {}, got {}",
            current.received, chunk.offset
        ));
    }
    Decision::Append
}

/// A transfer in progress: its view and the file the chunks go to.
struct Transfer {
    view: TransferView,
    file: File,
}

/// What an accepted chunk completed.
#[derive(Debug)]
pub enum Accepted {
    /// More chunks are expected, from this offset.
    More(u64),
    /// The whole snapshot, ready to install.
    Complete {
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
}

/// The receiving side: at most one transfer at a time (only the leader sends snapshots).
pub struct Incoming {
    path: PathBuf,
    max_bytes: u64,
    current: Mutex<Option<Transfer>>,
}

impl Incoming {
    /// Chunks go to `dir/incoming-snapshot.part`; a leftover from a crash is removed.
    pub fn new(dir: &Path) -> Incoming {
        let path = dir.join("incoming-snapshot.part");
        let _ = std::fs::remove_file(&path);
        Incoming {
            path,
            max_bytes: MAX_SNAPSHOT_BYTES,
            current: Mutex::new(None),
        }
    }

    /// Stores one chunk (blocking file I/O: call it off the async workers). `Err` refuses
    /// the chunk with the reason (an `InvalidInput` error) or reports an I/O failure.
    pub fn accept(&self, chunk: SnapshotChunk) -> io::Result<Accepted> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match decide(current.as_ref().map(|t| &t.view), &chunk, self.max_bytes) {
            Decision::Refuse(why) => return Err(io::Error::new(io::ErrorKind::InvalidInput, why)),
            Decision::Start => {
                *current = None;
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(&self.path)?;
                *current = Some(Transfer {
                    view: TransferView {
                        vote: chunk.vote,
                        last_log_id: chunk.meta.last_log_id,
                        total_len: chunk.total_len,
                        received: 0,
                    },
                    file,
                });
            }
            Decision::Append => {}
        }
        let transfer = current.as_mut().expect("started or continued above");
        transfer.file.write_all(&chunk.data)?;
        transfer.view.received += chunk.data.len() as u64;
        if transfer.view.received < transfer.view.total_len {
            return Ok(Accepted::More(transfer.view.received));
        }
        let Transfer { view, mut file } = current.take().expect("checked above");
        let mut data = Vec::with_capacity(usize::try_from(view.total_len).unwrap_or(0));
        {
            use std::io::Seek;
            file.seek(io::SeekFrom::Start(0))?;
            file.read_to_end(&mut data)?;
        }
        drop(file);
        let _ = std::fs::remove_file(&self.path);
        if data.len() as u64 != view.total_len {
            return Err(io::Error::other(format!(
                "the received snapshot file holds {} bytes, expected {}",
                data.len(),
                view.total_len
            )));
        }
        Ok(Accepted::Complete {
            vote: chunk.vote,
            meta: chunk.meta,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::log_id;
    use openraft::type_config::alias::VoteOf;

    fn chunk(offset: u64, data: &[u8], total: u64, index: u64) -> SnapshotChunk {
        SnapshotChunk {
            vote: VoteOf::<TypeConfig>::new(2, 1),
            meta: SnapshotMeta {
                last_log_id: Some(log_id::<TypeConfig>(2, 1, index)),
                last_membership: Default::default(),
            },
            total_len: total,
            offset,
            data: data.to_vec(),
        }
    }

    #[test]
    fn ranges_cover_the_snapshot_in_order() {
        assert_eq!(chunk_ranges(0, 4), vec![0..0]);
        assert_eq!(chunk_ranges(3, 4), vec![0..3]);
        assert_eq!(chunk_ranges(8, 4), vec![0..4, 4..8]);
        assert_eq!(chunk_ranges(9, 4), vec![0..4, 4..8, 8..9]);
        assert_eq!(chunk_ranges(2, 0), vec![0..1, 1..2]);
    }

    #[test]
    fn the_receivers_rule() {
        let view = |received| TransferView {
            vote: VoteOf::<TypeConfig>::new(2, 1),
            last_log_id: Some(log_id::<TypeConfig>(2, 1, 7)),
            total_len: 10,
            received,
        };
        let max = 100;
        assert_eq!(
            decide(None, &chunk(0, b"abcd", 10, 7), max),
            Decision::Start
        );
        assert_eq!(
            decide(Some(&view(4)), &chunk(0, b"abcd", 10, 7), max),
            Decision::Start
        );
        assert_eq!(
            decide(Some(&view(4)), &chunk(4, b"efgh", 10, 7), max),
            Decision::Append
        );
        for (current, c, says) in [
            (None, chunk(4, b"efgh", 10, 7), "no snapshot transfer"),
            (
                Some(view(4)),
                chunk(8, b"ij", 10, 7),
                "expected the chunk at offset 4",
            ),
            (Some(view(4)), chunk(4, b"efgh", 10, 8), "another snapshot"),
            (Some(view(4)), chunk(4, b"efgh", 12, 7), "another snapshot"),
            (Some(view(8)), chunk(8, b"ijk", 10, 7), "runs past"),
            (None, chunk(0, b"", 101, 7), "larger than"),
            (None, chunk(u64::MAX, b"x", 10, 7), "runs past"),
        ] {
            match decide(current.as_ref(), &c, max) {
                Decision::Refuse(why) => assert!(why.contains(says), "{why}"),
                other => panic!("{c:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn chunks_reassemble_into_the_snapshot_and_a_restart_drops_the_old_transfer() {
        let dir = tempfile::tempdir().unwrap();
        let incoming = Incoming::new(dir.path());
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        // A transfer abandoned halfway, then a new one from the start.
        assert!(matches!(
            incoming.accept(chunk(0, &data[..300], 1000, 7)).unwrap(),
            Accepted::More(300)
        ));
        let refused = incoming
            .accept(chunk(600, &data[600..], 1000, 7))
            .unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::InvalidInput);
        let mut done = None;
        for range in chunk_ranges(data.len(), 256) {
            match incoming
                .accept(chunk(range.start as u64, &data[range.clone()], 1000, 7))
                .unwrap()
            {
                Accepted::More(next) => assert_eq!(next, range.end as u64),
                Accepted::Complete { data, meta, .. } => {
                    assert_eq!(meta.last_log_id.unwrap().index, 7);
                    done = Some(data);
                }
            }
        }
        assert_eq!(done.as_deref(), Some(&data[..]));
        assert!(!dir.path().join("incoming-snapshot.part").exists());
        // An empty snapshot is one empty chunk.
        assert!(matches!(
            incoming.accept(chunk(0, b"", 0, 9)).unwrap(),
            Accepted::Complete { data, .. } if data.is_empty()
        ));
    }
}
