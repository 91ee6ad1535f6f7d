//! Deterministic workloads for counting instructions under callgrind: the
//! runner behind `benches/icount/check.sh` (see `benches/icount/README.md`).
//!
//! Usage: `icount WORKLOAD N`, WORKLOAD one of
//!
//! - `debit`: N plain debits (no limits, no policy) on one shard;
//! - `debit_history`: the `debit` workload on accounts opened with
//!   history: each debit also adds a statement entry (the keyed frame's
//!   cold path);
//! - `debit_limited`: N debits on accounts with every `set_limits` field
//!   set (per_txn, daily, review_above, velocity), amounts that pass them all;
//! - `authorize_capture`: N units of one authorize and one capture of it;
//! - `engine_debit`: N debits sent through an [`Engine`] with one shard and
//!   one [`Client`] (manual clock): the queue hand-off plus the apply. NOT
//!   gated by `check.sh`: with two threads its count depends on scheduling
//!   (spins, timed park wake-ups, heap layout), even with the client's
//!   waiting excluded; see `benches/icount/README.md` for the spread
//!   measured and how to count it by hand;
//! - `log_record`: N debit records encoded (framing, CRC-32C) in place into
//!   a buffer standing in for the mapped segment: the CPU cost a durable
//!   engine adds per debit, without the I/O (which instructions cannot count).
//!
//! The setup (10,000 funded accounts, [`UNITS_MAX`] units of requests drawn
//! from a fixed-seed PRNG: random accounts, random transaction ids, as a
//! gateway sends them) is the same whatever N is, and only the first N units
//! are applied. So the instructions of two runs differ only by the units
//! between them: `(Ir(N2) - Ir(N1)) / (N2 - N1)` is the cost of one unit,
//! with setup, process start and teardown cancelled exactly.
//!
//! Every outcome is checked: a workload whose requests stop succeeding (and
//! so get cheaper) exits 1 instead of reporting a flattering count.
use debitcore::shard::Shard;
use debitcore::{
    AmountArg, Client, ClockMode, Code, Currency, Engine, EngineConfig, LimitsArg, Request,
    VelocityArg,
};
use std::hint::black_box;
use std::process::ExitCode;

/// Accounts opened and funded before the measured part.
const ACCOUNTS: u64 = 10_000;
/// Units pre-generated for every run, whatever N; the largest N accepted.
const UNITS_MAX: u64 = 200_000;
/// The PRNG seed. Changing it changes every count: refresh the baseline.
const SEED: u64 = 0x5EED_1C0A_7000_0001;
/// Engine time of the whole run; the clock never moves (no expiry, no
/// forgetting, one UTC day for the daily limit).
const NOW_MS: u64 = 1_700_000_000_000;
/// Far longer than the run: nothing is forgotten.
const DEDUP_WINDOW_MS: u64 = u64::MAX / 4;
/// Each account starts with this many minor units (USD: 2 decimals).
const FUNDING_MINOR: u64 = 1 << 40;
/// Debit and authorize amounts are 1..=AMOUNT_MINOR_MAX minor units.
const AMOUNT_MINOR_MAX: u64 = 10_000;
const USD_EXPONENT: u32 = 2;

const USAGE: &str = "usage: icount WORKLOAD N
  WORKLOAD: debit | debit_merchant | debit_history | debit_limited | authorize_capture | engine_debit | log_record
  N: units to apply after the setup, 0..=200000";

/// Merchants of the `debit_merchant` workload (a gateway's busy set).
const MERCHANTS: u64 = 10_000;

/// splitmix64: a fixed sequence from a fixed seed, the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        debitcore::hash::fold(self.0)
    }

    fn amount(&mut self) -> AmountArg {
        AmountArg::from_minor(1 + self.next() % AMOUNT_MINOR_MAX, USD_EXPONENT)
    }
}

fn minor(units: u64) -> AmountArg {
    AmountArg::from_minor(units, USD_EXPONENT)
}

/// The accounts (random 64-bit ids) and the requests that open and fund them.
fn setup_requests(rng: &mut Rng) -> (Vec<u64>, Vec<Request>) {
    setup_requests_with(rng, false)
}

/// As [`setup_requests`], the accounts opened with `history`.
fn setup_requests_with(rng: &mut Rng, history: bool) -> (Vec<u64>, Vec<Request>) {
    let accounts: Vec<u64> = (0..ACCOUNTS).map(|_| rng.next()).collect();
    let mut requests = Vec::with_capacity(accounts.len() * 2);
    for &account in &accounts {
        requests.push(Request::OpenAccount {
            account,
            currency: Some(Currency::USD),
            overdraft: None,
            history,
        });
        requests.push(Request::Deposit {
            id: rng.next(),
            account,
            amount: minor(FUNDING_MINOR),
        });
    }
    (accounts, requests)
}

/// Limits that every debit of the workload passes: per_txn and review_above
/// at the largest amount, a daily limit far above what an account takes in
/// a run, and a velocity rule that counts about half of the debits (those
/// of at most half the largest amount) but whose `max` is never reached.
fn passing_limits(account: u64) -> Request {
    Request::SetLimits {
        account,
        limits: Box::new(LimitsArg {
            per_txn: Some(minor(AMOUNT_MINOR_MAX)),
            daily: Some(minor(AMOUNT_MINOR_MAX * UNITS_MAX)),
            review_above: Some(minor(AMOUNT_MINOR_MAX)),
            velocity: Some(VelocityArg {
                max: 1000,
                window_ms: 3_600_000,
                below: minor(AMOUNT_MINOR_MAX / 2),
            }),
        }),
    }
}

fn debits(rng: &mut Rng, accounts: &[u64]) -> Vec<Request> {
    (0..UNITS_MAX)
        .map(|_| Request::Debit {
            id: rng.next(),
            account: accounts[(rng.next() % ACCOUNTS) as usize],
            amount: rng.amount(),
            merchant: None,
        })
        .collect()
}

/// Two requests per unit: an authorize and the final capture of all of it.
fn authorize_captures(rng: &mut Rng, accounts: &[u64]) -> Vec<Request> {
    let mut requests = Vec::with_capacity(2 * UNITS_MAX as usize);
    for _ in 0..UNITS_MAX {
        let account = accounts[(rng.next() % ACCOUNTS) as usize];
        let auth = rng.next();
        let amount = rng.amount();
        requests.push(Request::Authorize {
            id: auth,
            account,
            amount,
            expires_in_ms: Some(3_600_000),
            merchant: None,
        });
        requests.push(Request::Capture {
            id: rng.next(),
            account,
            auth,
            amount: Some(amount),
            is_final: true,
        });
    }
    requests
}

/// Counts outcomes that are not `expected`, remembering the first.
#[derive(Default)]
struct Tally {
    applied: u64,
    unexpected: u64,
    first_unexpected: Option<(u64, Code)>,
}

impl Tally {
    fn see(&mut self, index: u64, code: Code, expected: Code) {
        self.applied += 1;
        if code != expected {
            self.unexpected += 1;
            self.first_unexpected.get_or_insert((index, code));
        }
    }
}

/// A shard at `NOW_MS` with the accounts open and funded, and room reserved
/// for every key the largest run makes (the same reservation for every N,
/// so table growth is not part of the per-unit cost).
fn funded_shard(setup: &[Request], keys_per_unit: u64) -> Result<Shard, String> {
    let mut shard = Shard::new(NOW_MS, DEDUP_WINDOW_MS, None);
    shard.reserve(
        ACCOUNTS as usize,
        (ACCOUNTS + keys_per_unit * UNITS_MAX) as usize,
    );
    for request in setup {
        let code = shard.apply(request).code;
        if code != Code::Ok {
            return Err(format!("setup: {request:?} answered {}", code.name()));
        }
    }
    Ok(shard)
}

/// Applies `requests` in order, in batches of 64 through
/// `Shard::apply_each` as the shard worker does (so the prefetching is
/// counted too). (No `check_invariants` afterwards: it walks every hold, a
/// cost that grows with N and would land in the per-unit figure; the tests
/// check invariants, this counts instructions.)
fn run_shard(
    mut shard: Shard,
    requests: &[Request],
    expected: Code,
    tally: &mut Tally,
) -> Result<(), String> {
    let mut index = 0;
    for batch in black_box(requests).chunks(64) {
        shard.apply_each(
            batch,
            |request| request,
            |_, outcome| {
                tally.see(index, black_box(outcome).code, expected);
                index += 1;
            },
        );
    }
    Ok(())
}

fn shard_workload(workload: &str, n: u64, rng: &mut Rng, tally: &mut Tally) -> Result<(), String> {
    let (accounts, setup) = setup_requests_with(rng, workload == "debit_history");
    match workload {
        "debit_history" => {
            // The same debits on accounts that keep a statement: the cost
            // of the cold path and the entry (the statements' rings grow
            // as they go: no reservation, as for holds).
            let requests = debits(rng, &accounts);
            let shard = funded_shard(&setup, 1)?;
            run_shard(shard, &requests[..n as usize], Code::Ok, tally)
        }
        "debit" => {
            let requests = debits(rng, &accounts);
            let shard = funded_shard(&setup, 1)?;
            run_shard(shard, &requests[..n as usize], Code::Ok, tally)
        }
        "debit_merchant" => {
            // The same debits, each for one of MERCHANTS merchants: the
            // cost of clearing (a merchant lookup and its part, the amount
            // and merchant beside the key for refunds).
            let mut requests = debits(rng, &accounts);
            for request in &mut requests {
                if let Request::Debit { merchant, .. } = request {
                    *merchant = Some(rng.next() % MERCHANTS);
                }
            }
            let mut shard = funded_shard(&setup, 1)?;
            for id in 0..MERCHANTS {
                let open = Request::OpenMerchant {
                    merchant: id,
                    currency: Some(Currency::USD),
                    fee_bps: Some(150),
                };
                if shard.apply(&open).code != Code::Ok {
                    return Err("setup: open_merchant refused".to_string());
                }
            }
            run_shard(shard, &requests[..n as usize], Code::Ok, tally)
        }
        "debit_limited" => {
            let requests = debits(rng, &accounts);
            let mut shard = funded_shard(&setup, 1)?;
            for &account in &accounts {
                let code = shard.apply(&passing_limits(account)).code;
                if code != Code::Ok {
                    return Err(format!("setup: set_limits answered {}", code.name()));
                }
            }
            run_shard(shard, &requests[..n as usize], Code::Ok, tally)
        }
        "authorize_capture" => {
            let requests = authorize_captures(rng, &accounts);
            let shard = funded_shard(&setup, 2)?;
            run_shard(shard, &requests[..2 * n as usize], Code::Ok, tally)
        }
        _ => unreachable!("checked in main"),
    }
}

/// Encodes N debit records in place into a preallocated buffer, as
/// `ShardLog::append_request` does into its mapping for the worker;
/// every record is read back
/// once at the end, so a record that stops encoding correctly fails.
fn log_workload(n: u64, rng: &mut Rng, tally: &mut Tally) -> Result<(), String> {
    use debitcore::wal::record::{self, Frame};
    let (accounts, _) = setup_requests(rng);
    let requests = debits(rng, &accounts);
    let mut segment = vec![0u8; requests.len() * record::RECORD_BYTES_MAX];
    let mut offset = 0;
    for (lsn, request) in black_box(&requests[..n as usize]).iter().enumerate() {
        let room = segment[offset..]
            .first_chunk_mut::<{ record::RECORD_BYTES_MAX }>()
            .expect("room for every record");
        let size = record::encode_request_into(room, lsn as u64 + 1, request, Code::Ok);
        offset += size;
        tally.see(lsn as u64, Code::Ok, Code::Ok);
    }
    black_box(&segment);
    if n > 0 {
        match record::decode(&segment[offset - 48..]) {
            Frame::Valid { lsn, .. } if lsn == n => Ok(()),
            other => Err(format!("the last record does not read back: {other:?}")),
        }
    } else {
        Ok(())
    }
}

/// Debits through the engine: one shard worker thread, one client that
/// pipelines all N (batched per the client's defaults) and takes every
/// outcome back. The engine's shard has no `reserve`, so key-table growth
/// is part of this workload's cost.
fn engine_workload(n: u64, rng: &mut Rng, tally: &mut Tally) -> Result<(), String> {
    let (accounts, setup) = setup_requests(rng);
    let requests = debits(rng, &accounts);
    let engine = Engine::start(EngineConfig {
        shards: 1,
        clock: ClockMode::Manual,
        dedup_window_ms: DEDUP_WINDOW_MS,
        ..EngineConfig::default()
    });
    let mut client = engine.client();
    // Setup through send/wait as well, not `submit_batch`: that rescans all
    // its results after every wake-up, as often as thread timing has it.
    let mut setup_tally = Tally::default();
    pipeline(&mut client, setup, &mut setup_tally);
    if let Some((index, code)) = setup_tally.first_unexpected {
        return Err(format!("setup request {index} answered {}", code.name()));
    }
    pipeline(&mut client, requests.into_iter().take(n as usize), tally);
    drop(client);
    engine.shutdown();
    Ok(())
}

/// Sends every request (the client batches them and blocks only at its
/// in-flight limit), then takes every outcome back.
fn pipeline(client: &mut Client, requests: impl IntoIterator<Item = Request>, tally: &mut Tally) {
    for (tag, request) in requests.into_iter().enumerate() {
        client.send(tag as u64, request);
    }
    while client.in_flight() > 0 {
        client.wait(|tag, outcome| tally.see(tag, outcome.code, Code::Ok));
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [workload, n] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let n: u64 = match n.parse() {
        Ok(n) if n <= UNITS_MAX => n,
        _ => {
            eprintln!("icount: N must be a whole number 0..={UNITS_MAX}, not {n:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut rng = Rng(SEED);
    let mut tally = Tally::default();
    let result = match workload.as_str() {
        "debit" | "debit_merchant" | "debit_history" | "debit_limited" | "authorize_capture" => {
            shard_workload(workload, n, &mut rng, &mut tally)
        }
        "engine_debit" => engine_workload(n, &mut rng, &mut tally),
        "log_record" => log_workload(n, &mut rng, &mut tally),
        other => {
            eprintln!("icount: unknown workload {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(message) = result {
        eprintln!("icount: {workload}: {message}");
        return ExitCode::from(1);
    }
    if tally.unexpected > 0 {
        let (index, code) = tally.first_unexpected.expect("counted");
        eprintln!(
            "icount: {workload}: {} of {} outcomes were not ok (the first, request {index}: {})",
            tally.unexpected,
            tally.applied,
            code.name()
        );
        return ExitCode::from(1);
    }
    let per_unit = if workload == "authorize_capture" {
        2
    } else {
        1
    };
    if tally.applied != n * per_unit {
        eprintln!(
            "icount: {workload}: {} outcomes for {} requests",
            tally.applied,
            n * per_unit
        );
        return ExitCode::from(1);
    }
    println!("icount: {workload}: {n} units, all ok");
    ExitCode::SUCCESS
}
