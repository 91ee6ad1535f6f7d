//! The invariants of the module header, checked per request (debug
//! builds) and over the whole shard.

use super::*;

impl Shard {
    pub(super) fn debug_check_account(&self, account: AccountId) {
        if cfg!(debug_assertions) {
            if let Some(slot) = self.slot_of(account) {
                let a = &self.accounts[slot as usize];
                assert!(a.held >= 0, "account {account}: held {} < 0", a.held);
                assert!(
                    i128::from(a.balance) - i128::from(a.held) >= -i128::from(self.overdraft(a)),
                    "account {account}: available below the overdraft floor"
                );
                assert!(
                    a.flags & CLOSED == 0 || (a.balance == 0 && a.held == 0),
                    "closed account {account}: balance {} held {}",
                    a.balance,
                    a.held
                );
            }
        }
    }

    /// Checks every invariant of the module header over the whole shard.
    /// O(accounts + holds + capture amounts + refunded originals): tests
    /// call it at quiet moments, the worker after batches in debug builds.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut held_by_slot: WordMap<u32, i128> = WordMap::default();
        for (&(slot, id), hold) in &self.holds {
            if hold.captured < 0 || hold.captured > hold.amount {
                return Err(format!(
                    "hold {id} on slot {slot}: captured {} of {}",
                    hold.captured, hold.amount
                ));
            }
            if hold.state == HoldState::Active {
                *held_by_slot.entry(slot).or_default() += i128::from(hold.left());
            }
        }
        let mut balances = 0i128;
        if self.index.len() != self.accounts.len() - 1 {
            return Err(format!(
                "{} accounts but {} in the index",
                self.accounts.len() - 1,
                self.index.len()
            ));
        }
        for (slot, a) in self.accounts.iter().enumerate().skip(1) {
            let account = a.id;
            if self.slot_of(account) != Some(slot as u32) {
                return Err(format!(
                    "account {account}: the index does not find slot {slot}"
                ));
            }
            let slot = slot as u32;
            let held = held_by_slot.get(&slot).copied().unwrap_or(0);
            if i128::from(a.held) != held {
                return Err(format!(
                    "account {account}: held {} but active holds leave {held}",
                    a.held
                ));
            }
            if i128::from(a.balance) - i128::from(a.held) < -i128::from(self.overdraft(a)) {
                return Err(format!("account {account}: available below -overdraft"));
            }
            balances += i128::from(a.balance);
        }
        let l = self.ledger;
        let expected = l.deposits - l.debits - l.captures + l.refunds;
        if balances != expected {
            return Err(format!(
                "money not conserved: balances {balances}, ledger {expected}"
            ));
        }
        self.check_refundable()?;
        self.check_queued()?;
        self.check_closed()?;
        self.check_histories()
    }

    /// Every queued debit has its key, still answered `queued`, and the
    /// per-account counts add up to the queue.
    fn check_queued(&self) -> Result<(), String> {
        let mut per_slot: WordMap<u32, u32> = WordMap::default();
        for q in &self.queued {
            let waiting = self.keys.get(q.slot, q.id).is_some_and(|k| {
                k.code == Code::Queued as u8 && k.op() == Op::QueueDebit as u8 && !k.batched()
            });
            if !waiting || q.minor <= 0 {
                return Err(format!("queued debit {q:?} without its waiting key"));
            }
            *per_slot.entry(q.slot).or_default() += 1;
        }
        if per_slot != self.queued_per_slot {
            return Err("queued debits per account do not add up".into());
        }
        Ok(())
    }
}
