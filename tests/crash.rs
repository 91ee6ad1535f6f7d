//! Kills a real `debitcore run` process in the middle of a load and checks
//! what a second process finds in the data directory (SPEC, "Durability").
//!
//! Guards against: an acknowledged outcome lost or changed by a crash; a
//! request half applied (a hole in an account's history: a later request of
//! the account survives while an earlier one does not); state that replay
//! rebuilds differently from what was answered (balances, held totals);
//! idempotency memory lost across a crash (a replay of a surviving id not
//! answered `replayed`); a crash image that recovery refuses to open, or
//! that `debitcore inspect` calls damaged.
//!
//! Each iteration: a fresh data directory; `debitcore run --clock manual
//! --shards 2 --data-dir D` fed a seeded stream in bulk by a writer thread
//! while a reader thread records every complete outcome line; SIGKILL after
//! a seeded delay. Then `debitcore inspect D` must find no damage, and a
//! second process over D answers `status` for every keyed request of the
//! stream and `balance` for every account, checked against one in-memory
//! run of the whole stream (`runner::run`): per account, outcomes depend
//! only on that account's earlier requests (the stream has no
//! `advance_clock`), so the in-memory outcome of each request is the truth
//! for any prefix, and a `balance` placed after each request in the
//! in-memory stream gives the state after every prefix.
//!
//! `DEBITCORE_CRASH_ITERATIONS` and `DEBITCORE_CRASH_SEED` override the
//! iteration count (default 24) and the first seed.

use debitcore::runner::{self, RunOptions};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_debitcore");
const ITERATIONS_DEFAULT: u64 = 24;
const SEED_DEFAULT: u64 = 0x00C0_FFEE_D00D;
const ACCOUNTS: usize = 50;
const OPS: usize = 3000;
const KILL_DELAY_MS_MIN: u64 = 5;
const KILL_DELAY_MS_MAX: u64 = 80;
const DEDUP_WINDOW_MS: u64 = 86_400_000;

// ---------------------------------------------------------------------------
// A seeded stream

/// splitmix64: small, seedable, good enough for picking requests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len() as u64) as usize])
    }
}

/// One request line of a stream.
#[derive(Clone, Debug)]
struct Req {
    text: String,
    account: u64,
    /// `Some((id, op))` for a keyed request (remembered under its key).
    keyed: Option<(u64, &'static str)>,
    is_open: bool,
}

struct Account {
    id: u64,
    exponent: u32,
    next_id: u64,
    auths: Vec<u64>,
    refundable: Vec<u64>,
}

fn amount(rng: &mut Rng, exponent: u32, max_major: u64) -> String {
    if rng.chance(2) {
        // Invalid in every currency, or too precise for this one: keyed
        // `invalid_amount` rejections are remembered too.
        return if rng.chance(50) {
            "12.3456".into()
        } else {
            "1e3".into()
        };
    }
    let minor = 1 + rng.below(max_major * 10u64.pow(exponent));
    if exponent == 0 {
        return minor.to_string();
    }
    let factor = 10u64.pow(exponent);
    format!(
        "{}.{:0width$}",
        minor / factor,
        minor % factor,
        width = exponent as usize
    )
}

/// `ACCOUNTS` accounts in several currencies, a deposit each, then `ops`
/// random requests; every keyed request has a fresh id on its account.
/// With `clock`, `advance_clock` lines are mixed in too.
fn stream(seed: u64, ops: usize, clock: bool) -> Vec<Req> {
    let mut rng = Rng(seed);
    let currencies = [("USD", 2), ("JPY", 0), ("KWD", 3), ("EUR", 2), ("GBP", 2)];
    let mut accounts: Vec<Account> = Vec::new();
    let mut out = Vec::new();
    for i in 0..ACCOUNTS {
        let id = 1 + (rng.next() >> 1);
        let (code, exponent) = currencies[i % currencies.len()];
        let overdraft = if rng.chance(20) {
            ",\"overdraft\":\"50\"".to_string()
        } else {
            String::new()
        };
        out.push(Req {
            text: format!(
                "{{\"op\":\"open_account\",\"account\":{id},\"currency\":\"{code}\"{overdraft}}}"
            ),
            account: id,
            keyed: None,
            is_open: true,
        });
        accounts.push(Account {
            id,
            exponent,
            next_id: 1,
            auths: Vec::new(),
            refundable: Vec::new(),
        });
    }
    let keyed = |a: &mut Account, op: &'static str, fields: String| {
        let id = a.next_id;
        a.next_id += 1;
        Req {
            text: format!(
                "{{\"op\":\"{op}\",\"id\":{id},\"account\":{}{fields}}}",
                a.id
            ),
            account: a.id,
            keyed: Some((id, op)),
            is_open: false,
        }
    };
    for a in &mut accounts {
        let amt = amount(&mut rng, a.exponent, 1000);
        out.push(keyed(a, "deposit", format!(",\"amount\":\"{amt}\"")));
    }
    for _ in 0..ops {
        if clock && rng.chance(1) {
            out.push(Req {
                text: format!("{{\"op\":\"advance_clock\",\"ms\":{}}}", rng.below(120_000)),
                account: 0,
                keyed: None,
                is_open: false,
            });
            continue;
        }
        let a = &mut accounts[rng.below(ACCOUNTS as u64) as usize];
        let e = a.exponent;
        let roll = rng.below(100);
        let req = match roll {
            0..=14 => {
                let amt = amount(&mut rng, e, 400);
                keyed(a, "deposit", format!(",\"amount\":\"{amt}\""))
            }
            15..=39 => {
                let amt = amount(&mut rng, e, 300);
                let r = keyed(a, "debit", format!(",\"amount\":\"{amt}\""));
                a.refundable.push(a.next_id - 1);
                r
            }
            40..=59 => {
                let amt = amount(&mut rng, e, 200);
                let expires = if clock && rng.chance(50) {
                    format!(",\"expires_in_ms\":{}", 1 + rng.below(300_000))
                } else {
                    String::new()
                };
                let r = keyed(a, "authorize", format!(",\"amount\":\"{amt}\"{expires}"));
                a.auths.push(a.next_id - 1);
                r
            }
            60..=71 => {
                let auth = rng.pick(&a.auths).unwrap_or(a.next_id + 5);
                let amt = if rng.chance(50) {
                    format!(",\"amount\":\"{}\"", amount(&mut rng, e, 150))
                } else {
                    String::new()
                };
                let fin = if rng.chance(30) {
                    ",\"final\":false"
                } else {
                    ""
                };
                let r = keyed(a, "capture", format!(",\"auth\":{auth}{amt}{fin}"));
                a.refundable.push(a.next_id - 1);
                r
            }
            72..=79 => {
                let auth = rng.pick(&a.auths).unwrap_or(1);
                keyed(a, "void", format!(",\"auth\":{auth}"))
            }
            80..=87 => {
                let of = rng.pick(&a.refundable).unwrap_or(1);
                let amt = if rng.chance(50) {
                    format!(",\"amount\":\"{}\"", amount(&mut rng, e, 100))
                } else {
                    String::new()
                };
                keyed(a, "refund", format!(",\"of\":{of}{amt}"))
            }
            88..=91 => {
                let auth = rng.pick(&a.auths).unwrap_or(1);
                let amt = amount(&mut rng, e, 50);
                keyed(
                    a,
                    "increment",
                    format!(",\"auth\":{auth},\"amount\":\"{amt}\""),
                )
            }
            92..=95 => Req {
                text: format!(
                    "{{\"op\":\"{}\",\"account\":{}}}",
                    if roll < 94 { "freeze" } else { "unfreeze" },
                    a.id
                ),
                account: a.id,
                keyed: None,
                is_open: false,
            },
            _ => {
                let mut fields = String::new();
                if rng.chance(50) {
                    fields += &format!(",\"per_txn\":\"{}\"", amount(&mut rng, e, 250));
                }
                if rng.chance(50) {
                    fields += &format!(",\"review_above\":\"{}\"", amount(&mut rng, e, 200));
                }
                Req {
                    text: format!("{{\"op\":\"set_limits\",\"account\":{}{fields}}}", a.id),
                    account: a.id,
                    keyed: None,
                    is_open: false,
                }
            }
        };
        out.push(req);
    }
    out
}

fn lines_of(reqs: &[Req]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for r in reqs {
        bytes.extend_from_slice(r.text.as_bytes());
        bytes.push(b'\n');
    }
    bytes
}

/// Runs `input` in memory through the runner; returns the outcome lines.
fn in_memory(input: Vec<u8>, shards: usize) -> Vec<Value> {
    let mut out = Vec::new();
    runner::run(
        std::io::Cursor::new(input),
        &mut out,
        &RunOptions {
            shards,
            manual_clock: true,
            dedup_window_ms: DEDUP_WINDOW_MS,
        },
    )
    .expect("in-memory run");
    parse_outcomes(&out)
}

fn parse_outcomes(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("outcome {l:?}: {e}")))
        .collect()
}

/// An outcome without its line number, for comparing.
fn body(outcome: &Value) -> Value {
    let mut v = outcome.clone();
    v.as_object_mut().expect("an object").remove("line");
    v
}

fn result(outcome: &Value) -> &str {
    outcome["result"].as_str().unwrap_or("<no result>")
}

/// The truth for every prefix: the in-memory outcome of each request of
/// `reqs`, and the `balance` outcome after each request (a `balance` is
/// placed after every request of the account in the in-memory stream).
struct Reference {
    outcome: Vec<Value>,
    balance_after: Vec<Value>,
}

fn reference(reqs: &[Req]) -> Reference {
    let mut input = Vec::new();
    for r in reqs {
        input.extend_from_slice(r.text.as_bytes());
        input.push(b'\n');
        input.extend_from_slice(
            format!("{{\"op\":\"balance\",\"account\":{}}}\n", r.account).as_bytes(),
        );
    }
    let all = in_memory(input, 2);
    assert_eq!(all.len(), 2 * reqs.len());
    let mut outcome = Vec::with_capacity(reqs.len());
    let mut balance_after = Vec::with_capacity(reqs.len());
    for pair in all.chunks(2) {
        outcome.push(body(&pair[0]));
        balance_after.push(body(&pair[1]));
    }
    Reference {
        outcome,
        balance_after,
    }
}

// ---------------------------------------------------------------------------
// Processes

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "debitcore-crash-{tag}-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// What a killed process handed back: its complete outcome lines.
struct Killed {
    outcomes: Vec<Value>,
    stderr: String,
}

/// When the kill comes.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// This long after the spawn (may be before the log exists).
    AfterSpawn(Duration),
    /// This long after the first outcome line arrived (mid-load, with
    /// outcomes handed back).
    AfterFirstOutcome(Duration),
}

/// Spawns `debitcore run` over `dir`, feeds `input` in bulk (keeping stdin
/// open afterwards), and SIGKILLs it at `kill`.
fn run_and_kill(
    dir: &Path,
    input: Vec<u8>,
    durability: &str,
    kill: KillAt,
    mut rng: Rng,
) -> Killed {
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--clock",
            "manual",
            "--shards",
            "2",
            "--durability",
            durability,
        ])
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning debitcore run");
    let spawned = Instant::now();
    let mut stdin = child.stdin.take().expect("stdin");
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        // Bursts of 2-12 KiB (tens to a hundred lines) with pauses of
        // 1-5 ms between them: while its input pauses the runner writes
        // out what it has answered, so kills land both before and after
        // outcomes were handed back, with more requests in flight.
        let mut rest = &input[..];
        while !rest.is_empty() {
            // Whole lines: the runner holds back complete lines while
            // its input stops in the middle of one.
            let size = rest.len().min((2 << 10) + rng.below(10 << 10) as usize);
            let size = rest[size..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |nl| size + nl + 1);
            let (chunk, tail) = rest.split_at(size);
            if stdin.write_all(chunk).is_err() {
                return;
            }
            rest = tail;
            std::thread::sleep(Duration::from_micros(1000 + rng.below(4000)));
        }
        // Hold stdin open: the process must be killed busy or waiting,
        // never after a clean end of input.
        let _ = stop_rx.recv();
        drop(stdin);
    });
    let stdout = child.stdout.take().expect("stdout");
    let (first_tx, first_rx) = mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut stdout = BufReader::new(stdout);
        loop {
            let mut line = Vec::new();
            match stdout.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                // A line cut by the kill was not handed back.
                Ok(_) if line.last() != Some(&b'\n') => break,
                Ok(_) => {
                    if lines.is_empty() {
                        let _ = first_tx.send(());
                    }
                    lines.push(line);
                }
            }
        }
        lines
    });
    let mut stderr = child.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (from, delay) = match kill {
        KillAt::AfterSpawn(delay) => (spawned, delay),
        KillAt::AfterFirstOutcome(delay) => {
            first_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("no outcome within 10 s");
            (Instant::now(), delay)
        }
    };
    if let Some(left) = delay.checked_sub(from.elapsed()) {
        std::thread::sleep(left);
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    let _ = stop_tx.send(());
    writer.join().expect("writer");
    let lines = reader.join().expect("reader");
    let stderr = err_reader.join().expect("stderr reader");
    // Its stdin stayed open: only the kill may have ended it.
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the process ended on its own before the kill ({status}); stderr: {stderr}"
    );
    let outcomes = lines
        .iter()
        .map(|l| {
            serde_json::from_slice(l).unwrap_or_else(|e| {
                panic!(
                    "handed-back line {:?} is not JSON: {e}",
                    String::from_utf8_lossy(l)
                )
            })
        })
        .collect();
    Killed { outcomes, stderr }
}

/// A `debitcore run` that stays up between phases of a conversation.
struct Session {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::Receiver<String>,
    read: usize,
}

impl Session {
    fn open(dir: &Path, extra: &[&str]) -> Session {
        let mut child = Command::new(BIN)
            .args(["run", "--clock", "manual", "--shards", "2"])
            .args(extra)
            .arg("--data-dir")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning debitcore run");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(line) => {
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        Session {
            child,
            stdin,
            lines,
            read: 0,
        }
    }

    /// Sends lines and waits for their outcomes. Writing happens on a
    /// thread, so a long input cannot deadlock against unread output.
    fn ask(&mut self, input: Vec<u8>, count: usize, context: &str) -> Vec<Value> {
        let mut stdin = self.stdin.take().expect("stdin open");
        let writer = std::thread::spawn(move || {
            stdin.write_all(&input).expect("writing to the session");
            stdin
        });
        let mut out: Vec<Value> = Vec::with_capacity(count);
        for _ in 0..count {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => out.push(
                    serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("{context}: outcome {line:?}: {e}")),
                ),
                Err(e) => {
                    let _ = self.child.kill();
                    let mut err = String::new();
                    if let Some(mut s) = self.child.stderr.take() {
                        let _ = s.read_to_string(&mut err);
                    }
                    panic!(
                        "{context}: {} of {count} outcomes came back ({e}); stderr: {err}",
                        out.len()
                    );
                }
            }
        }
        self.stdin = Some(writer.join().expect("session writer"));
        for (i, o) in out.iter().enumerate() {
            assert_eq!(
                o["line"].as_u64(),
                Some((self.read + i + 1) as u64),
                "{context}: outcome out of order: {o}"
            );
        }
        self.read += count;
        out
    }

    /// Closes stdin; the process must exit 0. Returns its stderr.
    fn close(mut self, context: &str) -> String {
        drop(self.stdin.take());
        let mut err = String::new();
        if let Some(mut s) = self.child.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "{context}: exit {status}; stderr: {err}");
        err
    }
}

// ---------------------------------------------------------------------------
// The crash test

#[derive(Default)]
struct Totals {
    kills: u64,
    handed_back: u64,
    survived_keyed: u64,
    survived_unacknowledged: u64,
    torn_tails_cut: u64,
    unfinished_segments: u64,
    empty_dirs: u64,
}

impl Totals {
    fn absorb(&mut self, t: &Totals) {
        self.kills += t.kills;
        self.handed_back += t.handed_back;
        self.survived_keyed += t.survived_keyed;
        self.survived_unacknowledged += t.survived_unacknowledged;
        self.torn_tails_cut += t.torn_tails_cut;
        self.unfinished_segments += t.unfinished_segments;
        self.empty_dirs += t.empty_dirs;
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| {
            let v = v.trim();
            match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            }
        })
        .unwrap_or(default)
}

#[test]
fn sigkill_mid_load_loses_no_acknowledged_outcome() {
    let iterations = env_u64("DEBITCORE_CRASH_ITERATIONS", ITERATIONS_DEFAULT);
    let first_seed = env_u64("DEBITCORE_CRASH_SEED", SEED_DEFAULT);
    let started = Instant::now();
    // Two iterations at a time: much of each is spent waiting for fsync
    // and for processes, and two at once also crowds the disk. Each
    // iteration is deterministic in its stream and kill delay.
    let lanes = env_u64("DEBITCORE_CRASH_LANES", 2).max(1);
    let results: Vec<Totals> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..lanes)
            .map(|lane| {
                scope.spawn(move || {
                    let mut totals = Totals::default();
                    for it in (lane..iterations).step_by(lanes as usize) {
                        let seed = first_seed.wrapping_add(it.wrapping_mul(0x9E37_79B9));
                        crash_iteration(it, seed, &mut totals);
                    }
                    totals
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut totals = Totals::default();
    for t in &results {
        totals.absorb(t);
    }
    eprintln!(
        "crash test: {} kills in {:.1?}: {} outcomes handed back, {} keyed requests survived \
         ({} of them never acknowledged), {} torn tails cut, {} unfinished segments removed, \
         {} kills before any log existed",
        totals.kills,
        started.elapsed(),
        totals.handed_back,
        totals.survived_keyed,
        totals.survived_unacknowledged,
        totals.torn_tails_cut,
        totals.unfinished_segments,
        totals.empty_dirs,
    );
    assert!(totals.kills >= iterations.min(20));
}

fn crash_iteration(it: u64, seed: u64, totals: &mut Totals) {
    let ctx = format!("iteration {it}, seed {seed:#x}");
    let phase = Instant::now();
    let reqs = stream(seed, OPS, false);
    let truth = reference(&reqs);
    let reference_took = phase.elapsed();
    let dir = temp_dir("kill");
    let mut rng = Rng(seed ^ 0x5EED);
    let delay = Duration::from_millis(
        KILL_DELAY_MS_MIN + rng.below(KILL_DELAY_MS_MAX - KILL_DELAY_MS_MIN + 1),
    );
    // A third of the kills count from the spawn (some land before the log
    // exists, or while a segment is being created), the rest from the
    // first outcome handed back (mid-load); a third run `batched`.
    let kill = match rng.below(3) {
        0 => KillAt::AfterSpawn(delay),
        _ => KillAt::AfterFirstOutcome(delay / 2),
    };
    let durability = match rng.below(3) {
        0 => "batched",
        _ => "sync",
    };
    let ctx = format!(
        "{ctx} ({durability}, kill {kill:?}; rerun with DEBITCORE_CRASH_SEED={seed:#x} \
         DEBITCORE_CRASH_ITERATIONS=1)"
    );
    let phase = Instant::now();
    let killed = run_and_kill(&dir, lines_of(&reqs), durability, kill, Rng(rng.next()));
    let killed_after = phase.elapsed();
    totals.kills += 1;

    // What the dead process handed back is exactly what the in-memory run
    // answers, in order.
    for (i, o) in killed.outcomes.iter().enumerate() {
        assert_eq!(
            o["line"].as_u64(),
            Some(i as u64 + 1),
            "{ctx}: handed-back outcome out of order: {o}"
        );
        assert_eq!(
            body(o),
            truth.outcome[i],
            "{ctx}: line {} ({}) was answered differently from the in-memory run",
            i + 1,
            reqs[i].text
        );
    }
    let acked = killed.outcomes.len();
    totals.handed_back += acked as u64;
    let survived_before = totals.survived_keyed;

    // The crash image must not look damaged (a torn tail is fine).
    let phase = Instant::now();
    if dir.join("meta").exists() {
        let status = Command::new(BIN)
            .arg("inspect")
            .arg(&dir)
            .output()
            .expect("inspect");
        assert!(
            status.status.success(),
            "{ctx}: inspect calls the crash image damaged: {}\n{}",
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr)
        );
    } else {
        totals.empty_dirs += 1;
    }

    // Phase 1 of the verifying run: status of every keyed request, balance
    // of every account.
    let mut accounts: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, r) in reqs.iter().enumerate() {
        accounts.entry(r.account).or_default().push(i);
    }
    let mut input = Vec::new();
    let mut asked: Vec<(usize, bool)> = Vec::new(); // (request index, is balance)
    for (&account, idx) in &accounts {
        for &i in idx {
            if let Some((id, _)) = reqs[i].keyed {
                input.extend_from_slice(
                    format!("{{\"op\":\"status\",\"account\":{account},\"id\":{id}}}\n").as_bytes(),
                );
                asked.push((i, false));
            }
        }
        input.extend_from_slice(
            format!("{{\"op\":\"balance\",\"account\":{account}}}\n").as_bytes(),
        );
        asked.push((idx[0], true));
    }
    let inspect_took = phase.elapsed();
    let phase = Instant::now();
    let mut session = Session::open(&dir, &[]);
    let answers = session.ask(input, asked.len(), &ctx);
    let mut status_of: Vec<Option<Value>> = vec![None; reqs.len()];
    let mut balance_of: BTreeMap<u64, Value> = BTreeMap::new();
    for (&(i, is_balance), a) in asked.iter().zip(&answers) {
        if is_balance {
            balance_of.insert(reqs[i].account, body(a));
        } else {
            status_of[i] = Some(a.clone());
        }
    }

    // Per account: the survivors are a prefix of its keyed requests, with
    // the in-memory results, including everything handed back.
    let mut phase2 = Vec::new();
    let mut expect2: Vec<(String, Value)> = Vec::new();
    for (&account, idx) in &accounts {
        let actx = format!("{ctx}: account {account}");
        let balance = &balance_of[&account];
        let open_survived = result(balance) != "unknown_account";
        let open_line = idx[0];
        if open_line < acked {
            assert!(
                open_survived,
                "{actx}: open_account (line {}) was handed back as {} but the account is gone",
                open_line + 1,
                truth.outcome[open_line]
            );
        }
        let mut survived: Option<usize> = None; // last surviving keyed request index
        let mut gap: Option<usize> = None; // first keyed request that did not survive
        for &i in idx {
            let Some((id, op)) = reqs[i].keyed else {
                continue;
            };
            let s = status_of[i].as_ref().expect("asked");
            let line = i + 1;
            let rctx = format!("{actx}, id {id} (line {line}: {})", reqs[i].text);
            if !open_survived {
                assert_eq!(result(s), "unknown_account", "{rctx}: {s}");
                assert!(i >= acked, "{rctx}: handed back, but its account is gone");
                continue;
            }
            match result(s) {
                "ok" => {
                    assert!(
                        gap.is_none(),
                        "{rctx}: survived, but the earlier id of line {} did not: not a prefix",
                        gap.map_or(0, |g| g + 1)
                    );
                    assert_eq!(
                        s["op"].as_str(),
                        Some(op),
                        "{rctx}: status names another op: {s}"
                    );
                    assert_eq!(
                        s["status"].as_str(),
                        Some(result(&truth.outcome[i])),
                        "{rctx}: status differs from the in-memory result {}",
                        truth.outcome[i]
                    );
                    survived = Some(i);
                    totals.survived_keyed += 1;
                    if i >= acked {
                        totals.survived_unacknowledged += 1;
                    }
                }
                "unknown_id" => {
                    assert!(
                        i >= acked,
                        "{rctx}: handed back as {} but lost after the crash",
                        truth.outcome[i]
                    );
                    gap.get_or_insert(i);
                }
                other => panic!("{rctx}: status answered {other}: {s}"),
            }
        }
        if !open_survived {
            assert_eq!(
                balance,
                &serde_json::json!({"result": "unknown_account"}),
                "{actx}"
            );
        } else {
            let anchor = survived.unwrap_or(open_line);
            assert_eq!(
                balance,
                &truth.balance_after[anchor],
                "{actx}: balance after the surviving prefix (up to line {}) differs",
                anchor + 1
            );
            // Replays of surviving ids answer the original outcome.
            let keyed: Vec<usize> = idx
                .iter()
                .copied()
                .filter(|&i| reqs[i].keyed.is_some() && i <= anchor)
                .collect();
            for _ in 0..2 {
                if let Some(i) = rng.pick(&keyed) {
                    phase2.extend_from_slice(reqs[i].text.as_bytes());
                    phase2.push(b'\n');
                    let mut want = truth.outcome[i].clone();
                    want["replayed"] = Value::Bool(true);
                    expect2.push((
                        format!("{actx}: replay of line {} ({})", i + 1, reqs[i].text),
                        want,
                    ));
                }
            }
        }
        // The stream goes on where the account's history stopped: the
        // requests up to its next keyed one answer as in memory (freeze,
        // unfreeze and set_limits in between may or may not have survived;
        // sending them again changes nothing).
        let from = match (open_survived, survived) {
            (false, _) => 0,
            (true, None) => 1,
            (true, Some(i)) => idx.iter().position(|&j| j == i).expect("own line") + 1,
        };
        let mut last = None;
        for &i in &idx[from..] {
            phase2.extend_from_slice(reqs[i].text.as_bytes());
            phase2.push(b'\n');
            expect2.push((
                format!("{actx}: continuation, line {} ({})", i + 1, reqs[i].text),
                truth.outcome[i].clone(),
            ));
            last = Some(i);
            if reqs[i].keyed.is_some() {
                break;
            }
        }
        if let Some(i) = last {
            phase2.extend_from_slice(
                format!("{{\"op\":\"balance\",\"account\":{account}}}\n").as_bytes(),
            );
            expect2.push((
                format!("{actx}: balance after continuing to line {}", i + 1),
                truth.balance_after[i].clone(),
            ));
        }
    }
    let answers = session.ask(phase2, expect2.len(), &ctx);
    for ((what, want), got) in expect2.iter().zip(&answers) {
        assert_eq!(&body(got), want, "{what}");
    }
    let stderr = session.close(&ctx);
    eprintln!(
        "{ctx}: {acked} outcomes handed back, {} keyed requests survived; \
         reference {reference_took:.0?}, run {killed_after:.0?}, inspect {inspect_took:.0?}, \
         verify {:.0?}",
        totals.survived_keyed - survived_before,
        phase.elapsed()
    );
    totals.torn_tails_cut += stderr.matches("cut torn tail").count() as u64;
    totals.unfinished_segments += stderr.matches("removed unfinished segment").count() as u64;
    if !killed.stderr.is_empty() {
        eprintln!("{ctx}: the killed process said: {}", killed.stderr.trim());
    }
    std::fs::remove_dir_all(&dir).expect("removing the data directory");
}

// ---------------------------------------------------------------------------
// Restarts

/// Runs `input` to its end in a process over `dir`; returns its outcomes.
fn run_to_end(dir: &Path, input: &[u8], ctx: &str) -> Vec<Value> {
    let mut session = Session::open(dir, &[]);
    let count = input.iter().filter(|&&b| b == b'\n').count();
    let out = session.ask(input.to_vec(), count, ctx);
    session.close(ctx);
    out
}

#[test]
fn a_run_split_by_restarts_answers_as_one_run() {
    // With advance_clock and expiring holds: the manual clock and the
    // timers must resume where they stood.
    let seed = 0x5EED_5EED;
    let reqs = stream(seed, 4000, true);
    assert!(reqs.iter().any(|r| r.text.contains("advance_clock")));
    let whole = in_memory(lines_of(&reqs), 2);
    let dir = temp_dir("split");
    let cuts = [0, reqs.len() / 3, reqs.len() * 2 / 3 + 7, reqs.len()];
    let mut answered = Vec::new();
    for (part, range) in cuts.windows(2).enumerate() {
        let ctx = format!(
            "seed {seed:#x}, run {} of 3 (lines {}..={})",
            part + 1,
            range[0] + 1,
            range[1]
        );
        let outcomes = run_to_end(&dir, &lines_of(&reqs[range[0]..range[1]]), &ctx);
        for (i, o) in outcomes.iter().enumerate() {
            let line = range[0] + i;
            assert_eq!(
                body(o),
                body(&whole[line]),
                "{ctx}: line {} of that run = line {} of the stream ({}) differs from one run",
                i + 1,
                line + 1,
                reqs[line].text
            );
        }
        answered.extend(outcomes);
    }
    assert_eq!(answered.len(), reqs.len());
    // And the state after the three runs is the state after one.
    let mut balances = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in &reqs {
        if r.is_open && seen.insert(r.account) {
            balances.extend_from_slice(
                format!("{{\"op\":\"balance\",\"account\":{}}}\n", r.account).as_bytes(),
            );
        }
    }
    let mut whole_then_balances = lines_of(&reqs);
    whole_then_balances.extend_from_slice(&balances);
    let want = in_memory(whole_then_balances, 2);
    let got = run_to_end(&dir, &balances, "balances after the three runs");
    for (i, g) in got.iter().enumerate() {
        assert_eq!(
            body(g),
            body(&want[reqs.len() + i]),
            "balance query {}",
            i + 1
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_wall_clock_log_reopens_after_an_expiry() {
    // Regression: recovery used to start replay at the time of the open,
    // so an old log replayed at today's time: a hold expired by a logged
    // tick was alive on replay, the capture that had answered
    // `auth_expired` now answered `ok`, and the open failed as "damaged".
    let dir = temp_dir("wall");
    let mut child = Command::new(BIN)
        .args(["run", "--shards", "1", "--data-dir"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            b"{\"op\":\"open_account\",\"account\":1,\"currency\":\"USD\"}\n\
              {\"op\":\"deposit\",\"id\":1,\"account\":1,\"amount\":\"100\"}\n\
              {\"op\":\"authorize\",\"id\":2,\"account\":1,\"amount\":\"10\",\"expires_in_ms\":1}\n",
        )
        .unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    stdin
        .write_all(b"{\"op\":\"capture\",\"id\":3,\"account\":1,\"auth\":2}\n")
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let outcomes = parse_outcomes(&out.stdout);
    assert_eq!(result(&outcomes[3]), "auth_expired", "{outcomes:?}");
    for attempt in 0..2 {
        let out = Command::new(BIN)
            .args(["run", "--data-dir"])
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(b"{\"op\":\"status\",\"account\":1,\"id\":3}\n{\"op\":\"balance\",\"account\":1}\n")?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(
            out.status.success(),
            "reopen {attempt}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let o = parse_outcomes(&out.stdout);
        assert_eq!(o[0]["status"], "auth_expired", "reopen {attempt}: {o:?}");
        assert_eq!(o[1]["held"], "0.00", "reopen {attempt}: {o:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `input` in a process over a fresh data directory, SIGKILLs it
/// mid-load (a seeded delay after its first outcome; `sync` or, a third of
/// the time, `batched`), and reopens the directory with the library.
/// `None` when the kill came before the directory existed (nothing to
/// reopen). Returns the directory, what the process handed back, a
/// context line for failures, and the reopened engine.
fn kill_and_reopen(
    tag: &str,
    input: Vec<u8>,
    rng: &mut Rng,
    it: u64,
    seed: u64,
) -> Option<(PathBuf, Killed, String, debitcore::Engine)> {
    let dir = temp_dir(tag);
    let delay = Duration::from_millis(KILL_DELAY_MS_MIN + rng.below(KILL_DELAY_MS_MAX));
    let durability = if rng.chance(33) { "batched" } else { "sync" };
    let killed = run_and_kill(
        &dir,
        input,
        durability,
        KillAt::AfterFirstOutcome(delay),
        Rng(rng.next()),
    );
    let ctx = format!(
        "iteration {it}, seed {seed:#x}, {durability}: {}",
        killed.stderr
    );
    if !dir.join("meta").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        return None;
    }
    let engine = debitcore::Engine::open(debitcore::EngineConfig {
        shards: 2,
        clock: debitcore::ClockMode::Manual,
        data_dir: Some(dir.clone()),
        durability: debitcore::Durability::Sync,
        ..debitcore::EngineConfig::default()
    })
    .unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
    Some((dir, killed, ctx, engine))
}

/// SPEC: a request that every shard sees (`advance_clock`) and that was
/// not handed back before a crash happened on every shard or on none. A
/// stream with clock moves every ~20 lines is killed mid-load; reopened,
/// every shard has applied the same broadcasts and stands at the same
/// engine time. (The crash image in `tests/durability.rs` makes the case
/// where a shard lacks one deterministic; this is the real process.)
#[test]
fn sigkill_mid_load_leaves_every_shard_at_one_clock() {
    let iterations = env_u64("DEBITCORE_CRASH_ITERATIONS", ITERATIONS_DEFAULT).min(12);
    let first_seed = env_u64("DEBITCORE_CRASH_SEED", SEED_DEFAULT) ^ 0xC10C;
    let mut completed = 0;
    for it in 0..iterations {
        let seed = first_seed.wrapping_add(it.wrapping_mul(0x9E37_79B9));
        let mut rng = Rng(seed);
        let mut input = Vec::new();
        for line in stream(seed, OPS, false) {
            input.extend_from_slice(line.text.as_bytes());
            input.push(b'\n');
            if rng.chance(5) {
                let ms = 1 + rng.below(60_000);
                input.extend_from_slice(
                    format!("{{\"op\":\"advance_clock\",\"ms\":{ms}}}\n").as_bytes(),
                );
            }
        }
        let Some((dir, _killed, ctx, engine)) = kill_and_reopen("clock", input, &mut rng, it, seed)
        else {
            continue;
        };
        let report = engine.recovery_report();
        assert_eq!(report.len(), 2, "{ctx}");
        assert_eq!(
            report[0].broadcasts, report[1].broadcasts,
            "{ctx}: {report:?}"
        );
        assert_eq!(report[0].now_ms, report[1].now_ms, "{ctx}: {report:?}");
        completed += 1;
        drop(engine);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert!(completed >= iterations / 2, "only {completed} reopened");
}

/// What a keyed request of the merchants stream moves for a merchant.
#[derive(Clone, Copy, Debug)]
enum Move {
    /// A debit, capture or queued debit: clears `amount` if it got `ok`.
    Clears(u64, i128),
    /// A refund of an original that cleared to the merchant: charged back
    /// if it got `ok`.
    ChargesBack(u64, i128),
}

/// SPEC, Durability and "Merchants and clearing": after a SIGKILL at any
/// instant, "every clearing and charge-back [lands] in exactly one batch;
/// a settle that was handed back is there with the same figures; one that
/// was not is either wholly there or wholly absent (a retry of its key then
/// settles or replays)". A stream of merchant debits, captures, refunds,
/// queued debits, batch runs and settles (fresh keys and retries) is
/// killed mid-load; reopened (library), for every merchant the clearings
/// minus charge-backs that survived (each request's `status`) equal
/// `pending + settled_net + fees` (every batch has gross - refunded = net +
/// fee), before and after retrying every settle key of the stream; every
/// handed-back settle replays with its figures; batch numbers are distinct.
#[test]
fn sigkill_mid_settles_puts_every_clearing_in_one_batch() {
    let iterations = env_u64("DEBITCORE_CRASH_ITERATIONS", ITERATIONS_DEFAULT).min(10);
    let first_seed = env_u64("DEBITCORE_CRASH_SEED", SEED_DEFAULT) ^ 0x5E77;
    let mut completed = 0;
    let mut settles_seen = 0;
    for it in 0..iterations {
        let seed = first_seed.wrapping_add(it.wrapping_mul(0x9E37_79B9));
        let mut rng = Rng(seed);
        let (input, moves, settles) = merchant_stream(&mut rng);
        let Some((dir, killed, ctx, engine)) = kill_and_reopen("settle", input, &mut rng, it, seed)
        else {
            continue;
        };
        let mut client = engine.client();
        let check_conservation = |client: &mut debitcore::Client, when: &str| {
            let mut expected: BTreeMap<u64, i128> = (1..=MERCHANTS).map(|m| (m, 0)).collect();
            let queries: Vec<_> = moves
                .iter()
                .map(|&((account, id), _)| debitcore::Request::Status { account, id })
                .collect();
            let statuses = client.submit_batch(&queries);
            for (&(_, mv), status) in moves.iter().zip(statuses) {
                let ok = matches!(
                    status.info,
                    debitcore::Info::Status {
                        status: debitcore::Code::Ok,
                        ..
                    }
                );
                match mv {
                    Move::Clears(m, amount) if ok => *expected.get_mut(&m).unwrap() += amount,
                    Move::ChargesBack(m, amount) if ok => *expected.get_mut(&m).unwrap() -= amount,
                    _ => {}
                }
            }
            for (&merchant, &want) in &expected {
                let figures = client.submit(debitcore::Request::Merchant { merchant });
                let debitcore::Info::Merchant(f) = &figures.info else {
                    panic!("{ctx}: merchant {merchant}: {figures:?}");
                };
                // In minor units (two decimals, USD).
                assert_eq!(
                    f.pending + f.settled_net + f.fees,
                    want,
                    "{ctx}: {when}: merchant {merchant}: {f:?}"
                );
            }
        };
        check_conservation(&mut client, "after reopen");
        // Handed-back settles replay with their figures.
        let mut batches: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for o in &killed.outcomes {
            let line = o["line"].as_u64().unwrap() as usize;
            let Some(&(merchant, id)) = settles.get(&line) else {
                continue;
            };
            settles_seen += 1;
            let again = client.submit(debitcore::Request::Settle { id, merchant });
            assert!(again.replayed, "{ctx}: line {line}: {o} then {again:?}");
            assert_eq!(again.code.name(), o["result"], "{ctx}: line {line}");
            if let debitcore::Info::Settlement(s) = &again.info {
                assert_eq!(s.batch, o["batch"].as_u64().unwrap(), "{ctx}: line {line}");
                assert_eq!(s.count, o["count"].as_u64().unwrap(), "{ctx}: line {line}");
                let gross: f64 = o["gross"].as_str().unwrap().parse().unwrap();
                assert_eq!(
                    s.gross,
                    (gross * 100.0).round() as i128,
                    "{ctx}: line {line}"
                );
                if o["replayed"] != true {
                    batches.entry(merchant).or_default().push(s.batch);
                }
            }
        }
        for (merchant, mut numbers) in batches {
            let n = numbers.len();
            numbers.sort_unstable();
            numbers.dedup();
            assert_eq!(
                numbers.len(),
                n,
                "{ctx}: merchant {merchant}: a batch twice"
            );
        }
        // Every settle key of the stream again: a replay, or (never done)
        // a settle now; conservation still holds.
        for &(merchant, id) in settles.values() {
            client.submit(debitcore::Request::Settle { id, merchant });
        }
        check_conservation(&mut client, "after retrying every settle");
        completed += 1;
        drop(client);
        drop(engine);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert!(completed >= iterations / 2, "only {completed} reopened");
    assert!(settles_seen > 0, "no settle was handed back before a kill");
}

const MERCHANTS: u64 = 3;

/// The stream of `sigkill_mid_settles_puts_every_clearing_in_one_batch`:
/// its bytes, what each keyed request would move for which merchant, and
/// the settles by line number.
#[allow(clippy::type_complexity)]
fn merchant_stream(
    rng: &mut Rng,
) -> (
    Vec<u8>,
    Vec<((u64, u64), Move)>,
    BTreeMap<usize, (u64, u64)>,
) {
    let mut lines: Vec<String> = Vec::new();
    let mut moves = Vec::new();
    let mut settles = BTreeMap::new();
    for m in 1..=MERCHANTS {
        let fee = [0, 150, 10_000][m as usize - 1];
        lines.push(format!(
            r#"{{"op":"open_merchant","merchant":{m},"currency":"USD","fee_bps":{fee}}}"#
        ));
    }
    const PAYERS: u64 = 12;
    for a in 1..=PAYERS {
        lines.push(format!(
            r#"{{"op":"open_account","account":{a},"currency":"USD"}}"#
        ));
        lines.push(format!(
            r#"{{"op":"deposit","id":1,"account":{a},"amount":"100000"}}"#
        ));
    }
    let mut next_id: BTreeMap<u64, u64> = (1..=PAYERS).map(|a| (a, 2)).collect();
    let mut fresh = |a: u64| {
        let id = next_id.get_mut(&a).unwrap();
        *id += 1;
        *id
    };
    // Originals that cleared (if ok): (account, id, merchant).
    let mut originals: Vec<(u64, u64, u64)> = Vec::new();
    let mut settle_ids: Vec<(u64, u64)> = Vec::new();
    let mut next_settle = 0u64;
    for _ in 0..OPS {
        let a = 1 + rng.below(PAYERS);
        let m = 1 + rng.below(MERCHANTS);
        let cents = i128::from(1 + rng.below(5000));
        let text = format!("{}.{:02}", cents / 100, cents % 100);
        match rng.below(100) {
            0..=34 => {
                let id = fresh(a);
                lines.push(format!(
                    r#"{{"op":"debit","id":{id},"account":{a},"amount":"{text}","merchant":{m}}}"#
                ));
                moves.push(((a, id), Move::Clears(m, cents)));
                originals.push((a, id, m));
            }
            35..=44 => {
                let (auth, capture) = (fresh(a), fresh(a));
                lines.push(format!(
                    r#"{{"op":"authorize","id":{auth},"account":{a},"amount":"60","merchant":{m}}}"#
                ));
                lines.push(format!(
                    r#"{{"op":"capture","id":{capture},"account":{a},"auth":{auth},"amount":"{text}"}}"#
                ));
                moves.push(((a, capture), Move::Clears(m, cents.min(6000))));
                originals.push((a, capture, m));
            }
            45..=59 => {
                let Some(&(oa, of, om)) =
                    originals.get(rng.below(originals.len().max(1) as u64) as usize)
                else {
                    continue;
                };
                let id = fresh(oa);
                let back = i128::from(1 + rng.below(300));
                lines.push(format!(
                    r#"{{"op":"refund","id":{id},"account":{oa},"of":{of},"amount":"{}.{:02}"}}"#,
                    back / 100,
                    back % 100
                ));
                moves.push(((oa, id), Move::ChargesBack(om, back)));
            }
            60..=74 => {
                let id = fresh(a);
                lines.push(format!(
                    r#"{{"op":"queue_debit","id":{id},"account":{a},"amount":"{text}","merchant":{m}}}"#
                ));
                moves.push(((a, id), Move::Clears(m, cents)));
                originals.push((a, id, m));
            }
            75..=79 => lines.push(r#"{"op":"run_batch"}"#.into()),
            _ => {
                let (sm, id) = match rng.pick(&settle_ids) {
                    Some(old) if rng.chance(15) => old,
                    _ => {
                        next_settle += 1;
                        (m, next_settle)
                    }
                };
                lines.push(format!(r#"{{"op":"settle","id":{id},"merchant":{sm}}}"#));
                settles.insert(lines.len(), (sm, id));
                settle_ids.push((sm, id));
            }
        }
    }
    let mut input = Vec::new();
    for line in &lines {
        input.extend_from_slice(line.as_bytes());
        input.push(b'\n');
    }
    (input, moves, settles)
}
