//! The idempotency memory of one shard: an open-addressing table of compact
//! 24-byte key records.
//!
//! Linear probing over an array of any capacity (the home cell is Lemire's
//! range reduction of the key's hash, so a table sized for a known load is
//! not rounded up to a power of two), at most 7/8 full: 25 bytes a cell with
//! its tag, 30.8 per key in a table sized for its keys (13/16 full).
//! Records are removed only by a sweep ([`KeyTable::start_sweep`], then
//! [`KeyTable::sweep_step`] a few cells at a time), which deletes with
//! backward shifting (Knuth, TAOCP vol. 3, 6.4, Algorithm R), so no
//! tombstones build up and a lookup stops at the first empty slot.
//!
//! A record carries the dedup-window generation in which its key was first
//! processed; a sweep at each generation change drops what is two or more
//! generations old. That keeps every key for at least one window and at most
//! two, with no per-record timestamp and no timer per key.

use crate::hash;
use crate::hugemem::{prefetch, Zeroable, ZeroedArray};

/// One remembered key: (account slot, id), the op and result it had, and
/// one word that tells a replay from a conflict and, for an ok debit, what
/// a later refund may return: the request's amount in minor units where it
/// has one in the account's currency, else a fingerprint of all its fields
/// (see [`Payload`]; the high bit of `op` says which).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct KeyRecord {
    pub id: u64,
    /// Account slot in its shard (from 1); `SLOT_EMPTY` (0) marks a free
    /// table cell, so a zero-filled table is an empty one.
    pub slot: u32,
    /// `Op as u8`, or'ed with `PAYLOAD_MINOR` when `payload` is an amount
    /// or `PAYLOAD_CLEARED` when it is a merchant debit's amount and
    /// merchant, and with `BATCHED` for a queued debit its batch applied.
    /// Ops are below 32 (`OP_MASK`), so the three high bits are free.
    op: u8,
    pub code: u8,
    /// Dedup-window generation of first processing, modulo 2^16.
    pub generation: u16,
    /// See [`Payload`].
    payload: u64,
}

/// What the last word of a [`KeyRecord`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Payload {
    /// The request's amount in minor units of the account's currency (>= 0).
    /// For a fixed currency two amounts are the same number exactly when
    /// their minor units are equal, so this compares as exactly as the
    /// amount itself, and an ok debit's is what it moved.
    Minor(i64),
    /// A 64-bit hash of the op and every field, normalized as SPEC compares
    /// them: for requests without an amount, or whose amount has no minor
    /// units in the currency (invalid text, too many digits, too large).
    Fingerprint(u64),
    /// A debit (or queued debit) for a merchant: its amount in minor
    /// units (< 2^47) and the merchant's index in its shard (< 2^16), so
    /// that a refund finds both in the key and nothing is kept beside it.
    Cleared {
        /// The amount, minor units.
        minor: i64,
        /// The merchant's index in its shard's table of merchants.
        merchant: u32,
    },
}

/// The largest amount a [`Payload::Cleared`] holds (47 bits), and the
/// number of merchant indices it can name (16 bits): a merchant debit
/// past either keeps a fingerprint and its amount and merchant beside it.
pub(crate) const CLEARED_MINOR_MAX: i64 = (1 << 47) - 1;
pub(crate) const CLEARED_MERCHANTS: u32 = 1 << 16;

/// Whether a merchant debit of `minor` for the merchant at `index` is kept
/// as a [`Payload::Cleared`].
#[inline]
pub(crate) fn clears_in_key(minor: i64, index: u32) -> bool {
    // One unsigned compare for both bounds of `minor`.
    (minor as u64) <= CLEARED_MINOR_MAX as u64 && index < CLEARED_MERCHANTS
}

/// The bit of `KeyRecord::op` that marks a `Payload::Minor`.
const PAYLOAD_MINOR: u8 = 0x80;
/// The bit of `KeyRecord::op` that marks a queued debit its batch applied
/// (its `code` is then the batch's result; its own answer was `queued`).
const BATCHED: u8 = 0x40;
/// The bit of `KeyRecord::op` that marks a `Payload::Cleared`.
const PAYLOAD_CLEARED: u8 = 0x20;
const OP_MASK: u8 = !(PAYLOAD_MINOR | BATCHED | PAYLOAD_CLEARED);
const _: () = assert!(crate::request::Op::ALL.len() <= OP_MASK as usize + 1);

impl KeyRecord {
    pub fn new(id: u64, slot: u32, op: u8, code: u8, generation: u16, payload: Payload) -> Self {
        debug_assert!(op <= OP_MASK, "op {op} has the payload bit");
        let (flag, word) = match payload {
            Payload::Minor(minor) => {
                debug_assert!(minor >= 0, "a negative amount {minor}");
                (PAYLOAD_MINOR, minor as u64)
            }
            Payload::Fingerprint(fingerprint) => (0, fingerprint),
            Payload::Cleared { minor, merchant } => {
                debug_assert!(clears_in_key(minor, merchant));
                (PAYLOAD_CLEARED, minor as u64 | u64::from(merchant) << 47)
            }
        };
        KeyRecord {
            id,
            slot,
            op: op | flag,
            code,
            generation,
            payload: word,
        }
    }

    /// The op (`Op as u8`).
    #[inline]
    pub fn op(&self) -> u8 {
        self.op & OP_MASK
    }

    /// A queued debit's key, once its batch applied it: `code` is the
    /// result it got there, from generation `generation` on.
    pub fn set_batch_result(&mut self, code: u8, generation: u16) {
        self.op |= BATCHED;
        self.code = code;
        self.generation = generation;
    }

    /// Whether this is a queued debit that its batch applied (a replay of
    /// it still answers `queued`).
    pub fn batched(&self) -> bool {
        self.op & BATCHED != 0
    }

    #[inline]
    pub fn payload(&self) -> Payload {
        if self.op & PAYLOAD_MINOR != 0 {
            Payload::Minor(self.payload as i64)
        } else if self.op & PAYLOAD_CLEARED != 0 {
            Payload::Cleared {
                minor: (self.payload & CLEARED_MINOR_MAX as u64) as i64,
                merchant: (self.payload >> 47) as u32,
            }
        } else {
            Payload::Fingerprint(self.payload)
        }
    }

    /// The record as three words, as a snapshot stores it: `id`, then
    /// `slot | op << 32 | code << 40 | generation << 48` (`op` with its
    /// payload bit: the in-memory layout of bytes 8..16), then the payload.
    pub fn to_words(self) -> [u64; 3] {
        let packed = u64::from(self.slot)
            | u64::from(self.op) << 32
            | u64::from(self.code) << 40
            | u64::from(self.generation) << 48;
        [self.id, packed, self.payload]
    }

    /// The inverse of [`KeyRecord::to_words`]; `None` for a word no record
    /// gives (an empty slot, an op or code out of range, a negative amount).
    pub fn from_words([id, packed, payload]: [u64; 3]) -> Option<KeyRecord> {
        let record = KeyRecord {
            id,
            slot: packed as u32,
            op: (packed >> 32) as u8,
            code: (packed >> 40) as u8,
            generation: (packed >> 48) as u16,
            payload,
        };
        let valid = record.slot != SLOT_EMPTY
            && usize::from(record.op()) < crate::request::Op::ALL.len()
            && usize::from(record.code) < crate::outcome::Code::ALL.len()
            && !matches!(record.payload(), Payload::Minor(m) if m < 0)
            && record.op & (PAYLOAD_MINOR | PAYLOAD_CLEARED) != PAYLOAD_MINOR | PAYLOAD_CLEARED;
        valid.then_some(record)
    }
}

pub(crate) const SLOT_EMPTY: u32 = 0;

const EMPTY: KeyRecord = KeyRecord {
    id: 0,
    slot: SLOT_EMPTY,
    op: 0,
    code: 0,
    generation: 0,
    payload: 0,
};

const _: () = assert!(std::mem::size_of::<KeyRecord>() == 24);

// SAFETY: integers only, no padding niches; all zeros is the empty cell.
#[allow(unsafe_code)]
unsafe impl Zeroable for KeyRecord {}

const CAPACITY_MIN: usize = 1024;
const _: () = assert!(CAPACITY_MIN >= GROUP);

/// One open-addressing array; [`KeyTable`] holds one, or two while growing.
pub(crate) struct Table {
    /// One byte per cell: 0 for empty, else `0x80 | the low 7 bits of the
    /// hash`. Probed eight at a time; the first `GROUP` bytes are mirrored
    /// after the end so a group read never wraps.
    tags: ZeroedArray<u8>,
    /// Any number of cells from `CAPACITY_MIN` on.
    cells: ZeroedArray<KeyRecord>,
    len: usize,
}

/// Where a key is, or where it would go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    Found(usize),
    /// The first empty cell of the key's probe sequence.
    Vacant(usize),
}

const GROUP: usize = 8;
const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Bytes of `x` that are zero, flagged by their high bit. The lowest flag
/// is always exact; flags above it may be false (borrows), so callers use
/// only the lowest, or verify.
#[inline]
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(LO) & !x & HI
}

#[inline]
fn hash_of(slot: u32, id: u64) -> u64 {
    hash::mix(u64::from(slot), id)
}

/// The bits of a key's hash that make its tag; the others place it.
const TAG_BITS: u64 = 0x7F;

/// The home cell of `hash` among `capacity`: Lemire's range reduction of
/// the hash without its tag bits. The reduction is decided by the high
/// bits, so tags taken from those would be nearly equal along a run of
/// neighbouring cells and filter nothing; taking home and tag from
/// disjoint bits keeps them independent.
#[inline]
fn home(hash: u64, capacity: usize) -> usize {
    hash::range(hash & !TAG_BITS, capacity)
}

#[inline]
fn tag_of(hash: u64) -> u8 {
    0x80 | (hash & TAG_BITS) as u8
}

impl Table {
    /// An empty table of `capacity` cells (at least `CAPACITY_MIN`), taken
    /// as is: no rounding.
    pub fn with_capacity(capacity: usize) -> Table {
        let capacity = capacity.max(CAPACITY_MIN);
        Table {
            tags: ZeroedArray::new(capacity + GROUP),
            cells: ZeroedArray::new(capacity),
            len: 0,
        }
    }

    fn capacity(&self) -> usize {
        self.cells.len()
    }

    /// `pos + step` around the table; both below the capacity.
    #[inline]
    fn wrap(&self, pos: usize, step: usize) -> usize {
        debug_assert!(pos < self.capacity() && step < self.capacity());
        let next = pos + step;
        if next >= self.capacity() {
            next - self.capacity()
        } else {
            next
        }
    }

    /// Bytes of table memory (for the memory budget in PERF.md).
    pub fn bytes(&self) -> usize {
        self.capacity() * (std::mem::size_of::<KeyRecord>() + 1) + GROUP
    }

    /// Every record, in table order.
    pub fn records(&self) -> impl Iterator<Item = &KeyRecord> {
        self.cells.iter().filter(|c| c.slot != SLOT_EMPTY)
    }

    /// Starts loading the tag group and the cell where the key's probe
    /// starts. A 24-byte cell may straddle two cache lines (2 in 8 do):
    /// its first and last words are prefetched.
    #[inline]
    pub fn prefetch(&self, slot: u32, id: u64) {
        let pos = home(hash_of(slot, id), self.capacity());
        prefetch(&self.tags[pos]);
        prefetch(&self.cells[pos].id);
        prefetch(&self.cells[pos].payload);
    }

    #[inline]
    fn group(&self, pos: usize) -> u64 {
        let bytes: [u8; GROUP] = self.tags[pos..pos + GROUP].try_into().expect("a group");
        u64::from_le_bytes(bytes)
    }

    /// Finds the key, or the cell it would be inserted in.
    #[inline]
    pub fn probe(&self, slot: u32, id: u64) -> Probe {
        let hash = hash_of(slot, id);
        let wanted = LO * u64::from(tag_of(hash));
        let mut pos = home(hash, self.capacity());
        loop {
            let group = self.group(pos);
            let empties = zero_bytes(group);
            // Only bytes before the first empty cell are on the probe path.
            let before_empty = if empties == 0 {
                u64::MAX
            } else {
                (empties & empties.wrapping_neg()) - 1
            };
            let mut matches = zero_bytes(group ^ wanted) & before_empty;
            while matches != 0 {
                let i = self.wrap(pos, matches.trailing_zeros() as usize / 8);
                let cell = &self.cells[i];
                if cell.slot == slot && cell.id == id {
                    return Probe::Found(i);
                }
                matches &= matches - 1;
            }
            if empties != 0 {
                return Probe::Vacant(self.wrap(pos, empties.trailing_zeros() as usize / 8));
            }
            pos = self.wrap(pos, GROUP);
        }
    }

    fn full(&self, more: usize) -> bool {
        (self.len + more) * 8 > self.capacity() * 7
    }

    /// Puts a new key in the cell `probe` found vacant for it.
    #[inline]
    pub fn fill(&mut self, vacant: usize, record: KeyRecord) {
        debug_assert!(record.slot != SLOT_EMPTY);
        debug_assert_eq!(self.probe(record.slot, record.id), Probe::Vacant(vacant));
        debug_assert!((self.len + 1) * 8 <= self.capacity() * 7);
        self.set(vacant, record, tag_of(hash_of(record.slot, record.id)));
        self.len += 1;
    }

    /// Adds a key that is not in the table (and fits: see `full`).
    fn insert(&mut self, record: KeyRecord) {
        match self.probe(record.slot, record.id) {
            Probe::Vacant(i) => self.fill(i, record),
            Probe::Found(_) => panic!("key inserted twice"),
        }
    }

    #[inline]
    fn set(&mut self, i: usize, record: KeyRecord, tag: u8) {
        self.cells[i] = record;
        self.tags[i] = tag;
        if i < GROUP {
            let mirror = self.capacity() + i;
            self.tags[mirror] = tag;
        }
    }

    /// Removes every record for which `expired` says so; returns how many.
    ///
    /// Starts at an empty cell (one exists: the table is never full) and
    /// walks once around, so no cluster straddles the start and backward
    /// shifting never moves a record past the cursor unexamined.
    #[cfg(test)]
    pub fn sweep(&mut self, expired: impl FnMut(&KeyRecord) -> bool) -> usize {
        let mut sweep = Sweep::new(self);
        self.sweep_some(&mut sweep, usize::MAX, expired)
    }

    /// Goes on with `sweep` for at most `cells` cells (a cell looked at
    /// again after a removal counts again); returns how many records it
    /// removed. Between calls, keys may be inserted anywhere: they are of
    /// the current generation, so never expired, and an insertion moves no
    /// record. A removal shifts records back only into the hole at the
    /// cursor or after it, so none escapes unexamined.
    fn sweep_some(
        &mut self,
        sweep: &mut Sweep,
        cells: usize,
        mut expired: impl FnMut(&KeyRecord) -> bool,
    ) -> usize {
        let capacity = self.capacity();
        let mut removed = 0;
        let mut budget = cells;
        while sweep.step < capacity && budget > 0 {
            budget -= 1;
            let i = self.wrap(sweep.start, sweep.step);
            let cell = self.cells[i];
            if cell.slot != SLOT_EMPTY && expired(&cell) {
                self.remove_at(i);
                removed += 1;
                // The cell now holds a record shifted back from later in the
                // cluster (or is empty): look at it again.
                continue;
            }
            sweep.step += 1;
        }
        self.len -= removed;
        removed
    }

    /// Backward-shift deletion of the record in cell `hole`.
    fn remove_at(&mut self, mut hole: usize) {
        let mut j = hole;
        loop {
            j = self.wrap(j, 1);
            let cell = self.cells[j];
            if cell.slot == SLOT_EMPTY {
                break;
            }
            let hash = hash_of(cell.slot, cell.id);
            let want = home(hash, self.capacity());
            // Move `cell` into the hole if its home is not cyclically within
            // (hole, j]: then the hole lies on its probe path.
            let home_in_between = if hole <= j {
                hole < want && want <= j
            } else {
                hole < want || want <= j
            };
            if !home_in_between {
                self.set(hole, cell, tag_of(hash));
                hole = j;
            }
        }
        self.set(hole, EMPTY, 0);
    }

    #[cfg(test)]
    fn check_reachable(&self) {
        let mut count = 0;
        for (i, cell) in self.cells.iter().enumerate() {
            let tag = if cell.slot == SLOT_EMPTY {
                0
            } else {
                tag_of(hash_of(cell.slot, cell.id))
            };
            assert_eq!(self.tags[i], tag, "tag of cell {i}");
            if cell.slot != SLOT_EMPTY {
                count += 1;
                assert_eq!(self.probe(cell.slot, cell.id), Probe::Found(i));
            }
        }
        for k in 0..GROUP {
            assert_eq!(self.tags[self.capacity() + k], self.tags[k], "mirror {k}");
        }
        assert_eq!(count, self.len);
    }
}

/// Old cells moved to the new table per keyed request while growing. At 16,
/// the old table (7/8 of C cells full) is emptied within C/16 requests,
/// while the new one (2C cells) takes at most 7/8 C + C/16 < 7/4 C keys: it
/// never has to grow before the old one is gone. The faster the move, the
/// shorter the time in which a new key is looked for in both tables
/// (`apply_probe 1000000 4000000 64 1`: 287 ns per debit at 4, 261 at 16).
const MIGRATE_CELLS_PER_STEP: usize = 16;

/// Cells a sweep looks at per keyed request (`KeyTable::sweep_step`): a
/// table of C cells is swept within C/32 keyed requests, in which at most
/// C/32 keys arrive, so a table sized at 13/16 stays below its 7/8 growth
/// point while the expired keys go (13/16 + 1/32 < 7/8).
pub(crate) const SWEEP_CELLS_PER_STEP: usize = 32;

/// Tables of at most this many cells are swept in one go: the pause is a
/// few tens of microseconds, and forgetting is then exact to the request.
pub(crate) const SWEEP_AT_ONCE_CELLS: usize = 1 << 16;

/// Where a sweep of a [`Table`] is: it started at an empty cell (one
/// exists: the table is never full), so no cluster straddled the start,
/// and walks once around.
struct Sweep {
    start: usize,
    /// Cells from `start` looked at so far; done at the capacity.
    step: usize,
}

impl Sweep {
    fn new(table: &Table) -> Sweep {
        let start = match table.cells.iter().position(|c| c.slot == SLOT_EMPTY) {
            Some(start) => start,
            None => unreachable!("the table is at most 7/8 full"),
        };
        Sweep { start, step: 1 }
    }
}

/// A table made ready for the next growth, its pages already faulted in
/// (zeroed by the kernel) by [`KeySpare::make`] on another thread, so the
/// worker does not stall on hundreds of page faults right after growing.
pub(crate) struct KeySpare(Table);

impl KeySpare {
    /// An empty table of `capacity` cells with every page faulted in. Slow
    /// (the kernel zeroes all of it): meant for a thread of its own.
    pub fn make(capacity: usize) -> KeySpare {
        let table = Table::with_capacity(capacity);
        table.tags.populate();
        table.cells.populate();
        KeySpare(table)
    }
}

/// Where a found record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    in_old: bool,
    index: usize,
}

/// The idempotency memory: a [`Table`], and while it grows, the old one
/// being emptied into the new a few cells at a time (no stop-the-world
/// rehash: a shard never stalls for the size of its table).
pub(crate) struct KeyTable {
    current: Table,
    old: Option<Table>,
    /// Cells of `old` below this were moved to `current`.
    cursor: usize,
    /// Records still in `old` at or after `cursor`.
    old_left: usize,
    /// The next growth's table, if one was made ready (see `spare_wanted`).
    spare: Option<Table>,
    /// The sweep of `current` in progress, if any (see `start_sweep`).
    sweep: Option<Sweep>,
    /// Keys the table was sized for ([`KeyTable::sized_for`]), 0 if none:
    /// up to there no spare is made, since a table holding what it was
    /// sized for is the steady state, not the way to a growth.
    planned: usize,
}

impl KeyTable {
    pub fn new() -> KeyTable {
        KeyTable::with_capacity(CAPACITY_MIN)
    }

    /// A table for `keys` keys, the steady state of a gateway whose table
    /// holds a dedup window's keys: 13/16 full when they are all in (25
    /// bytes a cell: 30.8 a key, within the 32-byte budget), so a burst of
    /// 7% more fits before it grows at 7/8, and its spare for a growth is
    /// made only once it holds more than `keys`.
    pub fn sized_for(keys: usize) -> KeyTable {
        let mut table = KeyTable::with_capacity((keys * 16).div_ceil(13));
        table.planned = keys;
        table
    }

    pub fn with_capacity(capacity: usize) -> KeyTable {
        KeyTable {
            current: Table::with_capacity(capacity),
            old: None,
            cursor: 0,
            old_left: 0,
            spare: None,
            sweep: None,
            planned: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.current.len + self.old_left
    }

    pub fn bytes(&self) -> usize {
        self.current.bytes()
            + self.old.as_ref().map_or(0, Table::bytes)
            + self.spare.as_ref().map_or(0, Table::bytes)
    }

    /// Once the table is 3/4 full (growth comes at 7/8) and holds no spare:
    /// the capacity of the table the next growth needs. The caller makes a
    /// [`KeySpare`] of it off the worker and hands it to `give_spare`.
    pub fn spare_wanted(&self) -> Option<usize> {
        let capacity = self.current.capacity();
        let len = self.current.len;
        let due = self.spare.is_none()
            && self.old.is_none()
            && len * 4 >= capacity * 3
            && len >= self.planned;
        due.then_some(capacity * 2)
    }

    /// Whether `more` new keys would make the table grow.
    pub fn would_grow(&self, more: usize) -> bool {
        self.current.full(more)
    }

    /// Keeps `spare` for the next growth if it fits it; else drops it.
    pub fn give_spare(&mut self, spare: KeySpare) {
        if spare.0.capacity() == self.current.capacity() * 2 && spare.0.len == 0 {
            self.spare = Some(spare.0);
        }
    }

    /// Every record, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = &KeyRecord> {
        let old = self
            .old
            .iter()
            .flat_map(|o| o.cells[self.cursor..].iter())
            .filter(|c| c.slot != SLOT_EMPTY);
        self.current.records().chain(old)
    }

    /// Changes every record's generation (which no lookup depends on).
    pub fn regenerate(&mut self, mut generation: impl FnMut(u16) -> u16) {
        let cursor = self.cursor;
        let old = self
            .old
            .iter_mut()
            .flat_map(|o| o.cells[cursor..].iter_mut());
        for cell in self.current.cells.iter_mut().chain(old) {
            if cell.slot != SLOT_EMPTY {
                cell.generation = generation(cell.generation);
            }
        }
    }

    #[inline]
    pub fn prefetch(&self, slot: u32, id: u64) {
        self.current.prefetch(slot, id);
        // A new key is looked for in the old table too while it is moved.
        if let Some(old) = &self.old {
            old.prefetch(slot, id);
        }
    }

    /// Finds the key, or the cell of the current table it would go in.
    #[inline]
    pub fn probe(&self, slot: u32, id: u64) -> Result<Found, usize> {
        match self.current.probe(slot, id) {
            Probe::Found(index) => Ok(Found {
                in_old: false,
                index,
            }),
            Probe::Vacant(vacant) => match &self.old {
                Some(old) => match old.probe(slot, id) {
                    // Below the cursor it was moved, and `current` had it.
                    Probe::Found(index) if index >= self.cursor => Ok(Found {
                        in_old: true,
                        index,
                    }),
                    _ => Err(vacant),
                },
                None => Err(vacant),
            },
        }
    }

    #[inline]
    pub fn record(&self, found: Found) -> &KeyRecord {
        match (&self.old, found.in_old) {
            (Some(old), true) => &old.cells[found.index],
            _ => &self.current.cells[found.index],
        }
    }

    #[inline]
    pub fn get(&self, slot: u32, id: u64) -> Option<&KeyRecord> {
        self.probe(slot, id).ok().map(|found| self.record(found))
    }

    /// The key's record, to change its result and generation (a queued
    /// debit's, when its batch applies it); never its key or payload.
    pub fn get_mut(&mut self, slot: u32, id: u64) -> Option<&mut KeyRecord> {
        let found = self.probe(slot, id).ok()?;
        Some(match (&mut self.old, found.in_old) {
            (Some(old), true) => &mut old.cells[found.index],
            _ => &mut self.current.cells[found.index],
        })
    }

    /// Makes room for one more key and moves a few cells of an old table,
    /// so that a vacant cell found next stays valid until [`KeyTable::fill`].
    #[inline]
    pub fn reserve_one(&mut self) {
        if self.old.is_some() {
            self.migrate(MIGRATE_CELLS_PER_STEP);
        }
        if self.current.full(1) {
            // A sweep still under way is given up: the records it had not
            // reached move with the rest and the next sweep takes them
            // (kept longer, never shorter).
            self.sweep = None;
            // Only if growth outran migration, which the step size rules
            // out; finish the move rather than hold three tables.
            self.migrate(usize::MAX);
            let capacity = self.current.capacity() * 2;
            let next = match self.spare.take() {
                Some(spare) if spare.capacity() == capacity => spare,
                _ => Table::with_capacity(capacity),
            };
            let old = std::mem::replace(&mut self.current, next);
            self.old_left = old.len;
            self.cursor = 0;
            self.old = Some(old);
        }
    }

    /// Puts a new key in the cell [`KeyTable::probe`] found vacant for it.
    #[inline]
    pub fn fill(&mut self, vacant: usize, record: KeyRecord) {
        debug_assert!(self.get(record.slot, record.id).is_none());
        self.current.fill(vacant, record);
    }

    /// Adds a key that is not in the table.
    pub fn insert(&mut self, record: KeyRecord) {
        self.reserve_one();
        match self.probe(record.slot, record.id) {
            Err(vacant) => self.fill(vacant, record),
            Ok(_) => panic!("key inserted twice"),
        }
    }

    /// Moves up to `cells` cells of the old table into the current one.
    fn migrate(&mut self, cells: usize) {
        let Some(old) = &self.old else {
            return;
        };
        let end = self.cursor.saturating_add(cells).min(old.cells.len());
        for i in self.cursor..end {
            let record = old.cells[i];
            if record.slot != SLOT_EMPTY {
                self.current.insert(record);
                self.old_left -= 1;
            }
        }
        self.cursor = end;
        if end == old.cells.len() {
            debug_assert_eq!(self.old_left, 0);
            self.old = None;
            self.cursor = 0;
        }
    }

    /// Removes every record for which `expired` says so; returns how many.
    #[cfg(test)]
    pub fn sweep(&mut self, expired: impl FnMut(&KeyRecord) -> bool) -> usize {
        self.migrate(usize::MAX);
        self.sweep = None;
        self.current.sweep(expired)
    }

    /// Starts a sweep that `sweep_step` carries out a few cells at a time,
    /// so forgetting never pauses a shard for the size of its table. The
    /// caller finishes a sweep still under way first (`sweep_step` with no
    /// bound), since only it knows that sweep's rule. A growth under way is
    /// finished here: a sweep walks one table.
    pub fn start_sweep(&mut self) {
        debug_assert!(self.sweep.is_none(), "a sweep is under way");
        self.migrate(usize::MAX);
        self.sweep = Some(Sweep::new(&self.current));
    }

    pub fn sweeping(&self) -> bool {
        self.sweep.is_some()
    }

    /// Whether the table is small enough to sweep in one go.
    pub fn small(&self) -> bool {
        self.current.capacity() <= SWEEP_AT_ONCE_CELLS
    }

    /// Goes on with the sweep under way for at most `cells` cells, removing
    /// the records `expired` says are; returns how many it removed. The
    /// rule must stay that of the sweep's start.
    pub fn sweep_step(&mut self, cells: usize, expired: impl FnMut(&KeyRecord) -> bool) -> usize {
        let Some(mut sweep) = self.sweep.take() else {
            return 0;
        };
        let removed = self.current.sweep_some(&mut sweep, cells, expired);
        if sweep.step < self.current.capacity() {
            self.sweep = Some(sweep);
        }
        removed
    }

    #[cfg(test)]
    fn check_reachable(&self) {
        self.current.check_reachable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Odd ids carry an amount, even ones a fingerprint.
    fn record(slot: u32, id: u64) -> KeyRecord {
        let payload = if id % 2 == 1 {
            Payload::Minor(id as i64)
        } else {
            Payload::Fingerprint(id ^ u64::MAX)
        };
        KeyRecord::new(id, slot, 2, 0, (id % 3) as u16, payload)
    }

    /// A spare made ready is the table the next growth moves into; one of
    /// the wrong size is refused; keys are all found either way.
    #[test]
    fn growth_uses_the_spare_it_was_given() {
        let mut table = KeyTable::new();
        let mut id = 0u64;
        while table.spare_wanted().is_none() {
            table.insert(record(1, id));
            id += 1;
        }
        let capacity = table.spare_wanted().unwrap();
        assert_eq!(capacity, CAPACITY_MIN * 2);
        table.give_spare(KeySpare::make(capacity * 2));
        assert!(
            table.spare.is_none(),
            "a spare of the wrong size is dropped"
        );
        table.give_spare(KeySpare::make(capacity));
        assert!(table.spare_wanted().is_none());
        let spare_cells = table.spare.as_ref().unwrap().cells.as_ptr();
        while table.old.is_none() {
            table.insert(record(1, id));
            id += 1;
        }
        assert!(table.spare.is_none());
        assert_eq!(table.current.cells.as_ptr(), spare_cells);
        for n in 0..id {
            assert!(table.get(1, n).is_some(), "key {n}");
        }
        table.check_reachable();
    }

    #[test]
    fn finds_what_was_inserted_across_growth() {
        let mut table = KeyTable::new();
        for id in 0..10_000u64 {
            table.insert(record((id % 7) as u32 + 1, id));
        }
        assert_eq!(table.len(), 10_000);
        for id in 0..10_000u64 {
            let slot = (id % 7) as u32 + 1;
            assert_eq!(
                table.get(slot, id).map(KeyRecord::payload),
                Some(record(slot, id).payload())
            );
            assert!(table.get(slot + 1, id).is_none());
        }
        table.check_reachable();
    }

    #[test]
    fn growth_moves_keys_a_few_at_a_time_and_loses_none() {
        let mut table = KeyTable::new();
        let mut grew = false;
        for id in 0..50_000u64 {
            table.insert(record((id % 5) as u32 + 1, id));
            grew |= table.old.is_some();
            if id % 997 == 0 {
                // Mid-move, every key so far is found, exactly once.
                for back in (0..=id).step_by(13) {
                    assert_eq!(
                        table.get((back % 5) as u32 + 1, back).map(|r| r.id),
                        Some(back)
                    );
                }
                assert_eq!(table.records().count(), id as usize + 1);
            }
        }
        assert!(grew, "the table grew incrementally");
        assert_eq!(table.len(), 50_000);
        table.migrate(usize::MAX);
        table.check_reachable();
    }

    /// Capacities that are not powers of two (and one that is): a table
    /// driven to 7/8 load, so clusters are long and wrap around the end.
    const CAPACITIES: [usize; 4] = [1024, 1031, 1531, 3000];

    #[test]
    fn sweep_removes_exactly_the_expired_and_keeps_the_rest_reachable() {
        for capacity in CAPACITIES {
            let mut table = KeyTable::with_capacity(capacity);
            let mut live = HashSet::new();
            for id in 0..(capacity * 7 / 8) as u64 {
                table.insert(record(3, id * 7919));
                live.insert(id * 7919);
            }
            assert!(table.old.is_none(), "capacity {capacity}: no growth at 7/8");
            table.check_reachable();
            let removed = table.sweep(|r| r.generation == 0);
            let expected: HashSet<u64> = live.iter().copied().filter(|id| id % 3 != 0).collect();
            assert_eq!(removed, live.len() - expected.len());
            table.check_reachable();
            for id in &live {
                assert_eq!(
                    table.get(3, *id).is_some(),
                    expected.contains(id),
                    "capacity {capacity}, id {id}"
                );
            }
            assert_eq!(table.sweep(|_| true), expected.len());
            assert_eq!(table.len(), 0);
            table.check_reachable();
        }
    }

    /// Any capacity is taken as is, and growth doubles it: every key is
    /// found, before, during and after the move into the doubled table,
    /// and a sweep of the grown table keeps the rest reachable.
    #[test]
    fn odd_capacities_insert_find_grow_and_sweep() {
        for capacity in CAPACITIES {
            let mut table = KeyTable::with_capacity(capacity);
            assert_eq!(table.current.capacity(), capacity);
            let fits = (capacity * 7 / 8) as u64;
            let slot = |id: u64| (id % 11) as u32 + 1;
            for id in 0..fits {
                table.insert(record(slot(id), id));
            }
            assert!(table.old.is_none() && !table.would_grow(0));
            table.check_reachable();
            assert!(table.would_grow(1));
            let mut id = fits;
            while table.old.is_some() || id == fits {
                table.insert(record(slot(id), id));
                id += 1;
                for back in (0..id).step_by(7) {
                    assert_eq!(
                        table.get(slot(back), back).copied(),
                        Some(record(slot(back), back)),
                        "capacity {capacity}, key {back} of {id}"
                    );
                }
                assert!(table.get(slot(id) + 1, id - 1).is_none());
            }
            assert_eq!(table.current.capacity(), capacity * 2);
            assert_eq!(table.len(), id as usize);
            table.check_reachable();
            table.sweep(|r| r.id % 2 == 0);
            table.check_reachable();
            for n in 0..id {
                assert_eq!(table.get(slot(n), n).is_some(), n % 2 == 1, "key {n}");
            }
        }
    }

    /// Tags come from other bits of the hash than the home cell: along a
    /// run of neighbouring cells (keys with nearly the same home) they
    /// still differ. Tags from the bits that decide the home would match
    /// their neighbours' nearly always and filter nothing.
    #[test]
    fn tags_do_not_follow_the_home_cell() {
        let capacity = 3000;
        let mut table = KeyTable::with_capacity(capacity);
        for id in 0..(capacity * 7 / 8) as u64 {
            table.insert(record(1, id));
        }
        let tags = &table.current.tags[..capacity];
        let pairs = tags.windows(2).filter(|w| w[0] != 0 && w[1] != 0);
        let (same, all) = pairs.fold((0, 0), |(same, all), w| {
            (same + usize::from(w[0] == w[1]), all + 1)
        });
        // Independent 7-bit tags: 1 in 128 equal, ~18 of ~2,300 pairs.
        assert!(same * 32 < all, "{same} of {all} neighbouring tags equal");
    }

    #[test]
    fn records_round_trip_through_words() {
        for payload in [
            Payload::Minor(0),
            Payload::Minor(i64::MAX),
            Payload::Fingerprint(u64::MAX),
            Payload::Fingerprint(0),
            Payload::Cleared {
                minor: 0,
                merchant: 0,
            },
            Payload::Cleared {
                minor: CLEARED_MINOR_MAX,
                merchant: CLEARED_MERCHANTS - 1,
            },
            Payload::Cleared {
                minor: 12_345,
                merchant: 7,
            },
        ] {
            let mut r = KeyRecord::new(u64::MAX - 1, u32::MAX, 7, 3, 0xBEEF, payload);
            assert_eq!(r.op(), 7);
            assert_eq!(r.payload(), payload);
            assert_eq!(KeyRecord::from_words(r.to_words()), Some(r));
            r.set_batch_result(1, 2);
            assert!(r.batched());
            assert_eq!((r.op(), r.code, r.generation), (7, 1, 2));
            assert_eq!(r.payload(), payload);
            assert_eq!(KeyRecord::from_words(r.to_words()), Some(r));
        }
        let words = KeyRecord::new(1, 2, 7, 3, 4, Payload::Minor(5)).to_words();
        let refused = [
            [words[0], words[1] & !0xFFFF_FFFF, words[2]],
            [words[0], words[1] | 0x1F << 32, words[2]],
            [words[0], words[1] | 0x20 << 32, words[2]],
            [words[0], words[1] | 0xFF << 40, words[2]],
            [words[0], words[1], u64::MAX],
        ];
        for bad in refused {
            assert_eq!(KeyRecord::from_words(bad), None, "{bad:x?}");
        }
        // The same last word as a fingerprint is fine.
        let fingerprint = KeyRecord::new(1, 2, 7, 3, 4, Payload::Fingerprint(u64::MAX));
        assert!(KeyRecord::from_words(fingerprint.to_words()).is_some());
    }

    /// PERF.md's budget: a table sized for its keys costs at most 32 bytes
    /// a key (25 a cell at 13/16: 30.8), for any count, not only just below
    /// a power of two; and holds them all, and a few percent more, without
    /// growing.
    #[test]
    fn a_table_sized_for_its_keys_costs_at_most_32_bytes_a_key() {
        for keys in [2_000, 600_000, 1 << 20, 3_000_001] {
            let table = KeyTable::sized_for(keys);
            let per_key = table.bytes() as f64 / keys as f64;
            assert!((30.5..=31.0).contains(&per_key), "{keys} keys: {per_key}");
            assert!(!table.would_grow(keys + keys / 16));
            assert!(table.would_grow(keys + keys / 12));
        }
    }

    /// A table holding what it was sized for asks for no spare (which would
    /// double its memory in the steady state); past that, it does.
    #[test]
    fn a_sized_table_wants_a_spare_only_past_its_size() {
        let keys = 2_000;
        let mut table = KeyTable::sized_for(keys);
        for id in 0..keys as u64 - 1 {
            table.insert(record(1, id));
        }
        assert!(table.current.len * 4 >= table.current.capacity() * 3);
        assert_eq!(table.spare_wanted(), None);
        table.insert(record(1, keys as u64));
        assert_eq!(table.spare_wanted(), Some(table.current.capacity() * 2));
    }
    /// A sweep done a few cells at a time, with keys of the current
    /// generation inserted between the steps (and so clusters that change
    /// under it, and straddle its start), removes exactly the expired
    /// records: none escapes, and no live one goes.
    #[test]
    fn a_sweep_in_steps_with_inserts_between_removes_exactly_the_expired() {
        for capacity in [1031, 3000] {
            let mut table = KeyTable::with_capacity(capacity);
            let fits = (capacity * 13 / 16) as u64;
            // Generations 0, 1, 2 by id % 3 (see `record`); 0 expires.
            for id in 0..fits {
                table.insert(record(1 + (id % 5) as u32, id * 7919));
            }
            let before: Vec<KeyRecord> = table.records().copied().collect();
            table.start_sweep();
            let mut new = Vec::new();
            let mut next = fits * 7919;
            let mut steps = 0;
            while table.sweeping() {
                table.sweep_step(7, |r| r.generation == 0);
                steps += 1;
                if new.len() < capacity / 20 {
                    // A new key, of a generation the rule keeps.
                    let r = KeyRecord::new(next, 2, 2, 0, 3, Payload::Minor(1));
                    table.insert(r);
                    new.push(r);
                    next += 1;
                }
            }
            assert!(steps >= capacity / 7, "capacity {capacity}: {steps} steps");
            table.check_reachable();
            for r in before.iter().chain(&new) {
                let kept = table.get(r.slot, r.id).is_some();
                assert_eq!(kept, r.generation != 0, "capacity {capacity}: {r:?}");
            }
            assert_eq!(
                table.len(),
                before.iter().filter(|r| r.generation != 0).count() + new.len()
            );
        }
    }

    /// A growth while a sweep is under way gives the sweep up (it walks
    /// one table) and loses no key; the next sweep takes what it left.
    #[test]
    fn a_growth_gives_up_the_sweep_under_way_and_loses_nothing() {
        let mut table = KeyTable::with_capacity(1024);
        for id in 0..800u64 {
            table.insert(record(1, id));
        }
        table.start_sweep();
        table.sweep_step(10, |_| false);
        let mut id = 800u64;
        while !table.would_grow(1) {
            table.insert(record(1, id));
            id += 1;
        }
        table.insert(record(1, id));
        assert!(!table.sweeping(), "the growth ended the sweep");
        for n in 0..=id {
            assert!(table.get(1, n).is_some(), "key {n}");
        }
        let expired = (0..=id).filter(|n| n % 3 == 0).count();
        assert_eq!(table.sweep(|r| r.generation == 0), expired);
    }
}
