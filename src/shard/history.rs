//! Statements: what an account opened with `"history": true` keeps of
//! its keyed requests, the `history` query, and forgetting entries with
//! their keys.
//!
//! Only such accounts pay anything: their slot is in `Shard::histories`
//! (a side map, slot -> [`History`]) and their record has the `HISTORY`
//! flag, which sends their keyed requests down the keyed frame's cold
//! path (`Shard::keyed_flagged`, which adds the entry). A plain account's
//! record, keys and debits are as they were.
//!
//! An entry is 48 bytes: its `seq` is not stored, since entries are only
//! ever pushed at the back and popped at the front, so the `i`-th kept
//! entry has `seq = first_seq + i`.
//!
//! **Forgetting.** An entry is kept at least as long as its key: when the
//! dedup-window sweep forgets keys of an account with a statement
//! (`Shard::sweep_keys_step`), the entries at the front whose key is gone
//! are popped. An entry behind one whose key is still remembered waits
//! for it (kept longer, never shorter). A queued debit's key is kept until
//! the window after its batch, and so is its entry.
//!
//! **For batch debits** (the integrator's hook): the entry of a
//! `queue_debit` is added by the keyed frame like any other, with result
//! `queued` and the merchant it named; when its batch applies it,
//! [`Shard::history_update_queued`] gives it the batch's result.

use super::*;
use crate::limits::{HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX};
use crate::outcome::{HistoryEntry, HistoryPage, Moved};

/// An account's (balance, held) before a keyed request, which the keyed
/// frame notes for the request's entry ([`Shard::keyed_entry`]).
pub(super) type Before = (i64, i64);

/// One account's statement.
#[derive(Clone, Debug)]
pub(super) struct History {
    /// The `seq` of `entries[0]`; `first_seq + entries.len()` is the next
    /// entry's.
    pub(super) first_seq: u64,
    /// Oldest first.
    pub(super) entries: VecDeque<Entry>,
}

impl Default for History {
    fn default() -> History {
        History {
            first_seq: 1,
            entries: VecDeque::new(),
        }
    }
}

/// One kept entry (48 bytes; its `seq` is its place, see the module).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) id: TxnId,
    pub(super) time: u64,
    /// Minor units moved or held; meaningful with `HAS_AMOUNT`.
    pub(super) amount: i64,
    /// The balance right after; meaningful with `HAS_AMOUNT`.
    pub(super) balance: i64,
    /// Meaningful with `HAS_MERCHANT`.
    pub(super) merchant: MerchantId,
    pub(super) op: Op,
    pub(super) result: Code,
    /// `HAS_AMOUNT` | `HAS_MERCHANT`.
    pub(super) flags: u8,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 48);

/// `Entry::flags`: `amount` and `balance` are given.
pub(super) const HAS_AMOUNT: u8 = 1;
/// `Entry::flags`: `merchant` is given.
pub(super) const HAS_MERCHANT: u8 = 2;

impl Entry {
    fn moved(&self) -> Option<Moved> {
        (self.flags & HAS_AMOUNT != 0).then_some(Moved {
            amount: self.amount,
            balance: self.balance,
        })
    }

    fn public(&self, seq: u64) -> HistoryEntry {
        HistoryEntry {
            seq,
            id: self.id,
            op: self.op,
            result: self.result,
            time: self.time,
            moved: self.moved(),
            merchant: (self.flags & HAS_MERCHANT != 0).then_some(self.merchant),
        }
    }
}

impl Shard {
    /// Adds the statement entry of the keyed request `id`, answered
    /// `code`, on `slot`, whose balance and held were `before` it. Its amount is what
    /// the request changed of the balance (or, when the balance did not
    /// move, of `held`): exactly what SPEC names for every op (a deposit,
    /// debit or refund its balance change; a capture what left the
    /// balance; an authorize, increment or review what was held), read
    /// off the record rather than asked of every op's body.
    #[cold]
    #[inline(never)]
    pub(super) fn keyed_entry(
        &mut self,
        slot: u32,
        id: TxnId,
        op: Op,
        code: Code,
        (balance, held): Before,
        merchant: Option<MerchantId>,
    ) {
        let after = &self.accounts[slot as usize];
        let amount = match after.balance - balance {
            0 => after.held - held,
            delta => delta.abs(),
        };
        let moved = (code.is_effective() && op != Op::Void && amount > 0).then_some(Moved {
            amount,
            balance: after.balance,
        });
        self.history_add(slot, id, op, code, moved, merchant);
    }

    /// Adds the next entry to the statement of `slot` (an account with
    /// history): the keyed request `id` got the remembered outcome `code`
    /// at the current engine time.
    pub(super) fn history_add(
        &mut self,
        slot: u32,
        id: TxnId,
        op: Op,
        code: Code,
        moved: Option<Moved>,
        merchant: Option<MerchantId>,
    ) {
        let now_ms = self.now_ms;
        let history = self
            .histories
            .get_mut(&slot)
            .expect("an account with the history flag has a statement");
        let mut flags = 0;
        if moved.is_some() {
            flags |= HAS_AMOUNT;
        }
        if merchant.is_some() {
            flags |= HAS_MERCHANT;
        }
        let Moved { amount, balance } = moved.unwrap_or(Moved {
            amount: 0,
            balance: 0,
        });
        let room = history.entries.capacity();
        if history.entries.len() == room {
            // Grow by half, not double: a ring is then on average ~80%
            // full, not ~70% (bytes per entry are a budget: PERF.md).
            history.entries.reserve_exact((room / 2).max(4));
        }
        history.entries.push_back(Entry {
            id,
            time: now_ms,
            amount,
            balance,
            merchant: merchant.unwrap_or(0),
            op,
            result: code,
            flags,
        });
        self.history_entries += 1;
        self.history_capacity += history.entries.capacity() - room;
    }

    /// When a batch applies the queued debit `id` of `slot`
    /// (`shard/batch.rs`), it calls this with the result the batch
    /// gave it (`code`) and, when `ok` or `held_for_review`, what it took
    /// or held (`amount`, minor units): the entry its `queue_debit` added
    /// (op `queue_debit`, result `queued`) then reports that result, and,
    /// when effective, that amount with the account's balance as it is
    /// now (right after the batch applied it). No entry (an account
    /// without history, or one already forgotten): nothing happens.
    ///
    /// It looks for the entry from the newest back: a queued debit is
    /// behind at most the entries added since it was queued.
    pub(super) fn history_update_queued(&mut self, slot: u32, id: TxnId, code: Code, amount: i64) {
        let balance = self.accounts[slot as usize].balance;
        let Some(history) = self.histories.get_mut(&slot) else {
            return;
        };
        let Some(entry) = history
            .entries
            .iter_mut()
            .rev()
            .find(|e| e.op == Op::QueueDebit && e.id == id && e.result == Code::Queued)
        else {
            return;
        };
        entry.result = code;
        if code.is_effective() && amount > 0 {
            entry.amount = amount;
            entry.balance = balance;
            entry.flags |= HAS_AMOUNT;
        }
    }

    /// `history`: `unknown_account`, `no_history`; else the entries with
    /// `seq < before`, newest first, at most `limit` of them.
    pub(super) fn history(
        &self,
        account: AccountId,
        limit: Option<u16>,
        before: Option<u64>,
    ) -> Outcome {
        let Some(slot) = self.slot_of(account) else {
            return Outcome::new(Code::UnknownAccount);
        };
        let Some(history) = self.histories.get(&slot) else {
            return Outcome::new(Code::NoHistory);
        };
        let limit = usize::from(
            limit
                .unwrap_or(HISTORY_LIMIT_DEFAULT)
                .clamp(1, HISTORY_LIMIT_MAX),
        );
        let kept = history.entries.len() as u64;
        // Entries [0, end) have seq < before.
        let end = match before {
            None => kept,
            Some(before) => before.saturating_sub(history.first_seq).min(kept),
        } as usize;
        let start = end.saturating_sub(limit);
        let entries = history
            .entries
            .range(start..end)
            .enumerate()
            .rev()
            .map(|(i, e)| e.public(history.first_seq + (start + i) as u64))
            .collect();
        Outcome {
            code: Code::Ok,
            replayed: false,
            info: Info::History(Box::new(HistoryPage {
                currency: self.accounts[slot as usize].currency,
                entries,
            })),
        }
    }

    /// After the sweep forgot keys of the accounts in `slots` (with
    /// statements): pops the front entries whose key is gone.
    pub(super) fn history_forget(&mut self, slots: &[u32]) {
        for &slot in slots {
            let Some(history) = self.histories.get_mut(&slot) else {
                continue;
            };
            while let Some(front) = history.entries.front() {
                if self.keys.get(slot, front.id).is_some() {
                    break;
                }
                history.entries.pop_front();
                history.first_seq += 1;
                self.history_entries -= 1;
            }
        }
    }

    /// Bytes the statements take: each kept account's map slot and its
    /// ring's capacity (what `ShardStats::history_bytes` reports). O(1):
    /// the engine reads it every 64 worker rounds.
    pub(super) fn history_bytes(&self) -> usize {
        let per_account = std::mem::size_of::<(u32, History)>() + 1;
        self.histories.capacity() * per_account
            + self.history_capacity * std::mem::size_of::<Entry>()
    }

    /// Statements belong to accounts with the history flag and no other,
    /// and their entries are counted right.
    pub(super) fn check_histories(&self) -> Result<(), String> {
        for &slot in self.histories.keys() {
            let flagged = self
                .accounts
                .get(slot as usize)
                .is_some_and(|a| slot != 0 && a.flags & HISTORY != 0);
            if !flagged {
                return Err(format!(
                    "a statement for slot {slot}, no account with history"
                ));
            }
        }
        let mut entries = 0;
        for (slot, a) in self.accounts.iter().enumerate().skip(1) {
            let has = self.histories.get(&(slot as u32));
            if has.is_some() != (a.flags & HISTORY != 0) {
                return Err(format!(
                    "account {}: history flag {} but statement {}",
                    a.id,
                    a.flags & HISTORY != 0,
                    has.is_some()
                ));
            }
            if let Some(h) = has {
                if h.first_seq == 0 {
                    return Err(format!("account {}: statement starts at seq 0", a.id));
                }
                entries += h.entries.len();
            }
        }
        if self.histories.len() > self.accounts.len() - 1 || entries != self.history_entries {
            return Err(format!(
                "{} statement entries counted, {entries} kept",
                self.history_entries
            ));
        }
        let room: usize = self.histories.values().map(|h| h.entries.capacity()).sum();
        if room != self.history_capacity {
            return Err(format!(
                "statements have room for {room} entries, {} counted",
                self.history_capacity
            ));
        }
        Ok(())
    }
}
