//! The broadcast log: requests that every shard sees, written once for
//! the whole engine before any shard is handed one.
//!
//! SPEC: a request that every shard sees and that was not handed back
//! before a crash happened on every shard or on none. Each shard logs such
//! a request in its own log, and the shards sync independently, so a crash
//! can leave it on some shards only. The engine therefore numbers these
//! requests (1, 2, 3, ...), appends each here and syncs it *before*
//! pushing it to any shard's queue, and pushes them to every shard in that
//! one order (under a lock). Every shard counts the ones it applied
//! ([`Shard::broadcasts`](crate::shard::Shard::broadcasts)), so after a
//! crash shard `i` has applied exactly `1..=n_i`, and each one from `n_i + 1`
//! to the highest number any shard applied or this log holds is found here
//! and applied to shard `i` (and written to its log) before anything else
//! runs: every broadcast this log holds happened on every shard. One that
//! never reached this log reached no shard: it happened nowhere.
//!
//! Entries use the write-ahead log's record framing (a `Request` record
//! whose LSN is the broadcast's number), so a torn last entry is told from
//! a whole one by its checksum. Once every shard has every entry on its
//! own stable storage (at open, after completing them), the log is
//! emptied (`reset`): it holds only broadcasts since the engine opened.

use super::record::{self, Frame, Record, Room, RECORD_BYTES_MAX};
use super::segment::sync_dir;
use crate::outcome::Code;
use crate::request::Request;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The file's name in the data directory.
pub const BROADCASTS_NAME: &str = "broadcasts";

/// The open broadcast log of a data directory.
pub struct BroadcastLog {
    path: PathBuf,
    file: File,
}

impl BroadcastLog {
    /// Opens (or creates) the log of `data_dir` and reads its entries,
    /// oldest first, as (number, request). A torn or damaged last entry
    /// ends the reading: it was never synced, so no shard was handed it.
    pub fn open(data_dir: &Path) -> io::Result<(BroadcastLog, Vec<(u64, Request)>)> {
        let path = data_dir.join(BROADCASTS_NAME);
        let (entries, whole_bytes) = read_prefix(&path)?;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        // A torn last entry goes, so that the next one starts on a whole.
        if file.metadata()?.len() > whole_bytes {
            file.set_len(whole_bytes)?;
        }
        Ok((BroadcastLog { path, file }, entries))
    }

    /// Appends broadcast `number` and syncs it: when this returns `Ok`, it
    /// will happen on every shard, crash or not.
    pub fn append(&mut self, number: u64, request: &Request) -> io::Result<()> {
        let mut room: Room = [0; RECORD_BYTES_MAX];
        let record = Record::Request {
            request: request.clone(),
            code: Code::Ok,
        };
        let size = record::encode_into(&mut room, number, &record);
        self.file.write_all(&room[..size])?;
        self.file.sync_data()
    }

    /// Empties the log, atomically (a new empty file renamed over it). Only
    /// once every shard's own log holds every entry durably.
    pub fn reset(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        File::create(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        Ok(())
    }
}

/// The entries of the log at `path` (none if there is no file), oldest
/// first; stops at the first entry that is not whole.
pub fn read(path: &Path) -> io::Result<Vec<(u64, Request)>> {
    Ok(read_prefix(path)?.0)
}

/// The whole entries at the start of the file, and the bytes they take.
fn read_prefix(path: &Path) -> io::Result<(Vec<(u64, Request)>, u64)> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut entries: Vec<(u64, Request)> = Vec::new();
    let mut at = 0;
    while let Frame::Valid { lsn, record, size } = record::decode(&bytes[at..]) {
        let Record::Request { request, .. } = record else {
            break;
        };
        // Its padding is part of the write: short of it, it is torn.
        if at + size > bytes.len() {
            break;
        }
        // Numbers follow one another; anything else is not ours.
        if entries.last().is_some_and(|&(last, _)| lsn != last + 1) {
            break;
        }
        entries.push((lsn, request));
        at += size;
    }
    Ok((entries, at as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopening_and_a_torn_tail_is_dropped() {
        let dir = std::env::temp_dir().join(format!("debitcore-bcast-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (mut log, entries) = BroadcastLog::open(&dir).unwrap();
        assert!(entries.is_empty());
        log.append(7, &Request::AdvanceClock { ms: 5 }).unwrap();
        log.append(8, &Request::AdvanceClock { ms: 6 }).unwrap();
        drop(log);
        let (mut log, entries) = BroadcastLog::open(&dir).unwrap();
        assert_eq!(
            entries,
            vec![
                (7, Request::AdvanceClock { ms: 5 }),
                (8, Request::AdvanceClock { ms: 6 })
            ]
        );
        // A torn third entry: half of it written.
        log.append(9, &Request::AdvanceClock { ms: 1 }).unwrap();
        let path = dir.join(BROADCASTS_NAME);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 4).unwrap();
        assert_eq!(read(&path).unwrap().len(), 2);
        drop(log);
        // Reopened, the torn bytes go and the next entry reads back.
        let (mut log, entries) = BroadcastLog::open(&dir).unwrap();
        assert_eq!(entries.len(), 2);
        log.append(9, &Request::AdvanceClock { ms: 9 }).unwrap();
        assert_eq!(
            read(&path).unwrap()[2],
            (9, Request::AdvanceClock { ms: 9 })
        );
        log.reset().unwrap();
        assert!(read(&path).unwrap().is_empty());
        log.append(10, &Request::AdvanceClock { ms: 2 }).unwrap();
        assert_eq!(
            read(&path).unwrap(),
            vec![(10, Request::AdvanceClock { ms: 2 })]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
