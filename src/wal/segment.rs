//! Segment files: preallocated, fixed-size, memory-mapped.
//!
//! A segment is created at its full size with `fallocate` before it is
//! mapped, so a full disk shows up as an error here, at allocation, never as
//! SIGBUS on a store into the mapping. Its first [`SEGMENT_HEADER_BYTES`]
//! bytes name it (magic, shard, first LSN, checksum); records follow.
//!
//! The mapping a writer appends through is advised `MADV_RANDOM`. Without
//! it, page-cache readahead behind the sequential write faults grows the
//! file's folios up to 2 MiB (ext4 has large folios), and a folio is
//! written back whole: once a segment held ~30 MB, every `fdatasync` of a
//! 48-byte record wrote 2 MiB (3-4 ms instead of 0.15 ms; PERF.md,
//! "Durable latency"). With random advice every fault brings in one 4 KiB
//! page, so a sync writes only the pages the group touched.

use super::Faults;
use memmap2::{Advice, MmapMut};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes of a segment file's header; the first record follows it.
pub const SEGMENT_HEADER_BYTES: usize = 64;
pub(crate) const MAGIC: &[u8; 8] = b"DCWALSG1";

/// The file name of the segment whose first record has `first_lsn`.
pub fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.wal")
}

/// The name of a shard's spare: a file made ready (preallocated and
/// written with zeros) in the background to become the next segment. Its
/// `.tmp` ending makes recovery remove one left behind; nothing in it is
/// ever relied on.
pub const SPARE_NAME: &str = "spare-segment.tmp";

/// The first LSN a segment file name promises, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

/// One segment file of a shard's log, mapped for writing (or reading).
pub struct Segment {
    /// Where the file is.
    pub path: PathBuf,
    /// The LSN of its first record, as its name and header say.
    pub first_lsn: u64,
    /// Shared with the flusher thread, which makes it durable
    /// (`fdatasync` writes back the pages dirtied through the mapping).
    pub file: Arc<File>,
    /// The whole file, mapped; records are written straight into it.
    pub map: MmapMut,
}

impl Segment {
    /// Creates, preallocates and maps a new segment, header written and
    /// made durable (file and directory).
    pub fn create(
        dir: &Path,
        shard: usize,
        first_lsn: u64,
        bytes: usize,
        faults: &Faults,
    ) -> io::Result<Segment> {
        faults.allocation()?;
        let path = dir.join(segment_name(first_lsn));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        if let Err(e) =
            rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, bytes as u64)
        {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        Segment::map_with_header(path, file, shard, first_lsn, |map| {
            map.flush_range(0, SEGMENT_HEADER_BYTES)?;
            sync_dir(dir)
        })
    }

    /// Maps `file` (named `path` already), writes the segment header into
    /// the mapping and runs `finish` on it. On any error the file is
    /// removed: a later open must not find a segment without a header.
    fn map_with_header(
        path: PathBuf,
        file: File,
        shard: usize,
        first_lsn: u64,
        finish: impl FnOnce(&mut MmapMut) -> io::Result<()>,
    ) -> io::Result<Segment> {
        let made = (|| {
            let mut map = map_file(&file)?;
            map.advise(Advice::Random)?;
            map[..SEGMENT_HEADER_BYTES].copy_from_slice(&header(shard, first_lsn));
            finish(&mut map)?;
            Ok::<MmapMut, io::Error>(map)
        })();
        match made {
            Ok(map) => Ok(Segment {
                path,
                first_lsn,
                file: Arc::new(file),
                map,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Readies a recovered segment for appending at `offset` (everything
    /// from there on is zeros: recovery made sure). Recovery read it
    /// through readahead, which left it cached in large folios that a sync
    /// would write back whole. So: map it again with random advice (see
    /// the module comment), drop the file's clean cached pages (all of it
    /// is on disk), and write the zeros after `offset`'s page again, a page
    /// at a time, as a spare is made: 4 KiB folios, written extents, and no
    /// page the worker touches next has to be read from the disk (see
    /// [`Segment::make_spare`]). The segment's contents do not change.
    ///
    /// A failure leaves the segment usable, only slower to sync.
    pub fn prepare_for_appending(&mut self, offset: usize) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        const PAGE_BYTES: usize = 4096;
        let fresh = map_file(&self.file)?;
        fresh.advise(Advice::Random)?;
        // The new mapping has no pages yet (nothing is touched through it
        // before the old one is gone), so dropping the old one leaves the
        // cached pages unmapped, and the advice can drop them.
        drop(std::mem::replace(&mut self.map, fresh));
        rustix::fs::fadvise(&*self.file, 0, None, rustix::fs::Advice::DontNeed)?;
        let zeros = [0u8; PAGE_BYTES];
        let mut at = offset.next_multiple_of(PAGE_BYTES);
        while at < self.map.len() {
            let n = PAGE_BYTES.min(self.map.len() - at);
            self.file.write_all_at(&zeros[..n], at as u64)?;
            at += n;
        }
        self.file.sync_data()
    }

    /// Makes the shard's spare segment file (see [`SPARE_NAME`]): `bytes`
    /// long, fallocated (so a full disk fails here), then written with
    /// zeros and synced, so that its extents are written, not unwritten.
    /// Syncing a record into an unwritten extent converts the extent, and
    /// without a journal ext4 then writes the inode synchronously too: an
    /// extra device write per `fdatasync` (PERF.md, "Durable latency").
    ///
    /// The zeros go in one page per `pwrite`, so the page cache holds the
    /// file in 4 KiB folios, as the log's random-advised mapping wants
    /// them, and keeps them: were they dropped, every first touch of a
    /// page through the mapping would read it back from the disk (the
    /// kernel knows written zeros only as data), on the worker thread.
    /// Slow (the whole file is written once), so it runs off the worker,
    /// and it syncs every MiB: one sync of the whole file
    /// kept the disk busy for 100 ms and more, and the flusher's syncs
    /// waited behind it.
    pub fn make_spare(dir: &Path, bytes: usize) -> io::Result<File> {
        use std::os::unix::fs::FileExt;
        const PAGE_BYTES: usize = 4096;
        const SPARE_SYNC_BYTES: usize = 1 << 20;
        let path = dir.join(SPARE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, bytes as u64)?;
        let zeros = [0u8; PAGE_BYTES];
        let mut at = 0;
        while at < bytes {
            let n = PAGE_BYTES.min(bytes - at);
            file.write_all_at(&zeros[..n], at as u64)?;
            at += n;
            if at % SPARE_SYNC_BYTES == 0 || at == bytes {
                file.sync_data()?;
            }
        }
        Ok(file)
    }

    /// Turns the spare made by [`Segment::make_spare`] into the segment
    /// whose first record has `first_lsn`: renames it, maps it and writes
    /// the header. Nothing is synced here: before anything in it is
    /// acknowledged, the file and the directory must be (the caller hands
    /// both to the flusher).
    pub fn from_spare(dir: &Path, shard: usize, first_lsn: u64, file: File) -> io::Result<Segment> {
        let path = dir.join(segment_name(first_lsn));
        if path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a segment of that name exists",
            ));
        }
        std::fs::rename(dir.join(SPARE_NAME), &path)?;
        Segment::map_with_header(path, file, shard, first_lsn, |_| Ok(()))
    }

    /// Maps an existing segment and checks its header.
    pub fn open(path: &Path, shard: usize) -> io::Result<Result<Segment, &'static str>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let map = map_file(&file)?;
        let first_lsn = parse_segment_name(&path.file_name().unwrap_or_default().to_string_lossy())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a segment name"))?;
        if map.len() < SEGMENT_HEADER_BYTES
            || map[..SEGMENT_HEADER_BYTES] != header(shard, first_lsn)
        {
            return Ok(Err("segment header does not match its name and shard"));
        }
        Ok(Ok(Segment {
            path: path.to_path_buf(),
            first_lsn,
            file: Arc::new(file),
            map,
        }))
    }
}

fn header(shard: usize, first_lsn: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&(shard as u32).to_le_bytes());
    h[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

#[allow(unsafe_code)]
fn map_file(file: &File) -> io::Result<MmapMut> {
    // SAFETY: memmap2 marks mapping unsafe because the file could be
    // changed or truncated behind the mapping's back. Segment files live in
    // a data directory that one engine holds locked (`LOCK`, see
    // `wal::DataDir`); nothing else writes or truncates them while mapped,
    // and they are fallocated to their full length before mapping, so no
    // access lands past the end of the file.
    unsafe { MmapMut::map_mut(file) }
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("42.wal"), None);
        assert_eq!(parse_segment_name("00000000000000000042.snap"), None);
    }

    #[test]
    fn created_segments_reopen_and_check_their_header() {
        let dir = tempdir();
        let faults = Faults::default();
        let seg = Segment::create(&dir, 3, 17, 1 << 16, &faults).unwrap();
        assert_eq!(seg.map.len(), 1 << 16);
        drop(seg);
        let path = dir.join(segment_name(17));
        assert!(Segment::open(&path, 3).unwrap().is_ok());
        assert!(Segment::open(&path, 4).unwrap().is_err(), "wrong shard");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_spare_becomes_a_segment_that_reopens() {
        let dir = tempdir();
        let spare = Segment::make_spare(&dir, 1 << 16).unwrap();
        assert!(dir.join(SPARE_NAME).exists());
        let seg = Segment::from_spare(&dir, 2, 9, spare).unwrap();
        assert_eq!(seg.map.len(), 1 << 16);
        assert!(seg.map[SEGMENT_HEADER_BYTES..].iter().all(|&b| b == 0));
        seg.file.sync_data().unwrap();
        drop(seg);
        assert!(!dir.join(SPARE_NAME).exists(), "renamed, not copied");
        let path = dir.join(segment_name(9));
        assert!(Segment::open(&path, 2).unwrap().is_ok());
        let again = Segment::make_spare(&dir, 1 << 16).unwrap();
        assert!(
            Segment::from_spare(&dir, 2, 9, again).is_err(),
            "never over an existing segment"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn readying_a_tail_for_appending_keeps_its_contents() {
        let dir = tempdir();
        let faults = Faults::default();
        let mut seg = Segment::create(&dir, 1, 5, 1 << 16, &faults).unwrap();
        seg.map[SEGMENT_HEADER_BYTES..SEGMENT_HEADER_BYTES + 5000].fill(7);
        seg.map.flush().unwrap();
        let before = seg.map.to_vec();
        seg.prepare_for_appending(SEGMENT_HEADER_BYTES + 5000)
            .unwrap();
        assert!(seg.map[..] == before[..]);
        seg.map[SEGMENT_HEADER_BYTES + 5000] = 9;
        seg.file.sync_data().unwrap();
        drop(seg);
        let again = Segment::open(&dir.join(segment_name(5)), 1)
            .unwrap()
            .unwrap();
        assert_eq!(again.map[SEGMENT_HEADER_BYTES + 4999], 7);
        assert_eq!(again.map[SEGMENT_HEADER_BYTES + 5000], 9);
        assert!(again.map[SEGMENT_HEADER_BYTES + 5001..]
            .iter()
            .all(|&b| b == 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn allocation_faults_leave_no_file() {
        let dir = tempdir();
        let faults = Faults::default();
        faults.fail_allocations(1);
        assert!(Segment::create(&dir, 0, 1, 1 << 16, &faults).is_err());
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
        assert!(Segment::create(&dir, 0, 1, 1 << 16, &faults).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    pub(crate) fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "debitcore-seg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
