//! Opening a shard's log: the newest snapshot, then every record after it.
//!
//! Every record's checksum is verified, and every replayed request must
//! give the result code the log says it gave when it was first answered.
//!
//! Torn tail or damage? A group commit writes a `Group` record first, which
//! carries the highest LSN the writer knew to be durable. When a record at
//! LSN `n` cannot be read, recovery looks further on (rest of the segment,
//! later segments) for a `Group` record claiming `durable_lsn >= n`. If one
//! exists, record `n` had been made durable and handed back: the damage is
//! in the middle, and the open fails naming the file and byte offset. If
//! none exists, nothing from `n` on was ever acknowledged: it is a torn
//! tail, which is cut off (zeroed, later segments deleted) and reported.

use super::record::{self, Frame, Record};
use super::segment::{parse_segment_name, Segment, SEGMENT_HEADER_BYTES};
use super::snapshot::{self, parse_snapshot_name};
use super::{shard_dir, OpenError};
use crate::risk::RiskPolicy;
use crate::shard::Shard;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A shard as recovered, and where its log goes on.
pub struct Recovered {
    /// The shard's state, with every logged request replayed.
    pub shard: Shard,
    /// The LSN the next record gets.
    pub next_lsn: u64,
    /// The segment to go on writing in, and the offset of its first free byte.
    pub tail: Option<(Segment, usize)>,
    /// Every segment file kept, oldest first (first LSN, path).
    pub segments: Vec<(u64, PathBuf)>,
    /// The last LSN the loaded snapshot holds; 0 if none was loaded.
    pub snapshot_lsn: u64,
    /// Log records replayed after the snapshot.
    pub records_replayed: u64,
    /// Bytes of log those records took.
    pub bytes_replayed: u64,
    /// How long recovery took.
    pub elapsed: Duration,
    /// What recovery did that an operator should know (a cut torn tail).
    pub notes: Vec<String>,
}

/// Rebuilds shard `shard_index` of `data_dir`: the newest snapshot that
/// verifies, then every record after it, checking that each request gets
/// the result it was logged with. A torn tail is cut (and noted); damage
/// before it is an [`OpenError::Damaged`] naming file and offset.
pub fn recover(
    data_dir: &Path,
    shard_index: usize,
    dedup_window_ms: u64,
    policy: Option<Box<dyn RiskPolicy>>,
) -> Result<Recovered, OpenError> {
    let started = Instant::now();
    let dir = shard_dir(data_dir, shard_index);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| OpenError::Io(p, e)
    };
    let mut segments: Vec<(u64, PathBuf)> = Vec::new();
    let mut snapshots: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
        let entry = entry.map_err(io(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(lsn) = parse_segment_name(&name) {
            segments.push((lsn, entry.path()));
        } else if let Some(lsn) = parse_snapshot_name(&name) {
            snapshots.push((lsn, entry.path()));
        } else if name.ends_with(".tmp") {
            // An interrupted snapshot: never renamed, so never relied on.
            std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
        }
    }
    segments.sort();
    snapshots.sort();

    let mut policy = policy;
    let (mut shard, snapshot_lsn) = match snapshots.last() {
        // Replay starts at engine time 0, never at the time of this open:
        // the log's own records (`Tick`, `advance_clock`) say when each
        // request was answered, and a fresh shard's first round always
        // logs a `Tick` (the wall clock is past 0). Starting at today's
        // time would replay an old log at today's time (holds created
        // late, ticks ignored as going backwards) and refuse the open on
        // a result mismatch.
        None => (Shard::new(0, dedup_window_ms, policy.take()), 0),
        Some((lsn, path)) => {
            let damaged = |reason: &str| OpenError::Damaged {
                file: path.clone(),
                offset: 0,
                reason: reason.to_string(),
            };
            let (stored_lsn, body) = snapshot::read(path, shard_index)
                .map_err(io(path))?
                .map_err(damaged)?;
            if stored_lsn != *lsn {
                return Err(damaged("snapshot LSN does not match its name"));
            }
            let shard = Shard::decode_snapshot(&body, dedup_window_ms, policy.take())
                .ok_or_else(|| damaged("snapshot body does not decode to a consistent shard"))?;
            (shard, *lsn)
        }
    };

    // Segments wholly before the snapshot are not needed.
    let first = segments
        .iter()
        .rposition(|&(lsn, _)| lsn <= snapshot_lsn + 1)
        .unwrap_or(0);
    let scan: Vec<(u64, PathBuf)> = segments[first..].to_vec();
    if let Some(&(lsn, ref path)) = scan.first() {
        if lsn > snapshot_lsn + 1 {
            return Err(OpenError::Damaged {
                file: path.clone(),
                offset: 0,
                reason: format!("log starts at LSN {lsn}, after the snapshot at {snapshot_lsn}: records are missing"),
            });
        }
    }

    let mut expected = snapshot_lsn + 1;
    let mut records_replayed = 0u64;
    let mut bytes_replayed = 0u64;
    let mut notes = Vec::new();
    let mut tail: Option<(Segment, usize)> = None;
    let mut kept = segments[..first].to_vec();
    let mut i = 0;
    while i < scan.len() {
        let (first_lsn, ref path) = scan[i];
        let mut segment = match Segment::open(path, shard_index).map_err(io(path))? {
            Ok(segment) => segment,
            Err(reason) if i + 1 == scan.len() => {
                // The newest segment without a good header was being created
                // when the process died: nothing in it was acknowledged.
                notes.push(format!(
                    "removed unfinished segment {} ({reason})",
                    path.display()
                ));
                std::fs::remove_file(path).map_err(io(path))?;
                break;
            }
            Err(reason) => {
                return Err(OpenError::Damaged {
                    file: path.clone(),
                    offset: 0,
                    reason: reason.to_string(),
                })
            }
        };
        let mut offset = SEGMENT_HEADER_BYTES;
        let stop: Option<String> = loop {
            match record::decode(&segment.map[offset..]) {
                Frame::Valid { lsn, record, size } => {
                    if lsn < expected && first_lsn <= snapshot_lsn {
                        offset += size; // covered by the snapshot
                        continue;
                    }
                    if lsn != expected {
                        break Some(format!("LSN {lsn} where {expected} was expected"));
                    }
                    match record {
                        Record::Request { request, code } => {
                            let replayed = shard.apply(&request).code;
                            if replayed != code {
                                return Err(OpenError::Damaged {
                                    file: path.clone(),
                                    offset: offset as u64,
                                    reason: format!(
                                        "replay of LSN {lsn} answered {} where the log says {}",
                                        replayed.name(),
                                        code.name()
                                    ),
                                });
                            }
                        }
                        Record::Tick { now_ms } => shard.advance_to(now_ms),
                        Record::Group { .. } => {}
                    }
                    expected += 1;
                    offset += size;
                    records_replayed += 1;
                    bytes_replayed += size as u64;
                }
                Frame::Empty => {
                    let next_continues = scan.get(i + 1).is_some_and(|&(lsn, _)| lsn == expected);
                    if next_continues {
                        break None;
                    }
                    break Some("end of records".to_string());
                }
                Frame::Damaged(reason) => break Some(reason.to_string()),
            }
        };
        match stop {
            None => {
                kept.push((first_lsn, path.clone()));
                i += 1;
            }
            Some(reason) => {
                // Acknowledged data after this point would make it damage.
                if let Some((file, at)) =
                    acknowledged_after(&segment, offset, &scan[i + 1..], expected, shard_index)
                {
                    return Err(OpenError::Damaged {
                        file: path.clone(),
                        offset: offset as u64,
                        reason: format!(
                            "{reason}; yet {} at byte {at} says LSN {expected} was durable",
                            file.display()
                        ),
                    });
                }
                let dirty = record::next_nonzero(&segment.map, offset) < segment.map.len();
                if dirty {
                    segment.map[offset..].fill(0);
                    segment.map.flush().map_err(io(path))?;
                    notes.push(format!(
                        "cut torn tail of {} at byte {offset} ({reason})",
                        path.display()
                    ));
                }
                for (_, later) in &scan[i + 1..] {
                    notes.push(format!(
                        "removed segment {} after a torn tail",
                        later.display()
                    ));
                    std::fs::remove_file(later).map_err(io(later))?;
                }
                kept.push((first_lsn, path.clone()));
                if let Err(e) = segment.prepare_for_appending(offset) {
                    // Only slower syncs follow (whole large folios).
                    notes.push(format!(
                        "could not ready {} for appending: {e}",
                        path.display()
                    ));
                }
                tail = Some((segment, offset));
                break;
            }
        }
    }
    Ok(Recovered {
        shard,
        next_lsn: expected,
        tail,
        segments: kept,
        snapshot_lsn,
        records_replayed,
        bytes_replayed,
        elapsed: started.elapsed(),
        notes,
    })
}

/// Looks past an unreadable point for a `Group` record that says LSN
/// `unread` (or later) was already durable; returns where it is.
fn acknowledged_after(
    segment: &Segment,
    offset: usize,
    later: &[(u64, PathBuf)],
    unread: u64,
    shard_index: usize,
) -> Option<(PathBuf, usize)> {
    if let Some((at, _)) = record::durable_claim(&segment.map, offset + record::ALIGN, unread) {
        return Some((segment.path.clone(), at));
    }
    for (_, path) in later {
        if let Ok(Ok(next)) = Segment::open(path, shard_index) {
            if let Some((at, _)) = record::durable_claim(&next.map, SEGMENT_HEADER_BYTES, unread) {
                return Some((path.clone(), at));
            }
        }
    }
    None
}
