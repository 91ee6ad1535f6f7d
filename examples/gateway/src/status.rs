//! What each outcome is over HTTP: one status per [`Code`], one message,
//! and the gateway's own errors (bad input that never reaches the engine).
//!
//! The table is the contract clients code against, so it is one `match`
//! with no default arm: a new `Code` does not compile until it has a
//! status. `README.md` prints the same table; a test compares the two.

use axum::http::StatusCode;
use debitcore::Code;

/// The HTTP status of an engine outcome.
///
/// The classes: 2xx took effect (`held_for_review` and `queued` are 202:
/// accepted, not yet decided); 402 the payment was declined by funds, limits or risk;
/// 404 the named account, hold or transaction does not exist; 409 the
/// state of the account or hold forbids the request now; 422 the request's
/// values cannot be taken (a key reused for a different request is 422, as
/// the IETF Idempotency-Key draft has it); 503 the engine cannot take
/// requests now (retry the same key later).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::HeldForReview | Code::Queued => StatusCode::ACCEPTED,
        Code::InsufficientFunds | Code::LimitExceeded | Code::RiskRejected => {
            StatusCode::PAYMENT_REQUIRED
        }
        Code::UnknownAccount
        | Code::AuthNotFound
        | Code::UnknownId
        | Code::UnknownMerchant
        | Code::NoHistory => StatusCode::NOT_FOUND,
        Code::AccountExists
        | Code::MerchantExists
        | Code::AccountFrozen
        | Code::AuthExpired
        | Code::AuthNotActive
        | Code::CaptureStarted
        | Code::ClockNotManual
        | Code::NothingToSettle
        | Code::AccountClosed
        | Code::AccountNotEmpty => StatusCode::CONFLICT,
        Code::UnsupportedCurrency
        | Code::InvalidAmount
        | Code::CurrencyMismatch
        | Code::IdConflict
        | Code::ExceedsAuthorized
        | Code::NotRefundable
        | Code::ExceedsRefundable => StatusCode::UNPROCESSABLE_ENTITY,
        Code::StorageUnavailable | Code::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A sentence for the `message` of a rejection's body.
pub fn message(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::HeldForReview => "the debit became a hold awaiting review: capture or void it",
        Code::AccountExists => "an account with this id already exists",
        Code::UnsupportedCurrency => "the currency is not one the engine supports",
        Code::InvalidAmount => {
            "the amount is not a positive decimal with at most the currency's digits, \
             or it would pass 2^63-1 minor units"
        }
        Code::IdConflict => {
            "this Idempotency-Key was already used on this account for a different request"
        }
        Code::UnknownAccount => "no account with this id",
        Code::AccountFrozen => "the account is frozen",
        Code::InsufficientFunds => "the account's available funds do not cover the amount",
        Code::AuthNotFound => "no hold with this id on the account",
        Code::AuthExpired => "the hold expired",
        Code::AuthNotActive => "the hold has ended (captured or voided)",
        Code::ExceedsAuthorized => "the amount exceeds what is left of the hold",
        Code::CaptureStarted => "the hold was already captured in part: it cannot grow",
        Code::LimitExceeded => "the amount passes the account's per-transaction or daily limit",
        Code::NotRefundable => "the original is not an ok debit or capture on this account",
        Code::ExceedsRefundable => "the amount exceeds what is still refundable",
        Code::RiskRejected => "the risk policy refused the payment",
        Code::UnknownId => "no transaction with this id on the account",
        Code::StorageUnavailable => {
            "the engine's log cannot take requests now (disk full or I/O error): retry later"
        }
        Code::ClockNotManual => "the engine runs on the wall clock (start with --clock manual)",
        Code::ShuttingDown => "the engine is shutting down: retry on another instance or later",
        Code::MerchantExists => "a merchant with this id already exists",
        Code::UnknownMerchant => "no merchant with this id",
        Code::CurrencyMismatch => "the merchant's currency is not the account's",
        Code::Queued => "the debit waits for the next batch run",
        Code::NothingToSettle => {
            "the merchant's batch has no clearing and no charge-back: settle later with a new key"
        }
        Code::AccountClosed => "the account is closed",
        Code::AccountNotEmpty => {
            "the account still has a balance, an active hold or a queued debit: it cannot close"
        }
        Code::NoHistory => "the account was not opened with history: it keeps no statement",
    }
}

/// Bad input the gateway refuses itself: the engine never sees it, so
/// nothing changes and nothing is remembered under the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayError {
    /// The body is not JSON, or not a JSON object.
    InvalidJson,
    /// A field is missing, wrongly typed or out of range (the line
    /// format's "malformed"), or a path segment is not an integer.
    Malformed,
    /// A keyed operation without an `Idempotency-Key` header.
    MissingIdempotencyKey,
    /// An `Idempotency-Key` that is not one unsigned 64-bit integer.
    InvalidIdempotencyKey,
    /// No such route.
    NotFound,
    /// The route exists, not with this method.
    MethodNotAllowed,
    /// The body is over [`crate::BODY_BYTES_MAX`].
    BodyTooLarge,
    /// A shard worker failed (a broken invariant): the engine cannot answer.
    EngineFailed,
}

impl GatewayError {
    pub const ALL: [GatewayError; 8] = [
        GatewayError::InvalidJson,
        GatewayError::Malformed,
        GatewayError::MissingIdempotencyKey,
        GatewayError::InvalidIdempotencyKey,
        GatewayError::NotFound,
        GatewayError::MethodNotAllowed,
        GatewayError::BodyTooLarge,
        GatewayError::EngineFailed,
    ];

    /// The `code` of the error body.
    pub fn name(self) -> &'static str {
        match self {
            GatewayError::InvalidJson => "invalid_json",
            GatewayError::Malformed => "malformed",
            GatewayError::MissingIdempotencyKey => "missing_idempotency_key",
            GatewayError::InvalidIdempotencyKey => "invalid_idempotency_key",
            GatewayError::NotFound => "not_found",
            GatewayError::MethodNotAllowed => "method_not_allowed",
            GatewayError::BodyTooLarge => "body_too_large",
            GatewayError::EngineFailed => "engine_failed",
        }
    }

    pub fn http_status(self) -> StatusCode {
        match self {
            GatewayError::InvalidJson
            | GatewayError::Malformed
            | GatewayError::MissingIdempotencyKey
            | GatewayError::InvalidIdempotencyKey => StatusCode::BAD_REQUEST,
            GatewayError::NotFound => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::EngineFailed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every status a rejection uses is a 4xx or 5xx, and only `ok`,
    /// `held_for_review` (the codes that took effect) and `queued` (taken,
    /// to take effect at the next batch) are 2xx.
    #[test]
    fn success_statuses_are_exactly_the_effective_codes() {
        for code in Code::ALL {
            let status = http_status(code);
            assert_eq!(
                status.is_success(),
                code.is_effective() || code == Code::Queued,
                "{} is {status}",
                code.name()
            );
            assert!(!message(code).is_empty(), "{} has no message", code.name());
        }
        for error in GatewayError::ALL {
            let status = error.http_status();
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{} is {status}",
                error.name()
            );
        }
    }

    /// A client retries 503s with the same key; nothing else is 503, so a
    /// 503 never hides an outcome that took effect.
    #[test]
    fn only_capacity_codes_ask_for_a_retry() {
        let retry: Vec<&str> = Code::ALL
            .into_iter()
            .filter(|&c| http_status(c) == StatusCode::SERVICE_UNAVAILABLE)
            .map(Code::name)
            .collect();
        assert_eq!(retry, ["storage_unavailable", "shutting_down"]);
    }

    /// The rows of README.md's table between `<!-- {marker} -->` and
    /// `<!-- /{marker} -->`: (first cell without backticks, second cell).
    fn readme_rows(marker: &str) -> Vec<(String, String)> {
        const README: &str = include_str!("../README.md");
        let start = format!("<!-- {marker} -->");
        let end = format!("<!-- /{marker} -->");
        let table = README
            .split_once(&start)
            .and_then(|(_, rest)| rest.split_once(&end))
            .map(|(table, _)| table)
            .unwrap_or_else(|| panic!("README.md has no {start} ... {end}"));
        table
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                (cells[1].trim_matches('`').to_string(), cells[2].to_string())
            })
            .collect()
    }

    /// README.md's status table is this module's, row for row: every
    /// code once, with its status.
    #[test]
    fn readme_tables_match_the_code() {
        let rows = readme_rows("status-table");
        assert_eq!(rows.len(), Code::ALL.len(), "one row per code");
        for (name, status) in &rows {
            let code = Code::from_name(name).unwrap_or_else(|| panic!("no code {name}"));
            assert_eq!(status, http_status(code).as_str(), "README row {name}");
        }
        let rows = readme_rows("gateway-errors");
        assert_eq!(rows.len(), GatewayError::ALL.len(), "one row per error");
        for (error, (name, status)) in GatewayError::ALL.into_iter().zip(&rows) {
            assert_eq!(name, error.name(), "README rows in GatewayError::ALL order");
            assert_eq!(status, error.http_status().as_str(), "README row {name}");
        }
    }
}
