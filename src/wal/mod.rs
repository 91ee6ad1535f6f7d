//! The write-ahead log: one per shard, memory-mapped segments, group commit,
//! snapshots, and recovery.
//!
//! - `record`: framing, checksums, the binary form of requests.
//! - `segment`: preallocated, mapped segment files.
//! - `writer`: appending a round's records; the flusher thread that makes
//!   them durable and only then hands outcomes back (group commit).
//! - `recovery`: snapshot + log replay at open; torn tails cut, damage in the
//!   middle refused.
//! - `snapshot`: atomic snapshot files of a shard's tables.
//!
//! The byte layout is in `docs/wal-format.md`.
//!
//! An embedder needs only [`Durability`], [`WalOptions`] and [`OpenError`]
//! (re-exported at the crate root). The submodules are public for the
//! tests, benches and `examples/icount.rs`, which read, write and damage
//! log files directly.

pub mod broadcasts;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod snapshot;
pub mod writer;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// When an outcome may be handed back, relative to its log record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// After the record is on stable storage: a crash loses nothing that
    /// was answered. Each worker round is one group; flushing overlaps with
    /// the next round's work.
    #[default]
    Sync,
    /// As `Sync`, but the flusher waits up to `max_delay_us` for more
    /// rounds to join a group: fewer flushes, longer waits.
    Batched {
        /// Longest wait for more rounds before a flush, microseconds.
        max_delay_us: u64,
    },
    /// No log: nothing survives the process.
    None,
}

/// Log sizes and the fault-injection seam.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Bytes per segment file (preallocated).
    pub segment_bytes: usize,
    /// A shard writes a snapshot after this many bytes of log since the last.
    pub snapshot_every_bytes: u64,
    /// Failures to inject (tests); shared by every shard.
    pub faults: Arc<Faults>,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            snapshot_every_bytes: 512 << 20,
            faults: Arc::new(Faults::default()),
        }
    }
}

/// The I/O seam for tests: makes the next N allocations or flushes fail as
/// a full disk or a failing device would.
#[derive(Debug, Default)]
pub struct Faults {
    allocations: AtomicU32,
    flushes: AtomicU32,
}

impl Faults {
    /// The next `n` segment allocations fail with ENOSPC.
    pub fn fail_allocations(&self, n: u32) {
        self.allocations.store(n, Ordering::SeqCst);
    }

    /// The next `n` flushes fail with EIO.
    pub fn fail_flushes(&self, n: u32) {
        self.flushes.store(n, Ordering::SeqCst);
    }

    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    pub(crate) fn allocation(&self) -> io::Result<()> {
        if Faults::take(&self.allocations) {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        Ok(())
    }

    pub(crate) fn flush(&self) -> io::Result<()> {
        if Faults::take(&self.flushes) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        Ok(())
    }
}

/// Why a data directory could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Another engine holds the directory's lock.
    Locked(PathBuf),
    /// A damaged record or snapshot that is not a torn tail.
    Damaged {
        /// The file the damage is in.
        file: PathBuf,
        /// Byte offset of the damage in `file`.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// An I/O error on this path (permissions, a missing file, a full disk at
    /// open).
    Io(PathBuf, io::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Locked(dir) => write!(
                f,
                "{}: locked by another engine (LOCK is held)",
                dir.display()
            ),
            OpenError::Damaged {
                file,
                offset,
                reason,
            } => write!(f, "{}: damaged at byte {offset}: {reason}", file.display()),
            OpenError::Io(path, e) => write!(f, "{}: {e}", path.display()),
        }
    }
}

impl std::error::Error for OpenError {}

/// An open, locked data directory.
pub struct DataDir {
    /// The data directory.
    pub path: PathBuf,
    /// Its shard count, as its `meta` file records it.
    pub shards: usize,
    /// Held for the engine's life: the lock is the open file.
    _lock: File,
}

const META_NAME: &str = "meta";
const META_PREFIX: &str = "debitcore data v1\nshards ";

impl DataDir {
    /// Creates or opens `path`, takes its lock, and reads (or writes) the
    /// shard count. An existing directory keeps the shard count it was
    /// made with, whatever `shards` says: accounts are placed by it.
    pub fn open(path: &Path, shards: usize) -> Result<DataDir, OpenError> {
        let io_err = |p: &Path| {
            let p = p.to_path_buf();
            move |e| OpenError::Io(p, e)
        };
        std::fs::create_dir_all(path).map_err(io_err(path))?;
        let lock_path = path.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Locked(path.to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(OpenError::Io(lock_path, e)),
        }
        let meta_path = path.join(META_NAME);
        let shards = match std::fs::read_to_string(&meta_path) {
            Ok(text) => parse_meta(&text).ok_or_else(|| OpenError::Damaged {
                file: meta_path.clone(),
                offset: 0,
                reason: "not a debitcore meta file".into(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The shard directories first: a `meta` promises them (a
                // kill between the two used to leave a directory that
                // `inspect` called damaged).
                for shard in 0..shards {
                    let dir = shard_dir(path, shard);
                    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
                }
                segment::sync_dir(path).map_err(io_err(path))?;
                let tmp = path.join("meta.tmp");
                std::fs::write(&tmp, format!("{META_PREFIX}{shards}\n")).map_err(io_err(&tmp))?;
                File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err(&tmp))?;
                std::fs::rename(&tmp, &meta_path).map_err(io_err(&meta_path))?;
                segment::sync_dir(path).map_err(io_err(path))?;
                shards
            }
            Err(e) => return Err(OpenError::Io(meta_path, e)),
        };
        for shard in 0..shards {
            let dir = shard_dir(path, shard);
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        Ok(DataDir {
            path: path.to_path_buf(),
            shards,
            _lock: lock,
        })
    }
}

/// The shard count a `meta` file records, if it is one.
pub(crate) fn parse_meta(text: &str) -> Option<usize> {
    text.strip_prefix(META_PREFIX)?
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|&n| (1..=crate::limits::SHARD_COUNT_MAX).contains(&n))
}

/// Where one shard's segments and snapshots live. Public for tests and
/// benches that look at (or damage) a shard's files.
pub fn shard_dir(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join(format!("shard-{shard:03}"))
}
