//! Merchants and clearing: money taken from an account for a merchant is
//! cleared to it, and a refund of such a payment is charged back to it.
//!
//! Every shard knows every merchant (`open_merchant` goes to all of them,
//! numbered, in one order), and keeps its own part of each merchant's
//! current batch: the clearings and charge-backs of its own accounts. So a
//! debit for a merchant touches only its own shard's tables, whichever
//! shards the merchant's other payers are on: no cross-shard wait and no
//! shared lock on the hot path. A `merchant` query sums the shards' parts.

use super::*;
use crate::outcome::MerchantFigures;
use crate::request::MerchantId;

/// One merchant as a shard knows it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Merchant {
    pub(super) currency: Currency,
    pub(super) fee_bps: u16,
    /// This shard's part of the merchant's current batch.
    pub(super) part: Part,
    /// Ok settles so far, and the sums of their `net` and `fee`: the same
    /// on every shard.
    pub(super) batches: u64,
    pub(super) settled_net: i128,
    pub(super) fees: i128,
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

impl Shard {
    /// `open_merchant`: `merchant_exists`, then `unsupported_currency`.
    pub(super) fn open_merchant(
        &mut self,
        merchant: MerchantId,
        currency: Option<Currency>,
        fee_bps: Option<u16>,
    ) -> Code {
        if self.merchants.contains_key(&merchant) {
            return Code::MerchantExists;
        }
        let Some(currency) = currency else {
            return Code::UnsupportedCurrency;
        };
        let fee_bps = fee_bps.unwrap_or(0);
        debug_assert!(fee_bps <= FEE_BPS_MAX, "the codec bounds fee_bps");
        self.merchants.insert(
            merchant,
            Merchant {
                currency,
                fee_bps: fee_bps.min(FEE_BPS_MAX),
                part: Part::default(),
                batches: 0,
                settled_net: 0,
                fees: 0,
            },
        );
        Code::Ok
    }

    /// `merchant`: this shard's figures (its part of `pending`; the
    /// settled figures, which every shard has alike). The engine sums the
    /// shards' answers.
    pub(super) fn merchant_figures(&self, merchant: MerchantId) -> Outcome {
        let Some(m) = self.merchants.get(&merchant) else {
            return Outcome::new(Code::UnknownMerchant);
        };
        Outcome {
            code: Code::Ok,
            replayed: false,
            info: Info::Merchant(Box::new(MerchantFigures {
                currency: m.currency,
                fee_bps: m.fee_bps,
                batches: m.batches,
                pending: m.part.gross - m.part.refunded,
                settled_net: m.settled_net,
                fees: m.fees,
            })),
        }
    }

    /// The checks a request naming `merchant` makes, right after the
    /// account's: `unknown_merchant`, then `currency_mismatch`.
    #[inline]
    pub(super) fn merchant_allows(&self, slot: u32, merchant: Option<MerchantId>) -> Code {
        let Some(merchant) = merchant else {
            return Code::Ok;
        };
        match self.merchants.get(&merchant) {
            None => Code::UnknownMerchant,
            Some(m) if m.currency != self.accounts[slot as usize].currency => {
                Code::CurrencyMismatch
            }
            Some(_) => Code::Ok,
        }
    }

    /// Clears `minor`, just taken by the ok request `id` on `slot`, to
    /// `merchant`, and remembers where it went for a refund's charge-back
    /// (kept as long as the request's key).
    pub(super) fn clear(&mut self, slot: u32, id: TxnId, merchant: MerchantId, minor: i64) {
        debug_assert!(minor > 0);
        let m = self
            .merchants
            .get_mut(&merchant)
            .expect("a clearing names a merchant its request checked");
        m.part.count += 1;
        m.part.gross += i128::from(minor);
        let previous = self.cleared_to.insert((slot, id), merchant);
        debug_assert!(previous.is_none(), "a key clears once");
    }

    /// A refund of `minor` of the original `of` on `slot`: if the original
    /// cleared to a merchant, it is charged back to that merchant's
    /// current batch.
    pub(super) fn charge_back(&mut self, slot: u32, of: TxnId, minor: i64) {
        if let Some(merchant) = self.cleared_to.get(&(slot, of)) {
            let m = self
                .merchants
                .get_mut(merchant)
                .expect("merchants are never forgotten");
            m.part.refunded += i128::from(minor);
        }
    }
}

/// The largest fee rate, basis points (100%).
pub const FEE_BPS_MAX: u16 = 10_000;
