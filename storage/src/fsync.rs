//! Real fsync for sled's files.
//!
//! sled 0.34's `flush()` writes its log buffers with `sync_file_range`, which pushes pages to
//! the device but does not flush the device cache or file metadata: after a power cut an
//! "acknowledged" write may be gone. So after every `flush()` the log store calls
//! [`SledFiles::sync`], which issues real `fdatasync`/`fsync` on everything sled writes in its
//! directory:
//!
//! - `db`: the log-structured data file holding every tree (entries, vote, committed,
//!   last purged). `fdatasync` on our own descriptor is enough: on Linux it syncs the inode
//!   whatever descriptor is used, and it includes the size change needed to read appended data.
//! - `blobs/<lsn>`: sled writes any value larger than a quarter of its segment (128 KiB by
//!   default, so a big Raft entry) to its own new file, with no sync at all. New blob files are
//!   `fsync`ed once, then the `blobs/` directory so their names survive.
//! - the directory itself whenever its listing changed (sled's `snap.*` files are renamed into
//!   place; their contents are synced by sled but the rename is not).
//! - `conf` is written once, when the store is created; it is synced at open.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::StorageError;

/// Open handles and bookkeeping to fsync a sled database directory.
pub(crate) struct SledFiles {
    dir: PathBuf,
    db_file: File,
    /// Blob files already fsynced; sled never rewrites a blob in place, only creates and deletes.
    synced_blobs: BTreeSet<OsString>,
    /// Names in `dir` when it was last fsynced.
    synced_listing: BTreeSet<OsString>,
}

impl SledFiles {
    /// Opens sled's data file in `dir` (sled must already have created it) and makes the whole
    /// directory durable as it is now, including `dir`'s own entry in its parent.
    pub(crate) fn open(dir: &Path) -> Result<Self, StorageError> {
        let db_path = dir.join("db");
        // Read access is enough for fsync on Unix; we never write through this handle, and
        // sled's exclusive `flock` is held on its own descriptor, so ours does not disturb it.
        let db_file = File::open(&db_path).map_err(|e| StorageError::io(&db_path, e))?;
        let mut files = SledFiles {
            dir: dir.to_path_buf(),
            db_file,
            synced_blobs: BTreeSet::new(),
            synced_listing: BTreeSet::new(),
        };
        sync_file(&dir.join("conf"))?;
        // Also fsyncs `dir`: its listing differs from the empty one we start from.
        files.sync()?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(files)
    }

    /// Makes everything sled has written so far durable. Call it after `Db::flush()` returned.
    pub(crate) fn sync(&mut self) -> Result<(), StorageError> {
        self.db_file
            .sync_data()
            .map_err(|e| StorageError::io(self.dir.join("db"), e))?;
        self.sync_new_blobs()?;

        let listing = list_names(&self.dir)?;
        if listing != self.synced_listing {
            sync_dir(&self.dir)?;
            self.synced_listing = listing;
        }
        Ok(())
    }

    fn sync_new_blobs(&mut self) -> Result<(), StorageError> {
        let blob_dir = self.dir.join("blobs");
        let present = list_names(&blob_dir)?;
        let mut changed = present.len() != self.synced_blobs.len();
        for name in present.difference(&self.synced_blobs) {
            changed = true;
            match File::open(blob_dir.join(name)) {
                Ok(f) => f
                    .sync_all()
                    .map_err(|e| StorageError::io(blob_dir.join(name), e))?,
                // sled garbage-collected it between our listing and the open: nothing to keep.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(blob_dir.join(name), e)),
            }
        }
        if changed {
            sync_dir(&blob_dir)?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}

/// fsyncs a directory so that entries created, renamed or removed in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

fn sync_file(path: &Path) -> Result<(), StorageError> {
    match File::open(path) {
        Ok(f) => f.sync_all().map_err(|e| StorageError::io(path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// The names in `dir`; a missing directory is empty.
fn list_names(dir: &Path) -> Result<BTreeSet<OsString>, StorageError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(StorageError::io(dir, e)),
    };
    let mut names = BTreeSet::new();
    for entry in entries {
        names.insert(entry.map_err(|e| StorageError::io(dir, e))?.file_name());
    }
    Ok(names)
}
