//! Idempotency: the frame every keyed request goes through (replay,
//! conflict, or first time), what a key compares by, and forgetting keys
//! past the dedup window.

use super::history::Before;
use super::*;

impl Shard {
    /// The common frame of every keyed request: unknown account, replay or
    /// conflict, else `body` decides and the key is remembered with its
    /// outcome (rejections included), and with what it moved if a refund
    /// may need it. `merchant` is the one the request names (debit,
    /// authorize): only a statement entry needs it here.
    ///
    /// A closed account, or one that keeps a statement, takes the cold
    /// path ([`Shard::keyed_flagged`]) once the key is known to be new: a
    /// plain account pays one byte test for both.
    #[inline]
    pub(super) fn keyed(
        &mut self,
        account: AccountId,
        id: TxnId,
        op: Op,
        fields: Fields,
        merchant: Option<MerchantId>,
        body: impl FnOnce(&mut Shard, u32) -> (Code, i64),
    ) -> Outcome {
        let Some(slot) = self.slot_of(account) else {
            return Outcome::new(Code::UnknownAccount);
        };
        // Fixed for the account's life, as the slot is for the key's.
        let exponent = self.accounts[slot as usize].currency.exponent();
        // One probe finds the key or the cell it goes in; `body` inserts
        // no key, so that cell stays free for it (the sweep steps before).
        self.sweep_keys_some(SWEEP_CELLS_PER_STEP);
        self.keys.reserve_one();
        let vacant = match self.keys.probe(slot, id) {
            Ok(found) => {
                let r = self.keys.record(found);
                // Compared the way the record was made: by amount if it
                // holds one (a request without that exact amount differs),
                // else by fingerprint.
                let same = r.op() == op as u8
                    && match r.payload() {
                        Payload::Minor(minor) => fields.minor(exponent) == Some(minor),
                        Payload::Fingerprint(fp) => fields.fingerprint(op) == fp,
                        Payload::Cleared { minor, merchant } => {
                            fields.cleared(exponent) == Some((minor, merchant))
                        }
                    };
                return if same {
                    Outcome::replay(Code::from_u8(r.code))
                } else {
                    Outcome::new(Code::IdConflict)
                };
            }
            Err(vacant) => vacant,
        };
        let payload = fields.payload(op, exponent);
        // The one test a plain account pays: its flag byte is 0. `body`
        // is called in one place only, so that it inlines here.
        let mut statement = None;
        if self.accounts[slot as usize].flags != 0 {
            match self.keyed_flagged(slot, id, op, payload, vacant, merchant) {
                // Built here, not returned from the call: an outcome
                // moved out of the cold path's answer would make every
                // arm of `apply` build its outcome on the stack first.
                None => return Outcome::new(Code::AccountClosed),
                before => statement = before,
            }
        }
        let (code, moved) = body(self, slot);
        self.remember(slot, id, op, payload, vacant, code, moved, merchant);
        if let Some(before) = statement {
            self.keyed_entry(slot, id, op, code, before, merchant);
        }
        Outcome::new(code)
    }

    /// The keyed frame for a closed account or one with a statement, the
    /// key being new: on a closed account, `account_closed` is remembered
    /// (and, with history, its entry added) without running the op, and
    /// `None` says so; else the account's balance and held before the op,
    /// for its entry.
    #[cold]
    #[inline(never)]
    fn keyed_flagged(
        &mut self,
        slot: u32,
        id: TxnId,
        op: Op,
        payload: Payload,
        vacant: usize,
        merchant: Option<MerchantId>,
    ) -> Option<Before> {
        let a = &self.accounts[slot as usize];
        let (flags, before) = (a.flags, (a.balance, a.held));
        if flags & CLOSED == 0 {
            return Some(before);
        }
        let code = Code::AccountClosed;
        self.remember(slot, id, op, payload, vacant, code, 0, None);
        if flags & HISTORY != 0 {
            self.keyed_entry(slot, id, op, code, before, merchant);
        }
        None
    }

    /// Remembers the new key `id` on `slot` in the cell `vacant` (from
    /// its probe) with its outcome, and what it moved beside it where its
    /// record cannot hold it.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn remember(
        &mut self,
        slot: u32,
        id: TxnId,
        op: Op,
        payload: Payload,
        vacant: usize,
        code: Code,
        moved: i64,
        merchant: Option<MerchantId>,
    ) {
        debug_assert!(moved == 0 || code == Code::Ok);
        match payload {
            // An ok debit moved the amount it names: the record keeps what
            // a refund of it may return.
            Payload::Minor(minor) => debug_assert!(moved == 0 || moved == minor),
            // Only a capture moves money its fields may not name (all that
            // is left of a hold): kept beside the key.
            Payload::Fingerprint(_) => {
                if moved != 0 {
                    // A capture, or a debit for a merchant past what a
                    // `Payload::Cleared` holds.
                    debug_assert!(op == Op::Capture || op == Op::Debit, "{op:?}");
                    let previous = self.capture_amounts.insert((slot, id), moved);
                    debug_assert!(previous.is_none(), "an amount outlives its key");
                    if let Some(merchant) = merchant {
                        // The debit's merchant, for a refund's charge-back
                        // (a capture names none: it calls `clear` with
                        // `remember`).
                        let previous = self.cleared_to.insert((slot, id), merchant);
                        debug_assert!(previous.is_none(), "a key clears once");
                    }
                }
            }
            Payload::Cleared { minor, .. } => debug_assert!(moved == 0 || moved == minor),
        }
        self.keys.fill(
            vacant,
            KeyRecord::new(
                id,
                slot,
                op as u8,
                code as u8,
                self.generation() as u16,
                payload,
            ),
        );
    }

    pub(super) fn generation(&self) -> u64 {
        debug_assert_eq!(self.generation, self.now_ms / self.dedup_window_ms);
        self.generation
    }

    /// Forgets keys first processed, and holds ended, two or more
    /// generations before `generation`: each was kept at least one window.
    /// The key that made a hold is kept while the hold is remembered, and
    /// refund progress and a capture's amount go with the key of their
    /// original.
    ///
    /// The key table is swept a few cells per keyed request
    /// (`sweep_keys_some`), not in one pause the size of the table; a
    /// small table is swept at once. A sweep still under way from the last
    /// generation change is finished first.
    pub(super) fn forget_before(&mut self, generation: u64) {
        self.sweep_keys_some(usize::MAX);
        self.forget_settles(generation);
        let jumped = generation - self.swept_generation >= 2;
        self.holds.retain(|_, hold| {
            hold.state == HoldState::Active || generation - hold.ended_generation < 2
        });
        self.forgetting = Forgetting {
            current: generation as u16,
            jumped,
        };
        self.keys.start_sweep();
        if self.keys.small() {
            self.sweep_keys_some(usize::MAX);
        }
        self.swept_generation = generation;
    }

    /// Goes on with the key sweep under way (if any) for up to `cells`
    /// cells, by the rule of the generation change that started it.
    #[inline]
    pub(super) fn sweep_keys_some(&mut self, cells: usize) {
        if self.keys.sweeping() {
            self.sweep_keys_step(cells);
        }
    }

    /// Out of line: a sweep runs on few requests of a window, and its rule
    /// should not weigh on every keyed request's code.
    #[cold]
    #[inline(never)]
    pub(super) fn sweep_keys_step(&mut self, cells: usize) {
        let Forgetting { current, jumped } = self.forgetting;
        let holds = &self.holds;
        let refunded = &mut self.refunded;
        let capture_amounts = &mut self.capture_amounts;
        let cleared_to = &mut self.cleared_to;
        let histories = &self.histories;
        // Accounts with statements that lost keys: their front entries
        // may go now (`history_forget`, once the sweep step is done).
        let mut touched: Vec<u32> = Vec::new();
        self.keys.sweep_step(cells, |record| {
            // Keys that came after the sweep began are of `current`. Every
            // other record was written at or after the generation before
            // the last sweep's; a jump of two or more generations makes all
            // of them old.
            let old = record.generation != current
                && (jumped || current.wrapping_sub(record.generation) >= 2);
            let key = (record.slot, record.id);
            // A queued debit's key waits for its batch, which gives it a
            // new generation.
            if !old || holds.contains_key(&key) || record.code == Code::Queued as u8 {
                return false;
            }
            refunded.remove(&key);
            if record.code == Code::Ok as u8 && matches!(record.payload(), Payload::Fingerprint(_))
            {
                // An ok capture's amount, or a merchant debit's.
                capture_amounts.remove(&key);
            }
            if !cleared_to.is_empty() {
                cleared_to.remove(&key);
            }
            if !histories.is_empty()
                && touched.last() != Some(&record.slot)
                && histories.contains_key(&record.slot)
            {
                touched.push(record.slot);
            }
            true
        });
        if !touched.is_empty() {
            touched.sort_unstable();
            touched.dedup();
            self.history_forget(&touched);
        }
    }

    /// Re-expresses the generations of a shard restored from a snapshot
    /// written under a dedup window of `written_ms` in the window it is
    /// opened with (an operator changed it between runs). Generations are
    /// counts of windows; read in the wrong unit they would make a sweep
    /// forget every key at once (a replay then debits again) or keep them
    /// far too long. Each key and each ended hold gets the new generation
    /// of the *latest* instant its old generation covers, so nothing is
    /// forgotten sooner than one new window after it happened.
    pub(super) fn rewindow(&mut self, written_ms: u64) {
        let (now, window) = (self.now_ms, self.dedup_window_ms);
        // The snapshot's own current generation, in its unit.
        let written_current = self.swept_generation;
        let convert = |old: u64| -> u64 {
            let latest = old
                .saturating_add(1)
                .saturating_mul(written_ms)
                .saturating_sub(1)
                .min(now);
            latest / window
        };
        self.keys.regenerate(|old16| {
            // Records are at most 2^16 generations old (they are swept at
            // two), but for the keys of holds still remembered.
            let age = u64::from((written_current as u16).wrapping_sub(old16));
            convert(written_current.saturating_sub(age)) as u16
        });
        for hold in self.holds.values_mut() {
            if hold.state != HoldState::Active {
                hold.ended_generation = convert(hold.ended_generation);
            }
        }
        self.generation = now / window;
        self.swept_generation = self.generation;
    }
}

/// The rule of one key sweep: what `forget_before` decided at a generation
/// change, kept while the sweep goes on a few cells at a time.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Forgetting {
    /// The generation the sweep began in (modulo 2^16, as records keep it).
    pub(super) current: u16,
    /// Two or more generations passed at once: every older record is old.
    pub(super) jumped: bool,
}

/// `Fields::Cleared`'s index of a merchant that does not exist.
pub(super) const NO_MERCHANT: u32 = u32::MAX;

/// What tells a keyed request's replay from a conflict, besides its op.
#[derive(Clone, Copy, Debug)]
pub(super) enum Fields {
    /// Deposit and debit: the amount is their only field.
    Amount(AmountArg),
    /// Every other keyed op: [`fingerprint`] of its fields.
    Hashed(u64),
    /// A debit or queued debit for a merchant: its amount and merchant,
    /// and the merchant's index in the shard (`None`: no such merchant).
    Cleared {
        amount: AmountArg,
        merchant: MerchantId,
        /// `NO_MERCHANT` when there is none: then the key keeps a
        /// fingerprint (an index that large fits no `Payload::Cleared`).
        index: u32,
    },
}

impl Fields {
    /// The amount in minor units at `exponent`, where it is a whole number
    /// of them.
    #[inline]
    pub(super) fn minor(self, exponent: u32) -> Option<i64> {
        match self {
            Fields::Amount(amount) => minor_value(amount, exponent),
            Fields::Hashed(_) | Fields::Cleared { .. } => None,
        }
    }

    /// A merchant debit's amount and merchant index, as a
    /// `Payload::Cleared` holds them, where they fit one.
    #[inline]
    pub(super) fn cleared(self, exponent: u32) -> Option<(i64, u32)> {
        match self {
            Fields::Cleared { amount, index, .. } => minor_value(amount, exponent)
                .filter(|&minor| clears_in_key(minor, index))
                .map(|minor| (minor, index)),
            _ => None,
        }
    }

    pub(super) fn fingerprint(self, op: Op) -> u64 {
        match self {
            Fields::Amount(amount) => fingerprint(op, &[amount.fingerprint()]),
            Fields::Hashed(fp) => fp,
            // As before `Payload::Cleared` existed: keys in older logs and
            // snapshots still compare.
            Fields::Cleared {
                amount, merchant, ..
            } => fingerprint(op, &[amount.fingerprint(), 1, merchant]),
        }
    }

    /// What the key record keeps: the amount where it has minor units (a
    /// plain debit's case: no hashing), a merchant debit's amount and
    /// merchant where they fit, else the fingerprint.
    #[inline]
    pub(super) fn payload(self, op: Op, exponent: u32) -> Payload {
        let kept = match self {
            Fields::Amount(amount) => minor_value(amount, exponent).map(Payload::Minor),
            Fields::Hashed(_) => None,
            Fields::Cleared {
                amount,
                index: merchant,
                ..
            } => minor_value(amount, exponent)
                .filter(|&minor| clears_in_key(minor, merchant))
                .map(|minor| Payload::Cleared { minor, merchant }),
        };
        kept.unwrap_or_else(|| Payload::Fingerprint(self.fingerprint(op)))
    }
}

/// The number `amount` states, in minor units of a currency of `exponent`,
/// if it is a whole number of them that fits 63 bits. Unlike
/// [`AmountArg::to_minor`] it does not count the digits as written: "1.230"
/// is an invalid USD amount but the same number as "1.23", and SPEC's
/// replays compare numbers. One-to-one: an `AmountArg::Decimal` is
/// normalized (no trailing zero after the point), so two amounts give the
/// same minor units only if they are the same number.
#[inline]
pub(super) fn minor_value(amount: AmountArg, exponent: u32) -> Option<i64> {
    const POW10: [u64; 4] = [1, 10, 100, 1000];
    match amount {
        AmountArg::Decimal {
            mantissa, scale, ..
        } if scale <= exponent => {
            let factor = *POW10.get((exponent - scale) as usize)?;
            i64::try_from(mantissa.checked_mul(factor)?).ok()
        }
        _ => None,
    }
}

pub(super) fn fingerprint(op: Op, fields: &[u64]) -> u64 {
    fields
        .iter()
        .fold(crate::hash::mix(0xF1, op as u64), |h, &f| {
            crate::hash::mix(h, f)
        })
}

pub(super) fn optional_fingerprint(amount: Option<AmountArg>) -> u64 {
    // An omitted amount differs from every given one.
    amount.map_or(0x0A11_0A11_0A11_0A11, |a| {
        crate::hash::mix(0xA4, a.fingerprint())
    })
}
