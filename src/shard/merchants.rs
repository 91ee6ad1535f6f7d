//! Merchants and clearing: money taken from an account for a merchant is
//! cleared to it, and a refund of such a payment is charged back to it.
//!
//! Every shard knows every merchant (`open_merchant` goes to all of them,
//! numbered, in one order), and keeps its own part of each merchant's
//! current batch: the clearings and charge-backs of its own accounts. So a
//! debit for a merchant touches only its own shard's tables, whichever
//! shards the merchant's other payers are on: no cross-shard wait and no
//! shared lock on the hot path. A `merchant` query sums the shards' parts.
//!
//! `settle` is two steps, each of which every shard takes at its place in
//! the one order of broadcasts (the engine holds its broadcast lock across
//! both, so no other broadcast comes between them):
//!
//! 1. the *cut* ([`Request::Settle`] itself): a shard that has seen the
//!    settle key answers its recorded outcome (a replay); otherwise it
//!    moves its current part into the merchant's `cut`, under the settle's
//!    id, and answers what the cut holds. Not numbered: if a crash (or a
//!    refusal on another shard) keeps the second step from coming, the cut
//!    stays pending: `merchant` counts it in `pending`, and the next cut
//!    of the merchant takes it in (a cut adds to the cut), so no clearing
//!    is lost or counted twice.
//! 2. the *close* (the engine's `SettleClose`, numbered and in the
//!    broadcast log before any shard has it, so every shard gets it or
//!    none does, across a crash too): the summed figures, with the batch
//!    number and the result; every shard records them under the key, adds
//!    them to the merchant's settled figures, and empties the cut.

use super::*;
use crate::outcome::{MerchantFigures, Settlement};
use crate::request::MerchantId;

/// A settle's outcome: its code, and its figures when it is `ok`.
pub(super) fn settle_outcome(code: Code, figures: Settlement, replayed: bool) -> Outcome {
    Outcome {
        code,
        replayed,
        info: if code == Code::Ok {
            Info::Settlement(Box::new(figures))
        } else {
            Info::None
        },
    }
}

/// One merchant as a shard knows it: 128 bytes (a power of two, so that a
/// merchant debit finds its record with a shift), what a clearing touches
/// first.
#[derive(Clone, Debug)]
#[repr(C, align(128))]
pub(super) struct Merchant {
    pub(super) id: MerchantId,
    pub(super) currency: Currency,
    pub(super) fee_bps: u16,
    /// This shard's part of the merchant's current batch.
    pub(super) part: Part,
    /// Ok settles so far, and the sums of their `net` and `fee`: the same
    /// on every shard.
    pub(super) batches: u64,
    pub(super) settled_net: i128,
    pub(super) fees: i128,
    /// The part cut by a settle whose close has not come (yet): the id of
    /// the last settle that cut it, and what it holds (every part cut
    /// since the last close).
    pub(super) cut: Option<Box<(TxnId, Part)>>,
}

/// A settle key's remembered outcome (the same on every shard).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SettleKey {
    pub(super) code: Code,
    pub(super) figures: Settlement,
    /// Dedup-window generation when it was settled: forgotten as keys are.
    pub(super) generation: u64,
}

/// A shard's part of a merchant's batch, minor units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Part {
    /// Clearings: ok debits and ok captures (partial ones included).
    pub(super) count: u64,
    /// Their sum.
    pub(super) gross: i128,
    /// The sum of the charge-backs (ok refunds of cleared originals).
    pub(super) refunded: i128,
}

impl Part {
    fn add(&mut self, other: Part) {
        self.count += other.count;
        self.gross += other.gross;
        self.refunded += other.refunded;
    }
}

impl Merchant {
    /// Clearings minus charge-backs not yet settled: the current part and
    /// any cut still waiting for its close.
    fn pending(&self) -> i128 {
        let cut = self.cut.as_ref().map_or(0, |c| c.1.gross - c.1.refunded);
        self.part.gross - self.part.refunded + cut
    }
}

impl Shard {
    /// `settle`, first step (see the module doc): `unknown_merchant` (not
    /// remembered), a replay of the key's outcome, or this shard's cut: its
    /// part, with the merchant's figures the engine needs to number and
    /// charge the batch.
    pub(super) fn settle_cut(&mut self, merchant: MerchantId, id: TxnId) -> Outcome {
        if let Some(key) = self.settles.get(&(merchant, id)) {
            return settle_outcome(key.code, key.figures, true);
        }
        let Some(m) = self.merchant_mut(merchant) else {
            return Outcome::new(Code::UnknownMerchant);
        };
        let mut cut = m.cut.take().map_or(Part::default(), |c| c.1);
        cut.add(std::mem::take(&mut m.part));
        m.cut = Some(Box::new((id, cut)));
        let figures = Settlement {
            currency: m.currency,
            fee_bps: m.fee_bps,
            batch: m.batches,
            count: cut.count,
            gross: cut.gross,
            refunded: cut.refunded,
            fee: 0,
            net: 0,
        };
        settle_outcome(Code::Ok, figures, false)
    }

    /// `settle`, second step: records the outcome under the key, and for
    /// an ok batch adds it to the merchant's settled figures; the cut is
    /// settled (or was empty) either way.
    pub(super) fn settle_close(
        &mut self,
        merchant: MerchantId,
        id: TxnId,
        code: Code,
        figures: Settlement,
    ) -> Outcome {
        let generation = self.generation();
        let Some(m) = self.merchant_mut(merchant) else {
            debug_assert!(false, "a close names a merchant its cut found");
            return Outcome::new(Code::UnknownMerchant);
        };
        let cut = m.cut.take();
        debug_assert!(
            matches!(cut.as_deref(), Some(&(cut_id, _)) if cut_id == id),
            "a close follows its own cut: {cut:?}"
        );
        if code == Code::Ok {
            debug_assert_eq!(figures.batch, m.batches + 1);
            m.batches = figures.batch;
            m.settled_net += figures.net;
            m.fees += figures.fee;
        }
        self.settles.insert(
            (merchant, id),
            SettleKey {
                code,
                figures,
                generation,
            },
        );
        Outcome::new(code)
    }

    /// Forgets settle keys two or more generations old (as `forget_before`
    /// does account keys).
    pub(super) fn forget_settles(&mut self, generation: u64) {
        self.settles
            .retain(|_, key| generation.saturating_sub(key.generation) < 2);
    }

    /// `open_merchant`: `merchant_exists`, then `unsupported_currency`.
    pub(super) fn open_merchant(
        &mut self,
        merchant: MerchantId,
        currency: Option<Currency>,
        fee_bps: Option<u16>,
    ) -> Code {
        if self.merchant_slot(merchant).is_some() {
            return Code::MerchantExists;
        }
        let Some(currency) = currency else {
            return Code::UnsupportedCurrency;
        };
        let fee_bps = fee_bps.unwrap_or(0);
        debug_assert!(fee_bps <= FEE_BPS_MAX, "the codec bounds fee_bps");
        let index = u32::try_from(self.merchants.len()).expect("fewer than 2^32 merchants");
        self.merchant_index.insert(merchant, index);
        self.merchants.push(Merchant {
            id: merchant,
            currency,
            fee_bps: fee_bps.min(FEE_BPS_MAX),
            part: Part::default(),
            batches: 0,
            settled_net: 0,
            fees: 0,
            cut: None,
        });
        Code::Ok
    }

    /// The index in `merchants` of the merchant with this id.
    #[inline]
    pub(super) fn merchant_slot(&self, merchant: MerchantId) -> Option<u32> {
        self.merchant_index.get(merchant)
    }

    /// As `merchant_slot`, for a merchant known to exist.
    pub(super) fn merchant_at(&self, merchant: MerchantId) -> u32 {
        self.merchant_slot(merchant)
            .expect("merchants are never forgotten")
    }

    fn merchant(&self, merchant: MerchantId) -> Option<&Merchant> {
        let index = self.merchant_slot(merchant)?;
        Some(&self.merchants[index as usize])
    }

    pub(super) fn merchant_mut(&mut self, merchant: MerchantId) -> Option<&mut Merchant> {
        let index = self.merchant_slot(merchant)?;
        Some(&mut self.merchants[index as usize])
    }

    /// `merchant`: this shard's figures (its part of `pending`; the
    /// settled figures, which every shard has alike). The engine sums the
    /// shards' answers.
    pub(super) fn merchant_figures(&self, merchant: MerchantId) -> Outcome {
        let Some(m) = self.merchant(merchant) else {
            return Outcome::new(Code::UnknownMerchant);
        };
        Outcome {
            code: Code::Ok,
            replayed: false,
            info: Info::Merchant(Box::new(MerchantFigures {
                currency: m.currency,
                fee_bps: m.fee_bps,
                batches: m.batches,
                pending: m.pending(),
                settled_net: m.settled_net,
                fees: m.fees,
            })),
        }
    }

    /// The checks a request naming `merchant` makes, right after the
    /// account's: `unknown_merchant`, then `currency_mismatch`.
    #[inline]
    pub(super) fn merchant_allows(&self, slot: u32, merchant: Option<MerchantId>) -> Code {
        match merchant {
            None => Code::Ok,
            Some(merchant) => self.merchant_allows_at(slot, self.merchant_slot(merchant)),
        }
    }

    /// A debit naming a merchant that does not exist, out of line (its key
    /// is remembered with `unknown_merchant`, or it replays or conflicts,
    /// like any keyed request).
    #[cold]
    #[inline(never)]
    pub(super) fn unknown_merchant(
        &mut self,
        account: AccountId,
        id: TxnId,
        op: Op,
        amount: AmountArg,
        merchant: MerchantId,
    ) -> Outcome {
        let fields = Fields::Cleared {
            amount,
            merchant,
            index: NO_MERCHANT,
        };
        self.keyed(account, id, op, fields, Some(merchant), |_, _| {
            (Code::UnknownMerchant, 0)
        })
    }

    /// As `merchant_allows`, for the merchant found at `index` (`None`: no
    /// such merchant).
    #[inline]
    pub(super) fn merchant_allows_at(&self, slot: u32, index: Option<u32>) -> Code {
        match index {
            None => Code::UnknownMerchant,
            Some(index) => {
                if self.merchants[index as usize].currency == self.accounts[slot as usize].currency
                {
                    Code::Ok
                } else {
                    Code::CurrencyMismatch
                }
            }
        }
    }

    /// Clears `minor`, just taken by the ok request `id` on `slot`, to the
    /// merchant at `index`. With `remember`, where it went is kept for a
    /// refund's charge-back, as long as the request's key (a capture's key,
    /// or a merchant debit's past what a `Payload::Cleared` holds;
    /// otherwise the key itself names the merchant).
    #[inline]
    pub(super) fn clear(&mut self, slot: u32, id: TxnId, index: u32, minor: i64, remember: bool) {
        debug_assert!(minor > 0);
        let m = &mut self.merchants[index as usize];
        m.part.count += 1;
        m.part.gross += i128::from(minor);
        if remember {
            let previous = self.cleared_to.insert((slot, id), m.id);
            debug_assert!(previous.is_none(), "a key clears once");
        }
    }

    /// A refund of `minor` of the ok `original`: if it cleared to a
    /// merchant, it is charged back to that merchant's current batch.
    pub(super) fn charge_back(&mut self, original: &KeyRecord, minor: i64) {
        let index = match original.payload() {
            Payload::Cleared { merchant, .. } => merchant,
            _ => match self.cleared_to.get(&(original.slot, original.id)) {
                Some(&merchant) => self.merchant_at(merchant),
                None => return,
            },
        };
        self.merchants[index as usize].part.refunded += i128::from(minor);
    }
}

/// Merchant id -> index in the shard's merchant table: open addressing
/// over (id, index) cells, at most a quarter full, so that a merchant
/// debit's lookup is one multiply and, nearly always, one cell (at half
/// full, the account index's way, it averaged ~50 instructions with its
/// confirming read). 16 bytes a cell, 64 or more a merchant: merchants are
/// few beside accounts.
#[derive(Clone, Debug)]
pub(super) struct MerchantIndex {
    /// `(id, index + 1)`; index 0 marks an empty cell.
    cells: Vec<(MerchantId, u32)>,
    len: usize,
    /// 64 - log2(cells.len()): a hash's top bits are its home cell.
    shift: u32,
}

impl Default for MerchantIndex {
    fn default() -> Self {
        MerchantIndex {
            cells: vec![(0, 0); 16],
            len: 0,
            shift: 64 - 4,
        }
    }
}

impl MerchantIndex {
    #[inline]
    fn home(&self, id: MerchantId) -> usize {
        // Fibonacci hashing onto a power-of-two table.
        (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// The merchant's index in the shard's table.
    #[inline]
    #[allow(unsafe_code)]
    pub(super) fn get(&self, id: MerchantId) -> Option<u32> {
        let mask = self.cells.len() - 1;
        let mut pos = self.home(id);
        loop {
            debug_assert!(pos < self.cells.len());
            // SAFETY: `pos < cells.len()`. `cells.len()` is a power of two,
            // 2^(64 - shift) (16 at first, doubled with `shift` lowered by
            // one in `insert`, never shrunk), so `home` (a 64-bit value
            // shifted right by `shift`) is below it, and `(pos + 1) & mask`
            // with `mask = len - 1` is too. This is the lookup of every
            // merchant debit; the bounds check was a measurable part of it.
            let (cell_id, slot) = unsafe { *self.cells.get_unchecked(pos) };
            if slot == 0 {
                return None;
            }
            if cell_id == id {
                return Some(slot - 1);
            }
            pos = (pos + 1) & mask;
        }
    }

    /// Adds a merchant not yet in the index.
    pub(super) fn insert(&mut self, id: MerchantId, index: u32) {
        debug_assert!(self.get(id).is_none());
        if (self.len + 1) * 4 > self.cells.len() {
            let doubled = vec![(0, 0); self.cells.len() * 2];
            let old = std::mem::replace(&mut self.cells, doubled);
            self.shift -= 1;
            for cell in old.into_iter().filter(|&(_, slot)| slot != 0) {
                self.place(cell);
            }
        }
        self.place((id, index + 1));
        self.len += 1;
    }

    fn place(&mut self, cell: (MerchantId, u32)) {
        let mask = self.cells.len() - 1;
        let mut pos = self.home(cell.0);
        while self.cells[pos].1 != 0 {
            pos = (pos + 1) & mask;
        }
        self.cells[pos] = cell;
    }

    pub(super) fn bytes(&self) -> usize {
        self.cells.capacity() * std::mem::size_of::<(MerchantId, u32)>()
    }
}

/// The largest fee rate, basis points (100%).
pub const FEE_BPS_MAX: u16 = 10_000;
