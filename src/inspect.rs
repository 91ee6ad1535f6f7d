//! `debitcore inspect`: read-only verification and dumping of a data
//! directory (layout in `docs/wal-format.md`).
//!
//! Every segment and snapshot of every shard is read with plain reads (no
//! mapping, no writes, nothing created or removed) and checked the way
//! recovery checks it: segment headers, record checksums, the LSN chain,
//! snapshot checksums and bodies. Where a record cannot be read, the same
//! rule as recovery's decides what it is (`wal::recovery`): if a `Group`
//! record further on claims that the unreadable LSN was durable, it is
//! damage (an acknowledged record is gone; recovery refuses to open);
//! otherwise it is a torn tail (never acknowledged; recovery cuts it).
//! Unlike recovery, inspection goes on past damage, resynchronising at the
//! next readable record, so that one report lists every damaged place.
//!
//! The directory's `LOCK` is only ever taken *shared*, and only tried: an
//! engine that holds it is reported (its log may be changing under the
//! inspection, so its tail may look torn), and an engine that starts while
//! an inspection holds the shared lock finds the directory locked.
//!
//! With `replay`, every shard is also rebuilt from its newest snapshot and
//! its log, and every request's result is compared with the one the log
//! recorded, as recovery does; this needs the dedup window the engine ran
//! with (results depend on what was forgotten).

use crate::hash;
use crate::limits::DEDUP_WINDOW_MS_DEFAULT;
use crate::money::{format_minor_wide, AmountArg};
use crate::request::{AccountId, Internal, Request, Step};
use crate::shard::Shard;
use crate::wal::record::{self, Frame, Record};
use crate::wal::segment::MAGIC as SEGMENT_MAGIC;
use crate::wal::segment::{parse_segment_name, SEGMENT_HEADER_BYTES};
use crate::wal::shard_dir;
use crate::wal::snapshot::{self, parse_snapshot_name};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What to inspect and print.
#[derive(Clone, Debug)]
pub struct InspectOptions {
    /// Write every record as a JSON line, in LSN order per shard.
    pub dump: bool,
    /// Write only the records of requests on this account (its audit trail).
    pub account: Option<AccountId>,
    /// Rebuild every shard and check each request's recorded result.
    pub replay: bool,
    /// The dedup window the engine ran with (used by `replay`).
    pub dedup_window_ms: u64,
}

impl Default for InspectOptions {
    fn default() -> Self {
        InspectOptions {
            dump: false,
            account: None,
            replay: false,
            dedup_window_ms: DEDUP_WINDOW_MS_DEFAULT,
        }
    }
}

impl InspectOptions {
    /// Whether records are written (`dump` or `account`).
    pub fn writes_records(&self) -> bool {
        self.dump || self.account.is_some()
    }
}

/// Whether an unreadable place loses acknowledged data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Nothing from here on was acknowledged: recovery cuts it. Not an error.
    TornTail,
    /// Acknowledged records are unreadable, or a file is corrupt: recovery
    /// refuses to open the directory.
    Damage,
}

/// One unreadable place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Whether recovery would cut it (torn tail) or refuse the directory.
    pub severity: Severity,
    /// The file it is in.
    pub file: PathBuf,
    /// Byte offset in `file`.
    pub offset: u64,
    /// What is wrong there, for an operator.
    pub reason: String,
}

/// One segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The file name (`<first LSN, 20 digits>.wal`).
    pub name: String,
    /// The first LSN its name (and header) promise.
    pub first_lsn: u64,
    /// Readable records in the LSN chain.
    pub records: u64,
    /// Offset of the first byte after its last readable record.
    pub bytes_used: u64,
    /// File size (preallocated).
    pub bytes_size: u64,
    /// Whether the 64-byte segment header verified (magic, shard, LSN, CRC).
    pub header_ok: bool,
}

/// One snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The file name (`snapshot-<LSN, 20 digits>.snap`).
    pub name: String,
    /// The last LSN the snapshot holds: replay goes on after it.
    pub lsn: u64,
    /// `None` if it verified; else why not.
    pub damage: Option<String>,
}

/// Everything found in one shard's directory.
#[derive(Clone, Debug, Default)]
pub struct ShardSummary {
    /// The shard's index (its directory is `shard-NNN`, the index in three
    /// digits).
    pub index: usize,
    /// Every segment file, oldest first.
    pub segments: Vec<SegmentInfo>,
    /// Every snapshot file, oldest first.
    pub snapshots: Vec<SnapshotInfo>,
    /// LSNs of the first and last readable records.
    pub first_lsn: Option<u64>,
    /// The LSN of the last readable record.
    pub last_lsn: Option<u64>,
    /// Request records (a request that changed state, with its result).
    pub requests: u64,
    /// Tick records (engine time moved, under the wall clock).
    pub ticks: u64,
    /// Group records (the start of a group commit).
    pub groups: u64,
    /// Request records by op name.
    pub by_op: BTreeMap<&'static str, u64>,
    /// Request records by result name.
    pub by_result: BTreeMap<&'static str, u64>,
    /// Request records by (op, result).
    pub by_op_result: BTreeMap<(&'static str, &'static str), u64>,
    /// What is unreadable in this shard's files, in file order.
    pub problems: Vec<Problem>,
    /// Things worth knowing that are not problems.
    pub notes: Vec<String>,
    /// Whether `replay` ran over the whole log without a mismatch.
    pub replayed: Option<bool>,
}

impl ShardSummary {
    /// Every readable record of the shard, of any kind.
    pub fn records(&self) -> u64 {
        self.requests + self.ticks + self.groups
    }
}

/// Whether an engine holds the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockState {
    /// No `LOCK` file: no engine ever opened the directory.
    Absent,
    /// Free; the inspection held it shared while it read.
    Free,
    /// A running engine holds it: the log may change under the inspection.
    HeldByEngine,
    /// The lock could not be tried.
    Unknown(String),
}

/// The result of an inspection.
#[derive(Clone, Debug)]
pub struct InspectSummary {
    /// The data directory inspected.
    pub dir: PathBuf,
    /// The shard count `meta` records, if it is readable.
    pub meta_shards: Option<usize>,
    /// Whether an engine held the directory while it was read.
    pub lock: LockState,
    /// One summary per shard directory found, by index.
    pub shards: Vec<ShardSummary>,
    /// Problems outside any shard (`meta`).
    pub problems: Vec<Problem>,
    /// Records written (`dump`/`account`).
    pub records_written: u64,
}

impl InspectSummary {
    /// Every problem, directory-level first.
    pub fn all_problems(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .chain(self.shards.iter().flat_map(|s| &s.problems))
    }

    /// Whether anything is damaged (the exit status 1).
    pub fn damaged(&self) -> bool {
        self.all_problems().any(|p| p.severity == Severity::Damage)
    }

    /// How many torn tails were found (each one cut by the next open).
    pub fn torn_tails(&self) -> usize {
        self.all_problems()
            .filter(|p| p.severity == Severity::TornTail)
            .count()
    }

    /// Every readable record over all shards, of any kind.
    pub fn records(&self) -> u64 {
        self.shards.iter().map(ShardSummary::records).sum()
    }

    /// Request records of `op` with `result`, over all shards.
    pub fn count(&self, op: &str, result: &str) -> u64 {
        self.shards
            .iter()
            .flat_map(|s| &s.by_op_result)
            .filter(|&(&(o, r), _)| o == op && r == result)
            .map(|(_, &n)| n)
            .sum()
    }

    /// The human-readable report.
    pub fn write_report(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut s = String::new();
        let _ = writeln!(s, "data directory {}", self.dir.display());
        match self.meta_shards {
            Some(n) => {
                let _ = writeln!(s, "  meta: {n} shards");
            }
            None => s.push_str("  meta: unreadable\n"),
        }
        let lock = match &self.lock {
            LockState::Absent => "no LOCK file (never opened by an engine)".to_string(),
            LockState::Free => "free (held shared during the inspection)".to_string(),
            LockState::HeldByEngine => {
                "held by a running engine: its log may change while it is read".to_string()
            }
            LockState::Unknown(e) => format!("could not be tried: {e}"),
        };
        let _ = writeln!(s, "  lock: {lock}");
        for p in &self.problems {
            write_problem(&mut s, p);
        }
        for shard in &self.shards {
            write_shard(&mut s, shard);
        }
        let damaged = self
            .all_problems()
            .filter(|p| p.severity == Severity::Damage)
            .count();
        let _ = writeln!(
            s,
            "total: {} shards, {} records, {} damaged places, {} torn tails: {}",
            self.shards.len(),
            self.records(),
            damaged,
            self.torn_tails(),
            if damaged > 0 { "DAMAGED" } else { "ok" }
        );
        out.write_all(s.as_bytes())
    }
}

fn write_problem(s: &mut String, p: &Problem) {
    let what = match p.severity {
        Severity::TornTail => "torn tail",
        Severity::Damage => "DAMAGE",
    };
    let _ = writeln!(
        s,
        "  {what}: {} at byte {}: {}",
        p.file.display(),
        p.offset,
        p.reason
    );
}

fn write_shard(s: &mut String, shard: &ShardSummary) {
    let _ = writeln!(s, "shard {} ({})", shard.index, shard_dir_name(shard.index));
    for seg in &shard.segments {
        let _ = writeln!(
            s,
            "  segment {}: first LSN {}, {} records, {}/{} bytes used{}",
            seg.name,
            seg.first_lsn,
            seg.records,
            seg.bytes_used,
            seg.bytes_size,
            if seg.header_ok { "" } else { ", bad header" }
        );
    }
    for snap in &shard.snapshots {
        let state = snap.damage.as_deref().unwrap_or("ok");
        let _ = writeln!(s, "  snapshot {}: LSN {}, {state}", snap.name, snap.lsn);
    }
    match (shard.first_lsn, shard.last_lsn) {
        (Some(first), Some(last)) => {
            let _ = writeln!(s, "  LSN range {first}..={last}");
        }
        _ => s.push_str("  LSN range: empty\n"),
    }
    let _ = writeln!(
        s,
        "  records: {} request, {} tick, {} group",
        shard.requests, shard.ticks, shard.groups
    );
    let join = |m: &BTreeMap<&'static str, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !shard.by_op.is_empty() {
        let _ = writeln!(s, "    by op: {}", join(&shard.by_op));
        let _ = writeln!(s, "    by result: {}", join(&shard.by_result));
        let pairs: Vec<String> = shard
            .by_op_result
            .iter()
            .map(|((op, result), n)| format!("{op}/{result} {n}"))
            .collect();
        let _ = writeln!(s, "    by op/result: {}", pairs.join(", "));
    }
    match shard.replayed {
        Some(true) => s.push_str("  replay: every recorded result reproduced\n"),
        Some(false) => s.push_str("  replay: incomplete (see above)\n"),
        None => {}
    }
    for note in &shard.notes {
        let _ = writeln!(s, "  note: {note}");
    }
    for p in &shard.problems {
        write_problem(s, p);
    }
}

fn shard_dir_name(index: usize) -> String {
    shard_dir(Path::new(""), index).display().to_string()
}

/// `debitcore inspect`: returns the exit status (0 readable, 1 damaged,
/// 2 not a data directory). Records go to stdout, the report to stdout
/// (to stderr when records are written, so stdout stays JSON Lines).
pub fn cli(dir: &Path, options: &InspectOptions) -> u8 {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = inspect(dir, options, &mut out);
    let flushed = out.flush();
    match result {
        Ok(summary) => {
            let report = if options.writes_records() {
                summary.write_report(&mut io::stderr().lock())
            } else {
                summary.write_report(&mut io::stdout().lock())
            };
            if let Err(e) = report.and(flushed) {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    eprintln!("debitcore inspect: {e}");
                    return 1;
                }
            }
            u8::from(summary.damaged())
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            eprintln!("debitcore inspect: {e}");
            2
        }
        // The reader of the records went away (`--dump | head`).
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("debitcore inspect: {e}");
            1
        }
    }
}

/// Verifies every file of the data directory `dir`, writes the records
/// `options` asks for to `out` (JSON Lines), and returns what it found.
/// Reads only. `Err` of kind `InvalidInput` if `dir` is not a data
/// directory; other errors are I/O errors reading it.
pub fn inspect(
    dir: &Path,
    options: &InspectOptions,
    out: &mut dyn Write,
) -> io::Result<InspectSummary> {
    let not_data_dir = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a debitcore data directory ({why})", dir.display()),
        )
    };
    if !dir.is_dir() {
        return Err(not_data_dir("no such directory"));
    }
    let (lock, _lock_file) = try_lock_shared(dir);
    let mut summary = InspectSummary {
        dir: dir.to_path_buf(),
        meta_shards: None,
        lock,
        shards: Vec::new(),
        problems: Vec::new(),
        records_written: 0,
    };
    let meta_path = dir.join("meta");
    let shard_dirs = list_shard_dirs(dir)?;
    let shards = match std::fs::read(&meta_path) {
        Ok(bytes) => match parse_meta(&bytes) {
            Some(n) => {
                summary.meta_shards = Some(n);
                n
            }
            None => {
                summary.problems.push(Problem {
                    severity: Severity::Damage,
                    file: meta_path.clone(),
                    offset: 0,
                    reason: "not a debitcore meta file".into(),
                });
                shard_dirs.iter().map(|&i| i + 1).max().unwrap_or(0)
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if shard_dirs.is_empty() {
                return Err(not_data_dir("no meta file, no shard directories"));
            }
            summary.problems.push(Problem {
                severity: Severity::Damage,
                file: meta_path.clone(),
                offset: 0,
                reason: "meta file missing".into(),
            });
            shard_dirs.iter().map(|&i| i + 1).max().unwrap_or(0)
        }
        Err(e) => return Err(e),
    };
    for &extra in shard_dirs.iter().filter(|&&i| i >= shards) {
        summary.problems.push(Problem {
            severity: Severity::Damage,
            file: shard_dir(dir, extra),
            offset: 0,
            reason: format!("shard directory beyond the {shards} shards of meta"),
        });
    }
    for index in 0..shards {
        let mut scan = ShardScan::new(dir, index, options, out);
        scan.run()?;
        summary.records_written += scan.written;
        summary.shards.push(scan.summary);
    }
    Ok(summary)
}

fn try_lock_shared(dir: &Path) -> (LockState, Option<File>) {
    let file = match File::open(dir.join("LOCK")) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (LockState::Absent, None),
        Err(e) => return (LockState::Unknown(e.to_string()), None),
    };
    match file.try_lock_shared() {
        Ok(()) => (LockState::Free, Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => (LockState::HeldByEngine, None),
        Err(std::fs::TryLockError::Error(e)) => (LockState::Unknown(e.to_string()), None),
    }
}

/// The shard count in a `meta` file (`wal::DataDir` writes it).
fn parse_meta(bytes: &[u8]) -> Option<usize> {
    crate::wal::parse_meta(std::str::from_utf8(bytes).ok()?)
}

fn list_shard_dirs(dir: &Path) -> io::Result<Vec<usize>> {
    let mut shards = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(index) = name
            .strip_prefix("shard-")
            .filter(|d| d.len() >= 3 && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<usize>().ok())
        {
            if shard_dir_name(index) == name {
                shards.push(index);
            }
        }
    }
    shards.sort_unstable();
    Ok(shards)
}

/// Reads a segment file up to its last nonzero block (plus room for one
/// record), and its length. A segment is preallocated and mostly zeros;
/// what is left out is zeros, which every scan treats as the end. Only the
/// file's data regions are read (`SEEK_DATA`/`SEEK_HOLE`: on ext4 and XFS
/// the never-written, fallocated rest of a segment is a hole), through one
/// block buffer, so inspecting costs what was written, not the 64 MiB a
/// segment reserves.
fn read_segment(path: &Path) -> io::Result<(Vec<u8>, u64)> {
    use rustix::fs::{seek, SeekFrom};
    use std::os::unix::fs::FileExt;
    const BLOCK: u64 = 1 << 20;
    let file = File::open(path)?;
    let file_bytes = file.metadata()?.len();
    let mut kept = Vec::new();
    let mut block = vec![0u8; BLOCK as usize];
    let mut pos = 0u64;
    while pos < file_bytes {
        let data = match seek(&file, SeekFrom::Data(pos)) {
            Ok(data) => data,
            Err(rustix::io::Errno::NXIO) => break, // only a hole is left
            Err(_) => pos,                         // no SEEK_DATA here: read everything
        };
        let hole = seek(&file, SeekFrom::Hole(data))
            .unwrap_or(file_bytes)
            .min(file_bytes);
        let mut at = data;
        while at < hole {
            let n = (hole - at).min(BLOCK) as usize;
            file.read_exact_at(&mut block[..n], at)?;
            if record::next_nonzero(&block[..n], 0) < n {
                kept.resize(at as usize, 0);
                kept.extend_from_slice(&block[..n]);
            }
            at += n as u64;
        }
        pos = hole.max(data + 1);
    }
    // Zeros after the last record belong to it (padding) or are empty:
    // keep enough that a record at the very end reads as it is on disk.
    let pad = (file_bytes - kept.len() as u64).min(record::RECORD_BYTES_MAX as u64);
    kept.resize(kept.len() + pad as usize, 0);
    Ok((kept, file_bytes))
}

/// Checks a segment's 64-byte header against its shard and name, as
/// `wal::segment::Segment::open` does (which needs the file writable).
fn check_segment_header(bytes: &[u8], shard: usize, first_lsn: u64) -> Result<(), String> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err(format!(
            "file of {} bytes, shorter than a segment header",
            bytes.len()
        ));
    }
    let h = &bytes[..SEGMENT_HEADER_BYTES];
    if &h[0..8] != SEGMENT_MAGIC {
        return Err("no segment magic".into());
    }
    let word32 = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().expect("4 bytes"));
    let word64 = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().expect("8 bytes"));
    if word32(24) != crc32c::crc32c(&h[0..24]) {
        return Err("segment header checksum mismatch".into());
    }
    if word32(8) as usize != shard {
        return Err(format!("segment header names shard {}", word32(8)));
    }
    if word64(16) != first_lsn {
        return Err(format!(
            "segment header says first LSN {}, its name {first_lsn}",
            word64(16)
        ));
    }
    if word32(12) != 0 || h[28..].iter().any(|&b| b != 0) {
        return Err("segment header has nonzero reserved bytes".into());
    }
    Ok(())
}

/// The next readable record at or after `from` (8-byte boundaries).
fn next_valid(bytes: &[u8], from: usize) -> Option<(usize, u64, usize)> {
    let mut at = from;
    loop {
        at = record::next_nonzero(bytes, at);
        if at + record::HEADER_BYTES > bytes.len() {
            return None;
        }
        if let Frame::Valid { lsn, size, .. } = record::decode(&bytes[at..]) {
            return Some((at, lsn, size));
        }
        at += record::ALIGN;
    }
}

struct ShardScan<'a> {
    dir: PathBuf,
    options: &'a InspectOptions,
    out: &'a mut dyn Write,
    summary: ShardSummary,
    /// The shard being rebuilt (`replay`), and the LSN its start covers.
    replay: Option<(Shard, u64)>,
    written: u64,
    line: String,
}

/// Where the LSN chain stands while segments are walked.
enum Chain {
    /// The next record must have this LSN.
    Expect(u64),
    /// After damage: take the next segment's first LSN, noting a gap
    /// from the LSN given.
    Resume(u64),
    /// The first segment has not been seen.
    Start,
}

impl<'a> ShardScan<'a> {
    fn new(
        data_dir: &Path,
        index: usize,
        options: &'a InspectOptions,
        out: &'a mut dyn Write,
    ) -> ShardScan<'a> {
        ShardScan {
            dir: shard_dir(data_dir, index),
            options,
            out,
            summary: ShardSummary {
                index,
                ..ShardSummary::default()
            },
            replay: None,
            written: 0,
            line: String::with_capacity(256),
        }
    }

    fn problem(&mut self, severity: Severity, file: &Path, offset: usize, reason: String) {
        self.summary.problems.push(Problem {
            severity,
            file: file.to_path_buf(),
            offset: offset as u64,
            reason,
        });
    }

    fn run(&mut self) -> io::Result<()> {
        let index = self.summary.index;
        let mut segments: Vec<(u64, PathBuf)> = Vec::new();
        let mut snapshots: Vec<(u64, PathBuf)> = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let dir = self.dir.clone();
                self.problem(Severity::Damage, &dir, 0, "shard directory missing".into());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(lsn) = parse_segment_name(&name) {
                segments.push((lsn, entry.path()));
            } else if let Some(lsn) = parse_snapshot_name(&name) {
                snapshots.push((lsn, entry.path()));
            } else if name == crate::wal::segment::SPARE_NAME {
                self.summary.notes.push(format!(
                    "{name}: the next segment, made ready ahead; never relied on (recovery removes it)"
                ));
            } else if name.ends_with(".tmp") {
                self.summary.notes.push(format!(
                    "{name}: an interrupted snapshot, never relied on (recovery removes it)"
                ));
            } else {
                self.summary
                    .notes
                    .push(format!("{name}: not a debitcore file"));
            }
        }
        segments.sort();
        snapshots.sort();

        // Snapshots: all verified; the newest is where recovery starts.
        let mut start: Option<(Shard, u64)> = None;
        let newest = snapshots.len().checked_sub(1);
        for (i, (lsn, path)) in snapshots.iter().enumerate() {
            let damage = match snapshot::read(path, index)? {
                Err(reason) => Some(reason.to_string()),
                Ok((stored, _)) if stored != *lsn => {
                    Some(format!("snapshot says LSN {stored}, its name {lsn}"))
                }
                Ok((_, body)) => {
                    match Shard::decode_snapshot(&body, self.options.dedup_window_ms, None) {
                        None => Some("snapshot body does not decode to a consistent shard".into()),
                        Some(shard) => {
                            if Some(i) == newest {
                                start = Some((shard, *lsn));
                            }
                            None
                        }
                    }
                }
            };
            if let Some(reason) = &damage {
                self.problem(Severity::Damage, path, 0, reason.clone());
            }
            self.summary.snapshots.push(SnapshotInfo {
                name: file_name(path),
                lsn: *lsn,
                damage,
            });
        }
        let snapshot_lsn = snapshots.last().map_or(0, |&(lsn, _)| lsn);
        if self.options.replay {
            if newest.is_some() && start.is_none() {
                self.summary
                    .notes
                    .push("no replay: the newest snapshot is damaged".into());
            } else {
                self.replay = Some(
                    start
                        .take()
                        .unwrap_or_else(|| (Shard::new(0, self.options.dedup_window_ms, None), 0)),
                );
            }
        }
        if let Some(&(first, ref path)) = segments.first() {
            let needed = snapshot_lsn + 1;
            if first > needed {
                self.problem(
                    Severity::Damage,
                    path,
                    0,
                    format!("log starts at LSN {first}, after the snapshot at {snapshot_lsn}: records are missing"),
                );
                self.replay = None;
            }
            if first > 1 {
                self.summary.notes.push(format!(
                    "log starts at LSN {first}: the history before it is only in the snapshot"
                ));
            }
        }
        self.walk(&segments)?;
        if self.replay.is_some() {
            self.summary.replayed = Some(true);
        } else if self.options.replay {
            self.summary.replayed = Some(false);
        }
        Ok(())
    }

    /// Walks the LSN chain through every segment.
    fn walk(&mut self, segments: &[(u64, PathBuf)]) -> io::Result<()> {
        let index = self.summary.index;
        let mut chain = Chain::Start;
        for (i, &(first_lsn, ref path)) in segments.iter().enumerate() {
            let name = file_name(path);
            let (bytes, file_bytes) = read_segment(path)?;
            let mut info = SegmentInfo {
                name,
                first_lsn,
                records: 0,
                bytes_used: 0,
                bytes_size: file_bytes,
                header_ok: true,
            };
            if let Err(reason) = check_segment_header(&bytes, index, first_lsn) {
                info.header_ok = false;
                self.summary.segments.push(info);
                if i + 1 == segments.len() {
                    self.problem(
                        Severity::TornTail,
                        path,
                        0,
                        format!("unfinished segment ({reason}): it was being created; nothing in it was acknowledged, recovery removes it"),
                    );
                    return Ok(());
                }
                self.problem(Severity::Damage, path, 0, reason);
                self.replay = None;
                chain = match chain {
                    Chain::Expect(lsn) | Chain::Resume(lsn) => Chain::Resume(lsn),
                    Chain::Start => Chain::Start,
                };
                continue;
            }
            let mut expected = match chain {
                Chain::Start => first_lsn,
                Chain::Expect(lsn) => lsn,
                Chain::Resume(lsn) => {
                    if first_lsn > lsn {
                        self.summary
                            .notes
                            .push(format!("LSNs {lsn}..={} are unreadable", first_lsn - 1));
                    }
                    first_lsn
                }
            };
            let mut offset = SEGMENT_HEADER_BYTES;
            let next_continues =
                |expected: u64| segments.get(i + 1).is_some_and(|&(lsn, _)| lsn == expected);
            let end = loop {
                let stop = match record::decode(&bytes[offset..]) {
                    Frame::Valid { lsn, record, size } if lsn == expected => {
                        self.take(lsn, &record, &info.name, offset, path)?;
                        info.records += 1;
                        expected += 1;
                        offset += size;
                        continue;
                    }
                    Frame::Valid { lsn, .. } => format!("LSN {lsn} where {expected} was expected"),
                    Frame::Empty if next_continues(expected) => break Chain::Expect(expected),
                    Frame::Empty if i + 1 == segments.len() => {
                        // The end of the log, unless something lies beyond:
                        // a group claiming more (damage) or unacknowledged
                        // bytes (a torn tail), as recovery decides.
                        let beyond = record::next_nonzero(&bytes, offset) < bytes.len();
                        if !beyond {
                            break Chain::Expect(expected);
                        }
                        "end of records, but nonzero bytes follow".to_string()
                    }
                    Frame::Empty => format!(
                        "end of records, yet the next segment starts at LSN {}",
                        segments[i + 1].0
                    ),
                    Frame::Damaged(reason) => reason.to_string(),
                };
                info.bytes_used = info.bytes_used.max(offset as u64);
                match claim_after(path, &bytes, offset, &segments[i + 1..], expected, index)? {
                    None => {
                        self.torn_tail(&bytes, offset, path, &segments[i + 1..], &stop);
                        info.bytes_used = offset as u64;
                        self.summary.segments.push(info);
                        return Ok(());
                    }
                    Some((file, at, durable)) => {
                        self.problem(
                            Severity::Damage,
                            path,
                            offset,
                            format!(
                                "{stop}; yet {} at byte {at} says LSN {durable} was durable",
                                file_name(&file)
                            ),
                        );
                        if self.replay.take().is_some() {
                            self.summary
                                .notes
                                .push(format!("replay stopped at LSN {expected} (damage)"));
                        }
                    }
                }
                // Resynchronise at the next readable record of this segment.
                let mut from = offset;
                let resumed = loop {
                    match next_valid(&bytes, from) {
                        Some((at, lsn, _))
                            if lsn > expected || (lsn == expected && at > offset) =>
                        {
                            break Some((at, lsn))
                        }
                        Some((at, _, size)) => from = at + size,
                        None => break None,
                    }
                };
                match resumed {
                    Some((at, lsn)) => {
                        if lsn > expected {
                            self.summary
                                .notes
                                .push(format!("LSNs {expected}..={} are unreadable", lsn - 1));
                        }
                        expected = lsn;
                        offset = at;
                    }
                    None => break Chain::Resume(expected),
                }
            };
            info.bytes_used = info.bytes_used.max(offset as u64);
            self.summary.segments.push(info);
            chain = end;
        }
        Ok(())
    }

    fn torn_tail(
        &mut self,
        bytes: &[u8],
        offset: usize,
        path: &Path,
        later: &[(u64, PathBuf)],
        stop: &str,
    ) {
        let mut beyond = 0u64;
        let mut from = offset;
        while let Some((at, _, size)) = next_valid(bytes, from) {
            beyond += 1;
            from = at + size;
        }
        let mut reason = format!(
            "{stop}; nothing after it claims it durable, so by the log's own account it was never acknowledged: recovery cuts it here"
        );
        if beyond > 0 {
            let _ = write!(
                reason,
                " ({beyond} readable records beyond it, all unacknowledged)"
            );
        }
        self.problem(Severity::TornTail, path, offset, reason);
        for (_, later) in later {
            self.summary.notes.push(format!(
                "{} lies after the torn tail: recovery removes it",
                file_name(later)
            ));
        }
    }

    /// One record of the chain: count it, replay it, write it.
    fn take(
        &mut self,
        lsn: u64,
        record: &Record,
        segment: &str,
        offset: usize,
        path: &Path,
    ) -> io::Result<()> {
        let s = &mut self.summary;
        s.first_lsn.get_or_insert(lsn);
        s.last_lsn = Some(lsn);
        match record {
            Record::Request { request, code } => {
                s.requests += 1;
                let op = request.op().name();
                *s.by_op.entry(op).or_default() += 1;
                *s.by_result.entry(code.name()).or_default() += 1;
                *s.by_op_result.entry((op, code.name())).or_default() += 1;
            }
            Record::Tick { .. } => s.ticks += 1,
            Record::Group { .. } => s.groups += 1,
        }
        if let Some((shard, covered)) = self.replay.as_mut() {
            if lsn > *covered {
                match record {
                    Record::Request { request, code } => {
                        let got = shard.apply(request).code;
                        if got != *code {
                            let reason = format!(
                                "replay of LSN {lsn} answered {} where the log says {}",
                                got.name(),
                                code.name()
                            );
                            self.replay = None;
                            self.problem(Severity::Damage, path, offset, reason);
                        }
                    }
                    Record::Tick { now_ms } => shard.advance_to(*now_ms),
                    Record::Group { .. } => {}
                }
            }
        }
        let wanted = match (self.options.account, record) {
            (Some(account), Record::Request { request, .. }) => request.account() == Some(account),
            (Some(_), _) => false,
            (None, _) => self.options.dump,
        };
        if wanted {
            self.line.clear();
            write_record_json(
                &mut self.line,
                self.summary.index,
                lsn,
                record,
                segment,
                offset,
            );
            self.line.push('\n');
            self.out.write_all(self.line.as_bytes())?;
            self.written += 1;
        }
        Ok(())
    }
}

/// Recovery's rule: a `Group` record past an unreadable place (rest of
/// this segment, later segments) claiming `durable_lsn >= unread`.
fn claim_after(
    path: &Path,
    bytes: &[u8],
    offset: usize,
    later: &[(u64, PathBuf)],
    unread: u64,
    index: usize,
) -> io::Result<Option<(PathBuf, usize, u64)>> {
    if let Some((at, durable)) = record::durable_claim(bytes, offset + record::ALIGN, unread) {
        return Ok(Some((path.to_path_buf(), at, durable)));
    }
    for &(first_lsn, ref later_path) in later {
        let (next, _) = read_segment(later_path)?;
        if check_segment_header(&next, index, first_lsn).is_err() {
            continue;
        }
        if let Some((at, durable)) = record::durable_claim(&next, SEGMENT_HEADER_BYTES, unread) {
            return Ok(Some((later_path.clone(), at, durable)));
        }
    }
    Ok(None)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// The shard an account lives on in a directory of `shards` shards (the
/// engine's placement).
pub fn shard_of(account: AccountId, shards: usize) -> usize {
    hash::range(hash::fold(account), shards)
}

/// One dumped record as a JSON object (no newline):
/// `{"shard":0,"lsn":5,"kind":"request","op":"debit","result":"ok","request":{...},"segment":"...","offset":N}`.
pub fn write_record_json(
    out: &mut String,
    shard: usize,
    lsn: u64,
    record: &Record,
    segment: &str,
    offset: usize,
) {
    let _ = write!(out, "{{\"shard\":{shard},\"lsn\":{lsn},");
    match record {
        Record::Request { request, code } => {
            let _ = write!(
                out,
                "\"kind\":\"request\",\"op\":\"{}\",\"result\":\"{}\",\"request\":",
                request.op().name(),
                code.name()
            );
            write_request_json(out, request);
        }
        Record::Tick { now_ms } => {
            let _ = write!(out, "\"kind\":\"tick\",\"now_ms\":{now_ms}");
        }
        Record::Group { durable_lsn } => {
            let _ = write!(out, "\"kind\":\"group\",\"durable_lsn\":{durable_lsn}");
        }
    }
    let _ = write!(out, ",\"segment\":\"{segment}\",\"offset\":{offset}}}");
}

/// A request in SPEC's line format (`codec::parse_line` reads it back to
/// the same request), except that an amount that was invalid in every
/// currency is known only by its fingerprint and is written as
/// `{"invalid_amount_fingerprint": N}`, and a currency the engine does not
/// support as `"unsupported"`.
pub fn write_request_json(out: &mut String, request: &Request) {
    let _ = write!(out, "{{\"op\":\"{}\"", request.op().name());
    let num = |out: &mut String, name: &str, v: u64| {
        let _ = write!(out, ",\"{name}\":{v}");
    };
    let amount = |out: &mut String, name: &str, a: Option<AmountArg>| {
        if let Some(a) = a {
            let _ = write!(out, ",\"{name}\":");
            write_amount_json(out, a);
        }
    };
    match *request {
        Request::OpenAccount {
            account,
            currency,
            overdraft,
            history,
        } => {
            num(out, "account", account);
            let code = currency.map_or("unsupported", |c| c.code());
            let _ = write!(out, ",\"currency\":\"{code}\"");
            amount(out, "overdraft", overdraft);
            if history {
                out.push_str(",\"history\":true");
            }
        }
        Request::Deposit {
            id,
            account,
            amount: a,
        }
        | Request::Debit {
            id,
            account,
            amount: a,
            merchant: None,
        } => {
            num(out, "id", id);
            num(out, "account", account);
            amount(out, "amount", Some(a));
        }
        Request::Debit {
            id,
            account,
            amount: a,
            merchant: Some(merchant),
        } => {
            num(out, "id", id);
            num(out, "account", account);
            amount(out, "amount", Some(a));
            num(out, "merchant", merchant);
        }
        Request::Authorize {
            id,
            account,
            amount: a,
            expires_in_ms,
            merchant,
        } => {
            num(out, "id", id);
            num(out, "account", account);
            amount(out, "amount", Some(a));
            if let Some(ms) = expires_in_ms {
                num(out, "expires_in_ms", ms);
            }
            if let Some(merchant) = merchant {
                num(out, "merchant", merchant);
            }
        }
        Request::Increment {
            id,
            account,
            auth,
            amount: a,
            expires_in_ms,
        } => {
            num(out, "id", id);
            num(out, "account", account);
            num(out, "auth", auth);
            amount(out, "amount", Some(a));
            if let Some(ms) = expires_in_ms {
                num(out, "expires_in_ms", ms);
            }
        }
        Request::Capture {
            id,
            account,
            auth,
            amount: a,
            is_final,
        } => {
            num(out, "id", id);
            num(out, "account", account);
            num(out, "auth", auth);
            amount(out, "amount", a);
            let _ = write!(out, ",\"final\":{is_final}");
        }
        Request::Void { id, account, auth } => {
            num(out, "id", id);
            num(out, "account", account);
            num(out, "auth", auth);
        }
        Request::Refund {
            id,
            account,
            of,
            amount: a,
        } => {
            num(out, "id", id);
            num(out, "account", account);
            num(out, "of", of);
            amount(out, "amount", a);
        }
        Request::SetLimits {
            account,
            ref limits,
        } => {
            num(out, "account", account);
            amount(out, "per_txn", limits.per_txn);
            amount(out, "daily", limits.daily);
            amount(out, "review_above", limits.review_above);
            if let Some(v) = limits.velocity {
                let _ = write!(
                    out,
                    ",\"velocity\":{{\"max\":{},\"window_ms\":{},\"below\":",
                    v.max, v.window_ms
                );
                write_amount_json(out, v.below);
                out.push('}');
            }
        }
        Request::Freeze { account }
        | Request::Unfreeze { account }
        | Request::Balance { account } => num(out, "account", account),
        Request::Status { account, id } => {
            num(out, "account", account);
            num(out, "id", id);
        }
        Request::AdvanceClock { ms } => num(out, "ms", ms),
        Request::OpenMerchant {
            merchant,
            currency,
            fee_bps,
        } => {
            num(out, "merchant", merchant);
            let code = currency.map_or("unsupported", |c| c.code());
            let _ = write!(out, ",\"currency\":\"{code}\"");
            num(out, "fee_bps", u64::from(fee_bps.unwrap_or(0)));
        }
        Request::Merchant { merchant } => num(out, "merchant", merchant),
        Request::QueueDebit {
            id,
            account,
            amount: a,
            merchant,
        } => {
            num(out, "id", id);
            num(out, "account", account);
            amount(out, "amount", Some(a));
            if let Some(merchant) = merchant {
                num(out, "merchant", merchant);
            }
        }
        Request::RunBatch => {}
        Request::Settle { id, merchant } => {
            num(out, "id", id);
            num(out, "merchant", merchant);
        }
        // The engine's own steps: not request lines a user could send, so
        // `step` says which (codec::parse_line ignores fields an op does
        // not name, and would read them as the user's request).
        Request::Internal(Internal(ref step)) => match **step {
            Step::RunBatchAt { at_ms } => {
                let _ = write!(out, ",\"step\":\"stamped\"");
                num(out, "at_ms", at_ms);
            }
            Step::SettleClose {
                merchant,
                id,
                code,
                ref figures,
            } => {
                let _ = write!(out, ",\"step\":\"close\"");
                num(out, "id", id);
                num(out, "merchant", merchant);
                let _ = write!(out, ",\"result\":\"{}\"", code.name());
                num(out, "batch", figures.batch);
                num(out, "count", figures.count);
                let e = figures.currency.exponent();
                for (name, v) in [
                    ("gross", figures.gross),
                    ("refunded", figures.refunded),
                    ("fee", figures.fee),
                    ("net", figures.net),
                ] {
                    let _ = write!(out, ",\"{name}\":\"{}\"", format_minor_wide(v, e));
                }
            }
        },
        Request::CloseAccount { account } => num(out, "account", account),
        Request::History {
            account,
            limit,
            before,
        } => {
            num(out, "account", account);
            if let Some(limit) = limit {
                num(out, "limit", u64::from(limit));
            }
            if let Some(before) = before {
                num(out, "before", before);
            }
        }
    }
    out.push('}');
}

/// An amount as SPEC's decimal string, with as many fractional digits as
/// the request had (`"12.30"` stays `"12.30"`), or
/// `{"invalid_amount_fingerprint": N}`.
pub fn write_amount_json(out: &mut String, amount: AmountArg) {
    match amount {
        AmountArg::Decimal {
            mantissa,
            scale,
            digits: written,
        } => {
            let zeros = usize::from(written).saturating_sub(scale as usize);
            let digits = format!("{mantissa}{}", "0".repeat(zeros));
            let scale = scale as usize + zeros;
            out.push('"');
            if scale == 0 {
                out.push_str(&digits);
            } else {
                let padded = format!("{digits:0>width$}", width = scale + 1);
                let (int, frac) = padded.split_at(padded.len() - scale);
                out.push_str(int);
                out.push('.');
                out.push_str(frac);
            }
            out.push('"');
        }
        AmountArg::Invalid { fingerprint } => {
            let _ = write!(out, "{{\"invalid_amount_fingerprint\":{fingerprint}}}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::parse_line;
    use crate::money::Currency;
    use crate::request::{LimitsArg, VelocityArg};
    use crate::wal::{segment::Segment, Faults};

    fn json(request: &Request) -> String {
        let mut out = String::new();
        write_request_json(&mut out, request);
        out
    }

    #[test]
    fn amounts_are_written_exactly() {
        let cases = [
            ("12.34", "\"12.34\""),
            ("0.005", "\"0.005\""),
            ("007", "\"7\""),
            ("1.50", "\"1.50\""),
            ("0.000", "\"0.000\""),
            ("9223372036854775807", "\"9223372036854775807\""),
            ("0", "\"0\""),
            ("10.1", "\"10.1\""),
        ];
        for (text, expected) in cases {
            let mut out = String::new();
            write_amount_json(&mut out, AmountArg::parse(text));
            assert_eq!(out, expected, "amount {text}");
        }
        let mut out = String::new();
        write_amount_json(&mut out, AmountArg::Invalid { fingerprint: 42 });
        assert_eq!(out, "{\"invalid_amount_fingerprint\":42}");
    }

    #[test]
    fn every_op_reads_back_through_the_codec() {
        let a = AmountArg::parse("12.3");
        let requests = [
            Request::OpenAccount {
                account: 7,
                currency: Some(Currency::KWD),
                overdraft: Some(AmountArg::parse("0.001")),
                history: false,
            },
            Request::OpenAccount {
                account: u64::MAX,
                currency: Some(Currency::JPY),
                overdraft: None,
                history: false,
            },
            Request::OpenAccount {
                account: 1,
                currency: None,
                overdraft: None,
                history: false,
            },
            Request::Deposit {
                id: 1,
                account: 2,
                amount: a,
            },
            Request::Debit {
                id: 3,
                account: 4,
                amount: a,
                merchant: None,
            },
            Request::Authorize {
                id: 5,
                account: 6,
                amount: a,
                expires_in_ms: Some(60_000),
                merchant: None,
            },
            Request::Authorize {
                id: 5,
                account: 6,
                amount: a,
                expires_in_ms: None,
                merchant: None,
            },
            Request::Increment {
                id: 7,
                account: 8,
                auth: 5,
                amount: a,
                expires_in_ms: Some(1),
            },
            Request::Capture {
                id: 9,
                account: 8,
                auth: 5,
                amount: None,
                is_final: false,
            },
            Request::Capture {
                id: 9,
                account: 8,
                auth: 5,
                amount: Some(a),
                is_final: true,
            },
            Request::Void {
                id: 10,
                account: 8,
                auth: 5,
            },
            Request::Refund {
                id: 11,
                account: 8,
                of: 9,
                amount: None,
            },
            Request::Refund {
                id: 11,
                account: 8,
                of: 9,
                amount: Some(a),
            },
            Request::SetLimits {
                account: 8,
                limits: Box::new(LimitsArg::default()),
            },
            Request::SetLimits {
                account: 8,
                limits: Box::new(LimitsArg {
                    per_txn: Some(a),
                    daily: Some(AmountArg::parse("1000")),
                    review_above: Some(AmountArg::parse("50.5")),
                    velocity: Some(VelocityArg {
                        max: 3,
                        window_ms: 60_000,
                        below: AmountArg::parse("5"),
                    }),
                }),
            },
            Request::Freeze { account: 1 },
            Request::Unfreeze { account: 1 },
            Request::Balance { account: 1 },
            Request::Status { account: 1, id: 2 },
            Request::AdvanceClock { ms: 0 },
        ];
        for request in requests {
            let line = json(&request);
            let parsed = parse_line(line.as_bytes(), true)
                .unwrap_or_else(|e| panic!("{line} does not parse: {e}"));
            assert_eq!(parsed, request, "{line}");
        }
    }

    #[test]
    fn segment_headers_written_by_the_log_verify() {
        let dir = std::env::temp_dir().join(format!("debitcore-inspect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let seg = Segment::create(&dir, 3, 17, 1 << 16, &Faults::default()).unwrap();
        let path = seg.path.clone();
        drop(seg);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(check_segment_header(&bytes, 3, 17), Ok(()));
        assert!(check_segment_header(&bytes, 2, 17).is_err());
        assert!(check_segment_header(&bytes, 3, 18).is_err());
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(check_segment_header(&flipped, 3, 17).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn meta_parses_as_data_dir_writes_it() {
        assert_eq!(parse_meta(b"debitcore data v1\nshards 4\n"), Some(4));
        assert_eq!(parse_meta(b"debitcore data v1\nshards 0\n"), None);
        assert_eq!(parse_meta(b"something else"), None);
    }
}
