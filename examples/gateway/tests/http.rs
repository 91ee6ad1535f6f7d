//! Every route through a real HTTP client against the built binary: each
//! operation's answers, retries, a key reused for another request, bad
//! input of every kind (which must change nothing), and `/metrics`.

mod common;

use std::collections::BTreeMap;

use common::{Gateway, Reply};

/// One request and what it must answer: status and `code` (an error
/// body's code, or an ok body's `result`).
struct Step {
    method: &'static str,
    path: &'static str,
    key: Option<u64>,
    body: &'static str,
    status: u16,
    code: &'static str,
}

const fn step(
    method: &'static str,
    path: &'static str,
    key: Option<u64>,
    body: &'static str,
    status: u16,
    code: &'static str,
) -> Step {
    Step {
        method,
        path,
        key,
        body,
        status,
        code,
    }
}

/// A JSON answer with this status and code; an error's with a message.
fn assert_answer(reply: &Reply, want: (u16, &str), what: &str) {
    assert_eq!((reply.status, reply.code()), want, "{what}: {}", reply.text);
    assert_eq!(reply.content_type, "application/json", "{what}");
    if reply.status >= 400 {
        let message = reply.body["error"]["message"].as_str().unwrap_or("");
        assert!(!message.is_empty(), "{what}: no message in {}", reply.text);
    }
}

/// The one helper every scripted request goes through: sends it, checks
/// status, code, content type and the replay header (a first answer is
/// never a replay), and returns the reply.
fn check(gateway: &Gateway, step: &Step) -> Reply {
    let reply = gateway.call(step.method, step.path, step.key, step.body);
    let what = format!(
        "{} {} key {:?} {}",
        step.method, step.path, step.key, step.body
    );
    assert_answer(&reply, (step.status, step.code), &what);
    assert!(!reply.replayed, "{what}: a first answer is not a replay");
    reply
}

/// A keyed POST that must answer `want` (status, code), through [`check`].
fn post(
    gateway: &Gateway,
    path: &'static str,
    key: u64,
    body: &'static str,
    want: (u16, &'static str),
) -> Reply {
    check(
        gateway,
        &step("POST", path, Some(key), body, want.0, want.1),
    )
}

fn assert_balance(gateway: &Gateway, account: u64, want: [&str; 3], after: &str) {
    assert_eq!(
        gateway.balance(account),
        want,
        "balance of {account} after {after}"
    );
}

#[test]
fn every_operation_answers_over_http() {
    let gateway = Gateway::start(&["--shards", "2", "--clock", "manual"]);
    #[rustfmt::skip]
    let steps = [
        // open_account
        step("POST", "/accounts", None, r#"{"account":1,"currency":"USD"}"#, 200, "ok"),
        step("POST", "/accounts", None, r#"{"account":1,"currency":"EUR"}"#, 409, "account_exists"),
        step("POST", "/accounts", None, r#"{"account":2,"currency":"usd"}"#, 422, "unsupported_currency"),
        step("POST", "/accounts", None, r#"{"account":3,"currency":"JPY","overdraft":"500"}"#, 200, "ok"),
        // deposit, debit
        step("POST", "/accounts/1/deposits", Some(1), r#"{"amount":"100.00"}"#, 200, "ok"),
        step("POST", "/accounts/1/debits", Some(2), r#"{"amount":"10"}"#, 200, "ok"),
        step("POST", "/accounts/1/debits", Some(3), r#"{"amount":"1.001"}"#, 422, "invalid_amount"),
        step("POST", "/accounts/1/debits", Some(4), r#"{"amount":"1000"}"#, 402, "insufficient_funds"),
        step("POST", "/accounts/77/debits", Some(5), r#"{"amount":"1"}"#, 404, "unknown_account"),
        step("POST", "/accounts/3/debits", Some(1), r#"{"amount":"400"}"#, 200, "ok"),
        // authorize, increment, partial and final capture
        step("POST", "/accounts/1/holds", Some(10), r#"{"amount":"50","expires_in_ms":60000}"#, 200, "ok"),
        step("POST", "/accounts/1/holds/10/increments", Some(11), r#"{"amount":"5"}"#, 200, "ok"),
        step("POST", "/accounts/1/holds/10/captures", Some(12), r#"{"amount":"20","final":false}"#, 200, "ok"),
        step("POST", "/accounts/1/holds/10/increments", Some(13), r#"{"amount":"5"}"#, 409, "capture_started"),
        step("POST", "/accounts/1/holds/10/captures", Some(14), r#"{"amount":"99"}"#, 422, "exceeds_authorized"),
        step("POST", "/accounts/1/holds/10/captures", Some(15), "", 200, "ok"),
        step("POST", "/accounts/1/holds/10/captures", Some(16), "", 409, "auth_not_active"),
        step("POST", "/accounts/1/holds/99/captures", Some(17), "", 404, "auth_not_found"),
        // authorize and void
        step("POST", "/accounts/1/holds", Some(20), r#"{"amount":"7"}"#, 200, "ok"),
        step("POST", "/accounts/1/holds/20/void", Some(21), "", 200, "ok"),
        step("POST", "/accounts/1/holds/20/void", Some(22), "{}", 409, "auth_not_active"),
        // refunds: of the debit (key 2), of the capture (key 15)
        step("POST", "/accounts/1/refunds", Some(30), r#"{"of":2,"amount":"4"}"#, 200, "ok"),
        step("POST", "/accounts/1/refunds", Some(31), r#"{"of":2,"amount":"7"}"#, 422, "exceeds_refundable"),
        step("POST", "/accounts/1/refunds", Some(32), r#"{"of":1}"#, 422, "not_refundable"),
        step("POST", "/accounts/1/refunds", Some(33), r#"{"of":15}"#, 200, "ok"),
        // limits and risk routing
        step("PUT", "/accounts/1/limits", None, r#"{"per_txn":"30","review_above":"20"}"#, 200, "ok"),
        step("PUT", "/accounts/1/limits", None, r#"{"daily":"0"}"#, 422, "invalid_amount"),
        step("POST", "/accounts/1/debits", Some(40), r#"{"amount":"25"}"#, 202, "held_for_review"),
        step("POST", "/accounts/1/debits", Some(41), r#"{"amount":"31"}"#, 402, "limit_exceeded"),
        step("PUT", "/accounts/1/limits", None, "{}", 200, "ok"),
        // freeze, unfreeze
        step("POST", "/accounts/1/freeze", None, "", 200, "ok"),
        step("POST", "/accounts/1/debits", Some(50), r#"{"amount":"1"}"#, 409, "account_frozen"),
        step("POST", "/accounts/1/deposits", Some(51), r#"{"amount":"1"}"#, 200, "ok"),
        step("POST", "/accounts/1/unfreeze", None, "", 200, "ok"),
        step("POST", "/accounts/1/debits", Some(52), r#"{"amount":"1"}"#, 200, "ok"),
        step("POST", "/accounts/77/freeze", None, "", 404, "unknown_account"),
        // hold expiry under the manual clock
        step("POST", "/accounts/1/holds", Some(60), r#"{"amount":"3","expires_in_ms":1000}"#, 200, "ok"),
        step("POST", "/clock/advance", None, r#"{"ms":1000}"#, 200, "ok"),
        step("POST", "/accounts/1/holds/60/captures", Some(61), "", 409, "auth_expired"),
        // status
        step("GET", "/accounts/1/transactions/9999", None, "", 404, "unknown_id"),
        step("GET", "/accounts/77/balance", None, "", 404, "unknown_account"),
    ];
    for step in &steps {
        check(&gateway, step);
    }
    // 100 - 10 - 20 - 35 (the rest of the hold) + 4 + 35 + 1 - 1 = 74;
    // the review hold (key 40) holds 25.
    assert_balance(&gateway, 1, ["74.00", "25.00", "49.00"], "the script");
    assert_balance(&gateway, 3, ["-400", "0", "-400"], "an overdraft");
    let status = |id: u64| {
        let reply = gateway.get(&format!("/accounts/1/transactions/{id}"));
        assert_eq!(reply.status, 200, "status {id}: {}", reply.text);
        (
            reply.body["op"].as_str().unwrap_or("").to_string(),
            reply.body["status"].as_str().unwrap_or("").to_string(),
        )
    };
    assert_eq!(status(2), ("debit".into(), "ok".into()));
    assert_eq!(status(4), ("debit".into(), "insufficient_funds".into()));
    assert_eq!(status(40), ("debit".into(), "held_for_review".into()));
    assert_eq!(status(21), ("void".into(), "ok".into()));
    // The review hold is captured like any hold (approve).
    let approve = step(
        "POST",
        "/accounts/1/holds/40/captures",
        Some(70),
        "",
        200,
        "ok",
    );
    check(&gateway, &approve);
    assert_balance(
        &gateway,
        1,
        ["49.00", "0.00", "49.00"],
        "approving the review",
    );
    let balance = gateway.get("/accounts/1/balance");
    assert_eq!(balance.body["currency"], "USD", "{}", balance.text);
}

#[test]
fn merchants_are_paid_and_charged_back_over_http() {
    let gateway = Gateway::start(&["--shards", "2"]);
    gateway.funded(1, "USD", "100");
    gateway.funded(2, "EUR", "100");
    #[rustfmt::skip]
    let steps = [
        step("POST", "/merchants", None, r#"{"merchant":9,"currency":"USD","fee_bps":250}"#, 200, "ok"),
        step("POST", "/merchants", None, r#"{"merchant":9,"currency":"EUR"}"#, 409, "merchant_exists"),
        step("POST", "/merchants", None, r#"{"merchant":8,"currency":"USD","fee_bps":10001}"#, 400, "malformed"),
        step("POST", "/accounts/1/debits", Some(2), r#"{"amount":"12.50","merchant":9}"#, 200, "ok"),
        step("POST", "/accounts/1/debits", Some(3), r#"{"amount":"1","merchant":7}"#, 404, "unknown_merchant"),
        step("POST", "/accounts/2/debits", Some(2), r#"{"amount":"1","merchant":9}"#, 422, "currency_mismatch"),
        step("POST", "/accounts/1/holds", Some(4), r#"{"amount":"10","merchant":9}"#, 200, "ok"),
        step("POST", "/accounts/1/holds/4/captures", Some(5), r#"{"amount":"6"}"#, 200, "ok"),
        step("POST", "/accounts/1/refunds", Some(6), r#"{"of":2,"amount":"2.50"}"#, 200, "ok"),
        step("GET", "/merchants/7", None, "", 404, "unknown_merchant"),
        step("GET", "/merchants/x", None, "", 400, "malformed"),
    ];
    for step in &steps {
        check(&gateway, step);
    }
    // Cleared 12.50 + 6 = 18.50, charged back 2.50.
    let figures = gateway.get("/merchants/9");
    assert_eq!(figures.status, 200, "{}", figures.text);
    let want = serde_json::json!({
        "result": "ok", "currency": "USD", "fee_bps": 250, "batches": 0,
        "pending": "16.00", "settled_net": "0.00", "fees": "0.00",
    });
    assert_eq!(figures.body, want, "{}", figures.text);
    assert_balance(&gateway, 1, ["84.00", "0.00", "84.00"], "paying a merchant");
    // A merchant's debit replays like any other.
    let again = gateway.call(
        "POST",
        "/accounts/1/debits",
        Some(2),
        r#"{"amount":"12.5","merchant":9}"#,
    );
    assert!(again.replayed && again.status == 200, "{again:?}");
    let conflict = r#"{"amount":"12.50"}"#;
    post(
        &gateway,
        "/accounts/1/debits",
        2,
        conflict,
        (422, "id_conflict"),
    );
}

/// Settlement and batch debits over HTTP: a settle keyed by its merchant,
/// its replay, an empty batch, queued debits and the run that applies them.
#[test]
fn merchants_settle_and_batches_run_over_http() {
    let gateway = Gateway::start(&["--shards", "2"]);
    gateway.funded(1, "USD", "100");
    gateway.funded(2, "USD", "100");
    #[rustfmt::skip]
    let steps = [
        step("POST", "/merchants", None, r#"{"merchant":9,"currency":"USD","fee_bps":250}"#, 200, "ok"),
        step("POST", "/merchants/9/settlements", Some(1), "", 409, "nothing_to_settle"),
        step("POST", "/accounts/1/debits", Some(2), r#"{"amount":"10.01","merchant":9}"#, 200, "ok"),
        step("POST", "/accounts/2/queued-debits", Some(2), r#"{"amount":"20","merchant":9}"#, 202, "queued"),
        step("POST", "/accounts/2/queued-debits", Some(3), r#"{"amount":"500"}"#, 202, "queued"),
        step("POST", "/accounts/2/queued-debits", Some(4), r#"{"amount":"1","merchant":8}"#, 404, "unknown_merchant"),
        step("POST", "/accounts/2/queued-debits", None, r#"{"amount":"1"}"#, 400, "missing_idempotency_key"),
        step("POST", "/merchants/8/settlements", Some(1), "", 404, "unknown_merchant"),
        step("POST", "/merchants/9/settlements", None, "", 400, "missing_idempotency_key"),
    ];
    for step in &steps {
        check(&gateway, step);
    }
    let batch = gateway.call("POST", "/batches", None, "");
    assert_eq!(batch.status, 200, "{}", batch.text);
    let want = serde_json::json!({"result": "ok", "applied": 2, "ok": 1, "held": 0, "rejected": 1});
    assert_eq!(batch.body, want, "{}", batch.text);
    let settled = post(&gateway, "/merchants/9/settlements", 2, "", (200, "ok"));
    let want = serde_json::json!({
        "result": "ok", "batch": 1, "count": 2, "gross": "30.01",
        "refunded": "0.00", "fee": "0.75", "net": "29.26",
    });
    assert_eq!(settled.body, want, "{}", settled.text);
    // A settle key always replays: same status, same figures.
    let again = gateway.call("POST", "/merchants/9/settlements", Some(2), "");
    assert!(again.replayed, "{again:?}");
    assert_eq!((again.status, &again.body), (200, &want), "{}", again.text);
    let empty = gateway.call("POST", "/merchants/9/settlements", Some(1), "");
    assert!(empty.replayed && empty.status == 409, "{empty:?}");
    let queued = gateway.call(
        "POST",
        "/accounts/2/queued-debits",
        Some(2),
        r#"{"amount":"20","merchant":9}"#,
    );
    assert!(queued.replayed && queued.status == 202, "{queued:?}");
    assert_balance(&gateway, 2, ["80.00", "0.00", "80.00"], "a batch run");
}

#[test]
fn closing_and_statements_over_http() {
    let gateway = Gateway::start(&["--shards", "2", "--clock", "manual"]);
    #[rustfmt::skip]
    let steps = [
        step("POST", "/accounts", None, r#"{"account":1,"currency":"USD","history":true}"#, 200, "ok"),
        step("POST", "/accounts", None, r#"{"account":2,"currency":"USD","history":"yes"}"#, 400, "malformed"),
        step("POST", "/accounts", None, r#"{"account":2,"currency":"USD"}"#, 200, "ok"),
        step("POST", "/accounts/1/deposits", Some(1), r#"{"amount":"100"}"#, 200, "ok"),
        step("POST", "/clock/advance", None, r#"{"ms":1500}"#, 200, "ok"),
        step("POST", "/accounts/1/debits", Some(2), r#"{"amount":"12.5"}"#, 200, "ok"),
        step("POST", "/accounts/1/debits", Some(3), r#"{"amount":"1000"}"#, 402, "insufficient_funds"),
        step("POST", "/accounts/1/close", None, "", 409, "account_not_empty"),
        step("GET", "/accounts/2/history", None, "", 404, "no_history"),
        step("GET", "/accounts/77/history", None, "", 404, "unknown_account"),
        step("GET", "/accounts/1/history?limit=0", None, "", 400, "malformed"),
        step("GET", "/accounts/1/history?limit=1001", None, "", 400, "malformed"),
        step("GET", "/accounts/1/history?before=0", None, "", 400, "malformed"),
        step("GET", "/accounts/1/history?limit=x", None, "", 400, "malformed"),
        step("GET", "/accounts/1/history?limit=1&limit=2", None, "", 400, "malformed"),
        step("POST", "/accounts/1/debits", Some(4), r#"{"amount":"87.50"}"#, 200, "ok"),
        step("POST", "/accounts/1/close", None, "", 200, "ok"),
        step("POST", "/accounts/1/close", None, "", 409, "account_closed"),
        step("POST", "/accounts/1/deposits", Some(5), r#"{"amount":"1"}"#, 409, "account_closed"),
        step("POST", "/accounts/1/freeze", None, "", 409, "account_closed"),
        step("POST", "/accounts/77/close", None, "", 404, "unknown_account"),
        step("POST", "/accounts/x/close", None, "", 400, "malformed"),
        step("POST", "/accounts", None, r#"{"account":1,"currency":"USD"}"#, 409, "account_exists"),
    ];
    for step in &steps {
        check(&gateway, step);
    }
    assert_balance(&gateway, 1, ["0.00", "0.00", "0.00"], "closing");
    let entry = |seq: u64, id: u64, op: &str, result: &str, time: u64| serde_json::json!({"seq": seq, "id": id, "op": op, "result": result, "time": time});
    let moved = |mut e: serde_json::Value, amount: &str, balance: &str| {
        e["amount"] = amount.into();
        e["balance"] = balance.into();
        e
    };
    let all = [
        entry(5, 5, "deposit", "account_closed", 1500),
        moved(entry(4, 4, "debit", "ok", 1500), "87.50", "0.00"),
        entry(3, 3, "debit", "insufficient_funds", 1500),
        moved(entry(2, 2, "debit", "ok", 1500), "12.50", "87.50"),
        moved(entry(1, 1, "deposit", "ok", 0), "100.00", "100.00"),
    ];
    for (query, want) in [
        ("", &all[..]),
        ("?limit=", &all[..]),
        ("?limit=2", &all[..2]),
        ("?limit=2&before=4", &all[2..4]),
        ("?before=2&other=x", &all[4..]),
        ("?before=1", &all[..0]),
        ("?limit=1000&before=18446744073709551615", &all[..]),
    ] {
        let reply = gateway.get(&format!("/accounts/1/history{query}"));
        assert_eq!(reply.status, 200, "history{query}: {}", reply.text);
        let want = serde_json::json!({"result": "ok", "entries": want});
        assert_eq!(reply.body, want, "history{query}");
    }
    // A replay of a key seen after the close replays.
    let again = gateway.call("POST", "/accounts/1/deposits", Some(5), r#"{"amount":"1"}"#);
    assert!(again.replayed && again.status == 409, "{again:?}");
}

#[test]
fn advance_clock_needs_the_manual_clock() {
    let gateway = Gateway::start(&["--shards", "1"]);
    check(
        &gateway,
        &step(
            "POST",
            "/clock/advance",
            None,
            r#"{"ms":5}"#,
            409,
            "clock_not_manual",
        ),
    );
}

#[test]
fn retries_replay_the_first_answer_and_move_money_once() {
    let gateway = Gateway::start(&["--shards", "2"]);
    gateway.funded(1, "EUR", "100");
    let debits = "/accounts/1/debits";
    let first = post(&gateway, debits, 2, r#"{"amount":"30.00"}"#, (200, "ok"));
    // The same request again, and with the amount written another way
    // (SPEC: amounts compare as numbers), and the key in its quoted and
    // zero-padded forms: every one is the same request.
    let retries: [(&str, &str); 4] = [
        ("2", r#"{"amount":"30.00"}"#),
        ("2", r#"{"amount":"30"}"#),
        ("\"2\"", r#"{"amount":"30.0"}"#),
        ("0002", r#"{"amount":"30.00"}"#),
    ];
    for (key, body) in retries {
        let headers = [("Idempotency-Key", key)];
        let reply = gateway
            .send("POST", debits, &headers, body)
            .expect("an answer");
        assert!(reply.replayed, "key {key} {body}: {reply:?}");
        assert_eq!(reply.status, first.status, "key {key} {body}");
        assert_eq!(reply.text, first.text, "key {key} {body}");
    }
    assert_balance(&gateway, 1, ["70.00", "0.00", "70.00"], "five sends");
    // A rejection replays too, whatever changed since.
    let big = r#"{"amount":"500"}"#;
    let refused = post(&gateway, debits, 3, big, (402, "insufficient_funds"));
    post(
        &gateway,
        "/accounts/1/deposits",
        4,
        r#"{"amount":"1000"}"#,
        (200, "ok"),
    );
    let again = gateway.call("POST", debits, Some(3), big);
    assert!(again.replayed, "{again:?}");
    assert_eq!((again.status, again.text), (refused.status, refused.text));
    assert_balance(&gateway, 1, ["1070.00", "0.00", "1070.00"], "a refusal");
    // Holds and captures replay as well.
    post(
        &gateway,
        "/accounts/1/holds",
        5,
        r#"{"amount":"10"}"#,
        (200, "ok"),
    );
    let captures = "/accounts/1/holds/5/captures";
    post(&gateway, captures, 6, r#"{"amount":"4"}"#, (200, "ok"));
    let again = gateway.call("POST", captures, Some(6), r#"{"amount":"4"}"#);
    assert!(again.replayed && again.status == 200, "{again:?}");
    assert_balance(&gateway, 1, ["1066.00", "0.00", "1066.00"], "a capture");
}

#[test]
fn a_key_reused_for_another_request_is_an_id_conflict() {
    let gateway = Gateway::start(&["--shards", "2"]);
    gateway.funded(1, "USD", "100");
    post(
        &gateway,
        "/accounts/1/debits",
        2,
        r#"{"amount":"30"}"#,
        (200, "ok"),
    );
    #[rustfmt::skip]
    let conflicts = [
        step("POST", "/accounts/1/debits", Some(2), r#"{"amount":"30.01"}"#, 422, "id_conflict"),
        step("POST", "/accounts/1/deposits", Some(2), r#"{"amount":"30"}"#, 422, "id_conflict"),
        step("POST", "/accounts/1/holds", Some(2), r#"{"amount":"30"}"#, 422, "id_conflict"),
        step("POST", "/accounts/1/refunds", Some(2), r#"{"of":2}"#, 422, "id_conflict"),
        // The deposit's key (1) too.
        step("POST", "/accounts/1/debits", Some(1), r#"{"amount":"100"}"#, 422, "id_conflict"),
    ];
    for conflict in &conflicts {
        check(&gateway, conflict);
        assert_balance(&gateway, 1, ["70.00", "0.00", "70.00"], conflict.body);
    }
    // Keys are per account: key 2 is new on account 2.
    gateway.funded(2, "USD", "5");
    post(
        &gateway,
        "/accounts/2/debits",
        2,
        r#"{"amount":"5"}"#,
        (200, "ok"),
    );
}

/// A request the gateway must refuse before the engine sees it.
struct Bad {
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn bad(
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Bad {
    Bad {
        method,
        path,
        headers,
        body: body.into(),
        status,
        code,
    }
}

#[test]
fn bad_input_is_a_json_4xx_and_changes_nothing() {
    let gateway = Gateway::start(&["--shards", "2"]);
    gateway.funded(1, "USD", "100");
    check(
        &gateway,
        &step(
            "POST",
            "/accounts/1/holds",
            Some(2),
            r#"{"amount":"10"}"#,
            200,
            "ok",
        ),
    );
    const KEY: &[(&str, &str)] = &[("Idempotency-Key", "50")];
    let debits = "/accounts/1/debits";
    #[rustfmt::skip]
    let cases = vec![
        bad("POST", debits, KEY, r#"{"amount":"1""#, 400, "invalid_json"),
        bad("POST", debits, KEY, r#"{"amount":"1"} {}"#, 400, "invalid_json"),
        bad("POST", debits, KEY, r#"[{"amount":"1"}]"#, 400, "invalid_json"),
        bad("POST", debits, KEY, "amount=1", 400, "invalid_json"),
        bad("POST", debits, KEY, &b"{\"amount\":\"1\xff\"}"[..], 400, "invalid_json"),
        bad("POST", debits, KEY, r#"{"amount":1}"#, 400, "malformed"),
        bad("POST", debits, KEY, r#"{"amount":null}"#, 400, "malformed"),
        bad("POST", debits, KEY, "{}", 400, "malformed"),
        bad("POST", debits, KEY, "", 400, "malformed"),
        bad("POST", debits, KEY, r#"{"amount":"1","amount":"2"}"#, 400, "malformed"),
        bad("POST", debits, KEY, r#"{"amount":"1","account":1}"#, 400, "malformed"),
        bad("POST", debits, KEY, r#"{"amount":"1","id":50}"#, 400, "malformed"),
        bad("POST", "/accounts/1/holds", KEY, r#"{"amount":"1","expires_in_ms":0}"#, 400, "malformed"),
        bad("POST", "/accounts/1/holds/2/captures", KEY, r#"{"final":"yes"}"#, 400, "malformed"),
        bad("POST", "/accounts/1/refunds", KEY, r#"{"of":-1}"#, 400, "malformed"),
        bad("PUT", "/accounts/1/limits", &[], r#"{"velocity":{"max":0,"window_ms":1,"below":"1"}}"#, 400, "malformed"),
        bad("POST", "/accounts", &[], r#"{"account":"1","currency":"USD"}"#, 400, "malformed"),
        bad("POST", debits, KEY, vec![b' '; 20 * 1024], 413, "body_too_large"),
        bad("POST", debits, &[], r#"{"amount":"1"}"#, 400, "missing_idempotency_key"),
        bad("POST", "/accounts/1/holds/2/void", &[], "", 400, "missing_idempotency_key"),
        bad("POST", debits, &[("Idempotency-Key", "abc")], r#"{"amount":"1"}"#, 400, "invalid_idempotency_key"),
        bad("POST", debits, &[("Idempotency-Key", "-1")], r#"{"amount":"1"}"#, 400, "invalid_idempotency_key"),
        bad("POST", debits, &[("Idempotency-Key", "1.5")], r#"{"amount":"1"}"#, 400, "invalid_idempotency_key"),
        bad("POST", debits, &[("Idempotency-Key", "")], r#"{"amount":"1"}"#, 400, "invalid_idempotency_key"),
        bad("POST", debits, &[("Idempotency-Key", "18446744073709551616")], r#"{"amount":"1"}"#, 400, "invalid_idempotency_key"),
        bad("POST", debits, &[("Idempotency-Key", "50"), ("Idempotency-Key", "51")], r#"{"amount":"1"}"#, 400, "invalid_idempotency_key"),
        bad("POST", "/accounts/abc/debits", KEY, r#"{"amount":"1"}"#, 400, "malformed"),
        bad("POST", "/accounts/-1/debits", KEY, r#"{"amount":"1"}"#, 400, "malformed"),
        bad("POST", "/accounts/18446744073709551616/debits", KEY, r#"{"amount":"1"}"#, 400, "malformed"),
        bad("POST", "/accounts/1/holds/x/captures", KEY, "", 400, "malformed"),
        bad("GET", "/accounts/1/transactions/1e3", &[], "", 400, "malformed"),
        bad("POST", "/accounts/1/debitz", KEY, r#"{"amount":"1"}"#, 404, "not_found"),
        bad("GET", "/", &[], "", 404, "not_found"),
        bad("GET", "/accounts/1/balance/extra", &[], "", 404, "not_found"),
        bad("DELETE", debits, KEY, r#"{"amount":"1"}"#, 405, "method_not_allowed"),
        bad("GET", debits, KEY, "", 405, "method_not_allowed"),
        bad("POST", "/accounts/1/limits", &[], "{}", 405, "method_not_allowed"),
        bad("PUT", "/accounts/1/balance", &[], "", 405, "method_not_allowed"),
    ];
    for case in &cases {
        let reply = gateway
            .send(case.method, case.path, case.headers, case.body.clone())
            .unwrap_or_else(|e| panic!("{} {}: {e}", case.method, case.path));
        let shown = String::from_utf8_lossy(&case.body);
        let what = format!(
            "{} {} {:?} {:.60}",
            case.method, case.path, case.headers, shown
        );
        assert_answer(&reply, (case.status, case.code), &what);
        if reply.status == 405 {
            assert!(reply.allow.is_some(), "{what}: 405 without Allow");
        }
        assert_balance(&gateway, 1, ["100.00", "10.00", "90.00"], &what);
    }
    // Nothing was remembered under key 50: it is new, and takes a debit.
    let reply = gateway.call("POST", debits, Some(50), r#"{"amount":"1"}"#);
    assert_eq!(
        (reply.status, reply.replayed),
        (200, false),
        "{}",
        reply.text
    );
    assert_balance(
        &gateway,
        1,
        ["99.00", "10.00", "89.00"],
        "the first good debit",
    );
    assert_eq!(gateway.get("/healthz").status, 200);
}

/// `/metrics` as `name{sorted labels}` → value, for every sample line.
fn scrape(gateway: &Gateway) -> BTreeMap<String, f64> {
    let reply = gateway.get("/metrics");
    assert_eq!(reply.status, 200);
    assert!(
        reply.content_type.starts_with("text/plain"),
        "{}",
        reply.content_type
    );
    let mut samples = BTreeMap::new();
    for line in reply.text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut labels: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
        labels.sort_unstable();
        let key = format!("{name}{{{}}}", labels.join(","));
        assert!(samples.insert(key, value).is_none(), "series twice: {line}");
    }
    samples
}

/// The sum over every series of `name` whose labels include all of `with`.
fn total(samples: &BTreeMap<String, f64>, name: &str, with: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(key, _)| key.starts_with(&format!("{name}{{")))
        .filter(|(key, _)| with.iter().all(|label| key.contains(label)))
        .map(|(_, value)| value)
        .sum()
}

#[test]
fn metrics_count_the_requests_made() {
    let gateway = Gateway::start(&["--shards", "2"]);
    for account in 1..=3 {
        gateway.funded(account, "USD", "10");
    }
    for id in 2..7 {
        post(
            &gateway,
            "/accounts/1/debits",
            id,
            r#"{"amount":"1"}"#,
            (200, "ok"),
        );
    }
    for _ in 0..2 {
        let reply = gateway.call("POST", "/accounts/1/debits", Some(2), r#"{"amount":"1"}"#);
        assert!(reply.replayed);
    }
    post(
        &gateway,
        "/accounts/2/debits",
        2,
        r#"{"amount":"99"}"#,
        (402, "insufficient_funds"),
    );
    post(
        &gateway,
        "/accounts/2/debits",
        3,
        "{",
        (400, "invalid_json"),
    );
    check(
        &gateway,
        &step("GET", "/nowhere", None, "", 404, "not_found"),
    );
    let engine_requests = 3 + 3 + 5 + 2 + 1; // opens, deposits, debits, replays, refusal
                                             // The workers publish their counts when they go quiet, a moment after
                                             // they answer: scrape until they have.
    let mut samples = scrape(&gateway);
    for _ in 0..100 {
        if total(&samples, "debitcore_shard_requests_total", &[]) >= engine_requests as f64 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        samples = scrape(&gateway);
    }
    let requests = |op: &str, result: &str| {
        let (op, result) = (format!("op=\"{op}\""), format!("result=\"{result}\""));
        total(&samples, "gateway_requests_total", &[&op, &result])
    };
    assert_eq!(requests("open_account", "ok"), 3.0);
    assert_eq!(requests("deposit", "ok"), 3.0);
    assert_eq!(requests("debit", "ok"), 7.0, "5 debits and 2 replays");
    assert_eq!(requests("debit", "insufficient_funds"), 1.0);
    assert_eq!(requests("debit", "invalid_json"), 1.0);
    assert_eq!(requests("none", "not_found"), 1.0);
    assert_eq!(total(&samples, "gateway_requests_total", &[]), 16.0);
    assert_eq!(
        total(&samples, "gateway_replays_total", &["op=\"debit\""]),
        2.0
    );
    let latency = "gateway_request_duration_seconds_count";
    assert_eq!(total(&samples, latency, &["op=\"debit\""]), 9.0);
    let buckets = "gateway_request_duration_seconds_bucket";
    assert_eq!(
        total(&samples, buckets, &["op=\"debit\"", "le=\"+Inf\""]),
        9.0
    );
    // The engine's own view, per shard.
    assert_eq!(total(&samples, "debitcore_shard_accounts", &[]), 3.0);
    assert_eq!(
        total(&samples, "debitcore_shard_keys", &[]),
        3.0 + 5.0 + 1.0
    );
    assert_eq!(
        total(&samples, "debitcore_shard_requests_total", &[]),
        engine_requests as f64
    );
    assert_eq!(
        total(&samples, "debitcore_shard_accounts", &["shard=\"0\""])
            + total(&samples, "debitcore_shard_accounts", &["shard=\"1\""]),
        3.0
    );
    assert!(total(&samples, "debitcore_shard_round_seconds_count", &[]) >= 1.0);
    assert_eq!(
        total(&samples, "debitcore_shard_log_syncs_total", &[]),
        0.0,
        "in memory"
    );
    assert!(samples.contains_key("debitcore_shard_queued_batches{shard=\"1\"}"));
}
