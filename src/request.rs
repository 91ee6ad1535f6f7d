//! Typed requests: what a gateway asks of the engine.
//!
//! One variant per SPEC op. Amounts stay [`AmountArg`] (major units, as sent)
//! until the owning shard knows the account's currency. Fields that SPEC calls
//! optional are `Option`s; `None` means "omitted", which for comparisons of
//! replays equals the default where SPEC names one.

use crate::money::{AmountArg, Currency};

/// An account's identity: any unsigned 64-bit number the gateway chooses.
/// Accounts are placed on shards by a fixed hash of it.
pub type AccountId = u64;
/// A request's id: unsigned 64 bits, scoped to its account. The key of a
/// money request is (account, id); a hold is named by its authorize's id.
pub type TxnId = u64;
/// A merchant's identity: its own id space, apart from accounts. Every
/// shard knows every merchant (`open_merchant` goes to all of them).
pub type MerchantId = u64;

/// One request. See `docs/behaviour.md` for what each means.
///
/// Every amount is an [`AmountArg`] in major units as sent (`"12.34"`);
/// the shard that owns the account turns it into minor units of the
/// account's currency, or answers [`Code::InvalidAmount`](crate::Code::InvalidAmount).
/// Variants with an `id` are keyed: the engine remembers their outcome
/// under (account, id) and answers a retry with it (`replayed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `open_account`: a new account with balance 0. Not keyed: a second
    /// open of the same account is `account_exists`.
    OpenAccount {
        /// The new account's id.
        account: AccountId,
        /// `None`: a currency code the engine does not support.
        currency: Option<Currency>,
        /// How far below zero `available` may go, in major units (>= 0);
        /// `None` is no overdraft ("0").
        overdraft: Option<AmountArg>,
        /// `true`: the account keeps a statement of its keyed requests
        /// (`history`). The line format's default is `false`.
        history: bool,
    },
    /// `deposit`: balance += amount.
    Deposit {
        /// The request's id; with `account`, its idempotency key.
        id: TxnId,
        /// The account credited.
        account: AccountId,
        /// Major units, > 0, at most the currency's exponent of decimals.
        amount: AmountArg,
    },
    /// `debit`: balance -= amount, after limits and risk routing (which
    /// may turn it into a hold for review instead).
    Debit {
        /// The request's id; with `account`, its idempotency key. A review
        /// hold it becomes is named by this id too.
        id: TxnId,
        /// The account debited.
        account: AccountId,
        /// Major units, > 0, at most the currency's exponent of decimals.
        amount: AmountArg,
        /// The merchant paid: an ok debit clears its amount to it. `None`:
        /// the money goes to no merchant.
        merchant: Option<MerchantId>,
    },
    /// `authorize`: a new hold named `id`; held += amount.
    Authorize {
        /// The request's id, its key with `account`, and the hold's name
        /// (what `auth` of a capture, void or increment refers to).
        id: TxnId,
        /// The account whose funds are held.
        account: AccountId,
        /// Major units, > 0, at most the currency's exponent of decimals.
        amount: AmountArg,
        /// Engine time, ms, from now until the hold expires:
        /// 1..=10^13; `None` is the 7-day default.
        expires_in_ms: Option<u64>,
        /// The merchant the hold is for: its captures clear to it.
        merchant: Option<MerchantId>,
    },
    /// `increment`: an active, not yet captured hold grows by `amount`.
    Increment {
        /// The request's id; with `account`, its idempotency key.
        id: TxnId,
        /// The account of the hold.
        account: AccountId,
        /// The id of the `authorize` that made the hold.
        auth: TxnId,
        /// What the hold grows by, major units, > 0.
        amount: AmountArg,
        /// Engine time, ms, from now: the hold's new expiry.
        /// 1..=10^13; `None` leaves the hold's expiry where it is.
        expires_in_ms: Option<u64>,
    },
    /// `capture`: balance -= amount, taken from the hold.
    Capture {
        /// The request's id; with `account`, its idempotency key. A refund
        /// of this capture names it in `of`.
        id: TxnId,
        /// The account of the hold.
        account: AccountId,
        /// The id of the `authorize` (or reviewed debit) that made the hold.
        auth: TxnId,
        /// Major units, at most what is left of the hold.
        /// `None`: all that is left of the hold.
        amount: Option<AmountArg>,
        /// `true` (the line format's default): the hold ends and the rest
        /// is released. `false`: the hold stays active for more captures.
        is_final: bool,
    },
    /// `void`: the hold ends; held -= what was left of it.
    Void {
        /// The request's id; with `account`, its idempotency key.
        id: TxnId,
        /// The account of the hold.
        account: AccountId,
        /// The id of the `authorize` (or reviewed debit) that made the hold.
        auth: TxnId,
    },
    /// `refund`: balance += amount, returning (part of) an ok debit or
    /// capture.
    Refund {
        /// The request's id; with `account`, its idempotency key.
        id: TxnId,
        /// The account refunded: the one the original took from.
        account: AccountId,
        /// The id of the original ok `debit` or `capture` on this account.
        of: TxnId,
        /// Major units, at most what is still refundable of the original.
        /// `None`: all that is still refundable.
        amount: Option<AmountArg>,
    },
    /// `set_limits`: replaces all of the account's limits and risk rules.
    /// Not keyed.
    SetLimits {
        /// The account whose limits are set.
        account: AccountId,
        /// The new limits; a field left `None` removes that limit. Boxed so
        /// that the common variants keep `Request` small.
        limits: Box<LimitsArg>,
    },
    /// `freeze`: the account refuses debits and authorizes until unfrozen.
    Freeze {
        /// The account frozen.
        account: AccountId,
    },
    /// `unfreeze`: undoes `freeze`.
    Unfreeze {
        /// The account unfrozen.
        account: AccountId,
    },
    /// `balance`: a query; the outcome carries [`Info::Balance`](crate::Info::Balance).
    Balance {
        /// The account asked about.
        account: AccountId,
    },
    /// `status`: a query; the outcome carries [`Info::Status`](crate::Info::Status),
    /// the original op and result of the key (account, id).
    Status {
        /// The account the key belongs to.
        account: AccountId,
        /// The id of the request asked about.
        id: TxnId,
    },
    /// Manual clock only: every shard moves its engine time forward by `ms`
    /// (0..=10^13), in the order of the submitting client's requests.
    AdvanceClock {
        /// Milliseconds of engine time to move forward, 0..=10^13.
        ms: u64,
    },
    /// `open_merchant`: a new merchant, known to every shard, with nothing
    /// pending. Not keyed: a second open of the same id is
    /// `merchant_exists`.
    OpenMerchant {
        /// The new merchant's id.
        merchant: MerchantId,
        /// `None`: a currency code the engine does not support.
        currency: Option<Currency>,
        /// The merchant's fee rate in basis points, 0..=10,000; `None` is 0.
        fee_bps: Option<u16>,
    },
    /// `merchant`: a query of a merchant's figures, summed over every
    /// shard; the outcome carries [`Info::Merchant`](crate::Info::Merchant).
    Merchant {
        /// The merchant asked about.
        merchant: MerchantId,
    },
    /// `queue_debit`: a debit accepted now (`queued`) and applied at the
    /// next `run_batch`, as a `debit` with these fields arriving then.
    /// Nothing is reserved or moved until then.
    QueueDebit {
        /// The request's id; with `account`, its idempotency key (and the
        /// key its batch's result is reported under).
        id: TxnId,
        /// The account to debit at the batch.
        account: AccountId,
        /// Major units, > 0, at most the currency's exponent of decimals.
        amount: AmountArg,
        /// The merchant paid: if its batch applies it with `ok`, it clears.
        merchant: Option<MerchantId>,
    },
    /// `run_batch`: every shard applies the debits queued before it, in the
    /// order they were queued, at one engine time. Goes to every shard.
    RunBatch,
    /// `settle`: closes the merchant's current batch on every shard and
    /// answers its figures ([`Info::Settlement`](crate::Info::Settlement)).
    /// Keyed by (merchant, id), a key space of its own: a key seen before
    /// always replays.
    Settle {
        /// The settle's id; with `merchant`, its idempotency key.
        id: TxnId,
        /// The merchant settled.
        merchant: MerchantId,
    },
    /// `close_account`: the account is closed for good (its balance must
    /// be zero, with no active hold and no queued debit). Not keyed.
    CloseAccount {
        /// The account closed.
        account: AccountId,
    },
    /// `history`: a query of an account's statement, newest entry first;
    /// the outcome carries [`Info::History`](crate::Info::History).
    History {
        /// The account asked about (it must have been opened with history).
        account: AccountId,
        /// At most this many entries, 1..=1000 (the codec rejects others as
        /// malformed; the engine takes 0 as 1 and more than 1000 as 1000);
        /// `None` is 20.
        limit: Option<u16>,
        /// Only entries with `seq` below this, 1..=2^64-1; `None`: no bound.
        before: Option<u64>,
    },
    /// A step the engine takes on every shard on a user's behalf (the
    /// second step of a `settle`, a `run_batch` stamped with one time); it
    /// is written to the logs like any request. Nothing outside the crate
    /// can make one.
    Internal(Internal),
}

/// What [`Request::Internal`] carries; opaque outside the crate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Internal(pub(crate) Box<Step>);

impl Step {
    /// Out of line, so that `Request::op` of every other request stays a
    /// table lookup (it is on the log's path).
    #[cold]
    #[inline(never)]
    fn op(&self) -> Op {
        match self {
            Step::RunBatchAt { .. } => Op::RunBatch,
            Step::SettleClose { .. } => Op::Settle,
        }
    }
}

/// The engine's own steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// `run_batch` under the wall clock, at the one engine time the engine
    /// gave it (each shard's clock reads the wall on its own).
    RunBatchAt {
        /// Engine time, ms, of every debit the batch applies.
        at_ms: u64,
    },
    /// The second step of `settle`: every shard's part was cut (the first
    /// step, [`Request::Settle`] itself); these are the sums, the batch
    /// number and the outcome, which every shard records under the settle
    /// key.
    SettleClose {
        merchant: MerchantId,
        id: TxnId,
        /// `Ok`, or `NothingToSettle` (a batch with nothing in it).
        code: crate::Code,
        /// The outcome's figures (for `NothingToSettle`, zeros).
        figures: crate::Settlement,
    },
}

/// `set_limits` fields as sent; an omitted field means "no such limit".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitsArg {
    /// The most one debit or authorize may be, and the most a hold may
    /// total after an increment; major units, > 0.
    pub per_txn: Option<AmountArg>,
    /// The most that debits, authorizes, increments and reviews may take
    /// in one UTC day of engine time; major units, > 0.
    pub daily: Option<AmountArg>,
    /// A debit of more than this is held for review rather than debited;
    /// major units, > 0.
    pub review_above: Option<AmountArg>,
    /// The rule that reviews a small debit after too many of them.
    pub velocity: Option<VelocityArg>,
}

/// `velocity` as sent: review a small debit when `max` small debits already
/// happened within `window_ms`. `max` is 1..=1000 and `window_ms` is
/// 1..=10^13; the codec rejects other values as malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VelocityArg {
    /// How many ok small debits within the window are allowed before the
    /// next small one is reviewed: 1..=1000.
    pub max: u32,
    /// The window, engine time, ms: debits at times t with
    /// now - t < window_ms count. 1..=10^13.
    pub window_ms: u64,
    /// What "small" means: an amount at most this; major units, > 0.
    pub below: AmountArg,
}

/// The op of a request, as stored with a remembered key and reported by `status`.
///
/// The discriminant is the byte the key table and the write-ahead log
/// store, so the order of the variants is part of the log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    /// [`Request::OpenAccount`].
    OpenAccount,
    /// [`Request::Deposit`].
    Deposit,
    /// [`Request::Debit`].
    Debit,
    /// [`Request::Authorize`].
    Authorize,
    /// [`Request::Increment`].
    Increment,
    /// [`Request::Capture`].
    Capture,
    /// [`Request::Void`].
    Void,
    /// [`Request::Refund`].
    Refund,
    /// [`Request::SetLimits`].
    SetLimits,
    /// [`Request::Freeze`].
    Freeze,
    /// [`Request::Unfreeze`].
    Unfreeze,
    /// [`Request::Balance`].
    Balance,
    /// [`Request::Status`].
    Status,
    /// [`Request::AdvanceClock`].
    AdvanceClock,
    /// [`Request::OpenMerchant`].
    OpenMerchant,
    /// [`Request::Merchant`].
    Merchant,
    /// [`Request::QueueDebit`].
    QueueDebit = 16,
    /// [`Request::RunBatch`].
    RunBatch = 17,
    /// [`Request::Settle`] (and the engine's second step of one).
    Settle = 18,
    /// [`Request::CloseAccount`].
    CloseAccount = 19,
    /// [`Request::History`].
    History = 20,
}

impl Op {
    /// Every op, in discriminant order (`ALL[op as usize] == op`).
    pub const ALL: [Op; 21] = [
        Op::OpenAccount,
        Op::Deposit,
        Op::Debit,
        Op::Authorize,
        Op::Increment,
        Op::Capture,
        Op::Void,
        Op::Refund,
        Op::SetLimits,
        Op::Freeze,
        Op::Unfreeze,
        Op::Balance,
        Op::Status,
        Op::AdvanceClock,
        Op::OpenMerchant,
        Op::Merchant,
        Op::QueueDebit,
        Op::RunBatch,
        Op::Settle,
        Op::CloseAccount,
        Op::History,
    ];

    /// The SPEC name of the op (`"open_account"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Op::OpenAccount => "open_account",
            Op::Deposit => "deposit",
            Op::Debit => "debit",
            Op::Authorize => "authorize",
            Op::Increment => "increment",
            Op::Capture => "capture",
            Op::Void => "void",
            Op::Refund => "refund",
            Op::SetLimits => "set_limits",
            Op::Freeze => "freeze",
            Op::Unfreeze => "unfreeze",
            Op::Balance => "balance",
            Op::Status => "status",
            Op::AdvanceClock => "advance_clock",
            Op::OpenMerchant => "open_merchant",
            Op::Merchant => "merchant",
            Op::QueueDebit => "queue_debit",
            Op::RunBatch => "run_batch",
            Op::Settle => "settle",
            Op::CloseAccount => "close_account",
            Op::History => "history",
        }
    }

    /// The op with this SPEC name, exactly as spelled in the line format;
    /// `None` for any other string.
    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }

    pub(crate) fn from_u8(byte: u8) -> Op {
        Op::ALL[usize::from(byte)]
    }
}

impl Request {
    /// Which op this request is.
    pub fn op(&self) -> Op {
        match self {
            Request::OpenAccount { .. } => Op::OpenAccount,
            Request::Deposit { .. } => Op::Deposit,
            Request::Debit { .. } => Op::Debit,
            Request::Authorize { .. } => Op::Authorize,
            Request::Increment { .. } => Op::Increment,
            Request::Capture { .. } => Op::Capture,
            Request::Void { .. } => Op::Void,
            Request::Refund { .. } => Op::Refund,
            Request::SetLimits { .. } => Op::SetLimits,
            Request::Freeze { .. } => Op::Freeze,
            Request::Unfreeze { .. } => Op::Unfreeze,
            Request::Balance { .. } => Op::Balance,
            Request::Status { .. } => Op::Status,
            Request::AdvanceClock { .. } => Op::AdvanceClock,
            Request::OpenMerchant { .. } => Op::OpenMerchant,
            Request::Merchant { .. } => Op::Merchant,
            Request::QueueDebit { .. } => Op::QueueDebit,
            Request::RunBatch => Op::RunBatch,
            Request::Settle { .. } => Op::Settle,
            Request::Internal(Internal(step)) => step.op(),
            Request::CloseAccount { .. } => Op::CloseAccount,
            Request::History { .. } => Op::History,
        }
    }

    /// The account the request touches; `None` for the requests that go to
    /// every shard (`advance_clock`, `open_merchant`, `merchant`,
    /// `run_batch`, `settle`).
    pub fn account(&self) -> Option<AccountId> {
        match *self {
            Request::OpenAccount { account, .. }
            | Request::Deposit { account, .. }
            | Request::Debit { account, .. }
            | Request::Authorize { account, .. }
            | Request::Increment { account, .. }
            | Request::Capture { account, .. }
            | Request::Void { account, .. }
            | Request::Refund { account, .. }
            | Request::SetLimits { account, .. }
            | Request::Freeze { account }
            | Request::Unfreeze { account }
            | Request::Balance { account }
            | Request::Status { account, .. }
            | Request::QueueDebit { account, .. }
            | Request::CloseAccount { account }
            | Request::History { account, .. } => Some(account),
            Request::AdvanceClock { .. }
            | Request::OpenMerchant { .. }
            | Request::Merchant { .. }
            | Request::RunBatch
            | Request::Settle { .. }
            | Request::Internal(_) => None,
        }
    }

    /// Whether this request goes to every shard and changes state there:
    /// such requests are numbered and written to the broadcast log before
    /// any shard is given one (`wal/broadcasts.rs`). Queries that go to
    /// every shard (`merchant`) are not, nor is a `settle`'s first step
    /// (its cut: a crash that leaves it on some shards only leaves their
    /// parts cut and pending, which the next cut of that merchant takes in;
    /// see `shard/merchants.rs`); its second step is.
    pub fn is_numbered_broadcast(&self) -> bool {
        matches!(
            self,
            Request::AdvanceClock { .. }
                | Request::OpenMerchant { .. }
                | Request::RunBatch
                | Request::Internal(_)
        )
    }

    /// The engine's second step of a settle (crate-internal).
    pub(crate) fn settle_close(
        merchant: MerchantId,
        id: TxnId,
        code: crate::Code,
        figures: crate::Settlement,
    ) -> Request {
        Request::Internal(Internal(Box::new(Step::SettleClose {
            merchant,
            id,
            code,
            figures,
        })))
    }

    /// `run_batch` at one engine time for every shard (crate-internal).
    pub(crate) fn run_batch_at(at_ms: u64) -> Request {
        Request::Internal(Internal(Box::new(Step::RunBatchAt { at_ms })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_names_round_trip() {
        for (i, op) in Op::ALL.into_iter().enumerate() {
            assert_eq!(Op::from_name(op.name()), Some(op));
            assert_eq!(Op::from_u8(i as u8), op);
        }
        assert_eq!(Op::from_name("Debit"), None);
    }

    #[test]
    fn request_stays_small() {
        assert!(std::mem::size_of::<Request>() <= 64);
    }
}
