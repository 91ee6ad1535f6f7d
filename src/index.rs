//! The account index of one shard: account id → slot.
//!
//! Linear probing over an array of 8-byte cells, at most 3/4 full. A cell is
//! 0 when empty, else `(h << 32) | slot` where `h` is the top half of the
//! account id's hash: the home cell comes from `h` alone (Lemire's range
//! reduction, so the capacity need not be a power of two), growth rehashes
//! without touching the accounts, and a candidate whose `h` differs is
//! skipped without reading its account. A candidate whose `h` matches is
//! confirmed by the caller against the account record, which the request
//! reads anyway: the id is stored once, in the record.
//!
//! Why not a std `HashMap`: a batch's lookups are prefetched in two stages
//! (this cell, then the account and key cells), which needs the cell's
//! address before the lookup; and 8 bytes a cell instead of 13 keeps a plain
//! account within its memory budget. Accounts are never removed, so there
//! is no deletion.

use crate::hash;
use crate::hugemem::ZeroedArray;
use crate::request::AccountId;

/// Domain separation from shard routing, which takes the top bits of
/// `fold(account)`: within one shard those bits are nearly constant, so the
/// index must hash differently.
const SEED: u64 = 0x5851_F42D_4C95_7F2D;

const CAPACITY_MIN: usize = 64;

pub(crate) struct AccountIndex {
    cells: ZeroedArray<u64>,
    len: usize,
}

#[inline]
pub(crate) fn hash32(account: AccountId) -> u32 {
    (hash::fold(account ^ SEED) >> 32) as u32
}

#[inline]
fn home(h: u32, capacity: usize) -> usize {
    ((u64::from(h) * capacity as u64) >> 32) as usize
}

impl AccountIndex {
    pub fn new() -> AccountIndex {
        AccountIndex::with_capacity(CAPACITY_MIN)
    }

    /// An empty index with `capacity` cells (room for 3/4 of them).
    fn with_capacity(capacity: usize) -> AccountIndex {
        let capacity = capacity.max(CAPACITY_MIN);
        assert!(
            capacity <= 1 << 32,
            "the index addresses at most 2^32 cells"
        );
        AccountIndex {
            cells: ZeroedArray::new(capacity),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn bytes(&self) -> usize {
        self.cells.len() * std::mem::size_of::<u64>()
    }

    /// The cell where the probe of the account whose [`hash32`] is `h`
    /// starts: prefetch it, and the lookup that follows hits the cache.
    #[inline]
    pub fn home_by_hash(&self, h: u32) -> &u64 {
        &self.cells[home(h, self.cells.len())]
    }

    /// The slot of `account`, if it has one. `is` tells whether a candidate
    /// slot holds `account` (reading its record); it is asked only for
    /// slots whose cell hash matches.
    #[inline]
    pub fn get(&self, account: AccountId, is: impl Fn(u32) -> bool) -> Option<u32> {
        self.get_by_hash(hash32(account), is)
    }

    #[inline]
    fn get_by_hash(&self, h: u32, is: impl Fn(u32) -> bool) -> Option<u32> {
        let capacity = self.cells.len();
        let mut pos = home(h, capacity);
        loop {
            let cell = self.cells[pos];
            if cell == 0 {
                return None;
            }
            if (cell >> 32) as u32 == h && is(cell as u32) {
                return Some(cell as u32);
            }
            pos += 1;
            if pos == capacity {
                pos = 0;
            }
        }
    }

    /// The slot of the first cell on the probe path of the account whose
    /// [`hash32`] is `h` that has that hash, unconfirmed: for prefetching
    /// the account.
    #[inline]
    pub fn candidate_by_hash(&self, h: u32) -> Option<u32> {
        self.get_by_hash(h, |_| true)
    }

    /// Adds `account` at `slot` (not 0). The caller has checked that the
    /// account is not in the index.
    pub fn insert(&mut self, account: AccountId, slot: u32) {
        debug_assert!(slot != 0, "slot 0 marks an empty cell");
        if (self.len + 1) * 4 > self.cells.len() * 3 {
            // To half full: 16 bytes of index per account at worst.
            self.grow(self.cells.len() * 3 / 2);
        }
        self.place((u64::from(hash32(account)) << 32) | u64::from(slot));
        self.len += 1;
    }

    /// Makes room for `more` accounts without growing on the way, at most
    /// 5/8 full: ~1.8 cells probed per lookup (linear probing finds a key
    /// in (1 + 1/(1 - load)) / 2 probes on average; at 7/8 it was 4.5 and
    /// showed in the instruction count), 12.8 bytes per account.
    pub fn reserve(&mut self, more: usize) {
        let wanted = (self.len + more) * 8 / 5 + 1;
        if wanted > self.cells.len() {
            self.grow(wanted);
        }
    }

    fn place(&mut self, cell: u64) {
        let capacity = self.cells.len();
        let mut pos = home((cell >> 32) as u32, capacity);
        while self.cells[pos] != 0 {
            pos += 1;
            if pos == capacity {
                pos = 0;
            }
        }
        self.cells[pos] = cell;
    }

    /// Rehashes into `capacity` cells: a stop of O(accounts), paid only
    /// when accounts are opened past 7/8 of the capacity (rare, and never
    /// on a debit); `reserve` avoids it for a known load.
    fn grow(&mut self, capacity: usize) {
        let old = std::mem::replace(self, AccountIndex::with_capacity(capacity));
        self.len = old.len;
        for &cell in old.cells.iter().filter(|&&c| c != 0) {
            self.place(cell);
        }
    }

    /// Every slot in the index, for consistency checks.
    #[cfg(test)]
    fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.cells.iter().filter(|&&c| c != 0).map(|&c| c as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index against a reference map, through growth, with ids chosen
    /// to collide in `h` now and then (small id ranges, many shards' worth).
    #[test]
    fn finds_what_was_inserted_and_nothing_else() {
        let mut index = AccountIndex::new();
        let mut ids: Vec<AccountId> = vec![0]; // slot 0 is never used
        let mut seen = std::collections::HashSet::new();
        let mut x = 7u64;
        for n in 0..50_000u64 {
            x = hash::fold(x.wrapping_add(n));
            let account = if n % 3 == 0 { n } else { x };
            if !seen.insert(account) {
                continue;
            }
            let slot = ids.len() as u32;
            assert_eq!(index.get(account, |s| ids[s as usize] == account), None);
            ids.push(account);
            index.insert(account, slot);
        }
        assert_eq!(index.len(), ids.len() - 1);
        for (slot, &account) in ids.iter().enumerate().skip(1) {
            assert_eq!(
                index.get(account, |s| ids[s as usize] == account),
                Some(slot as u32)
            );
        }
        for missing in [u64::MAX, 1 << 40, 123_456_789_012] {
            if !seen.contains(&missing) {
                assert_eq!(index.get(missing, |s| ids[s as usize] == missing), None);
            }
        }
        let mut slots: Vec<u32> = index.slots().collect();
        slots.sort_unstable();
        assert_eq!(slots, (1..ids.len() as u32).collect::<Vec<_>>());
        assert!(index.len() * 4 <= index.cells.len() * 3);
    }

    #[test]
    fn reserve_avoids_growth() {
        let mut index = AccountIndex::new();
        index.reserve(10_000);
        let capacity = index.cells.len();
        for slot in 1..=10_000u32 {
            index.insert(u64::from(slot) * 977, slot);
        }
        assert_eq!(index.cells.len(), capacity);
        assert_eq!(index.get(977 * 5, |s| s == 5), Some(5));
    }

    /// The home cell spreads over the whole table even when every id comes
    /// from one shard (the routing hash's top bits fixed).
    #[test]
    fn one_shards_ids_spread_over_the_table() {
        let capacity = 1 << 12;
        let mut used = vec![false; capacity];
        let mut n = 0;
        for account in 0..200_000u64 {
            if hash::range(hash::fold(account), 4) == 1 {
                used[home(hash32(account), capacity)] = true;
                n += 1;
            }
        }
        assert!(n > 40_000);
        let spread = used.iter().filter(|&&u| u).count();
        assert!(spread > capacity * 99 / 100, "{spread} of {capacity}");
    }
}
