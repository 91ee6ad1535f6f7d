//! Typed requests: what a gateway asks of the engine.
//!
//! One variant per SPEC op. Amounts stay [`AmountArg`] (major units, as sent)
//! until the owning shard knows the account's currency. Fields that SPEC calls
//! optional are `Option`s; `None` means "omitted", which for comparisons of
//! replays equals the default where SPEC names one.

use crate::money::{AmountArg, Currency};

pub type AccountId = u64;
pub type TxnId = u64;

/// One request. See `docs/behaviour.md` for what each means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    OpenAccount {
        account: AccountId,
        /// `None`: a currency code the engine does not support.
        currency: Option<Currency>,
        overdraft: Option<AmountArg>,
    },
    Deposit {
        id: TxnId,
        account: AccountId,
        amount: AmountArg,
    },
    Debit {
        id: TxnId,
        account: AccountId,
        amount: AmountArg,
    },
    Authorize {
        id: TxnId,
        account: AccountId,
        amount: AmountArg,
        /// 1..=10^13; `None` is the 7-day default.
        expires_in_ms: Option<u64>,
    },
    Increment {
        id: TxnId,
        account: AccountId,
        auth: TxnId,
        amount: AmountArg,
        /// 1..=10^13; `None` leaves the hold's expiry where it is.
        expires_in_ms: Option<u64>,
    },
    Capture {
        id: TxnId,
        account: AccountId,
        auth: TxnId,
        /// `None`: all that is left of the hold.
        amount: Option<AmountArg>,
        /// `false`: the hold stays active for more captures.
        is_final: bool,
    },
    Void {
        id: TxnId,
        account: AccountId,
        auth: TxnId,
    },
    Refund {
        id: TxnId,
        account: AccountId,
        of: TxnId,
        /// `None`: all that is still refundable.
        amount: Option<AmountArg>,
    },
    SetLimits {
        account: AccountId,
        limits: Box<LimitsArg>,
    },
    Freeze {
        account: AccountId,
    },
    Unfreeze {
        account: AccountId,
    },
    Balance {
        account: AccountId,
    },
    Status {
        account: AccountId,
        id: TxnId,
    },
    /// Manual clock only: every shard moves its engine time forward by `ms`
    /// (0..=10^13), in the order of the submitting client's requests.
    AdvanceClock {
        ms: u64,
    },
}

/// `set_limits` fields as sent; an omitted field means "no such limit".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitsArg {
    pub per_txn: Option<AmountArg>,
    pub daily: Option<AmountArg>,
    pub review_above: Option<AmountArg>,
    pub velocity: Option<VelocityArg>,
}

/// `velocity` as sent: review a small debit when `max` small debits already
/// happened within `window_ms`. `max` is 1..=1000 and `window_ms` is
/// 1..=10^13; the codec rejects other values as malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VelocityArg {
    pub max: u32,
    pub window_ms: u64,
    pub below: AmountArg,
}

/// The op of a request, as stored with a remembered key and reported by `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    OpenAccount,
    Deposit,
    Debit,
    Authorize,
    Increment,
    Capture,
    Void,
    Refund,
    SetLimits,
    Freeze,
    Unfreeze,
    Balance,
    Status,
    AdvanceClock,
}

impl Op {
    pub const ALL: [Op; 14] = [
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
        }
    }

    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }

    pub(crate) fn from_u8(byte: u8) -> Op {
        Op::ALL[usize::from(byte)]
    }
}

impl Request {
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
        }
    }

    /// The account the request touches; `None` for `advance_clock`, which
    /// goes to every shard.
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
            | Request::Status { account, .. } => Some(account),
            Request::AdvanceClock { .. } => None,
        }
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
