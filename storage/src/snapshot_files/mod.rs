//! State-machine snapshots as checksummed files; the newest `keep` are kept.
//!
//! A snapshot is `<order, 20 digits>.snap` (the order is the snapshot's last log index, zero
//! padded so names sort like numbers); the layout is in [`format`]. Saving writes a uniquely
//! named `*.tmp` file, fsyncs it, renames it into place and fsyncs the directory, so after a
//! crash a snapshot either exists whole or not at all. Leftover `*.tmp` files are deleted at
//! open and never read.
//!
//! Loading falls back to older snapshots when the newest does not verify. The caller must still
//! check that the Raft log has not been purged past the snapshot it got back (an older snapshot
//! plus a purged log is a gap); that is the raft layer's decision, not ours.

mod format;
#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::fsync::sync_dir;
use crate::StorageError;

const SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".tmp";
/// Longest snapshot id accepted; ids are short ("term-index-seq"), this only guards the header.
const MAX_ID_LEN: usize = 1024;

/// Snapshot files in one directory.
#[derive(Debug)]
pub struct SnapshotFiles {
    dir: PathBuf,
    keep: usize,
    /// Makes temp names unique when two saves run at once.
    tmp_counter: AtomicU64,
}

/// A snapshot read back and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    pub order: u64,
    pub id: String,
    pub meta: Vec<u8>,
    pub data: Vec<u8>,
}

/// One snapshot file, from its header only (not verified), for status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFileInfo {
    pub order: u64,
    pub id: String,
    pub path: PathBuf,
    pub size: u64,
}

impl SnapshotFiles {
    /// Opens (creating if needed) the snapshot directory, keeping the newest `keep` (>= 1)
    /// snapshots on each save, and deletes temp files left by an interrupted save.
    pub fn open(dir: &Path, keep: usize) -> Result<Self, StorageError> {
        if keep == 0 {
            return Err(StorageError::Invalid(
                "must keep at least one snapshot".into(),
            ));
        }
        fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let files = SnapshotFiles {
            dir: dir.to_path_buf(),
            keep,
            tmp_counter: AtomicU64::new(0),
        };
        for entry in fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
            let path = entry.map_err(|e| StorageError::io(dir, e))?.path();
            if path.to_string_lossy().ends_with(TMP_SUFFIX) {
                tracing::info!(path = %path.display(), "removing snapshot temp file left by a crash");
                fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
            }
        }
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(files)
    }

    /// Durably writes a snapshot, then deletes all but the newest `keep`.
    ///
    /// `order` (the snapshot's last log index) names the file, so a second snapshot with the
    /// same order replaces the first; `id` is opaque and stored inside the file.
    pub fn save(&self, order: u64, id: &str, meta: &[u8], data: &[u8]) -> Result<(), StorageError> {
        if id.len() > MAX_ID_LEN {
            return Err(StorageError::Invalid(format!(
                "snapshot id of {} bytes, at most {MAX_ID_LEN}",
                id.len()
            )));
        }
        let path = self.path_for(order);
        let tmp = self.dir.join(format!(
            "{:020}-{}-{}{TMP_SUFFIX}",
            order,
            std::process::id(),
            self.tmp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        let written = write_synced(
            &tmp,
            &[
                &format::encode_header(order, id, meta, data),
                id.as_bytes(),
                meta,
                data,
            ],
        );
        if let Err(e) = written {
            // Best effort: a leftover would be removed at the next open anyway.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &path).map_err(|e| StorageError::io(&path, e))?;
        sync_dir(&self.dir)?;
        self.prune()
    }

    /// The newest snapshot whose checksum verifies. A damaged file is logged and skipped, so an
    /// older snapshot is returned instead; `None` if there is no good snapshot at all.
    pub fn load_latest(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let mut snapshots = self.snapshot_paths()?;
        snapshots.sort_by_key(|(order, _)| std::cmp::Reverse(*order));
        for (order, path) in snapshots {
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                // Deleted by a concurrent prune: try the next one.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io(&path, e)),
            };
            match format::decode_file(&bytes) {
                Ok(file) if file.header.order == order => {
                    return Ok(Some(StoredSnapshot {
                        order,
                        id: file.id,
                        meta: file.meta.to_vec(),
                        data: file.data.to_vec(),
                    }));
                }
                Ok(file) => tracing::warn!(
                    path = %path.display(),
                    header_order = file.header.order,
                    "snapshot file name and header disagree; skipping it"
                ),
                Err(reason) => tracing::warn!(
                    path = %path.display(),
                    %reason,
                    "snapshot file does not verify; skipping it"
                ),
            }
        }
        Ok(None)
    }

    /// Snapshot files, oldest first, described by their headers (not verified: reading every
    /// byte of every snapshot for a status page would be too slow). Unreadable headers are
    /// logged and left out.
    pub fn list(&self) -> Result<Vec<SnapshotFileInfo>, StorageError> {
        let mut snapshots = self.snapshot_paths()?;
        snapshots.sort_by_key(|(order, _)| *order);
        let mut infos = Vec::with_capacity(snapshots.len());
        for (order, path) in snapshots {
            match read_info(&path) {
                Ok(Some(info)) if info.order == order => infos.push(info),
                Ok(Some(_)) | Ok(None) => {
                    tracing::warn!(path = %path.display(), "snapshot file has a bad header");
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(&path, e)),
            }
        }
        Ok(infos)
    }

    fn path_for(&self, order: u64) -> PathBuf {
        self.dir.join(format!("{order:020}{SUFFIX}"))
    }

    /// `(order, path)` of every file named like a snapshot.
    fn snapshot_paths(&self) -> Result<Vec<(u64, PathBuf)>, StorageError> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| StorageError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| StorageError::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(order) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            found.push((order, entry.path()));
        }
        Ok(found)
    }

    /// Deletes all but the newest `keep` snapshots.
    fn prune(&self) -> Result<(), StorageError> {
        let mut snapshots = self.snapshot_paths()?;
        if snapshots.len() <= self.keep {
            return Ok(());
        }
        snapshots.sort_by_key(|(order, _)| std::cmp::Reverse(*order));
        for (_, path) in &snapshots[self.keep..] {
            match fs::remove_file(path) {
                Ok(()) => tracing::debug!(path = %path.display(), "pruned old snapshot"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(path, e)),
            }
        }
        // Not needed for safety (a resurrected old snapshot is harmless), but keeps the
        // directory's on-disk state matching what `list` reports.
        sync_dir(&self.dir)
    }
}

/// Creates `path` and writes `parts` into it, then fsyncs it.
fn write_synced(path: &Path, parts: &[&[u8]]) -> Result<(), StorageError> {
    let err = |e| StorageError::io(path, e);
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(err)?;
    for part in parts {
        file.write_all(part).map_err(err)?;
    }
    file.sync_all().map_err(err)
}

/// The header of a snapshot file as a [`SnapshotFileInfo`]; `None` if it is not a valid header.
fn read_info(path: &Path) -> io::Result<Option<SnapshotFileInfo>> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut header = [0u8; format::HEADER_LEN];
    if size < format::HEADER_LEN as u64 {
        return Ok(None);
    }
    file.read_exact(&mut header)?;
    let Ok(parsed) = format::decode_header(&header) else {
        return Ok(None);
    };
    if u64::from(parsed.id_len) > MAX_ID_LEN as u64 || parsed.file_len() != Some(size) {
        return Ok(None);
    }
    let mut id = vec![0u8; parsed.id_len as usize];
    file.read_exact(&mut id)?;
    let Ok(id) = String::from_utf8(id) else {
        return Ok(None);
    };
    Ok(Some(SnapshotFileInfo {
        order: parsed.order,
        id,
        path: path.to_path_buf(),
        size,
    }))
}
