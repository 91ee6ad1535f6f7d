//! Model-based test: random request streams through `runner::run`, every
//! outcome checked against a reference model written from SPEC.md alone.
//!
//! Environment:
//! - `DEBITCORE_MODEL_SEED`: base seed (decimal or 0x-hex); each test
//!   derives its stream from it. Default: a fixed seed, so runs repeat.
//! - `DEBITCORE_MODEL_REQUESTS`: requests per test (default 40,000; three
//!   tests, so 120,000 per `cargo test`).
//! - `DEBITCORE_MODEL_AVOID=trailing-zeros`: the generator stops producing
//!   one class of input (amounts with more fraction digits than the
//!   currency's exponent, all of them zeros), to look for other bugs while a
//!   known one is open. The model itself never changes.
//! - `DEBITCORE_MODEL_TALLY=1`: print how often each op/result pair and each
//!   corner of SPEC came up.
//! - `DEBITCORE_MODEL_FEATURES=merchants,settle,batch,closing,history`
//!   (comma-separated; default: all of them): which parts of SPEC's section
//!   "Merchants and clearing, batch debits, closing accounts, history" the
//!   streams exercise, for an engine that has only some of them
//!   (`settle` brings `merchants`). The model always knows all of them; the
//!   coverage floor asks only for the outcomes of the features that are on.
//!
//! The three tests differ in stream, shard count (1, 2, 4) and dedup window
//! (24 h, 10 s, 60 s). Each also fails if its stream stops reaching the
//! outcomes and corners listed in `coverage_floor` and `CORNERS`.
//!
//! At every `merchant` query (the generator sends them after most settles
//! and batches) the engine's own figures must also satisfy SPEC's
//! per-merchant conservation: what the model saw cleared minus charged back
//! = `pending` + the sum of (gross - refunded) over the engine's settles,
//! each with gross - refunded = fee + net (`Ledger`).
//!
//! `reference_model_agrees_with_spec_streams` checks the model alone
//! against SPEC's example streams in tests/data/streams (merchants
//! included), and `generator_lines_mean_what_the_generator_thinks` reads
//! every generated line back through `model/parse.rs`.
//!
//! On a mismatch the test names the line, the request, what SPEC requires
//! and what the engine said, shows the model's view of the account and the
//! account's recent history, and writes the whole input stream to a file so
//! it can be replayed with `debitcore run --clock manual`.

mod common;
#[path = "model/generator.rs"]
mod generator;
#[path = "model/parse.rs"]
mod parse;
#[path = "model/reference.rs"]
mod reference;

use std::fmt::Write as _;
use std::time::Instant;

use common::{run_engine, Outcome, DEFAULT_DEDUP_WINDOW_MS};
use generator::GenLine;
use reference::{Model, Req};

const DEFAULT_SEED: u64 = 0x5EED_DEB1_7C0E_2026;
const DEFAULT_REQUESTS: usize = 40_000;

fn base_seed() -> u64 {
    match std::env::var("DEBITCORE_MODEL_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("DEBITCORE_MODEL_SEED={text:?} is not a u64"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

fn request_count() -> usize {
    match std::env::var("DEBITCORE_MODEL_REQUESTS") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("DEBITCORE_MODEL_REQUESTS={text:?} is not a count")),
        Err(_) => DEFAULT_REQUESTS,
    }
}

/// One test: a stream, a shard count and a dedup window.
struct Run {
    name: &'static str,
    stream: u64,
    shards: usize,
    dedup_window_ms: u64,
}

const RUNS: [Run; 3] = [
    Run {
        name: "model_one_shard_default_window",
        stream: 1,
        shards: 1,
        dedup_window_ms: DEFAULT_DEDUP_WINDOW_MS,
    },
    Run {
        name: "model_two_shards_short_window",
        stream: 2,
        shards: 2,
        dedup_window_ms: 10_000,
    },
    Run {
        name: "model_four_shards_minute_window",
        stream: 3,
        shards: 4,
        dedup_window_ms: 60_000,
    },
];

#[test]
fn model_one_shard_default_window() {
    check_run(&RUNS[0]);
}

#[test]
fn model_two_shards_short_window() {
    check_run(&RUNS[1]);
}

#[test]
fn model_four_shards_minute_window() {
    check_run(&RUNS[2]);
}

fn run_seed(run: &Run) -> u64 {
    base_seed() ^ run.stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn check_run(run: &Run) {
    let seed = run_seed(run);
    let count = request_count();
    let started = Instant::now();
    let lines = generator::generate(seed, count, run.dedup_window_ms);
    let mut input = String::new();
    for line in &lines {
        input.push_str(&line.text);
        input.push('\n');
    }
    let generated = started.elapsed();
    // Only the checking model's corners count.
    reference::take_hits();
    let output = run_engine(input.clone().into_bytes(), run.shards, run.dedup_window_ms);
    let engine_done = started.elapsed();

    let mut model = Model::new(run.dedup_window_ms);
    let mut expected_all: Vec<Outcome> = Vec::with_capacity(lines.len());
    let mut actual_all: Vec<Option<Outcome>> = Vec::with_capacity(lines.len());
    let mut tally: std::collections::BTreeMap<String, usize> = Default::default();
    let mut ledger = Ledger::default();
    for (index, line) in lines.iter().enumerate() {
        let number = index as u64 + 1;
        let actual = match output.get(index) {
            None => Err(format!(
                "no output line (the engine wrote {} lines)",
                output.len()
            )),
            Some(text) => parse_outcome(text),
        };
        let actual_ok = actual.as_ref().ok();
        let mut expected = model.step(&line.req, actual_ok);
        expected.line = number;
        let verdict = match &actual {
            Err(why) => Err(why.clone()),
            Ok(got) => ledger
                .check(&model, &line.req, got)
                .and_then(|()| expected.check(got)),
        };
        expected_all.push(expected.clone());
        actual_all.push(actual_ok.cloned());
        *tally.entry(tally_key(&line.req, &expected)).or_default() += 1;
        if let Err(why) = verdict {
            let report = mismatch_report(
                run,
                seed,
                &lines,
                &output,
                &expected_all,
                &actual_all,
                index,
                &why,
                &input,
            );
            panic!("{report}");
        }
    }
    assert_eq!(
        output.len(),
        lines.len(),
        "{}: {} input lines but {} output lines; extra: {:?}",
        run.name,
        lines.len(),
        output.len(),
        output.get(lines.len())
    );
    let hits = reference::take_hits();
    if std::env::var_os("DEBITCORE_MODEL_TALLY").is_some() {
        eprintln!("{}: {tally:#?}\n{hits:#?}", run.name);
    }
    coverage_floor(run, &tally, &hits);
    eprintln!(
        "{}: {} requests (seed {seed:#x}), generated in {:?}, engine {:?}, checked in {:?}",
        run.name,
        lines.len(),
        generated,
        engine_done - generated,
        started.elapsed() - engine_done
    );
}

/// Corners of SPEC's last section, by the feature that reaches them: every
/// stream with that feature on must reach them.
const SECTION_CORNERS: [(&str, &str); 31] = [
    ("merchants", "partial capture clears to a merchant"),
    ("merchants", "review hold carries a merchant"),
    ("merchants", "refund charged back to a merchant"),
    (
        "settle",
        "charge-back of an original cleared in an earlier batch",
    ),
    ("settle", "settle replayed (ok)"),
    ("settle", "settle replayed (nothing_to_settle)"),
    ("settle", "settle fee rounds down"),
    ("settle", "settle net is negative"),
    ("settle", "settle of charge-backs only"),
    ("settle", "settle with fee_bps 0"),
    ("settle", "settle with fee_bps 10000"),
    ("settle", "merchant pending is negative"),
    ("batch", "debit queued on a frozen account"),
    ("batch", "queued debit meets a frozen account"),
    ("batch", "queued debit held for review"),
    ("batch", "queued debit over a limit"),
    ("batch", "queued debit short of funds"),
    ("batch", "queued debit replayed after its batch"),
    ("batch", "status of a queued debit still waiting"),
    ("batch", "status of a queued debit its batch applied"),
    ("batch", "run_batch with ok > 0"),
    ("batch", "run_batch with held > 0"),
    ("batch", "run_batch with rejected > 0"),
    ("closing", "close with balance left"),
    ("closing", "close with a hold active"),
    ("closing", "close of a frozen account"),
    ("closing", "refund to a closed account"),
    ("closing", "key replayed or conflicting on a closed account"),
    ("closing", "open_account of a closed account"),
    ("history", "history page with entries"),
    ("history", "history page cut at limit 1"),
];

/// More corners of the last section that need two features at once.
const PAIRED_CORNERS: [(&str, &str, &str); 10] = [
    ("batch", "closing", "close with a queued debit waiting"),
    ("batch", "closing", "close with only a queued debit waiting"),
    ("closing", "", "close with only a hold active"),
    ("history", "closing", "close of an account with history"),
    ("history", "", "history before 1 (nothing before it)"),
    ("history", "", "history before = last seq"),
    ("history", "", "history before = last seq + 1"),
    ("history", "", "history before beyond the end"),
    ("history", "", "history page cut at the default limit 20"),
    ("history", "", "history page of more than 20 entries"),
];

/// Corners of SPEC (counted by `reference::hit`) every stream must reach.
const CORNERS: [&str; 15] = [
    "deposit would pass 2^63-1",
    "deposit reaches exactly 2^63-1",
    "authorize would pass 2^63-1 held",
    "increment would pass 2^63-1",
    "review: amount above review_above",
    "review: velocity",
    "velocity debit exactly window_ms old (not counted)",
    "amount exactly per_txn",
    "daily sum reaches exactly daily",
    "daily sum starts again on a new UTC day",
    "hold expires exactly as the clock reaches it",
    "non-final capture of all that is left",
    "increment moves the expiry",
    "refund once nothing is left",
    "key reused one ms before the window ends",
];

fn run_features() -> Vec<&'static str> {
    generator::features()
}

/// Outcome fields of SPEC's last section, beyond the ones `common` reads:
/// a string is kept as it is, anything else as `json:` and its JSON text
/// (`held` is a string in `balance`'s outcome and an integer in
/// `run_batch`'s), `entries` with only the fields SPEC names.
const SECTION_FIELDS: [&str; 17] = [
    "currency",
    "fee_bps",
    "batches",
    "pending",
    "settled_net",
    "fees",
    "batch",
    "count",
    "gross",
    "refunded",
    "fee",
    "net",
    "applied",
    "ok",
    "held",
    "rejected",
    "entries",
];

/// One outcome line, as `common::Outcome::parse` reads it plus the fields
/// of SPEC's last section (one JSON parse: this runs on every line).
fn parse_outcome(text: &str) -> Result<Outcome, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("outcome is not JSON ({e}): {text:?}"))?;
    let Some(object) = value.as_object() else {
        return Err(format!("outcome is not a JSON object: {text:?}"));
    };
    let line = object
        .get("line")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| format!("outcome has no integer `line`: {text:?}"))?;
    let result = object
        .get("result")
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("outcome has no string `result`: {text:?}"))?;
    let replayed = match object.get("replayed") {
        None => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(other) => return Err(format!("`replayed` is not a boolean ({other}): {text:?}")),
    };
    let mut outcome = Outcome::new(line, result);
    outcome.replayed = replayed;
    for name in common::NAMED_FIELDS {
        if let Some(v) = object.get(name) {
            let shown = match v {
                serde_json::Value::String(s) => s.clone(),
                other => format!("<non-string {other}>"),
            };
            outcome.fields.insert(name.to_string(), shown);
        }
    }
    for name in SECTION_FIELDS {
        if let Some(v) = object.get(name) {
            let shown = match (name, v) {
                ("entries", v) => reference::canonical_entries(v),
                (_, serde_json::Value::String(s)) => s.clone(),
                (_, other) => format!("{}{other}", reference::JSON_PREFIX),
            };
            outcome.fields.insert(name.to_string(), shown);
        }
    }
    Ok(outcome)
}

/// A decimal string with exactly `exp` fraction digits (maybe negative) in
/// minor units, as merchant figures are written.
fn signed_minor(text: &str, exp: u32) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let value = reference::parse_amount(digits, exp, true).or_else(|| {
        (digits.len() > 18)
            .then(|| big_minor(digits, exp))
            .flatten()
    })?;
    if negative && value == 0 {
        return None; // "zero is never signed"
    }
    Some(if negative { -value } else { value })
}

/// As `parse_amount`, for merchant figures past 2^63 - 1.
fn big_minor(text: &str, exp: u32) -> Option<i128> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() != exp as usize || int.is_empty() {
        return None;
    }
    let mut v: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    Some(v)
}

/// The engine's own settlement figures, merchant by merchant, to check
/// SPEC's conservation rule on its answers at every `merchant` query (a
/// quiet moment): clearings minus charge-backs (what the model saw cleared)
/// = `pending` + sum over its batches of (gross - refunded), every batch
/// has gross - refunded = fee + net, and `batches`, `settled_net`, `fees`
/// sum its settles.
#[derive(Default)]
struct Ledger {
    batches: std::collections::HashMap<u64, Vec<[i128; 4]>>,
}

impl Ledger {
    fn check(&mut self, model: &Model, req: &Req, got: &Outcome) -> Result<(), String> {
        let figure = |name: &str, exp: u32| -> Result<i128, String> {
            let text = got
                .fields
                .get(name)
                .ok_or_else(|| format!("`{name}` missing"))?;
            signed_minor(text, exp).ok_or_else(|| format!("`{name}` {text:?} is not an amount"))
        };
        match req {
            Req::Settle { merchant, .. } if got.result == "ok" && !got.replayed => {
                let Some(m) = model.merchants.get(merchant) else {
                    return Ok(()); // the comparison reports it
                };
                let e = m.exp;
                let b = [
                    figure("gross", e)?,
                    figure("refunded", e)?,
                    figure("fee", e)?,
                    figure("net", e)?,
                ];
                if b[0] - b[1] != b[2] + b[3] {
                    return Err(format!(
                        "conservation: the engine's batch has gross - refunded != fee + net ({b:?})"
                    ));
                }
                self.batches.entry(*merchant).or_default().push(b);
                Ok(())
            }
            Req::Merchant { merchant } if got.result == "ok" => {
                let Some(m) = model.merchants.get(merchant) else {
                    return Ok(());
                };
                let e = m.exp;
                let mine = self.batches.get(merchant).map_or(&[][..], Vec::as_slice);
                let settled: i128 = mine.iter().map(|b| b[0] - b[1]).sum();
                let pending = figure("pending", e)?;
                let cleared = m.cleared_total - m.charged_back_total;
                if cleared != pending + settled {
                    return Err(format!(
                        "conservation: clearings - charge-backs = {} but the engine's pending {} + its batches' gross - refunded {} = {}",
                        cleared, pending, settled, pending + settled
                    ));
                }
                let net: i128 = mine.iter().map(|b| b[3]).sum();
                let fees: i128 = mine.iter().map(|b| b[2]).sum();
                if figure("settled_net", e)? != net || figure("fees", e)? != fees {
                    return Err(format!(
                        "conservation: settled_net / fees are not the sums over the engine's own settles ({net} / {fees})"
                    ));
                }
                if got.fields.get("batches") != Some(&reference::json_int(mine.len())) {
                    return Err(format!(
                        "conservation: `batches` is not the number of the engine's ok settles ({})",
                        mine.len()
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn tally_key(req: &Req, outcome: &Outcome) -> String {
    format!(
        "{} {}{}",
        req.op(),
        outcome.result,
        if outcome.replayed { " (replayed)" } else { "" }
    )
}

/// The stream must really reach the cases it is meant to: a generator change
/// that stops producing one should fail loudly rather than test less.
fn coverage_floor(
    run: &Run,
    tally: &std::collections::BTreeMap<String, usize>,
    hits: &std::collections::BTreeMap<&'static str, u64>,
) {
    if request_count() < DEFAULT_REQUESTS {
        return;
    }
    let count = |prefix: &str| -> usize {
        tally
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };
    let wanted = [
        "open_account ok",
        "open_account account_exists",
        "open_account unsupported_currency",
        "open_account invalid_amount",
        "deposit ok",
        "deposit invalid_amount",
        "deposit unknown_account",
        "deposit id_conflict",
        "debit ok",
        "debit held_for_review",
        "debit insufficient_funds",
        "debit limit_exceeded",
        "debit account_frozen",
        "authorize ok",
        "authorize insufficient_funds",
        "increment ok",
        "increment capture_started",
        "increment auth_expired",
        "capture ok",
        "capture exceeds_authorized",
        "capture auth_expired",
        "capture auth_not_active",
        "capture auth_not_found",
        "void ok",
        "refund ok",
        "refund exceeds_refundable",
        "refund not_refundable",
        "set_limits ok",
        "set_limits invalid_amount",
        "status ok",
        "status unknown_id",
        "balance ok",
        "advance_clock ok",
        "<malformed> malformed",
    ];
    // The last section's outcomes, by the feature that reaches them.
    let section: [(&str, &str); 36] = [
        ("merchants", "open_merchant ok"),
        ("merchants", "open_merchant merchant_exists"),
        ("merchants", "open_merchant unsupported_currency"),
        ("merchants", "merchant ok"),
        ("merchants", "merchant unknown_merchant"),
        ("merchants", "debit unknown_merchant"),
        ("merchants", "debit currency_mismatch"),
        ("merchants", "authorize unknown_merchant"),
        ("merchants", "authorize currency_mismatch"),
        ("merchants", "debit ok (replayed)"),
        ("merchants", "debit id_conflict"),
        ("settle", "settle ok"),
        ("settle", "settle nothing_to_settle"),
        ("settle", "settle ok (replayed)"),
        ("settle", "settle nothing_to_settle (replayed)"),
        ("settle", "settle unknown_merchant"),
        ("batch", "queue_debit queued"),
        ("batch", "queue_debit queued (replayed)"),
        ("batch", "queue_debit invalid_amount"),
        ("batch", "queue_debit unknown_merchant"),
        ("batch", "queue_debit currency_mismatch"),
        ("batch", "queue_debit id_conflict"),
        ("batch", "run_batch ok"),
        ("closing", "close_account ok"),
        ("closing", "close_account account_not_empty"),
        ("closing", "close_account account_closed"),
        ("closing", "deposit account_closed"),
        ("closing", "debit account_closed"),
        ("closing", "authorize account_closed"),
        ("closing", "capture account_closed"),
        ("closing", "refund account_closed"),
        ("closing", "freeze account_closed"),
        ("closing", "set_limits account_closed"),
        ("closing", "balance ok"),
        ("history", "history ok"),
        ("history", "history no_history"),
    ];
    let on = |f: &str| f.is_empty() || run_features().contains(&f);
    let mut missing = Vec::new();
    for w in wanted {
        if count(w) == 0 {
            missing.push(w);
        }
    }
    for (feature, w) in section {
        if on(feature) && count(w) == 0 {
            missing.push(w);
        }
    }
    for (feature, corner) in SECTION_CORNERS {
        if on(feature) && !hits.contains_key(corner) {
            missing.push(corner);
        }
    }
    for (a, b, corner) in PAIRED_CORNERS {
        if on(a) && on(b) && !hits.contains_key(corner) {
            missing.push(corner);
        }
    }
    let replays = tally
        .iter()
        .filter(|(k, _)| k.ends_with("(replayed)"))
        .map(|(_, v)| v)
        .sum::<usize>();
    for corner in CORNERS {
        if !hits.contains_key(corner) {
            missing.push(corner);
        }
    }
    assert!(
        missing.is_empty() && replays > 100,
        "{}: the stream never produced {missing:?} ({replays} replays); outcome counts: {tally:#?}; corners: {hits:#?}",
        run.name
    );
}

#[allow(clippy::too_many_arguments)]
fn mismatch_report(
    run: &Run,
    seed: u64,
    lines: &[GenLine],
    output: &[String],
    expected: &[Outcome],
    actual: &[Option<Outcome>],
    index: usize,
    why: &str,
    input: &str,
) -> String {
    let line = &lines[index];
    let mut r = String::new();
    let _ = writeln!(
        r,
        "\n=== model mismatch in {} ({} shard(s), dedup window {} ms, seed {seed:#x}) ===",
        run.name, run.shards, run.dedup_window_ms
    );
    let _ = writeln!(r, "line {}: {}", index + 1, line.text);
    let _ = writeln!(r, "  expected: {}", expected[index]);
    let _ = writeln!(
        r,
        "  actual:   {}",
        output.get(index).map_or("<no line>", String::as_str)
    );
    let _ = writeln!(r, "  problem:  {why}");

    // The model's view just before the line, rebuilt from the same inputs.
    let mut before = Model::new(run.dedup_window_ms);
    for (l, a) in lines[..index].iter().zip(actual) {
        before.step(&l.req, a.as_ref());
    }
    let _ = writeln!(r, "engine time before the line: {} ms", before.now_ms);
    let merchant = match &line.req {
        Req::Settle { merchant, .. }
        | Req::Merchant { merchant }
        | Req::OpenMerchant { merchant, .. } => Some(*merchant),
        other => other.merchant(),
    };
    if let Some(merchant) = merchant {
        match before.merchants.get(&merchant) {
            Some(m) => {
                let _ = writeln!(r, "model view of merchant {merchant}: {}", m.summary());
            }
            None => {
                let _ = writeln!(r, "model view: merchant {merchant} is not open");
            }
        }
        let _ = writeln!(
            r,
            "recent lines naming merchant {merchant} (settles, queries, debits and holds for it), oldest first, as `expected | actual`:"
        );
        let names = |req: &Req| match req {
            Req::Settle { merchant: m, .. }
            | Req::Merchant { merchant: m }
            | Req::OpenMerchant { merchant: m, .. } => *m == merchant,
            other => other.merchant() == Some(merchant),
        };
        let shown: Vec<usize> = (0..index)
            .rev()
            .filter(|&i| names(&lines[i].req))
            .take(16)
            .collect();
        for &i in shown.iter().rev() {
            let _ = writeln!(
                r,
                "  line {}: {}\n      => {} | {}",
                i + 1,
                lines[i].text,
                expected[i],
                output.get(i).map_or("<no line>", String::as_str)
            );
        }
    }
    if let Req::RunBatch = &line.req {
        let _ = writeln!(
            r,
            "queued debits the batch applies (account, id, amount, merchant):"
        );
        for q in &before.queue {
            let _ = writeln!(r, "  {} #{} {} {:?}", q.account, q.id, q.amount, q.merchant);
        }
    }
    if let Some(account) = line.account {
        match before.accounts.get(&account) {
            Some(acct) => {
                let _ = writeln!(r, "model view of account {account}: {}", acct.summary());
                if let Some(id) = line.req.key_id() {
                    if let Some(k) = acct.keys.get(&id) {
                        let _ = writeln!(
                            r,
                            "  key {id} first processed at {} ms: {} -> {}",
                            k.first_ms, k.identity, k.result
                        );
                    }
                }
                let named = match &line.req {
                    Req::Capture { auth, .. }
                    | Req::Void { auth, .. }
                    | Req::Increment { auth, .. } => Some(*auth),
                    _ => None,
                };
                if let Some(auth) = named {
                    let _ = writeln!(r, "  hold {auth}: {:?}", acct.holds.get(&auth));
                }
                if let Req::Refund { of, .. } = &line.req {
                    let _ = writeln!(r, "  original {of}: {:?}", acct.refundables.get(of));
                }
            }
            None => {
                let _ = writeln!(r, "model view: account {account} is not open");
            }
        }
        let _ = writeln!(
            r,
            "recent lines on account {account} (and clock moves), oldest first, as `expected | actual`:"
        );
        let mut shown = Vec::new();
        for (i, l) in lines[..index].iter().enumerate().rev() {
            let touches = l.account == Some(account) || matches!(l.req, Req::AdvanceClock { .. });
            if touches {
                shown.push(i);
            }
            if shown
                .iter()
                .filter(|&&i| lines[i].account == Some(account))
                .count()
                >= 14
                || shown.len() >= 30
            {
                break;
            }
        }
        for &i in shown.iter().rev() {
            let _ = writeln!(
                r,
                "  line {}: {}\n      => {} | {}",
                i + 1,
                lines[i].text,
                expected[i],
                output.get(i).map_or("<no line>", String::as_str)
            );
        }
    }
    let path = std::env::temp_dir().join(format!("debitcore-{}-{seed:x}.requests.jsonl", run.name));
    match std::fs::write(&path, input) {
        Ok(()) => {
            let _ = writeln!(
                r,
                "whole input written to {} (replay: debitcore run --clock manual --shards {} --dedup-window-ms {} < FILE)",
                path.display(),
                run.shards,
                run.dedup_window_ms
            );
        }
        Err(e) => {
            let _ = writeln!(r, "(could not write the input to {}: {e})", path.display());
        }
    }
    let _ = writeln!(
        r,
        "reproduce: DEBITCORE_MODEL_SEED={:#x} DEBITCORE_MODEL_REQUESTS={} cargo test --test model {}",
        base_seed(),
        request_count(),
        run.name
    );
    r
}

/// The generator alone (no engine): its streams must agree with the model's
/// own bookkeeping, every line must be one line of JSON or a deliberate
/// malformed one, and the same seed must give the same stream.
#[test]
fn generator_is_deterministic_and_well_formed() {
    let a = generator::generate(7, 3000, 10_000);
    let b = generator::generate(7, 3000, 10_000);
    assert_eq!(a.len(), 3000);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.text, y.text);
    }
    for l in &a {
        assert!(!l.text.contains('\n'));
        if l.req != Req::Malformed {
            let v: serde_json::Value = serde_json::from_str(&l.text)
                .unwrap_or_else(|e| panic!("well-formed line is not JSON ({e}): {}", l.text));
            let op = v.get("op").and_then(|o| o.as_str()).unwrap_or("<none>");
            assert_eq!(op, l.req.op(), "op of {}", l.text);
        }
    }
}

/// The reference model itself, against SPEC's own example streams (no
/// engine involved): every line's outcome must be the one the stream
/// requires, field for field, both ways.
#[test]
fn reference_model_agrees_with_spec_streams() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/streams");
    for name in ["core", "preauth", "merchants"] {
        let read = |kind: &str| {
            let path = format!("{dir}/{name}.{kind}.jsonl");
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        let requests = read("requests");
        let outcomes = read("outcomes");
        let requests: Vec<&str> = requests.lines().collect();
        let outcomes: Vec<&str> = outcomes.lines().collect();
        assert_eq!(requests.len(), outcomes.len(), "{name}: line counts");
        let mut model = Model::new(DEFAULT_DEDUP_WINDOW_MS);
        for (index, (request, outcome)) in requests.iter().zip(&outcomes).enumerate() {
            let want =
                parse_outcome(outcome).unwrap_or_else(|e| panic!("{name} line {}: {e}", index + 1));
            let req = parse::parse_request(request);
            let mut got = model.step(&req, Some(&want));
            got.line = index as u64 + 1;
            if let Err(why) = want.check(&got).and_then(|()| got.check(&want)) {
                panic!(
                    "{name} line {}: {request}\n  stream: {outcome}\n  model:  {got}\n  ({why})",
                    index + 1
                );
            }
        }
    }
}

/// Every line the generator writes reads back (by SPEC's line format) as
/// the request it meant, or as malformed when it meant that; with every
/// feature on and with none.
#[test]
fn generator_lines_mean_what_the_generator_thinks() {
    for features in [generator::FEATURES.to_vec(), Vec::new()] {
        let lines = generator::generate_with(11, 6000, 10_000, features.clone());
        for (i, l) in lines.iter().enumerate() {
            let read = parse::try_parse(&l.text);
            let ok = match (&l.req, &read) {
                (Req::Malformed, Err(_)) => true,
                (want, Ok(got)) => want == got,
                _ => false,
            };
            assert!(
                ok,
                "features {features:?}, line {}: {}\n  generator meant {:?}\n  SPEC reads {:?}",
                i + 1,
                l.text,
                l.req,
                read
            );
        }
    }
}

/// The streams with every feature on, answered by the reference model
/// alone: they must reach every outcome and corner of the coverage floor.
/// For working on the generator before the engine has a feature (run with
/// `--ignored`); the three engine runs check the same floor.
#[test]
#[ignore]
fn generator_coverage_without_an_engine() {
    for run in &RUNS {
        let lines = generator::generate_with(
            run_seed(run),
            request_count(),
            run.dedup_window_ms,
            generator::FEATURES.to_vec(),
        );
        reference::take_hits();
        let mut model = Model::new(run.dedup_window_ms);
        let mut tally: std::collections::BTreeMap<String, usize> = Default::default();
        for line in &lines {
            let outcome = model.step(&line.req, None);
            *tally.entry(tally_key(&line.req, &outcome)).or_default() += 1;
        }
        let hits = reference::take_hits();
        if std::env::var_os("DEBITCORE_MODEL_TALLY").is_some() {
            eprintln!("{}: {tally:#?}\n{hits:#?}", run.name);
        }
        coverage_floor(run, &tally, &hits);
    }
}
