//! The idempotency memory of one shard: an open-addressing table of compact
//! 32-byte key records.
//!
//! Linear probing over a power-of-two array (two records per cache line), at
//! most 7/8 full. Records are removed only by [`KeyTable::sweep`], which
//! deletes with backward shifting (Knuth, TAOCP vol. 3, 6.4, Algorithm R), so
//! no tombstones build up and a lookup stops at the first empty slot.
//!
//! A record carries the dedup-window generation in which its key was first
//! processed; a sweep at each generation change drops what is two or more
//! generations old. That keeps every key for at least one window and at most
//! two, with no per-record timestamp and no timer per key.

use crate::hash;
use crate::hugemem::{Zeroable, ZeroedArray};

/// One remembered key: (account slot, id), the op and result it had, what a
/// later refund needs (the amount it moved), and a fingerprint of all its
/// fields for telling a replay from a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct KeyRecord {
    pub id: u64,
    /// Account slot in its shard (from 1); `SLOT_EMPTY` (0) marks a free
    /// table cell, so a zero-filled table is an empty one.
    pub slot: u32,
    pub op: u8,
    pub code: u8,
    /// Dedup-window generation of first processing, modulo 2^16.
    pub generation: u16,
    /// Minor units the request moved (debit, capture: what a refund may
    /// return); 0 when it moved nothing.
    pub amount: i64,
    /// Hash of the op and every field, normalized as SPEC compares them.
    pub fingerprint: u64,
}

pub(crate) const SLOT_EMPTY: u32 = 0;

const EMPTY: KeyRecord = KeyRecord {
    id: 0,
    slot: SLOT_EMPTY,
    op: 0,
    code: 0,
    generation: 0,
    amount: 0,
    fingerprint: 0,
};

const _: () = assert!(std::mem::size_of::<KeyRecord>() == 32);

// SAFETY: integers only, no padding niches; all zeros is the empty cell.
#[allow(unsafe_code)]
unsafe impl Zeroable for KeyRecord {}

const CAPACITY_MIN: usize = 1024;

pub(crate) struct KeyTable {
    cells: ZeroedArray<KeyRecord>,
    mask: usize,
    len: usize,
}

#[inline]
fn home(slot: u32, id: u64) -> u64 {
    hash::mix(u64::from(slot), id)
}

impl KeyTable {
    pub fn new() -> KeyTable {
        KeyTable::with_capacity(CAPACITY_MIN)
    }

    pub fn with_capacity(capacity: usize) -> KeyTable {
        let capacity = capacity.max(CAPACITY_MIN).next_power_of_two();
        KeyTable {
            cells: ZeroedArray::new(capacity),
            mask: capacity - 1,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes of table memory (for the memory budget in PERF.md).
    pub fn bytes(&self) -> usize {
        self.cells.len() * std::mem::size_of::<KeyRecord>()
    }

    /// Every record, in table order.
    pub fn records(&self) -> impl Iterator<Item = &KeyRecord> {
        self.cells.iter().filter(|c| c.slot != SLOT_EMPTY)
    }

    /// The cell index where the key's probe starts; for prefetching.
    #[inline]
    pub fn probe_start(&self, slot: u32, id: u64) -> &KeyRecord {
        &self.cells[home(slot, id) as usize & self.mask]
    }

    #[inline]
    pub fn get(&self, slot: u32, id: u64) -> Option<&KeyRecord> {
        let mut i = home(slot, id) as usize & self.mask;
        loop {
            let cell = &self.cells[i];
            if cell.slot == SLOT_EMPTY {
                return None;
            }
            if cell.slot == slot && cell.id == id {
                return Some(cell);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Adds a key that is not in the table.
    pub fn insert(&mut self, record: KeyRecord) {
        debug_assert!(record.slot != SLOT_EMPTY);
        debug_assert!(self.get(record.slot, record.id).is_none());
        if (self.len + 1) * 8 > self.cells.len() * 7 {
            self.grow();
        }
        self.place(record);
        self.len += 1;
    }

    fn place(&mut self, record: KeyRecord) {
        debug_assert!(record.slot != SLOT_EMPTY);
        let mut i = home(record.slot, record.id) as usize & self.mask;
        while self.cells[i].slot != SLOT_EMPTY {
            i = (i + 1) & self.mask;
        }
        self.cells[i] = record;
    }

    fn grow(&mut self) {
        let capacity = self.cells.len() * 2;
        let old = std::mem::replace(&mut self.cells, ZeroedArray::new(capacity));
        self.mask = capacity - 1;
        for record in old.iter().filter(|r| r.slot != SLOT_EMPTY) {
            self.place(*record);
        }
    }

    /// Removes every record for which `expired` says so; returns how many.
    ///
    /// Starts at an empty cell (one exists: the table is never full) and
    /// walks once around, so no cluster straddles the start and backward
    /// shifting never moves a record past the cursor unexamined.
    pub fn sweep(&mut self, mut expired: impl FnMut(&KeyRecord) -> bool) -> usize {
        let capacity = self.cells.len();
        let start = match self.cells.iter().position(|c| c.slot == SLOT_EMPTY) {
            Some(start) => start,
            None => unreachable!("the table is at most 7/8 full"),
        };
        let mut removed = 0;
        let mut step = 1;
        while step < capacity {
            let i = (start + step) & self.mask;
            let cell = self.cells[i];
            if cell.slot != SLOT_EMPTY && expired(&cell) {
                self.remove_at(i);
                removed += 1;
                // The cell now holds a record shifted back from later in the
                // cluster (or is empty): look at it again.
                continue;
            }
            step += 1;
        }
        self.len -= removed;
        removed
    }

    /// Backward-shift deletion of the record in cell `hole`.
    fn remove_at(&mut self, mut hole: usize) {
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let cell = self.cells[j];
            if cell.slot == SLOT_EMPTY {
                break;
            }
            let want = home(cell.slot, cell.id) as usize & self.mask;
            // Move `cell` into the hole if its home is not cyclically within
            // (hole, j]: then the hole lies on its probe path.
            let home_in_between = if hole <= j {
                hole < want && want <= j
            } else {
                hole < want || want <= j
            };
            if !home_in_between {
                self.cells[hole] = cell;
                hole = j;
            }
        }
        self.cells[hole] = EMPTY;
    }

    #[cfg(test)]
    fn check_reachable(&self) {
        let mut count = 0;
        for cell in self.cells.iter().filter(|c| c.slot != SLOT_EMPTY) {
            count += 1;
            assert_eq!(self.get(cell.slot, cell.id), Some(cell));
        }
        assert_eq!(count, self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn record(slot: u32, id: u64) -> KeyRecord {
        KeyRecord {
            id,
            slot,
            op: 1,
            code: 0,
            generation: (id % 3) as u16,
            amount: id as i64,
            fingerprint: id ^ 0xFF,
        }
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
            assert_eq!(table.get(slot, id).map(|r| r.amount), Some(id as i64));
            assert!(table.get(slot + 1, id).is_none());
        }
        table.check_reachable();
    }

    #[test]
    fn sweep_removes_exactly_the_expired_and_keeps_the_rest_reachable() {
        // A small table driven to 7/8 load, so clusters are long and wrap.
        let mut table = KeyTable::with_capacity(1024);
        let mut live = HashSet::new();
        for id in 0..896u64 {
            table.insert(record(3, id * 7919));
            live.insert(id * 7919);
        }
        let removed = table.sweep(|r| r.generation == 0);
        let expected: HashSet<u64> = live.iter().copied().filter(|id| id % 3 != 0).collect();
        assert_eq!(removed, live.len() - expected.len());
        table.check_reachable();
        for id in &live {
            assert_eq!(
                table.get(3, *id).is_some(),
                expected.contains(id),
                "id {id}"
            );
        }
        assert_eq!(table.sweep(|_| true), expected.len());
        assert_eq!(table.len(), 0);
    }
}
