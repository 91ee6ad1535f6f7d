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
    Ok,
    /// Not a rejection: the debit became a hold awaiting review.
    HeldForReview,
    AccountExists,
    UnsupportedCurrency,
    InvalidAmount,
    IdConflict,
    UnknownAccount,
    AccountFrozen,
    InsufficientFunds,
    AuthNotFound,
    AuthExpired,
    AuthNotActive,
    ExceedsAuthorized,
    CaptureStarted,
    LimitExceeded,
    NotRefundable,
    ExceedsRefundable,
    /// An embedder's risk policy refused the request.
    RiskRejected,
    UnknownId,
    /// The write-ahead log could not take the request (disk full, I/O error).
    StorageUnavailable,
    /// `advance_clock` sent to an engine that runs on the wall clock.
    ClockNotManual,
    /// The engine was shutting down and did not take the request.
    ShuttingDown,
}

impl Code {
    pub const ALL: [Code; 22] = [
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
        }
    }

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub code: Code,
    /// The key was seen before with the same request: this is the original
    /// outcome again, and nothing happened now.
    pub replayed: bool,
    pub info: Info,
}

/// Fields some outcomes carry beyond `result`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Info {
    None,
    /// The answer to `balance`, in minor units of `currency`.
    Balance {
        currency: Currency,
        balance: i64,
        held: i64,
    },
    /// The answer to `status`: the original op and result of the key.
    Status {
        op: Op,
        status: Code,
    },
}

impl Outcome {
    pub const fn new(code: Code) -> Outcome {
        Outcome {
            code,
            replayed: false,
            info: Info::None,
        }
    }

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
