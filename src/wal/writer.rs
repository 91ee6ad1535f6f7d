//! Appending to a shard's log, and the flusher that makes it durable.
//!
//! The worker appends a round's records into the mapped segment (encoded in
//! place, no system call), then hands the flusher a `Commit`: the files to
//! sync, the highest LSN written, and the outcomes to release. The worker
//! goes on with the next round at once; the flusher syncs (one `fdatasync`
//! for every commit that queued up meanwhile: group commit) and only then
//! releases the outcomes. Flushing thus overlaps with applying the next
//! rounds.
//!
//! The next segment is made ready in the background (a spare, see
//! `Segment::make_spare`): switching segments on the worker is a rename
//! and a mapping, and the syncs that make the switch durable (the new
//! file and the directory) ride with the round's commit to the flusher.

use super::record::{self, Record, RECORD_BYTES_MAX};
use super::segment::{Segment, SEGMENT_HEADER_BYTES, SPARE_NAME};
use super::snapshot;
use super::{Durability, Faults, WalOptions};
use crate::outcome::Code;
use crate::request::Request;
use crate::stats::Durations;
use parking_lot::Mutex;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One shard's log writer; owned by the shard's worker thread.
pub struct ShardLog {
    dir: PathBuf,
    shard: usize,
    options: WalOptions,
    segment: Option<Segment>,
    /// First free byte of `segment`.
    offset: usize,
    next_lsn: u64,
    /// Segments on disk, oldest first (first LSN, path).
    segments: Vec<(u64, PathBuf)>,
    /// Files finished since the last commit, still to be synced.
    finished: Vec<ToSync>,
    /// The next segment's file, being made ready off the worker thread.
    spare: Option<JoinHandle<io::Result<File>>>,
    bytes_since_snapshot: u64,
    /// Bytes of log appended since this log was opened (for stats).
    pub bytes_written: u64,
}

impl ShardLog {
    /// A log that goes on from `tail` (the segment recovery ended in, and
    /// its first free byte) with LSN `next_lsn`; `None`: the next append
    /// starts a fresh segment. Starts making the spare segment.
    pub fn new(
        dir: PathBuf,
        shard: usize,
        options: WalOptions,
        tail: Option<(Segment, usize)>,
        next_lsn: u64,
        segments: Vec<(u64, PathBuf)>,
        bytes_since_snapshot: u64,
    ) -> ShardLog {
        let (segment, offset) = match tail {
            Some((segment, offset)) => (Some(segment), offset),
            None => (None, 0),
        };
        let mut log = ShardLog {
            dir,
            shard,
            options,
            segment,
            offset,
            next_lsn,
            segments,
            finished: Vec::new(),
            spare: None,
            bytes_since_snapshot,
            bytes_written: 0,
        };
        log.start_spare();
        log
    }

    /// Waits for the spare being made and removes it. Before recovery
    /// looks at the directory again (it removes `.tmp` files), and at the
    /// end: a spare maker must never outlive its log, or it could write
    /// zeros into a file that has become a segment since.
    pub fn stop_spare(&mut self) {
        if let Some(handle) = self.spare.take() {
            let _ = handle.join();
            let _ = std::fs::remove_file(self.dir.join(SPARE_NAME));
        }
    }

    /// The LSN the next appended record gets.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Makes sure `records` more records of any kind fit, starting a new
    /// segment if they do not. Fails (a full disk) before anything is
    /// applied, so the caller can refuse the requests cleanly.
    pub fn reserve(&mut self, records: usize) -> io::Result<()> {
        let bytes = records * RECORD_BYTES_MAX;
        let fits = self
            .segment
            .as_ref()
            .is_some_and(|s| self.offset + bytes <= s.map.len());
        if fits {
            return Ok(());
        }
        let size = self
            .options
            .segment_bytes
            .max(SEGMENT_HEADER_BYTES + bytes)
            .next_multiple_of(4096);
        let next = self.next_segment(size)?;
        // Records appended to the segment being left since the last commit
        // are synced by the next commit, with the new segment. (The worker
        // reserves before appending anything in a round, so there are none
        // today; this keeps that from being what durability rests on.)
        if let Some(done) = self.segment.take() {
            self.finished.push(ToSync::data(&done.file));
        }
        self.segments.push((next.first_lsn, next.path.clone()));
        self.segment = Some(next);
        self.offset = SEGMENT_HEADER_BYTES;
        if self.spare.is_none() {
            self.start_spare();
        }
        Ok(())
    }

    /// The segment that follows: the spare when it is ready (or, for the
    /// first segment of this log, once it is), else one made here.
    fn next_segment(&mut self, size: usize) -> io::Result<Segment> {
        self.options.faults.allocation()?;
        let first = self.segment.is_none();
        let ready = self
            .spare
            .as_ref()
            .is_some_and(|h| first || h.is_finished());
        if ready {
            let made = self.spare.take().expect("checked").join();
            match made {
                Ok(Ok(file)) if file.metadata().is_ok_and(|m| m.len() >= size as u64) => {
                    let switched = File::open(&self.dir).and_then(|dir| {
                        let next = Segment::from_spare(&self.dir, self.shard, self.next_lsn, file)?;
                        Ok((dir, next))
                    });
                    match switched {
                        Ok((dir, next)) => {
                            // The new name must be durable before anything
                            // in the file is acknowledged.
                            self.finished.push(ToSync::whole(dir));
                            return Ok(next);
                        }
                        Err(e) => self.spare_failed(&e),
                    }
                }
                Ok(Ok(_)) => {} // smaller than this segment must be
                Ok(Err(e)) => self.spare_failed(&e),
                Err(_) => self.spare_failed(&io::Error::other("spare maker panicked")),
            }
            // What is left of it would only take space (a full disk).
            let _ = std::fs::remove_file(self.dir.join(SPARE_NAME));
        }
        Segment::create(
            &self.dir,
            self.shard,
            self.next_lsn,
            size,
            &Faults::default(),
        )
    }

    fn spare_failed(&self, e: &io::Error) {
        // Not fatal: a segment is made on the worker instead (which
        // reports a full disk as such).
        eprintln!(
            "debitcore: shard {}: no spare segment ready: {e}",
            self.shard
        );
    }

    /// Starts making the next segment's file in the background.
    fn start_spare(&mut self) {
        let dir = self.dir.clone();
        let bytes = self.options.segment_bytes.next_multiple_of(4096);
        let spawned = std::thread::Builder::new()
            .name(format!("debitcore-spare-{}", self.shard))
            .spawn(move || Segment::make_spare(&dir, bytes));
        // Without a thread, segments are made on the worker as before.
        self.spare = spawned.ok();
    }

    /// Appends one record (room reserved before); returns its LSN. The
    /// record is encoded in place, straight into the mapped segment.
    pub fn append(&mut self, record: &Record) -> u64 {
        self.append_with(
            |room, lsn| record::encode_into(room, lsn, record),
            || record.clone(),
        )
    }

    /// Appends the `Request` record of `request` answered `code`, as
    /// [`ShardLog::append`] would `Record::Request`, without the request
    /// cloned into a `Record` first (which cost about as much as encoding
    /// it).
    pub fn append_request(&mut self, request: &Request, code: Code) -> u64 {
        self.append_with(
            |room, lsn| record::encode_request_into(room, lsn, request, code),
            || Record::Request {
                request: request.clone(),
                code,
            },
        )
    }

    /// Appends what `encode` writes into the room at the end of the log;
    /// in debug builds, checks that it reads back as `appended()`.
    #[inline(always)]
    fn append_with(
        &mut self,
        encode: impl FnOnce(&mut record::Room, u64) -> usize,
        appended: impl FnOnce() -> Record,
    ) -> u64 {
        let lsn = self.next_lsn;
        let segment = self.segment.as_mut().expect("room was reserved");
        // `reserve` left RECORD_BYTES_MAX bytes per record reserved, and a
        // record takes at most that: the whole room is in the segment.
        let room = segment.map[self.offset..]
            .first_chunk_mut::<RECORD_BYTES_MAX>()
            .expect("room was reserved");
        let size = encode(room, lsn);
        debug_assert_eq!(
            record::decode(&segment.map[self.offset..]),
            record::Frame::Valid {
                lsn,
                record: appended(),
                size
            },
            "a record appended does not read back"
        );
        self.offset += size;
        self.next_lsn += 1;
        self.bytes_since_snapshot += size as u64;
        self.bytes_written += size as u64;
        lsn
    }

    /// The files a commit of everything appended so far must sync.
    pub fn files_to_sync(&mut self) -> FilesToSync {
        FilesToSync {
            finished: std::mem::take(&mut self.finished),
            current: self.segment.as_ref().map(|s| ToSync::data(&s.file)),
        }
    }

    /// Syncs everything appended so far, on the calling thread (for the
    /// records recovery itself appends, before the flusher runs them).
    pub fn sync_now(&mut self) -> io::Result<()> {
        self.files_to_sync().iter().try_for_each(ToSync::sync)
    }

    /// Whether enough log was written since the last snapshot that the
    /// worker should write one now.
    pub fn snapshot_due(&self) -> bool {
        self.bytes_since_snapshot >= self.options.snapshot_every_bytes
    }

    /// Writes a snapshot of everything up to the last appended LSN (which
    /// the caller has made durable), then deletes what it makes redundant:
    /// older snapshots and segments wholly before it.
    pub fn write_snapshot(&mut self, body: &[u8]) -> io::Result<PathBuf> {
        let lsn = self.next_lsn - 1;
        let path = snapshot::write(&self.dir, self.shard, lsn, body)?;
        self.bytes_since_snapshot = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if snapshot::parse_snapshot_name(&name).is_some_and(|old| old < lsn) {
                std::fs::remove_file(entry.path())?;
            }
        }
        // Segment i is wholly before the snapshot when the next one starts
        // at or before lsn + 1.
        while self.segments.len() >= 2 && self.segments[1].0 <= lsn + 1 {
            let (_, old) = self.segments.remove(0);
            std::fs::remove_file(old)?;
        }
        super::segment::sync_dir(&self.dir)?;
        Ok(path)
    }
}

impl Drop for ShardLog {
    fn drop(&mut self) {
        self.stop_spare();
    }
}

/// A file a commit must make durable.
pub struct ToSync {
    file: Arc<File>,
    /// `fsync` rather than `fdatasync`: a directory whose entries changed.
    whole: bool,
}

impl ToSync {
    fn data(file: &Arc<File>) -> ToSync {
        ToSync {
            file: Arc::clone(file),
            whole: false,
        }
    }

    fn whole(file: File) -> ToSync {
        ToSync {
            file: Arc::new(file),
            whole: true,
        }
    }

    fn sync(&self) -> io::Result<()> {
        if self.whole {
            self.file.sync_all()
        } else {
            self.file.sync_data()
        }
    }
}

/// The files one commit must make durable: the segment being appended to,
/// after those finished since the last commit (a segment left behind, a
/// directory whose entries changed). Those are rare, so the usual commit,
/// one per worker round, allocates nothing for its files (a `Vec` of one
/// was a `malloc` on the worker and a `free` on the flusher per round).
pub struct FilesToSync {
    finished: Vec<ToSync>,
    current: Option<ToSync>,
}

impl FilesToSync {
    /// The files to flush, finished segments first.
    pub fn iter(&self) -> impl Iterator<Item = &ToSync> {
        self.finished.iter().chain(&self.current)
    }
}

/// A batch of outcomes waiting for its records to be durable.
struct Commit<T> {
    files: FilesToSync,
    upto_lsn: u64,
    payload: T,
}

/// The per-shard flusher thread.
pub struct Flusher<T: Send + 'static> {
    tx: Option<mpsc::Sender<Commit<T>>>,
    state: Arc<FlusherState>,
    handle: Option<JoinHandle<()>>,
}

struct FlusherState {
    durable_lsn: AtomicU64,
    /// A flush failed: every commit since is refused until `reset`.
    failed: AtomicBool,
    /// Commits handed over and not yet answered.
    pending: AtomicUsize,
    syncs: Arc<SyncStats>,
}

/// A flusher's syncs: how many, and how long each took (the fdatasyncs of
/// one group commit, timed by the flusher). Shared with whoever reports
/// them; taken once per sync, never on a request's path.
#[derive(Default)]
pub struct SyncStats {
    count: AtomicU64,
    durations: Mutex<Durations>,
}

impl SyncStats {
    /// Syncs made so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// How long the syncs so far took (a copy).
    pub fn durations(&self) -> Durations {
        self.durations.lock().clone()
    }

    fn record(&self, ns: u64) {
        // Under the lock, so a reader's count and histogram agree.
        let mut durations = self.durations.lock();
        durations.record(ns);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

impl<T: Send + 'static> Flusher<T> {
    /// Starts the flusher; `deliver(payload, durable)` releases outcomes
    /// (or, with `durable == false`, refuses them as `storage_unavailable`).
    pub fn spawn(
        name: String,
        durability: Durability,
        faults: Arc<Faults>,
        durable_lsn: u64,
        deliver: impl Fn(T, bool) + Send + 'static,
    ) -> Flusher<T> {
        let (tx, rx) = mpsc::channel::<Commit<T>>();
        let state = Arc::new(FlusherState {
            durable_lsn: AtomicU64::new(durable_lsn),
            failed: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            syncs: Arc::default(),
        });
        let shared = Arc::clone(&state);
        let delay = match durability {
            Durability::Batched { max_delay_us } => Duration::from_micros(max_delay_us),
            _ => Duration::ZERO,
        };
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || flusher(&rx, &shared, &faults, delay, deliver))
            .expect("spawning a flusher");
        Flusher {
            tx: Some(tx),
            state,
            handle: Some(handle),
        }
    }

    /// Hands the flusher one round: sync `files` (up to `upto_lsn`), then
    /// release `payload`, after every round committed before it.
    pub fn commit(&self, files: FilesToSync, upto_lsn: u64, payload: T) {
        self.state.pending.fetch_add(1, Ordering::SeqCst);
        let commit = Commit {
            files,
            upto_lsn,
            payload,
        };
        self.tx
            .as_ref()
            .expect("flusher running")
            .send(commit)
            .expect("the flusher outlives its worker");
    }

    /// The highest LSN known to be on stable storage.
    pub fn durable_lsn(&self) -> u64 {
        self.state.durable_lsn.load(Ordering::SeqCst)
    }

    /// Whether a flush failed: every group since is refused until the
    /// worker rebuilds the shard from disk and calls `reset`.
    pub fn failed(&self) -> bool {
        self.state.failed.load(Ordering::SeqCst)
    }

    /// The flusher's count and timings of syncs, shared.
    pub fn sync_stats(&self) -> Arc<SyncStats> {
        Arc::clone(&self.state.syncs)
    }

    /// Waits until every commit handed over has been answered.
    pub fn drain(&self) {
        while self.state.pending.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// After the worker rebuilt its state from disk: accept commits again.
    pub fn reset(&self, durable_lsn: u64) {
        self.state.durable_lsn.store(durable_lsn, Ordering::SeqCst);
        self.state.failed.store(false, Ordering::SeqCst);
    }
}

impl<T: Send + 'static> Drop for Flusher<T> {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn flusher<T>(
    rx: &mpsc::Receiver<Commit<T>>,
    state: &FlusherState,
    faults: &Faults,
    delay: Duration,
    deliver: impl Fn(T, bool),
) {
    let mut group: Vec<Commit<T>> = Vec::new();
    while let Ok(first) = rx.recv() {
        group.push(first);
        if !delay.is_zero() {
            let deadline = Instant::now() + delay;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                match rx.recv_timeout(left) {
                    Ok(commit) => group.push(commit),
                    Err(_) => break,
                }
            }
        }
        while let Ok(commit) = rx.try_recv() {
            group.push(commit);
        }
        let upto = group.iter().map(|c| c.upto_lsn).max().unwrap_or(0);
        let mut durable = !state.failed.load(Ordering::SeqCst);
        if durable && upto > state.durable_lsn.load(Ordering::SeqCst) {
            let mut synced: Vec<&Arc<File>> = Vec::new();
            let sync_start = Instant::now();
            let result = (|| {
                faults.flush()?;
                for to_sync in group.iter().flat_map(|c| c.files.iter()) {
                    if !synced.iter().any(|s| Arc::ptr_eq(s, &to_sync.file)) {
                        to_sync.sync()?;
                        synced.push(&to_sync.file);
                    }
                }
                Ok::<(), io::Error>(())
            })();
            state
                .syncs
                .record(u64::try_from(sync_start.elapsed().as_nanos()).unwrap_or(u64::MAX));
            match result {
                Ok(()) => state.durable_lsn.store(upto, Ordering::SeqCst),
                Err(e) => {
                    eprintln!("debitcore: log flush failed: {e}; refusing requests until the shard recovers");
                    state.failed.store(true, Ordering::SeqCst);
                    durable = false;
                }
            }
        }
        for commit in group.drain(..) {
            deliver(commit.payload, durable);
            state.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records appended to a segment and not yet committed when the log
    /// moves on to the next one must be in the next commit's syncs.
    #[test]
    fn a_commit_after_a_switch_syncs_the_segment_left() {
        let dir = std::env::temp_dir().join(format!("debitcore-writer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let options = WalOptions {
            segment_bytes: 16 << 10,
            ..WalOptions::default()
        };
        let mut log = ShardLog::new(dir.clone(), 0, options, None, 1, Vec::new(), 0);
        log.reserve(4).unwrap();
        log.append(&Record::Tick { now_ms: 1 });
        let first = log.files_to_sync();
        assert_eq!(first.iter().filter(|f| !f.whole).count(), 1);
        log.append(&Record::Tick { now_ms: 2 });
        // More than the 16 KiB segment holds: the log moves on.
        log.reserve(200).unwrap();
        let files = log.files_to_sync();
        let data: Vec<&ToSync> = files.iter().filter(|f| !f.whole).collect();
        assert_eq!(data.len(), 2, "the segment left and the new one");
        assert!(!Arc::ptr_eq(&data[0].file, &data[1].file));
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
