//! Snapshot files: a shard's whole state as of one LSN.
//!
//! Written atomically: to `*.tmp`, fsync, rename, fsync the directory. A
//! snapshot is `magic, shard, lsn, body length, body, CRC-32C` over all
//! that precedes the CRC.
//!
//! The body's first word is its format version (`shard::SNAPSHOT_VERSION`),
//! which the shard decodes by. The magic changed with the body's format, so
//! that a binary from before refuses a snapshot it would misread; files of
//! the first format (`DCSNAP01`) are still read, and their body, which had
//! no version word, is handed back behind a 1.

use super::segment::sync_dir;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"DCSNAP02";
/// The first format's magic: its body starts without a version word.
const MAGIC_V1: &[u8; 8] = b"DCSNAP01";
const HEADER_BYTES: usize = 8 + 8 + 8 + 8;

/// The file name of the snapshot that holds everything up to `lsn`.
pub fn snapshot_name(lsn: u64) -> String {
    format!("snapshot-{lsn:020}.snap")
}

/// The LSN a snapshot file name promises, if it is one.
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
    if bytes.len() < HEADER_BYTES + 4 {
        return Err("not a snapshot");
    }
    let v1 = match &bytes[0..8] {
        magic if magic == MAGIC => false,
        magic if magic == MAGIC_V1 => true,
        _ => return Err("not a snapshot"),
    };
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
    if v1 {
        // The header's last word (the body length) becomes the version.
        let version = HEADER_BYTES - 8;
        bytes[version..HEADER_BYTES].copy_from_slice(&1u64.to_le_bytes());
        bytes.drain(..version);
    } else {
        bytes.drain(..HEADER_BYTES);
    }
    Ok((lsn, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(magic: &[u8; 8], shard: u64, lsn: u64, body: &[u8]) -> Vec<u8> {
        let mut bytes = magic.to_vec();
        for word in [shard, lsn, body.len() as u64] {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes.extend_from_slice(body);
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// A body comes back as written; a first-format one behind the version
    /// word it did not have.
    #[test]
    fn bodies_come_back_with_their_version_first() {
        let body = [2, 0, 0, 0, 0, 0, 0, 0, 7, 7, 7];
        assert_eq!(verify(file(MAGIC, 3, 9, &body), 3), Ok((9, body.to_vec())));
        let old = [7, 7, 7];
        let mut expected = 1u64.to_le_bytes().to_vec();
        expected.extend_from_slice(&old);
        assert_eq!(verify(file(MAGIC_V1, 3, 9, &old), 3), Ok((9, expected)));
        assert_eq!(
            verify(file(b"DCSNAP03", 3, 9, &old), 3).unwrap_err(),
            "not a snapshot"
        );
        let mut damaged = file(MAGIC_V1, 3, 9, &old);
        damaged[33] ^= 1;
        assert_eq!(
            verify(damaged, 3).unwrap_err(),
            "snapshot checksum mismatch"
        );
    }
}
