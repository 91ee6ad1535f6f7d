//! Typed outcomes: every SPEC result is a variant, never a string.
//!
//! Business rejections are values (`Code::InsufficientFunds`), not errors:
//! a request that is refused has simply had no effect.

use crate::money::{format_minor, Currency};
use crate::request::Op;

/// The `result` of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Code {
    /// The request did what it asks (for a query: here is the answer).
    /// Any op can give it.
    Ok,
    /// Not a rejection: the debit became a hold awaiting review.
    ///
    /// From `debit` only, when risk routing (`review_above`, `velocity`, or
    /// an embedder's [`RiskPolicy`](crate::RiskPolicy)) reviews it: a hold
    /// named by the debit's id, of its amount, with the default expiry, is
    /// placed. The gateway approves by capturing it, declines by voiding it.
    HeldForReview,
    /// From `open_account`: an account with that id already exists.
    AccountExists,
    /// From `open_account`: the currency is not one of the ten the engine
    /// supports (another real code, lower case, anything else).
    UnsupportedCurrency,
    /// An amount is not > 0, has more decimals than the currency's
    /// exponent, or does not fit 63 bits of minor units; or the request
    /// passed every other check but would push a balance, held total or
    /// hold past 2^63-1 minor units (that check comes last). From every op
    /// that takes an amount: `open_account` (overdraft), `deposit`,
    /// `debit`, `authorize`, `increment`, `capture`, `refund`, `set_limits`.
    InvalidAmount,
    /// The key (account, id) was seen before with another op or other
    /// fields; nothing happened. From every keyed op (`deposit`, `debit`,
    /// `authorize`, `increment`, `capture`, `void`, `refund`), checked first.
    IdConflict,
    /// No account with that id exists. From every op that names an
    /// existing account (all but `open_account` and `advance_clock`). Unlike other rejections it is not remembered under a key:
    /// there is no account to remember it in.
    UnknownAccount,
    /// From `debit`, `authorize` and `increment`: the account is frozen.
    AccountFrozen,
    /// From `debit`, `authorize` and `increment` (and a debit routed to
    /// review): `available` would go below `-overdraft`.
    InsufficientFunds,
    /// From `capture`, `void` and `increment`: no hold on the account has
    /// the `auth` id (never made, or forgotten after the dedup window).
    AuthNotFound,
    /// From `capture`, `void` and `increment`: the hold ended by expiry.
    AuthExpired,
    /// From `capture`, `void` and `increment`: the hold already ended by a
    /// final capture or a void.
    AuthNotActive,
    /// From `capture`: the amount is more than what is left of the hold.
    ExceedsAuthorized,
    /// From `increment`: the hold has had a capture already, so it can no
    /// longer grow (as card networks have it).
    CaptureStarted,
    /// From `debit`, `authorize` and `increment`: the amount passes the
    /// account's `per_txn` bound, or the day's total would pass `daily`.
    LimitExceeded,
    /// From `refund`: `of` names no ok debit or ok capture on the account
    /// (unknown, forgotten, rejected, or a debit held for review).
    NotRefundable,
    /// From `refund`: the amount is more than what is left to refund of
    /// the original, or nothing is left.
    ExceedsRefundable,
    /// An embedder's risk policy refused the request.
    ///
    /// From `debit` only, and only with a custom
    /// [`RiskPolicy`](crate::RiskPolicy): SPEC's own rules never reject.
    RiskRejected,
    /// From `status`: the account has no remembered key with that id
    /// (never seen, or forgotten after the dedup window).
    UnknownId,
    /// The write-ahead log could not take the request (disk full, I/O error).
    ///
    /// Any op, on a durable engine only. Nothing was applied if the log had
    /// no room; after a failed flush the request may still have happened,
    /// so a retry with the same id answers consistently.
    StorageUnavailable,
    /// `advance_clock` sent to an engine that runs on the wall clock.
    ///
    /// The library's answer only: the line format calls such a line
    /// malformed instead.
    ClockNotManual,
    /// The engine was shutting down and did not take the request.
    ///
    /// Any op sent after [`Engine::shutdown`](crate::Engine::shutdown)
    /// began; nothing was applied.
    ShuttingDown,
    /// From `open_merchant`: a merchant with that id already exists
    /// (whatever the new request's fields).
    MerchantExists,
    /// The merchant named does not exist. From `debit` and `authorize`
    /// that name one (remembered under their key like any rejection), and
    /// from `merchant`.
    UnknownMerchant,
    /// From `debit` and `authorize`: the merchant named has another
    /// currency than the account.
    CurrencyMismatch,
    /// Not a rejection: from `queue_debit`, the debit waits for the next
    /// `run_batch` (and `status` reports it until then).
    Queued,
    /// From `settle`: the merchant's current batch has no clearing and no
    /// charge-back. Remembered under the settle's key like any rejection.
    NothingToSettle,
    /// The account was closed (`close_account`). From every op that names
    /// an account but `balance`, `status` and `history`; checked right
    /// after `id_conflict` and `unknown_account`. Remembered under its key
    /// like any rejection.
    AccountClosed,
    /// From `close_account`: the balance is not zero, a hold is active, or
    /// a queued debit waits.
    AccountNotEmpty,
    /// From `history`: the account was not opened with `"history": true`.
    NoHistory,
}

impl Code {
    /// Every code, in discriminant order (`ALL[code as usize] == code`);
    /// the discriminant is the byte the key table and the log store.
    pub const ALL: [Code; 30] = [
        Code::Ok,
        Code::HeldForReview,
        Code::AccountExists,
        Code::UnsupportedCurrency,
        Code::InvalidAmount,
        Code::IdConflict,
        Code::UnknownAccount,
        Code::AccountFrozen,
        Code::InsufficientFunds,
        Code::AuthNotFound,
        Code::AuthExpired,
        Code::AuthNotActive,
        Code::ExceedsAuthorized,
        Code::CaptureStarted,
        Code::LimitExceeded,
        Code::NotRefundable,
        Code::ExceedsRefundable,
        Code::RiskRejected,
        Code::UnknownId,
        Code::StorageUnavailable,
        Code::ClockNotManual,
        Code::ShuttingDown,
        Code::MerchantExists,
        Code::UnknownMerchant,
        Code::CurrencyMismatch,
        Code::Queued,
        Code::NothingToSettle,
        Code::AccountClosed,
        Code::AccountNotEmpty,
        Code::NoHistory,
    ];

    /// The SPEC spelling (`"insufficient_funds"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::HeldForReview => "held_for_review",
            Code::AccountExists => "account_exists",
            Code::UnsupportedCurrency => "unsupported_currency",
            Code::InvalidAmount => "invalid_amount",
            Code::IdConflict => "id_conflict",
            Code::UnknownAccount => "unknown_account",
            Code::AccountFrozen => "account_frozen",
            Code::InsufficientFunds => "insufficient_funds",
            Code::AuthNotFound => "auth_not_found",
            Code::AuthExpired => "auth_expired",
            Code::AuthNotActive => "auth_not_active",
            Code::ExceedsAuthorized => "exceeds_authorized",
            Code::CaptureStarted => "capture_started",
            Code::LimitExceeded => "limit_exceeded",
            Code::NotRefundable => "not_refundable",
            Code::ExceedsRefundable => "exceeds_refundable",
            Code::RiskRejected => "risk_rejected",
            Code::UnknownId => "unknown_id",
            Code::StorageUnavailable => "storage_unavailable",
            Code::ClockNotManual => "clock_not_manual",
            Code::ShuttingDown => "shutting_down",
            Code::MerchantExists => "merchant_exists",
            Code::UnknownMerchant => "unknown_merchant",
            Code::CurrencyMismatch => "currency_mismatch",
            Code::Queued => "queued",
            Code::NothingToSettle => "nothing_to_settle",
            Code::AccountClosed => "account_closed",
            Code::AccountNotEmpty => "account_not_empty",
            Code::NoHistory => "no_history",
        }
    }

    /// The code with this SPEC spelling; `None` for any other string.
    pub fn from_name(name: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.name() == name)
    }

    pub(crate) fn from_u8(byte: u8) -> Code {
        Code::ALL[usize::from(byte)]
    }

    /// Whether the request took effect (`ok` or `held_for_review`).
    pub fn is_effective(self) -> bool {
        matches!(self, Code::Ok | Code::HeldForReview)
    }
}

/// What a request answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The `result`: `ok`, `held_for_review`, or why nothing happened.
    pub code: Code,
    /// The key was seen before with the same request: this is the original
    /// outcome again, and nothing happened now.
    pub replayed: bool,
    /// What the outcome carries beyond its code (the answer of a query).
    pub info: Info,
}

/// Fields some outcomes carry beyond `result`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Info {
    /// Nothing: every op but `balance` and `status`, and their rejections.
    None,
    /// The answer to `balance`, in minor units of `currency`.
    Balance {
        /// The account's currency: its exponent formats the figures.
        currency: Currency,
        /// Posted money, minor units; below zero only within an overdraft.
        balance: i64,
        /// What is left of the account's active holds, minor units (>= 0).
        held: i64,
    },
    /// The answer to `status`: the original op and result of the key.
    Status {
        /// The op the key was first used with.
        op: Op,
        /// The result that request got (what a replay of it answers).
        status: Code,
    },
    /// The answer to `merchant` (boxed: most outcomes carry nothing).
    Merchant(Box<MerchantFigures>),
    /// The figures of a `settle` (`ok`, and a replay of it).
    Settlement(Box<Settlement>),
    /// What a `run_batch` applied, summed over every shard.
    Batch(Box<BatchFigures>),
    /// The answer to `history`: a page of the account's statement (boxed,
    /// as `Merchant`).
    History(Box<HistoryPage>),
}

/// One settlement batch of a merchant, in minor units of its currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// The merchant's currency.
    pub currency: Currency,
    /// The merchant's fee rate, basis points.
    pub fee_bps: u16,
    /// The batch's number: 1 for the merchant's first ok settle, then 2, 3, ...
    pub batch: u64,
    /// Clearings in the batch (ok debits, queued debits applied ok, ok
    /// captures; charge-backs are not counted).
    pub count: u64,
    /// The clearings' sum.
    pub gross: i128,
    /// The charge-backs' sum (ok refunds of cleared originals, whichever
    /// batch those were in).
    pub refunded: i128,
    /// `gross * fee_bps / 10,000`, rounded down.
    pub fee: i128,
    /// `gross - refunded - fee`; below zero when the merchant owes it.
    pub net: i128,
}

impl Settlement {
    /// Whether the batch holds neither a clearing nor a charge-back.
    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.refunded == 0
    }
}

/// What one `run_batch` did: the queued debits it applied and what they got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchFigures {
    /// Queued debits applied (the sum of the three below).
    pub applied: u64,
    /// Those that got `ok`.
    pub ok: u64,
    /// Those held for review.
    pub held: u64,
    /// Those rejected (any rejection, `risk_rejected` included).
    pub rejected: u64,
}

/// One page of an account's statement, the answer to `history`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    /// The account's currency: its exponent formats the amounts.
    pub currency: Currency,
    /// The entries asked for, newest (highest `seq`) first.
    pub entries: Vec<HistoryEntry>,
}

/// One entry of an account's statement: a keyed request that got a
/// remembered outcome on the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// 1 for the account's first entry, then 2, 3, ... without gaps.
    pub seq: u64,
    /// The request's id.
    pub id: u64,
    /// The request's op.
    pub op: Op,
    /// The result it got (for a queued debit: as `status` reports it).
    pub result: Code,
    /// Engine time, ms, when it was processed.
    pub time: u64,
    /// Minor units it added, took, held or captured, with the balance
    /// right after it, when the result is `ok` or `held_for_review` and
    /// money moved or was held; `None` for a void and any rejection.
    pub moved: Option<Moved>,
    /// The merchant the request named (debit, authorize, queue_debit).
    pub merchant: Option<u64>,
}

/// What an entry moved or held, and the balance right after it, in minor
/// units of the account's currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moved {
    /// What the request added, took, held or captured (> 0).
    pub amount: i64,
    /// The account's balance right after it.
    pub balance: i64,
}

/// A merchant's figures, in minor units of its currency. Exact whatever
/// their size (`i128`): they sum many accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MerchantFigures {
    /// The merchant's currency.
    pub currency: Currency,
    /// Its fee rate, basis points (0..=10,000).
    pub fee_bps: u16,
    /// Ok settles so far: the number of the last batch.
    pub batches: u64,
    /// Clearings minus charge-backs of the current (unsettled) batch.
    pub pending: i128,
    /// The sum of `net` over its settled batches.
    pub settled_net: i128,
    /// The sum of `fee` over its settled batches.
    pub fees: i128,
}

impl Outcome {
    /// A fresh outcome with `code` and nothing else: not a replay, no info.
    pub const fn new(code: Code) -> Outcome {
        Outcome {
            code,
            replayed: false,
            info: Info::None,
        }
    }

    /// `code` as the answer to a replay: `replayed` set, no info.
    pub const fn replay(code: Code) -> Outcome {
        Outcome {
            code,
            replayed: true,
            info: Info::None,
        }
    }

    /// `balance - held`, for a balance outcome, in minor units (may be
    /// below zero within an overdraft).
    pub fn available(&self) -> Option<i128> {
        match self.info {
            Info::Balance { balance, held, .. } => Some(i128::from(balance) - i128::from(held)),
            _ => None,
        }
    }

    /// Balance, held and available as SPEC's decimal strings.
    pub fn balance_strings(&self) -> Option<[String; 3]> {
        match self.info {
            Info::Balance {
                currency,
                balance,
                held,
            } => {
                let e = currency.exponent();
                // available >= -overdraft >= -(2^63-1), so it fits i64.
                let available = i64::try_from(i128::from(balance) - i128::from(held))
                    .expect("available is bounded by the overdraft floor");
                Some([
                    format_minor(balance, e),
                    format_minor(held, e),
                    format_minor(available, e),
                ])
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_round_trip() {
        for (i, code) in Code::ALL.into_iter().enumerate() {
            assert_eq!(Code::from_name(code.name()), Some(code));
            assert_eq!(Code::from_u8(i as u8), code);
        }
    }

    #[test]
    fn outcome_is_small() {
        assert!(std::mem::size_of::<Outcome>() <= 32);
    }
}
