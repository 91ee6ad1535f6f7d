//! Batch debits: `queue_debit` accepts a debit now and `run_batch` applies
//! every queued one later, at one engine time.
//!
//! A queued debit is checked at once only for what cannot change before
//! its batch (the key, the account, the merchant, the amount's form) and
//! answered `queued`; nothing is reserved. Its key is remembered with
//! result `queued` and is never forgotten while it waits (the key sweep
//! skips it). `run_batch` then applies the shard's queue in order (so the
//! queued debits of one account in the order they were queued), each as a
//! `debit` with its fields arriving at that moment would be from
//! `account_frozen` on (limits, risk routing, funds), and writes the result
//! into the key's record, with the batch's generation, so `status` reports
//! it and the key is kept a window from then.

use super::*;
use crate::outcome::BatchFigures;

/// One debit waiting for the next batch: 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct QueuedDebit {
    pub(super) id: TxnId,
    /// Minor units of the account's currency, > 0 (checked when queued).
    pub(super) minor: i64,
    /// The merchant paid, if `has_merchant`.
    pub(super) merchant: MerchantId,
    pub(super) slot: u32,
    pub(super) has_merchant: bool,
}

const _: () = assert!(std::mem::size_of::<QueuedDebit>() == 32);

impl QueuedDebit {
    pub(super) fn merchant(&self) -> Option<MerchantId> {
        self.has_merchant.then_some(self.merchant)
    }
}

impl Shard {
    /// `queue_debit`, once its key is new and its merchant checked:
    /// `invalid_amount`, else `queued`.
    pub(super) fn queue_debit(
        &mut self,
        slot: u32,
        id: TxnId,
        amount: AmountArg,
        merchant: Option<MerchantId>,
    ) -> (Code, i64) {
        let exponent = self.accounts[slot as usize].currency.exponent();
        let Some(minor) = amount.to_positive_minor(exponent) else {
            return (Code::InvalidAmount, 0);
        };
        self.queued.push(QueuedDebit {
            id,
            minor,
            merchant: merchant.unwrap_or(0),
            slot,
            has_merchant: merchant.is_some(),
        });
        *self.queued_per_slot.entry(slot).or_insert(0) += 1;
        (Code::Queued, 0)
    }

    /// Whether a queued debit of the account in `slot` waits for a batch
    /// (`close_account` is `account_not_empty` while one does).
    pub(super) fn has_queued_debits(&self, slot: u32) -> bool {
        self.queued_per_slot.contains_key(&slot)
    }

    /// Whether the key (account, id) is a queued debit its batch applied.
    pub(super) fn queued_then_batched(&self, account: AccountId, id: TxnId) -> bool {
        self.slot_of(account)
            .and_then(|slot| self.keys.get(slot, id))
            .is_some_and(|r| r.batched())
    }

    /// Debits waiting for the next batch on this shard.
    pub fn queued_debits(&self) -> usize {
        self.queued.len()
    }

    /// `run_batch`: applies every queued debit, in order, at engine time
    /// `at_ms` (the shard's own time when `None`, as under the manual
    /// clock, where every shard's time is the same), and answers what they
    /// got, this shard's part.
    pub(super) fn run_batch(&mut self, at_ms: Option<u64>) -> Outcome {
        if let Some(at_ms) = at_ms {
            self.advance_to(at_ms);
        }
        // Under the wall clock this shard's time may already be a little
        // past the batch's (its worker read the clock later): the batch's
        // debits still happen at the batch's time, then time is put back.
        let saved = (self.now_ms, self.today, self.generation);
        if let Some(at_ms) = at_ms.filter(|&t| t < self.now_ms) {
            self.now_ms = at_ms;
            self.today = at_ms / DAY_MS;
            self.generation = at_ms / self.dedup_window_ms;
        }
        let mut queue = std::mem::take(&mut self.queued);
        self.queued_per_slot.clear();
        let mut figures = BatchFigures::default();
        for q in &queue {
            let (code, moved) = self.apply_queued(q);
            if self.accounts[q.slot as usize].flags & HISTORY != 0 {
                // Its statement entry gets its result, and what it took or
                // held with the balance after it.
                self.history_update_queued(q.slot, q.id, code, q.minor);
            }
            figures.applied += 1;
            match code {
                Code::Ok => figures.ok += 1,
                Code::HeldForReview => figures.held += 1,
                _ => figures.rejected += 1,
            }
            let generation = self.generation;
            let record = self
                .keys
                .get_mut(q.slot, q.id)
                .expect("a queued debit's key is kept while it waits");
            debug_assert!(record.code == Code::Queued as u8 && !record.batched());
            record.set_batch_result(code as u8, generation as u16);
            if moved != 0 && matches!(record.payload(), Payload::Fingerprint(_)) {
                // A merchant's queued debit past what a key holds: what a
                // refund may return, and where it cleared, beside the key.
                self.capture_amounts.insert((q.slot, q.id), moved);
                if q.has_merchant {
                    self.cleared_to.insert((q.slot, q.id), q.merchant);
                }
            }
        }
        queue.clear();
        // Keep the allocation for the next batch.
        self.queued = queue;
        (self.now_ms, self.today, self.generation) = saved;
        Outcome {
            code: Code::Ok,
            replayed: false,
            info: Info::Batch(Box::new(figures)),
        }
    }

    /// One queued debit, as a `debit` arriving now, from `account_frozen`
    /// on.
    fn apply_queued(&mut self, q: &QueuedDebit) -> (Code, i64) {
        if self.accounts[q.slot as usize].frozen {
            return (Code::AccountFrozen, 0);
        }
        let merchant = q.merchant().map(|m| self.merchant_at(m));
        self.debit_checked(q.slot, q.id, q.minor, merchant)
    }
}
