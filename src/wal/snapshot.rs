//! Snapshot files: a shard's whole state as of one LSN.
//!
//! Written atomically: to `*.tmp`, fsync, rename, fsync the directory. A
//! snapshot is `magic, shard, lsn, body length, body, CRC-32C` over all
//! that precedes the CRC.

use super::segment::sync_dir;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"DCSNAP01";
const HEADER_BYTES: usize = 8 + 8 + 8 + 8;

pub fn snapshot_name(lsn: u64) -> String {
    format!("snapshot-{lsn:020}.snap")
}

pub fn parse_snapshot_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("snapshot-")?.strip_suffix(".snap")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

/// Writes `body` as the snapshot of `shard` at `lsn`; returns its path.
pub fn write(dir: &Path, shard: usize, lsn: u64, body: &[u8]) -> io::Result<PathBuf> {
    let path = dir.join(snapshot_name(lsn));
    let tmp = dir.join(format!("{}.tmp", snapshot_name(lsn)));
    let mut bytes = Vec::with_capacity(HEADER_BYTES + body.len() + 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(shard as u64).to_le_bytes());
    bytes.extend_from_slice(&lsn.to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(body);
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let mut file = File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(path)
}

/// Reads and verifies a snapshot; `Err(reason)` if it is damaged.
pub fn read(path: &Path, shard: usize) -> io::Result<Result<(u64, Vec<u8>), &'static str>> {
    let bytes = std::fs::read(path)?;
    Ok(verify(bytes, shard))
}

fn verify(mut bytes: Vec<u8>, shard: usize) -> Result<(u64, Vec<u8>), &'static str> {
    if bytes.len() < HEADER_BYTES + 4 || &bytes[0..8] != MAGIC {
        return Err("not a snapshot");
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if word(8) != shard as u64 {
        return Err("snapshot of another shard");
    }
    let lsn = word(16);
    let body_len = word(24) as usize;
    if bytes.len() != HEADER_BYTES + body_len + 4 {
        return Err("snapshot length does not match its header");
    }
    let (content, crc) = bytes.split_at(HEADER_BYTES + body_len);
    if crc32c::crc32c(content) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err("snapshot checksum mismatch");
    }
    bytes.truncate(HEADER_BYTES + body_len);
    bytes.drain(..HEADER_BYTES);
    Ok((lsn, bytes))
}
