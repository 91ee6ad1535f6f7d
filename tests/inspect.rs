//! `debitcore inspect` over data directories made by real runs: the
//! summary counts what was sent, `--dump` and `--account` print the log,
//! damage in the middle fails with its file and offset, a torn last record
//! is reported but is not an error, and inspecting changes nothing.

use debitcore::inspect::{inspect, InspectOptions, InspectSummary, Severity};
use debitcore::wal::{Durability, WalOptions};
use debitcore::{AmountArg, ClockMode, Code, Currency, Engine, EngineConfig, Request};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

const BIN: &str = env!("CARGO_BIN_EXE_debitcore");

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// A fresh directory path, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "debitcore-inspect-{tag}-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `debitcore run --clock manual --shards N --data-dir DIR` over
/// `lines`; returns its outcomes.
fn run(dir: &Path, shards: usize, lines: &[&str]) -> Vec<Value> {
    let out = run_raw(dir, shards, lines);
    assert!(
        out.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn run_raw(dir: &Path, shards: usize, lines: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(["run", "--clock", "manual", "--shards", &shards.to_string()])
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = lines.join("\n");
    input.push('\n');
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn cli(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .arg("inspect")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn summary(dir: &Path) -> InspectSummary {
    inspect(dir, &InspectOptions::default(), &mut Vec::new()).unwrap()
}

fn dump(dir: &Path, args: &[&str]) -> Vec<Value> {
    let out = cli(args, dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// Whether a request with this outcome is in the log (the engine's rule:
/// what changed state; replays, conflicts, unknown accounts, queries and
/// malformed lines did not).
fn logged(op: &str, outcome: &Value) -> bool {
    let result = outcome["result"].as_str().unwrap();
    match op {
        "balance" | "status" | "history" => false,
        "advance_clock" => true,
        _ if result == "malformed" => false,
        "open_account" | "freeze" | "unfreeze" | "set_limits" | "close_account" => result == "ok",
        _ => {
            outcome.get("replayed").is_none()
                && !matches!(result, "id_conflict" | "unknown_account")
        }
    }
}

const SHARDS: usize = 2;

/// Every op, accepted and rejected, on six accounts in three currencies.
const STREAM: &[&str] = &[
    r#"{"op":"open_account","account":1,"currency":"USD"}"#,
    r#"{"op":"open_account","account":2,"currency":"JPY","overdraft":"100"}"#,
    r#"{"op":"open_account","account":3,"currency":"KWD"}"#,
    r#"{"op":"open_account","account":4,"currency":"USD"}"#,
    r#"{"op":"open_account","account":5,"currency":"EUR"}"#,
    r#"{"op":"open_account","account":6,"currency":"USD"}"#,
    r#"{"op":"open_account","account":1,"currency":"USD"}"#,
    r#"{"op":"open_account","account":7,"currency":"XYZ"}"#,
    r#"{"op":"deposit","id":1,"account":1,"amount":"100.50"}"#,
    r#"{"op":"deposit","id":1,"account":2,"amount":"5000"}"#,
    r#"{"op":"deposit","id":1,"account":3,"amount":"12.345"}"#,
    r#"{"op":"deposit","id":1,"account":4,"amount":"10"}"#,
    r#"{"op":"deposit","id":1,"account":5,"amount":"99.99"}"#,
    r#"{"op":"deposit","id":1,"account":6,"amount":"1"}"#,
    r#"{"op":"deposit","id":1,"account":99,"amount":"1"}"#,
    r#"{"op":"debit","id":2,"account":1,"amount":"1000"}"#,
    r#"{"op":"debit","id":3,"account":1,"amount":"20.25"}"#,
    r#"{"op":"debit","id":3,"account":1,"amount":"20.250"}"#,
    r#"{"op":"debit","id":3,"account":1,"amount":"20.26"}"#,
    r#"{"op":"authorize","id":4,"account":2,"amount":"300","expires_in_ms":60000}"#,
    r#"{"op":"capture","id":5,"account":2,"auth":4,"amount":"100","final":false}"#,
    r#"{"op":"increment","id":6,"account":2,"auth":4,"amount":"5"}"#,
    r#"{"op":"capture","id":7,"account":2,"auth":4}"#,
    r#"{"op":"void","id":8,"account":2,"auth":4}"#,
    r#"{"op":"authorize","id":9,"account":3,"amount":"1.5"}"#,
    r#"{"op":"void","id":10,"account":3,"auth":9}"#,
    r#"{"op":"refund","id":11,"account":1,"of":3,"amount":"5"}"#,
    r#"{"op":"refund","id":12,"account":1,"of":3}"#,
    r#"{"op":"freeze","account":4}"#,
    r#"{"op":"debit","id":13,"account":4,"amount":"1"}"#,
    r#"{"op":"unfreeze","account":4}"#,
    r#"{"op":"freeze","account":99}"#,
    r#"{"op":"set_limits","account":5,"per_txn":"10","velocity":{"max":2,"window_ms":1000,"below":"5"}}"#,
    r#"{"op":"debit","id":14,"account":5,"amount":"20"}"#,
    r#"{"op":"balance","account":1}"#,
    r#"{"op":"status","account":1,"id":3}"#,
    r#"{"op":"advance_clock","ms":1000}"#,
    r#"not json"#,
    r#"{"op":"deposit","id":15,"account":6,"amount":"1.234"}"#,
    r#"{"op":"deposit","id":16,"account":6,"amount":"abc"}"#,
];

fn op_of(line: &str) -> String {
    serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v["op"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn account_of(line: &str) -> Option<u64> {
    serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v["account"].as_u64())
}

/// Runs `STREAM` into a fresh directory; returns it and the outcomes.
fn made() -> (TempDir, Vec<Value>) {
    let dir = TempDir::new("made");
    let outcomes = run(&dir.0, SHARDS, STREAM);
    assert_eq!(outcomes.len(), STREAM.len());
    (dir, outcomes)
}

#[test]
fn summary_counts_match_what_was_sent() {
    let (dir, outcomes) = made();
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (line, outcome) in STREAM.iter().zip(&outcomes) {
        let op = op_of(line);
        if logged(&op, outcome) {
            // advance_clock reaches (and is logged on) every shard.
            let copies = if op == "advance_clock" {
                SHARDS as u64
            } else {
                1
            };
            *expected
                .entry((op, outcome["result"].as_str().unwrap().to_string()))
                .or_default() += copies;
        }
    }
    // The stream has what it means to have.
    assert_eq!(expected[&("debit".into(), "insufficient_funds".into())], 1);
    assert_eq!(expected[&("debit".into(), "account_frozen".into())], 1);
    assert_eq!(expected[&("deposit".into(), "invalid_amount".into())], 2);
    assert_eq!(expected[&("open_account".into(), "ok".into())], 6);

    let s = summary(&dir.0);
    assert!(!s.damaged(), "{:?}", s.shards);
    assert_eq!(s.torn_tails(), 0);
    assert_eq!(s.meta_shards, Some(SHARDS));
    assert_eq!(s.shards.len(), SHARDS);
    let mut got: BTreeMap<(String, String), u64> = BTreeMap::new();
    for shard in &s.shards {
        for (&(op, result), &n) in &shard.by_op_result {
            *got.entry((op.to_string(), result.to_string())).or_default() += n;
        }
        assert_eq!(shard.segments.len(), 1);
        let seg = &shard.segments[0];
        assert_eq!(seg.first_lsn, 1);
        assert_eq!(seg.records, shard.records());
        assert!(seg.bytes_used > 64 && seg.bytes_used < seg.bytes_size);
        assert_eq!(shard.first_lsn, Some(1));
        assert_eq!(shard.last_lsn, Some(shard.records()));
        assert!(shard.groups >= 1);
        assert_eq!(shard.ticks, 0, "a manual clock logs no ticks");
        assert_eq!(
            shard.requests,
            shard.by_op.values().sum::<u64>(),
            "by op adds up"
        );
        assert_eq!(shard.requests, shard.by_result.values().sum::<u64>());
    }
    assert_eq!(got, expected);
    assert_eq!(
        s.count("advance_clock", "ok"),
        SHARDS as u64,
        "one per shard"
    );

    let out = cli(&[], &dir.0);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    for needle in [
        "meta: 2 shards",
        "shard 0 (shard-000)",
        "shard 1 (shard-001)",
        "segment 00000000000000000001.wal: first LSN 1",
        "debit/insufficient_funds 1",
        "0 damaged places, 0 torn tails: ok",
    ] {
        assert!(report.contains(needle), "{needle:?} not in:\n{report}");
    }
}

#[test]
fn dump_prints_every_record_in_lsn_order() {
    let (dir, outcomes) = made();
    let records = dump(&dir.0, &["--dump"]);
    let s = summary(&dir.0);
    assert_eq!(records.len() as u64, s.records());
    let mut next_lsn = [1u64; SHARDS];
    for r in &records {
        let shard = r["shard"].as_u64().unwrap() as usize;
        assert_eq!(r["lsn"].as_u64(), Some(next_lsn[shard]), "{r}");
        next_lsn[shard] += 1;
        assert!(r["segment"].as_str().unwrap().ends_with(".wal"));
        assert!(r["offset"].as_u64().unwrap() >= 64);
        match r["kind"].as_str().unwrap() {
            "group" => assert!(r["durable_lsn"].is_u64()),
            "request" => assert_eq!(r["op"], r["request"]["op"], "{r}"),
            other => panic!("unexpected kind {other} in a manual-clock log: {r}"),
        }
    }
    // Shards were printed one after the other.
    let shards: Vec<u64> = records
        .iter()
        .map(|r| r["shard"].as_u64().unwrap())
        .collect();
    assert!(shards.windows(2).all(|w| w[0] <= w[1]));

    // The request records are the logged requests, in the order sent on
    // each shard, with their results; each reads back as what was sent.
    let mut sent: Vec<Vec<(Request, String)>> = vec![Vec::new(); SHARDS];
    let mut clocks = 0;
    for (line, outcome) in STREAM.iter().zip(&outcomes) {
        let op = op_of(line);
        if !logged(&op, outcome) {
            continue;
        }
        let request = debitcore::codec::parse_line(line.as_bytes(), true).unwrap();
        let result = outcome["result"].as_str().unwrap().to_string();
        match account_of(line) {
            Some(account) => {
                let shard = debitcore::inspect::shard_of(account, SHARDS);
                sent[shard].push((request, result));
            }
            None => {
                clocks += 1;
                for shard in &mut sent {
                    shard.push((request.clone(), result.clone()));
                }
            }
        }
    }
    assert_eq!(clocks, 1);
    let mut dumped: Vec<Vec<(Request, String)>> = vec![Vec::new(); SHARDS];
    for r in records.iter().filter(|r| r["kind"] == "request") {
        let text = r["request"].to_string();
        let request = match debitcore::codec::parse_line(text.as_bytes(), true) {
            Ok(request) => request,
            // An amount invalid in every currency is kept as a fingerprint.
            Err(_) => {
                assert!(text.contains("invalid_amount_fingerprint"), "{text}");
                continue;
            }
        };
        dumped[r["shard"].as_u64().unwrap() as usize]
            .push((request, r["result"].as_str().unwrap().to_string()));
    }
    for shard in 0..SHARDS {
        let expect: Vec<&(Request, String)> = sent[shard]
            .iter()
            .filter(|(r, _)| {
                !matches!(
                    r,
                    Request::Deposit {
                        amount: AmountArg::Invalid { .. },
                        ..
                    }
                )
            })
            .collect();
        let got: Vec<&(Request, String)> = dumped[shard].iter().collect();
        assert_eq!(got, expect, "shard {shard}");
    }
    // The summary went to stderr, so stdout is only records.
    let out = cli(&["--dump"], &dir.0);
    assert!(text(&out.stderr).contains("0 damaged places"));
}

#[test]
fn account_filter_prints_its_audit_trail() {
    let (dir, outcomes) = made();
    for account in [1u64, 2, 4, 99] {
        let trail = dump(&dir.0, &["--account", &account.to_string()]);
        let expect: Vec<(String, String)> = STREAM
            .iter()
            .zip(&outcomes)
            .filter(|(line, o)| account_of(line) == Some(account) && logged(&op_of(line), o))
            .map(|(line, o)| (op_of(line), o["result"].as_str().unwrap().to_string()))
            .collect();
        let got: Vec<(String, String)> = trail
            .iter()
            .map(|r| {
                assert_eq!(r["request"]["account"].as_u64(), Some(account), "{r}");
                assert_eq!(r["kind"], "request");
                (
                    r["op"].as_str().unwrap().to_string(),
                    r["result"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(got, expect, "account {account}");
        if account == 1 {
            assert_eq!(
                trail[0]["request"],
                serde_json::json!({"op":"open_account","account":1,"currency":"USD"})
            );
            let debit = trail.iter().find(|r| r["request"]["id"] == 3).unwrap();
            assert_eq!(debit["request"]["amount"], "20.25");
        }
    }
    let trail = dump(&dir.0, &["--account", "2"]);
    let capture = trail.iter().find(|r| r["request"]["id"] == 5).unwrap();
    assert_eq!(
        capture["request"],
        serde_json::json!({"op":"capture","id":5,"account":2,"auth":4,"amount":"100","final":false})
    );
}

/// An account's audit trail (`inspect --account N`) and its statement
/// (`history`) tell one story: the trail's keyed records, in log order,
/// are the statement's entries, in seq order (same id, op and result; the
/// amount a deposit, debit or authorize names is what its entry moved),
/// across two runs over one directory. Closing is in the trail only (it is
/// not keyed), and nothing the statement has is missing from the trail.
#[test]
fn the_audit_trail_and_the_statement_agree() {
    let dir = TempDir::new("story");
    let first = [
        r#"{"op":"open_account","account":8,"currency":"USD","history":true}"#,
        r#"{"op":"open_merchant","merchant":3,"currency":"USD"}"#,
        r#"{"op":"deposit","id":1,"account":8,"amount":"50.00"}"#,
        r#"{"op":"debit","id":2,"account":8,"amount":"20","merchant":3}"#,
        r#"{"op":"debit","id":2,"account":8,"amount":"20","merchant":3}"#,
        r#"{"op":"debit","id":3,"account":8,"amount":"80"}"#,
        r#"{"op":"authorize","id":4,"account":8,"amount":"10.5"}"#,
        r#"{"op":"advance_clock","ms":700}"#,
        r#"{"op":"capture","id":5,"account":8,"auth":4,"amount":"4","final":false}"#,
        r#"{"op":"void","id":6,"account":8,"auth":4}"#,
        r#"{"op":"refund","id":7,"account":8,"of":2,"amount":"1.25"}"#,
        r#"{"op":"deposit","id":8,"account":8,"amount":"1.234"}"#,
    ];
    let outcomes = run(&dir.0, SHARDS, &first);
    assert!(
        outcomes.iter().all(|o| o["result"] != "malformed"),
        "{outcomes:?}"
    );
    let second = [
        r#"{"op":"debit","id":9,"account":8,"amount":"27.25"}"#,
        r#"{"op":"close_account","account":8}"#,
        r#"{"op":"deposit","id":10,"account":8,"amount":"1"}"#,
        r#"{"op":"history","account":8,"limit":1000}"#,
    ];
    let outcomes = run(&dir.0, SHARDS, &second);
    assert_eq!(outcomes[1]["result"], "ok", "{outcomes:?}");
    let mut entries: Vec<Value> = outcomes[3]["entries"].as_array().unwrap().clone();
    entries.reverse();
    assert_eq!(entries.len(), 10, "{entries:?}");
    let trail = dump(&dir.0, &["--account", "8"]);
    let keyed: Vec<&Value> = trail
        .iter()
        .filter(|r| r["request"].get("id").is_some())
        .collect();
    assert_eq!(keyed.len(), entries.len(), "{trail:?}");
    for (seq, (record, entry)) in keyed.iter().zip(&entries).enumerate() {
        assert_eq!(entry["seq"], seq as u64 + 1);
        assert_eq!(record["request"]["id"], entry["id"], "{record} / {entry}");
        assert_eq!(record["op"], entry["op"], "{record} / {entry}");
        assert_eq!(record["result"], entry["result"], "{record} / {entry}");
        assert_eq!(record["request"].get("merchant"), entry.get("merchant"));
        let named = ["deposit", "debit", "authorize"].contains(&record["op"].as_str().unwrap());
        if named && entry.get("amount").is_some() {
            let number = |v: &Value| v.as_str().unwrap().parse::<f64>().unwrap();
            assert_eq!(
                number(&record["request"]["amount"]),
                number(&entry["amount"])
            );
        }
    }
    let ops: Vec<&str> = trail.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(ops.first(), Some(&"open_account"));
    assert_eq!(
        trail[0]["request"],
        serde_json::json!({"op":"open_account","account":8,"currency":"USD","history":true})
    );
    assert!(ops.contains(&"close_account"), "{ops:?}");
}

/// Every file of a directory tree with its bytes and modification time.
fn fingerprint(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                files.insert(
                    entry.path(),
                    (
                        std::fs::read(entry.path()).unwrap(),
                        meta.modified().unwrap(),
                    ),
                );
            }
        }
    }
    files
}

/// The only segment of a one-shard directory.
fn segment_path(dir: &Path) -> PathBuf {
    dir.join("shard-000").join("00000000000000000001.wal")
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

/// Two runs into one shard: the second run's group records say that all
/// of the first run's records were durable.
fn two_runs() -> TempDir {
    let dir = TempDir::new("two");
    let mut first = vec![r#"{"op":"open_account","account":1,"currency":"USD"}"#.to_string()];
    for id in 1..=40 {
        first.push(format!(
            r#"{{"op":"deposit","id":{id},"account":1,"amount":"{id}.00"}}"#
        ));
    }
    let refs: Vec<&str> = first.iter().map(String::as_str).collect();
    run(&dir.0, 1, &refs);
    run(
        &dir.0,
        1,
        &[r#"{"op":"debit","id":100,"account":1,"amount":"1"}"#],
    );
    dir
}

#[test]
fn damage_in_the_middle_fails_with_its_offset() {
    let dir = two_runs();
    let records = dump(&dir.0, &["--dump"]);
    let victim = records
        .iter()
        .find(|r| r["request"]["id"] == 20)
        .expect("deposit 20");
    let offset = victim["offset"].as_u64().unwrap();
    flip(&segment_path(&dir.0), offset + 20);
    let before = fingerprint(&dir.0);

    let out = cli(&[], &dir.0);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let report = text(&out.stdout);
    assert!(
        report.contains(&format!(
            "DAMAGE: {} at byte {offset}: checksum mismatch",
            segment_path(&dir.0).display()
        )),
        "{report}"
    );
    assert!(report.contains("DAMAGED"), "{report}");
    // Inspection goes on past the damage: every other record is read.
    let s = summary(&dir.0);
    assert!(s.damaged());
    assert_eq!(s.records() + 1, records.len() as u64, "{report}");
    let problems: Vec<_> = s.all_problems().collect();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].offset, offset);
    assert_eq!(problems[0].severity, Severity::Damage);

    // Recovery agrees: the open is refused, naming the place.
    let out = run_raw(&dir.0, 1, &[r#"{"op":"balance","account":1}"#]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("damaged at byte {offset}")),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        fingerprint(&dir.0),
        before,
        "inspect (or a refused open) wrote"
    );
}

#[test]
fn a_torn_last_record_is_reported_but_is_not_an_error() {
    type Tear = fn(&Path, u64, u64);
    let tears: [(&str, Tear); 3] = [
        ("a flipped byte", |path, offset, _| flip(path, offset + 20)),
        ("zeros over its second half", |path, offset, size| {
            let mut bytes = std::fs::read(path).unwrap();
            let half = (offset + size / 2) as usize;
            bytes[half..(offset + size) as usize].fill(0);
            std::fs::write(path, bytes).unwrap();
        }),
        ("a file cut inside it", |path, offset, _| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap()
                .set_len(offset + 20)
                .unwrap();
        }),
    ];
    for (what, tear) in tears {
        let dir = TempDir::new("torn");
        let mut lines = vec![r#"{"op":"open_account","account":1,"currency":"USD"}"#.to_string()];
        for id in 1..=10 {
            lines.push(format!(
                r#"{{"op":"deposit","id":{id},"account":1,"amount":"1"}}"#
            ));
        }
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        run(&dir.0, 1, &refs);
        let records = dump(&dir.0, &["--dump"]);
        let last = records.last().unwrap();
        assert_eq!(last["request"]["id"], 10, "{what}: {last}");
        let offset = last["offset"].as_u64().unwrap();
        tear(&segment_path(&dir.0), offset, 48);
        let before = fingerprint(&dir.0);

        let out = cli(&[], &dir.0);
        let report = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{what}: {report}");
        assert!(
            report.contains(&format!(
                "torn tail: {} at byte {offset}",
                segment_path(&dir.0).display()
            )),
            "{what}: {report}"
        );
        assert!(
            report.contains("0 damaged places, 1 torn tails: ok"),
            "{what}: {report}"
        );
        let s = summary(&dir.0);
        assert!(!s.damaged());
        assert_eq!(s.records() + 1, records.len() as u64, "{what}");
        assert_eq!(
            fingerprint(&dir.0),
            before,
            "{what}: inspect changed the directory"
        );

        // Recovery cuts it: the last deposit never happened, the rest did.
        let out = run_raw(
            &dir.0,
            1,
            &[
                r#"{"op":"status","account":1,"id":10}"#,
                r#"{"op":"status","account":1,"id":9}"#,
                r#"{"op":"balance","account":1}"#,
            ],
        );
        assert!(out.status.success(), "{what}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("cut torn tail"),
            "{what}: {}",
            text(&out.stderr)
        );
        let answers: Vec<Value> = text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(answers[0]["result"], "unknown_id", "{what}");
        assert_eq!(answers[1]["status"], "ok", "{what}");
        assert_eq!(answers[2]["balance"], "9.00", "{what}");
        let s = summary(&dir.0);
        assert_eq!(s.torn_tails(), 0, "{what}: after recovery");
        assert!(!s.damaged());
    }
}

#[test]
fn replay_checks_every_recorded_result() {
    let dir = two_runs();
    let out = cli(&["--replay"], &dir.0);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("replay: every recorded result reproduced"));

    // Rewrite the result of one record, with a valid checksum: only a
    // replay can tell.
    let records = dump(&dir.0, &["--dump"]);
    let victim = records
        .iter()
        .find(|r| r["request"]["id"] == 7)
        .expect("deposit 7");
    let offset = victim["offset"].as_u64().unwrap() as usize;
    let lsn = victim["lsn"].as_u64().unwrap();
    let path = segment_path(&dir.0);
    let mut bytes = std::fs::read(&path).unwrap();
    let len = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().unwrap()) as usize;
    assert_eq!(bytes[offset + 16], 1, "a request record");
    assert_eq!(bytes[offset + 17], Code::Ok as u8);
    bytes[offset + 17] = Code::InsufficientFunds as u8;
    let crc = crc32c::crc32c(&bytes[offset + 4..offset + len]);
    bytes[offset..offset + 4].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();

    let out = cli(&[], &dir.0);
    assert_eq!(out.status.code(), Some(0), "checksums are fine");
    let out = cli(&["--replay"], &dir.0);
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    assert!(
        report.contains(&format!(
            "at byte {offset}: replay of LSN {lsn} answered ok where the log says insufficient_funds"
        )),
        "{report}"
    );
    let out = run_raw(&dir.0, 1, &[r#"{"op":"balance","account":1}"#]);
    assert_eq!(out.status.code(), Some(1), "recovery agrees");
    assert!(text(&out.stderr).contains(&format!("replay of LSN {lsn}")));
}

#[test]
fn snapshots_and_several_segments_are_verified() {
    // Small segments and frequent snapshots, through the library.
    let dir = TempDir::new("snap");
    let config = EngineConfig {
        shards: 2,
        clock: ClockMode::Manual,
        data_dir: Some(dir.0.clone()),
        durability: Durability::Sync,
        wal: WalOptions {
            segment_bytes: 16 << 10,
            snapshot_every_bytes: 24 << 10,
            ..WalOptions::default()
        },
        ..EngineConfig::default()
    };
    let engine = Engine::open(config).unwrap();
    let mut client = engine.client();
    let mut requests = Vec::new();
    for account in 1..=20u64 {
        requests.push(Request::OpenAccount {
            account,
            currency: Some(Currency::USD),
            overdraft: None,
            history: false,
        });
    }
    for id in 1..=1500u64 {
        requests.push(Request::Deposit {
            id,
            account: 1 + id % 20,
            amount: AmountArg::parse("1.25"),
        });
    }
    for chunk in requests.chunks(100) {
        for outcome in client.submit_batch(chunk) {
            assert_eq!(outcome.code, Code::Ok);
        }
    }
    drop(client);
    drop(engine);

    let s = inspect(
        &dir.0,
        &InspectOptions {
            replay: true,
            ..InspectOptions::default()
        },
        &mut Vec::new(),
    )
    .unwrap();
    assert!(!s.damaged(), "{:?}", s.shards);
    // Segments wholly before a snapshot are gone; what is left starts at
    // or before the snapshot and goes on from it.
    assert!(s.count("deposit", "ok") < 1500);
    for shard in &s.shards {
        let snap = shard.snapshots.last().expect("a snapshot");
        assert!(shard.snapshots.iter().all(|snap| snap.damage.is_none()));
        assert!(
            shard.first_lsn.unwrap() <= snap.lsn + 1,
            "shard {}",
            shard.index
        );
        assert!(shard.last_lsn.unwrap() >= snap.lsn, "shard {}", shard.index);
        assert!(shard.segments.len() >= 2, "shard {}", shard.index);
        assert_eq!(shard.replayed, Some(true), "{:?}", shard.notes);
        for pair in shard.segments.windows(2) {
            assert_eq!(pair[0].first_lsn + pair[0].records, pair[1].first_lsn);
        }
    }

    // A damaged snapshot is damage.
    let shard_dir = dir.0.join("shard-000");
    let snapshot = std::fs::read_dir(&shard_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "snap"))
        .unwrap();
    flip(&snapshot, 40);
    let out = cli(&[], &dir.0);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains(&format!(
            "DAMAGE: {} at byte 0: snapshot checksum mismatch",
            snapshot.display()
        )),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn an_engine_holding_the_lock_is_reported() {
    let dir = TempDir::new("locked");
    let mut child = Command::new(BIN)
        .args(["run", "--clock", "manual", "--shards", "1", "--data-dir"])
        .arg(&dir.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"{\"op\":\"open_account\",\"account\":1,\"currency\":\"USD\"}\n")
        .unwrap();
    stdin.flush().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\""), "{line}");

    let out = cli(&[], &dir.0);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("lock: held by a running engine"),
        "{}",
        text(&out.stdout)
    );
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let out = cli(&[], &dir.0);
    assert!(text(&out.stdout).contains("lock: free"));
}

#[test]
fn bad_arguments_exit_2() {
    let dir = TempDir::new("bad");
    let missing = cli(&[], &dir.0);
    assert_eq!(missing.status.code(), Some(2), "no such directory");
    std::fs::create_dir_all(&dir.0).unwrap();
    let empty = cli(&[], &dir.0);
    assert_eq!(empty.status.code(), Some(2), "not a data directory");
    assert!(text(&empty.stderr).contains("not a debitcore data directory"));
    run(
        &dir.0,
        1,
        &[r#"{"op":"open_account","account":1,"currency":"USD"}"#],
    );
    assert_eq!(cli(&["--account", "x"], &dir.0).status.code(), Some(2));
    assert_eq!(cli(&["--bogus"], &dir.0).status.code(), Some(2));
    let no_dir = Command::new(BIN).arg("inspect").output().unwrap();
    assert_eq!(no_dir.status.code(), Some(2));
    assert_eq!(cli(&[], &dir.0).status.code(), Some(0));
}
