//! Conformance: request streams with their required outcomes, checked through
//! `runner::run` with a manual clock.
//!
//! `tests/data/streams/*.requests.jsonl` come with `.outcomes.jsonl` files
//! that SPEC's authors wrote. The small streams further down pin single
//! rules of SPEC.md (check order, boundaries, replays); each expected line is
//! derived from the sentence of SPEC quoted above it.

mod common;

use common::{compare_streams, run_engine, Outcome, DEFAULT_DEDUP_WINDOW_MS};

/// The one helper every test here goes through: runs `requests` (JSON Lines,
/// one request per line) with `shards` shards and compares the output with
/// `expected` (one outcome per line, as in an `.outcomes.jsonl` file).
fn check(requests: &str, expected: &str, shards: usize) {
    check_with_window(requests, expected, shards, DEFAULT_DEDUP_WINDOW_MS);
}

fn check_with_window(requests: &str, expected: &str, shards: usize, dedup_window_ms: u64) {
    let request_lines = input_lines(requests);
    let expected: Vec<Outcome> = expected
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Outcome::parse(l).unwrap_or_else(|e| panic!("bad expected outcome: {e}")))
        .collect();
    assert_eq!(
        request_lines.len(),
        expected.len(),
        "test data: {} request lines but {} expected outcomes",
        request_lines.len(),
        expected.len()
    );
    let actual = run_engine(requests.as_bytes().to_vec(), shards, dedup_window_ms);
    if let Err(why) = compare_streams(&request_lines, &expected, &actual) {
        panic!("with {shards} shard(s): {why}");
    }
}

/// The lines of an input as the runner numbers them: a final newline ends the
/// last line rather than starting an empty one.
fn input_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    lines
}

fn example(name: &str) -> (String, String) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/streams");
    let read = |suffix: &str| {
        let path = format!("{dir}/{name}.{suffix}.jsonl");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
    };
    (read("requests"), read("outcomes"))
}

#[test]
fn every_example_has_outcomes() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/streams");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).expect("examples directory") {
        let name = entry
            .expect("directory entry")
            .file_name()
            .into_string()
            .expect("UTF-8 name");
        if let Some(stem) = name.strip_suffix(".requests.jsonl") {
            names.push(stem.to_string());
        }
    }
    names.sort();
    assert!(
        names.len() >= 3,
        "expected the core, preauth and merchants examples, found {names:?}"
    );
    for name in names {
        let (requests, outcomes) = example(&name);
        for shards in [1, 3] {
            check(&requests, &outcomes, shards);
        }
    }
}

#[test]
fn core_example() {
    let (requests, outcomes) = example("core");
    check(&requests, &outcomes, 1);
    check(&requests, &outcomes, 3);
}

#[test]
fn preauth_example() {
    let (requests, outcomes) = example("preauth");
    check(&requests, &outcomes, 1);
    check(&requests, &outcomes, 3);
}

/// SPEC's third section as one stream: merchants, clearing, settlement,
/// batch debits, closing, statements; at 1, 2 and 4 shards.
#[test]
fn merchants_example() {
    let (requests, outcomes) = example("merchants");
    for shards in [1, 2, 4] {
        check(&requests, &outcomes, shards);
    }
}

// ---------------------------------------------------------------------------
// Single rules of SPEC.md, each as a small stream.
// ---------------------------------------------------------------------------

/// "It must be > 0, have no more fractional digits than the currency's
/// exponent (even zeros), and fit in 63 bits of minor units."
#[test]
fn amount_format_per_currency() {
    check(
        r#"{"op":"open_account","account":1,"currency":"USD"}
{"op":"open_account","account":2,"currency":"JPY"}
{"op":"open_account","account":3,"currency":"KWD"}
{"op":"deposit","id":1,"account":1,"amount":"92233720368547758.07"}
{"op":"deposit","id":2,"account":1,"amount":"0.01"}
{"op":"deposit","id":3,"account":2,"amount":"9223372036854775808"}
{"op":"deposit","id":4,"account":2,"amount":"9223372036854775807"}
{"op":"deposit","id":5,"account":2,"amount":"1.0"}
{"op":"deposit","id":6,"account":3,"amount":"1.000"}
{"op":"deposit","id":7,"account":3,"amount":"1.0000"}
{"op":"deposit","id":8,"account":3,"amount":"0.000"}
{"op":"deposit","id":9,"account":3,"amount":"-1"}
{"op":"deposit","id":10,"account":3,"amount":"1."}
{"op":"deposit","id":11,"account":3,"amount":".5"}
{"op":"deposit","id":12,"account":3,"amount":"1e3"}
{"op":"deposit","id":13,"account":3,"amount":"0001.5"}
{"op":"balance","account":1}
{"op":"balance","account":2}
{"op":"balance","account":3}
"#,
        r#"{"line": 1, "result": "ok"}
{"line": 2, "result": "ok"}
{"line": 3, "result": "ok"}
{"line": 4, "result": "ok"}
{"line": 5, "result": "invalid_amount"}
{"line": 6, "result": "invalid_amount"}
{"line": 7, "result": "ok"}
{"line": 8, "result": "invalid_amount"}
{"line": 9, "result": "ok"}
{"line": 10, "result": "invalid_amount"}
{"line": 11, "result": "invalid_amount"}
{"line": 12, "result": "invalid_amount"}
{"line": 13, "result": "invalid_amount"}
{"line": 14, "result": "invalid_amount"}
{"line": 15, "result": "invalid_amount"}
{"line": 16, "result": "ok"}
{"line": 17, "result": "ok", "balance": "92233720368547758.07", "held": "0.00", "available": "92233720368547758.07"}
{"line": 18, "result": "ok", "balance": "9223372036854775807", "held": "0", "available": "9223372036854775807"}
{"line": 19, "result": "ok", "balance": "2.500", "held": "0.000", "available": "2.500"}
"#,
        1,
    );
}

/// "Fields compare by value: amounts that match the amount format as numbers
/// ("12.3" equals "12.30", even where both are invalid for the currency);
/// any other amount string as text. An omitted optional field equals its
/// default."
#[test]
fn replays_compare_fields_by_value() {
    check(
        r#"{"op":"open_account","account":5,"currency":"JPY"}
{"op":"deposit","id":1,"account":5,"amount":"1.0"}
{"op":"deposit","id":1,"account":5,"amount":"01"}
{"op":"deposit","id":1,"account":5,"amount":"1.1"}
{"op":"deposit","id":2,"account":5,"amount":"abc"}
{"op":"deposit","id":2,"account":5,"amount":"abc"}
{"op":"deposit","id":2,"account":5,"amount":"ABC"}
{"op":"deposit","id":3,"account":5,"amount":"1000"}
{"op":"authorize","id":4,"account":5,"amount":"10"}
{"op":"authorize","id":4,"account":5,"amount":"10","expires_in_ms":604800000}
{"op":"authorize","id":4,"account":5,"amount":"10","expires_in_ms":604800001}
{"op":"capture","id":5,"account":5,"auth":4,"amount":"3","final":false}
{"op":"capture","id":5,"account":5,"auth":4,"amount":"3"}
{"op":"capture","id":5,"account":5,"auth":4,"amount":"3.0","final":false}
{"op":"capture","id":6,"account":5,"auth":4,"final":true}
{"op":"capture","id":6,"account":5,"auth":4,"amount":null,"final":null}
{"op":"capture","id":6,"account":5,"auth":4,"amount":"7"}
{"op":"debit","id":6,"account":5,"amount":"7"}
{"op":"status","account":5,"id":1}
{"op":"status","account":5,"id":6}
{"op":"balance","account":5}
"#,
        r#"{"line": 1, "result": "ok"}
{"line": 2, "result": "invalid_amount"}
{"line": 3, "result": "invalid_amount", "replayed": true}
{"line": 4, "result": "id_conflict"}
{"line": 5, "result": "invalid_amount"}
{"line": 6, "result": "invalid_amount", "replayed": true}
{"line": 7, "result": "id_conflict"}
{"line": 8, "result": "ok"}
{"line": 9, "result": "ok"}
{"line": 10, "result": "ok", "replayed": true}
{"line": 11, "result": "id_conflict"}
{"line": 12, "result": "ok"}
{"line": 13, "result": "id_conflict"}
{"line": 14, "result": "ok", "replayed": true}
{"line": 15, "result": "ok"}
{"line": 16, "result": "ok", "replayed": true}
{"line": 17, "result": "id_conflict"}
{"line": 18, "result": "id_conflict"}
{"line": 19, "result": "ok", "op": "deposit", "status": "invalid_amount"}
{"line": 20, "result": "ok", "op": "capture", "status": "ok"}
{"line": 21, "result": "ok", "balance": "990", "held": "0", "available": "990"}
"#,
        2,
    );
}

/// "Fields compare by value: amounts that match the amount format above as
/// numbers (`"12.3"` equals `"12.30"`, even where both are invalid for the
/// currency)", in a currency with cents: the number decides, whether it is
/// a whole number of cents ("1.230" is invalid in USD but is 1.23) or not
/// ("12.345"). And "refunds of one original may repeat until they add up
/// to its amount", for a debit and for captures (one of them named by no
/// amount field), whatever replays came between.
#[test]
fn replays_compare_amounts_as_numbers_and_refunds_return_what_moved() {
    check(
        r#"{"op":"open_account","account":7,"currency":"USD"}
{"op":"deposit","id":1,"account":7,"amount":"100"}
{"op":"debit","id":2,"account":7,"amount":"12.3"}
{"op":"debit","id":2,"account":7,"amount":"12.30"}
{"op":"debit","id":2,"account":7,"amount":"12.31"}
{"op":"debit","id":3,"account":7,"amount":"12.345"}
{"op":"debit","id":3,"account":7,"amount":"12.3450"}
{"op":"debit","id":3,"account":7,"amount":"12.34"}
{"op":"debit","id":4,"account":7,"amount":"1.230"}
{"op":"debit","id":4,"account":7,"amount":"1.23"}
{"op":"debit","id":5,"account":7,"amount":"1.23"}
{"op":"debit","id":5,"account":7,"amount":"1.230"}
{"op":"debit","id":6,"account":7,"amount":"500"}
{"op":"debit","id":6,"account":7,"amount":"500.00"}
{"op":"refund","id":7,"account":7,"of":2,"amount":"12.31"}
{"op":"refund","id":8,"account":7,"of":2}
{"op":"authorize","id":9,"account":7,"amount":"20"}
{"op":"capture","id":10,"account":7,"auth":9,"amount":"5","final":false}
{"op":"capture","id":11,"account":7,"auth":9}
{"op":"refund","id":12,"account":7,"of":11,"amount":"15.01"}
{"op":"refund","id":13,"account":7,"of":11,"amount":"10"}
{"op":"refund","id":14,"account":7,"of":10}
{"op":"refund","id":15,"account":7,"of":11}
{"op":"refund","id":16,"account":7,"of":6}
{"op":"balance","account":7}
"#,
        r#"{"line": 1, "result": "ok"}
{"line": 2, "result": "ok"}
{"line": 3, "result": "ok"}
{"line": 4, "result": "ok", "replayed": true}
{"line": 5, "result": "id_conflict"}
{"line": 6, "result": "invalid_amount"}
{"line": 7, "result": "invalid_amount", "replayed": true}
{"line": 8, "result": "id_conflict"}
{"line": 9, "result": "invalid_amount"}
{"line": 10, "result": "invalid_amount", "replayed": true}
{"line": 11, "result": "ok"}
{"line": 12, "result": "ok", "replayed": true}
{"line": 13, "result": "insufficient_funds"}
{"line": 14, "result": "insufficient_funds", "replayed": true}
{"line": 15, "result": "exceeds_refundable"}
{"line": 16, "result": "ok"}
{"line": 17, "result": "ok"}
{"line": 18, "result": "ok"}
{"line": 19, "result": "ok"}
{"line": 20, "result": "exceeds_refundable"}
{"line": 21, "result": "ok"}
{"line": 22, "result": "ok"}
{"line": 23, "result": "ok"}
{"line": 24, "result": "not_refundable"}
{"line": 25, "result": "ok", "balance": "98.77", "held": "0.00", "available": "98.77"}
"#,
        2,
    );
}

/// "A hold ... expires when engine time reaches its creation time plus
/// that"; increments move the expiry to now + expires_in_ms.
#[test]
fn hold_expiry_boundary() {
    check(
        r#"{"op":"open_account","account":1,"currency":"USD"}
{"op":"deposit","id":1,"account":1,"amount":"100"}
{"op":"authorize","id":2,"account":1,"amount":"10","expires_in_ms":1000}
{"op":"authorize","id":3,"account":1,"amount":"20","expires_in_ms":1000}
{"op":"advance_clock","ms":999}
{"op":"balance","account":1}
{"op":"increment","id":4,"account":1,"auth":3,"amount":"1","expires_in_ms":500}
{"op":"advance_clock","ms":1}
{"op":"capture","id":5,"account":1,"auth":2}
{"op":"balance","account":1}
{"op":"advance_clock","ms":498}
{"op":"capture","id":6,"account":1,"auth":3,"amount":"5","final":false}
{"op":"advance_clock","ms":1}
{"op":"void","id":7,"account":1,"auth":3}
{"op":"increment","id":8,"account":1,"auth":3,"amount":"1"}
{"op":"balance","account":1}
"#,
        r#"{"line": 1, "result": "ok"}
{"line": 2, "result": "ok"}
{"line": 3, "result": "ok"}
{"line": 4, "result": "ok"}
{"line": 5, "result": "ok"}
{"line": 6, "result": "ok", "balance": "100.00", "held": "30.00", "available": "70.00"}
{"line": 7, "result": "ok"}
{"line": 8, "result": "ok"}
{"line": 9, "result": "auth_expired"}
{"line": 10, "result": "ok", "balance": "100.00", "held": "21.00", "available": "79.00"}
{"line": 11, "result": "ok"}
{"line": 12, "result": "ok"}
{"line": 13, "result": "ok"}
{"line": 14, "result": "auth_expired"}
{"line": 15, "result": "auth_expired"}
{"line": 16, "result": "ok", "balance": "95.00", "held": "0.00", "available": "95.00"}
"#,
        1,
    );
}

/// Check order for debit: `invalid_amount` before `account_frozen` before
/// `limit_exceeded` before risk routing before `insufficient_funds`; the
/// 63-bit check comes last.
#[test]
fn debit_check_order_and_overflow_last() {
    check(
        r#"{"op":"open_account","account":9,"currency":"USD","overdraft":"92233720368547758.07"}
{"op":"set_limits","account":9,"per_txn":"5"}
{"op":"freeze","account":9}
{"op":"debit","id":1,"account":9,"amount":"0"}
{"op":"debit","id":2,"account":9,"amount":"6"}
{"op":"unfreeze","account":9}
{"op":"debit","id":3,"account":9,"amount":"6"}
{"op":"set_limits","account":9}
{"op":"authorize","id":4,"account":9,"amount":"92233720368547758.07"}
{"op":"authorize","id":5,"account":9,"amount":"0.01"}
{"op":"deposit","id":6,"account":9,"amount":"1"}
{"op":"authorize","id":7,"account":9,"amount":"0.01"}
{"op":"balance","account":9}
"#,
        r#"{"line": 1, "result": "ok"}
{"line": 2, "result": "ok"}
{"line": 3, "result": "ok"}
{"line": 4, "result": "invalid_amount"}
{"line": 5, "result": "account_frozen"}
{"line": 6, "result": "ok"}
{"line": 7, "result": "limit_exceeded"}
{"line": 8, "result": "ok"}
{"line": 9, "result": "ok"}
{"line": 10, "result": "insufficient_funds"}
{"line": 11, "result": "ok"}
{"line": 12, "result": "invalid_amount"}
{"line": 13, "result": "ok", "balance": "1.00", "held": "92233720368547758.07", "available": "-92233720368547757.07"}
"#,
        3,
    );
}

/// Velocity counts ok debits of at most `below` with now - t < window_ms,
/// only since the last set_limits; daily rolls over at the UTC day.
#[test]
fn velocity_window_edges_and_daily_rollover() {
    check(
        r#"{"op":"open_account","account":3,"currency":"EUR"}
{"op":"deposit","id":1,"account":3,"amount":"1000"}
{"op":"advance_clock","ms":86399000}
{"op":"debit","id":2,"account":3,"amount":"40"}
{"op":"set_limits","account":3,"daily":"100","velocity":{"max":1,"window_ms":1000,"below":"5"}}
{"op":"debit","id":3,"account":3,"amount":"5"}
{"op":"advance_clock","ms":999}
{"op":"debit","id":4,"account":3,"amount":"5"}
{"op":"debit","id":5,"account":3,"amount":"5.01"}
{"op":"debit","id":6,"account":3,"amount":"50.00"}
{"op":"advance_clock","ms":1}
{"op":"debit","id":7,"account":3,"amount":"95"}
{"op":"debit","id":8,"account":3,"amount":"5"}
{"op":"debit","id":9,"account":3,"amount":"0.01"}
{"op":"balance","account":3}
"#,
        r#"{"line": 1, "result": "ok"}
{"line": 2, "result": "ok"}
{"line": 3, "result": "ok"}
{"line": 4, "result": "ok"}
{"line": 5, "result": "ok"}
{"line": 6, "result": "ok"}
{"line": 7, "result": "ok"}
{"line": 8, "result": "held_for_review"}
{"line": 9, "result": "ok"}
{"line": 10, "result": "limit_exceeded"}
{"line": 11, "result": "ok"}
{"line": 12, "result": "ok"}
{"line": 13, "result": "ok"}
{"line": 14, "result": "limit_exceeded"}
{"line": 15, "result": "ok", "balance": "849.99", "held": "5.00", "available": "844.99"}
"#,
        2,
    );
}

/// Refunds: "`of` names an ok debit or an ok capture on the same account";
/// they may repeat until they add up to its amount; frozen accounts take them.
#[test]
fn refunds_and_their_limits() {
    check(
        r#"{"op":"open_account","account":4,"currency":"KWD"}
{"op":"open_account","account":5,"currency":"KWD"}
{"op":"deposit","id":1,"account":4,"amount":"10"}
{"op":"debit","id":2,"account":4,"amount":"3.5"}
{"op":"refund","id":3,"account":5,"of":2}
{"op":"refund","id":4,"account":4,"of":1}
{"op":"freeze","account":4}
{"op":"refund","id":5,"account":4,"of":2,"amount":"3.501"}
{"op":"refund","id":6,"account":4,"of":2,"amount":"1.0000"}
{"op":"refund","id":7,"account":4,"of":2,"amount":"1"}
{"op":"refund","id":8,"account":4,"of":2}
{"op":"refund","id":9,"account":4,"of":2}
{"op":"refund","id":10,"account":4,"of":2,"amount":"0"}
{"op":"refund","id":11,"account":4,"of":8}
{"op":"balance","account":4}
"#,
        r#"{"line": 1, "result": "ok"}
{"line": 2, "result": "ok"}
{"line": 3, "result": "ok"}
{"line": 4, "result": "ok"}
{"line": 5, "result": "not_refundable"}
{"line": 6, "result": "not_refundable"}
{"line": 7, "result": "ok"}
{"line": 8, "result": "exceeds_refundable"}
{"line": 9, "result": "invalid_amount"}
{"line": 10, "result": "ok"}
{"line": 11, "result": "ok"}
{"line": 12, "result": "exceeds_refundable"}
{"line": 13, "result": "invalid_amount"}
{"line": 14, "result": "not_refundable"}
{"line": 15, "result": "ok", "balance": "10.000", "held": "0.000", "available": "10.000"}
"#,
        1,
    );
}

/// Malformed lines are decided before any rejection and store nothing; fields
/// an op does not name are ignored; an optional `null` is omitted.
#[test]
fn malformed_lines_store_nothing() {
    check(
        r#"{"op":"open_account","account":1,"currency":"GBP","overdraft":null,"amount":7}
{"op":"deposit","id":1,"account":1,"amount":5}
{"op":"deposit","id":1,"account":1,"amount":"5","amount":"5"}
{"op":"deposit","id":1,"account":18446744073709551616,"amount":"5"}
{"op":"deposit","id":-1,"account":1,"amount":"5"}
{"op":"deposit","id":1,"account":1}
{"op":"deposit","id":1,"account":1,"amount":null}
{"op":"Deposit","id":1,"account":1,"amount":"5"}
{"op":"advance_clock","ms":10000000000001}
{"op":"authorize","id":1,"account":1,"amount":"5","expires_in_ms":0}
{"op":"set_limits","account":1,"velocity":{"max":1001,"window_ms":1,"below":"1"}}
{"op":"capture","id":1,"account":1,"auth":2,"final":"false"}
["op","deposit"]
{"op":"deposit","id":1,"account":1,"amount":"5","auth":"junk","final":3}
{"op":"deposit","id":18446744073709551615,"account":1,"amount":"5"}
{"op":"status","account":1,"id":1}
{"op":"balance","account":1}
"#,
        r#"{"line": 1, "result": "ok"}
{"line": 2, "result": "malformed"}
{"line": 3, "result": "malformed"}
{"line": 4, "result": "malformed"}
{"line": 5, "result": "malformed"}
{"line": 6, "result": "malformed"}
{"line": 7, "result": "malformed"}
{"line": 8, "result": "malformed"}
{"line": 9, "result": "malformed"}
{"line": 10, "result": "malformed"}
{"line": 11, "result": "malformed"}
{"line": 12, "result": "malformed"}
{"line": 13, "result": "malformed"}
{"line": 14, "result": "ok"}
{"line": 15, "result": "ok"}
{"line": 16, "result": "ok", "op": "deposit", "status": "ok"}
{"line": 17, "result": "ok", "balance": "10.00", "held": "0.00", "available": "10.00"}
"#,
        2,
    );
}

/// "Keys are remembered ... for at least the dedup window after they were
/// first processed": a replay one millisecond inside the window must still
/// be recognised, whatever the engine does after it.
#[test]
fn dedup_window_lower_bound() {
    check_with_window(
        r#"{"op":"open_account","account":1,"currency":"USD"}
{"op":"deposit","id":1,"account":1,"amount":"10"}
{"op":"advance_clock","ms":9999}
{"op":"deposit","id":1,"account":1,"amount":"10.0"}
{"op":"deposit","id":1,"account":1,"amount":"11"}
{"op":"status","account":1,"id":1}
{"op":"balance","account":1}
"#,
        r#"{"line": 1, "result": "ok"}
{"line": 2, "result": "ok"}
{"line": 3, "result": "ok"}
{"line": 4, "result": "ok", "replayed": true}
{"line": 5, "result": "id_conflict"}
{"line": 6, "result": "ok", "op": "deposit", "status": "ok"}
{"line": 7, "result": "ok", "balance": "10.00", "held": "0.00", "available": "10.00"}
"#,
        2,
        10_000,
    );
}

// ---------------------------------------------------------------------------
// Merchants and clearing (SPEC's third section).
// ---------------------------------------------------------------------------

/// "open_merchant: merchant_exists, unsupported_currency"; "fee_bps is an
/// integer 0 <= fee_bps <= 10,000 (else the line is malformed)"; "a second
/// open_merchant with the same id is merchant_exists, whatever its fields";
/// "merchant: unknown_merchant"; a new merchant has nothing pending.
#[test]
fn open_merchant_and_its_figures() {
    let requests = r#"{"op":"open_merchant","merchant":1,"currency":"USD","fee_bps":250}
{"op":"open_merchant","merchant":1,"currency":"XYZ"}
{"op":"open_merchant","merchant":2,"currency":"usd"}
{"op":"open_merchant","merchant":2,"currency":"JPY","fee_bps":10001}
{"op":"open_merchant","merchant":2,"currency":"JPY","fee_bps":-1}
{"op":"open_merchant","merchant":2,"currency":"JPY","fee_bps":"5"}
{"op":"open_merchant","merchant":2,"currency":"KWD","fee_bps":10000}
{"op":"merchant","merchant":1}
{"op":"merchant","merchant":2}
{"op":"merchant","merchant":3}
{"op":"merchant","merchant":"1"}
{"op":"open_merchant","merchant":3,"currency":"JPY","fee_bps":null}
{"op":"merchant","merchant":3}
"#;
    let outcomes = r#"{"line": 1, "result": "ok"}
{"line": 2, "result": "merchant_exists"}
{"line": 3, "result": "unsupported_currency"}
{"line": 4, "result": "malformed"}
{"line": 5, "result": "malformed"}
{"line": 6, "result": "malformed"}
{"line": 7, "result": "ok"}
{"line": 8, "result": "ok", "currency": "USD", "fee_bps": 250, "batches": 0, "pending": "0.00", "settled_net": "0.00", "fees": "0.00"}
{"line": 9, "result": "ok", "currency": "KWD", "fee_bps": 10000, "batches": 0, "pending": "0.000", "settled_net": "0.000", "fees": "0.000"}
{"line": 10, "result": "unknown_merchant"}
{"line": 11, "result": "malformed"}
{"line": 12, "result": "ok"}
{"line": 13, "result": "ok", "currency": "JPY", "fee_bps": 0, "batches": 0, "pending": "0", "settled_net": "0", "fees": "0"}
"#;
    for shards in [1, 2, 4] {
        check(requests, outcomes, shards);
    }
}

/// "an ok debit naming a merchant clears its amount; an ok capture of a
/// hold whose authorize named a merchant clears the amount it captured (so
/// does the capture of a held_for_review debit that named one); an ok
/// refund of an original that cleared to a merchant is charged back";
/// "unknown_merchant, currency_mismatch inserted right after
/// unknown_account"; "The merchant field takes part in replays like any
/// field (omitted differs from given)"; pending sums every shard's accounts.
#[test]
fn clearing_and_charge_backs_sum_over_shards() {
    let requests = r#"{"op":"open_merchant","merchant":7,"currency":"USD","fee_bps":100}
{"op":"open_merchant","merchant":8,"currency":"EUR"}
{"op":"open_account","account":1,"currency":"USD"}
{"op":"open_account","account":2,"currency":"USD"}
{"op":"open_account","account":3,"currency":"USD"}
{"op":"deposit","id":1,"account":1,"amount":"100"}
{"op":"deposit","id":1,"account":2,"amount":"100"}
{"op":"deposit","id":1,"account":3,"amount":"100"}
{"op":"debit","id":2,"account":1,"amount":"10.00","merchant":7}
{"op":"debit","id":2,"account":2,"amount":"20.00","merchant":7}
{"op":"debit","id":2,"account":3,"amount":"5.00"}
{"op":"debit","id":3,"account":1,"amount":"1.00","merchant":9}
{"op":"debit","id":4,"account":1,"amount":"1.00","merchant":8}
{"op":"debit","id":5,"account":1,"amount":"1.001","merchant":9}
{"op":"debit","id":6,"account":1,"amount":"500","merchant":7}
{"op":"merchant","merchant":7}
{"op":"debit","id":2,"account":1,"amount":"10","merchant":7}
{"op":"debit","id":2,"account":1,"amount":"10"}
{"op":"debit","id":2,"account":1,"amount":"10","merchant":8}
{"op":"debit","id":2,"account":3,"amount":"5","merchant":7}
{"op":"status","account":1,"id":3}
{"op":"authorize","id":7,"account":3,"amount":"30","merchant":7}
{"op":"capture","id":8,"account":3,"auth":7,"amount":"12.50","final":false}
{"op":"capture","id":9,"account":3,"auth":7,"amount":"2.50"}
{"op":"merchant","merchant":7}
{"op":"refund","id":10,"account":2,"of":2,"amount":"4"}
{"op":"refund","id":11,"account":3,"of":8}
{"op":"refund","id":12,"account":3,"of":2}
{"op":"merchant","merchant":7}
{"op":"balance","account":3}
{"op":"set_limits","account":2,"review_above":"50"}
{"op":"debit","id":13,"account":2,"amount":"60","merchant":7}
{"op":"merchant","merchant":7}
{"op":"capture","id":14,"account":2,"auth":13}
{"op":"merchant","merchant":7}
{"op":"authorize","id":15,"account":1,"amount":"1","merchant":8}
{"op":"authorize","id":16,"account":1,"amount":"1","merchant":70}
"#;
    let outcomes = r#"{"line": 1, "result": "ok"}
{"line": 2, "result": "ok"}
{"line": 3, "result": "ok"}
{"line": 4, "result": "ok"}
{"line": 5, "result": "ok"}
{"line": 6, "result": "ok"}
{"line": 7, "result": "ok"}
{"line": 8, "result": "ok"}
{"line": 9, "result": "ok"}
{"line": 10, "result": "ok"}
{"line": 11, "result": "ok"}
{"line": 12, "result": "unknown_merchant"}
{"line": 13, "result": "currency_mismatch"}
{"line": 14, "result": "unknown_merchant"}
{"line": 15, "result": "insufficient_funds"}
{"line": 16, "result": "ok", "currency": "USD", "fee_bps": 100, "batches": 0, "pending": "30.00", "settled_net": "0.00", "fees": "0.00"}
{"line": 17, "result": "ok", "replayed": true}
{"line": 18, "result": "id_conflict"}
{"line": 19, "result": "id_conflict"}
{"line": 20, "result": "id_conflict"}
{"line": 21, "result": "ok", "op": "debit", "status": "unknown_merchant"}
{"line": 22, "result": "ok"}
{"line": 23, "result": "ok"}
{"line": 24, "result": "ok"}
{"line": 25, "result": "ok", "currency": "USD", "fee_bps": 100, "batches": 0, "pending": "45.00", "settled_net": "0.00", "fees": "0.00"}
{"line": 26, "result": "ok"}
{"line": 27, "result": "ok"}
{"line": 28, "result": "ok"}
{"line": 29, "result": "ok", "currency": "USD", "fee_bps": 100, "batches": 0, "pending": "28.50", "settled_net": "0.00", "fees": "0.00"}
{"line": 30, "result": "ok", "balance": "97.50", "held": "0.00", "available": "97.50"}
{"line": 31, "result": "ok"}
{"line": 32, "result": "held_for_review"}
{"line": 33, "result": "ok", "currency": "USD", "fee_bps": 100, "batches": 0, "pending": "28.50", "settled_net": "0.00", "fees": "0.00"}
{"line": 34, "result": "ok"}
{"line": 35, "result": "ok", "currency": "USD", "fee_bps": 100, "batches": 0, "pending": "88.50", "settled_net": "0.00", "fees": "0.00"}
{"line": 36, "result": "currency_mismatch"}
{"line": 37, "result": "unknown_merchant"}
"#;
    for shards in [1, 2, 4] {
        check(requests, outcomes, shards);
    }
}

/// SPEC, "Merchants and clearing": "`settle` closes the merchant's
/// current batch ... `batch` = 1 for the merchant's first ok settle, then
/// 2, 3, ...; `count` = the number of clearings ... `fee` = gross x fee_bps
/// / 10,000 in minor units, rounded down; `net = gross - refunded - fee`,
/// which may be negative"; "A batch with no clearing and no charge-back is
/// `nothing_to_settle`"; "a key seen before always replays (never
/// `id_conflict`)"; a charge-back "counts against the merchant's current
/// batch, whichever batch the original was in"; "A settle's
/// `unknown_merchant` is not remembered".
#[test]
fn settle_numbers_batches_and_replays_over_shards() {
    let requests = r#"{"op":"open_merchant","merchant":7,"currency":"USD","fee_bps":250}
{"op":"open_merchant","merchant":8,"currency":"JPY"}
{"op":"open_account","account":1,"currency":"USD"}
{"op":"open_account","account":2,"currency":"USD"}
{"op":"open_account","account":3,"currency":"USD"}
{"op":"open_account","account":4,"currency":"JPY"}
{"op":"deposit","id":1,"account":1,"amount":"100"}
{"op":"deposit","id":1,"account":2,"amount":"100"}
{"op":"deposit","id":1,"account":3,"amount":"100"}
{"op":"deposit","id":1,"account":4,"amount":"1000"}
{"op":"settle","id":1,"merchant":7}
{"op":"settle","id":1,"merchant":7}
{"op":"debit","id":2,"account":1,"amount":"10.01","merchant":7}
{"op":"debit","id":2,"account":2,"amount":"20.00","merchant":7}
{"op":"authorize","id":3,"account":3,"amount":"30","merchant":7}
{"op":"capture","id":4,"account":3,"auth":3,"amount":"12.34","final":false}
{"op":"settle","id":1,"merchant":7}
{"op":"settle","id":2,"merchant":7}
{"op":"refund","id":5,"account":1,"of":2,"amount":"5"}
{"op":"capture","id":6,"account":3,"auth":3}
{"op":"merchant","merchant":7}
{"op":"settle","id":2,"merchant":7}
{"op":"settle","id":3,"merchant":7}
{"op":"refund","id":7,"account":2,"of":2}
{"op":"settle","id":4,"merchant":7}
{"op":"merchant","merchant":7}
{"op":"settle","id":1,"merchant":99}
{"op":"settle","id":1,"merchant":8}
{"op":"debit","id":8,"account":4,"amount":"7","merchant":8}
{"op":"settle","id":1,"merchant":8}
{"op":"settle","id":2,"merchant":8}
{"op":"merchant","merchant":8}
{"op":"balance","account":1}
{"op":"settle","id":99,"merchant":99}
{"op":"open_merchant","merchant":99,"currency":"USD"}
{"op":"settle","id":99,"merchant":99}
"#;
    let outcomes = r#"{"line": 1, "result": "ok"}
{"line": 2, "result": "ok"}
{"line": 3, "result": "ok"}
{"line": 4, "result": "ok"}
{"line": 5, "result": "ok"}
{"line": 6, "result": "ok"}
{"line": 7, "result": "ok"}
{"line": 8, "result": "ok"}
{"line": 9, "result": "ok"}
{"line": 10, "result": "ok"}
{"line": 11, "result": "nothing_to_settle"}
{"line": 12, "result": "nothing_to_settle", "replayed": true}
{"line": 13, "result": "ok"}
{"line": 14, "result": "ok"}
{"line": 15, "result": "ok"}
{"line": 16, "result": "ok"}
{"line": 17, "result": "nothing_to_settle", "replayed": true}
{"line": 18, "result": "ok", "batch": 1, "count": 3, "gross": "42.35", "refunded": "0.00", "fee": "1.05", "net": "41.30"}
{"line": 19, "result": "ok"}
{"line": 20, "result": "ok"}
{"line": 21, "result": "ok", "currency": "USD", "fee_bps": 250, "batches": 1, "pending": "12.66", "settled_net": "41.30", "fees": "1.05"}
{"line": 22, "result": "ok", "replayed": true, "batch": 1, "count": 3, "gross": "42.35", "refunded": "0.00", "fee": "1.05", "net": "41.30"}
{"line": 23, "result": "ok", "batch": 2, "count": 1, "gross": "17.66", "refunded": "5.00", "fee": "0.44", "net": "12.22"}
{"line": 24, "result": "ok"}
{"line": 25, "result": "ok", "batch": 3, "count": 0, "gross": "0.00", "refunded": "20.00", "fee": "0.00", "net": "-20.00"}
{"line": 26, "result": "ok", "currency": "USD", "fee_bps": 250, "batches": 3, "pending": "0.00", "settled_net": "33.52", "fees": "1.49"}
{"line": 27, "result": "unknown_merchant"}
{"line": 28, "result": "nothing_to_settle"}
{"line": 29, "result": "ok"}
{"line": 30, "result": "nothing_to_settle", "replayed": true}
{"line": 31, "result": "ok", "batch": 1, "count": 1, "gross": "7", "refunded": "0", "fee": "0", "net": "7"}
{"line": 32, "result": "ok", "currency": "JPY", "fee_bps": 0, "batches": 1, "pending": "0", "settled_net": "7", "fees": "0"}
{"line": 33, "result": "ok", "balance": "94.99", "held": "0.00", "available": "94.99"}
{"line": 34, "result": "unknown_merchant"}
{"line": 35, "result": "ok"}
{"line": 36, "result": "nothing_to_settle"}
"#;
    for shards in [1, 2, 4] {
        check(requests, outcomes, shards);
    }
}

/// SPEC, "Batch debits": `queue_debit` "checks neither `account_frozen`,
/// limits, risk routing nor funds"; `run_batch` "applies every debit queued
/// before it, the queued debits of one account in the order they were
/// queued, each as if a `debit` with the same id, account, amount and
/// merchant arrived at that moment"; "replays of its key return `queued`,
/// whatever happened since"; "`status` of a queued debit's key ... reports
/// `queued` until its batch applies it, then the result it got there"; "A
/// queued debit that its batch applied with `ok` is an ok debit for
/// `refund`; one still queued, rejected, or `held_for_review` ... is
/// `not_refundable`".
#[test]
fn queued_debits_wait_for_their_batch() {
    let requests = r#"{"op":"open_merchant","merchant":7,"currency":"USD"}
{"op":"open_account","account":1,"currency":"USD"}
{"op":"open_account","account":2,"currency":"USD"}
{"op":"deposit","id":1,"account":1,"amount":"50"}
{"op":"deposit","id":1,"account":2,"amount":"50"}
{"op":"queue_debit","id":2,"account":1,"amount":"30","merchant":7}
{"op":"queue_debit","id":3,"account":1,"amount":"30","merchant":7}
{"op":"queue_debit","id":4,"account":2,"amount":"10"}
{"op":"queue_debit","id":5,"account":2,"amount":"1.001"}
{"op":"queue_debit","id":6,"account":2,"amount":"10","merchant":9}
{"op":"queue_debit","id":2,"account":1,"amount":"30","merchant":7}
{"op":"queue_debit","id":2,"account":1,"amount":"30"}
{"op":"status","account":1,"id":2}
{"op":"balance","account":1}
{"op":"freeze","account":2}
{"op":"set_limits","account":1,"review_above":"25"}
{"op":"refund","id":14,"account":1,"of":3}
{"op":"run_batch"}
{"op":"status","account":1,"id":2}
{"op":"status","account":1,"id":3}
{"op":"status","account":2,"id":4}
{"op":"queue_debit","id":2,"account":1,"amount":"30","merchant":7}
{"op":"merchant","merchant":7}
{"op":"capture","id":7,"account":1,"auth":2}
{"op":"merchant","merchant":7}
{"op":"unfreeze","account":2}
{"op":"set_limits","account":1}
{"op":"queue_debit","id":8,"account":1,"amount":"20","merchant":7}
{"op":"queue_debit","id":9,"account":2,"amount":"50"}
{"op":"queue_debit","id":10,"account":2,"amount":"0.01"}
{"op":"run_batch"}
{"op":"run_batch"}
{"op":"refund","id":11,"account":1,"of":8}
{"op":"refund","id":12,"account":2,"of":10}
{"op":"refund","id":13,"account":1,"of":2}
{"op":"merchant","merchant":7}
{"op":"balance","account":1}
{"op":"balance","account":2}
{"op":"status","account":2,"id":9}
"#;
    let outcomes = r#"{"line": 1, "result": "ok"}
{"line": 2, "result": "ok"}
{"line": 3, "result": "ok"}
{"line": 4, "result": "ok"}
{"line": 5, "result": "ok"}
{"line": 6, "result": "queued"}
{"line": 7, "result": "queued"}
{"line": 8, "result": "queued"}
{"line": 9, "result": "invalid_amount"}
{"line": 10, "result": "unknown_merchant"}
{"line": 11, "result": "queued", "replayed": true}
{"line": 12, "result": "id_conflict"}
{"line": 13, "result": "ok", "op": "queue_debit", "status": "queued"}
{"line": 14, "result": "ok", "balance": "50.00", "held": "0.00", "available": "50.00"}
{"line": 15, "result": "ok"}
{"line": 16, "result": "ok"}
{"line": 17, "result": "not_refundable"}
{"line": 18, "result": "ok", "applied": 3, "ok": 0, "held": 1, "rejected": 2}
{"line": 19, "result": "ok", "op": "queue_debit", "status": "held_for_review"}
{"line": 20, "result": "ok", "op": "queue_debit", "status": "insufficient_funds"}
{"line": 21, "result": "ok", "op": "queue_debit", "status": "account_frozen"}
{"line": 22, "result": "queued", "replayed": true}
{"line": 23, "result": "ok", "currency": "USD", "fee_bps": 0, "batches": 0, "pending": "0.00", "settled_net": "0.00", "fees": "0.00"}
{"line": 24, "result": "ok"}
{"line": 25, "result": "ok", "currency": "USD", "fee_bps": 0, "batches": 0, "pending": "30.00", "settled_net": "0.00", "fees": "0.00"}
{"line": 26, "result": "ok"}
{"line": 27, "result": "ok"}
{"line": 28, "result": "queued"}
{"line": 29, "result": "queued"}
{"line": 30, "result": "queued"}
{"line": 31, "result": "ok", "applied": 3, "ok": 2, "held": 0, "rejected": 1}
{"line": 32, "result": "ok", "applied": 0, "ok": 0, "held": 0, "rejected": 0}
{"line": 33, "result": "ok"}
{"line": 34, "result": "not_refundable"}
{"line": 35, "result": "not_refundable"}
{"line": 36, "result": "ok", "currency": "USD", "fee_bps": 0, "batches": 0, "pending": "30.00", "settled_net": "0.00", "fees": "0.00"}
{"line": 37, "result": "ok", "balance": "20.00", "held": "0.00", "available": "20.00"}
{"line": 38, "result": "ok", "balance": "0.00", "held": "0.00", "available": "0.00"}
{"line": 39, "result": "ok", "op": "queue_debit", "status": "ok"}
"#;
    for shards in [1, 2, 4] {
        check(requests, outcomes, shards);
    }
}
