//! Setup before the measured part: open every account, fund it, and give
//! the `--limits-fraction` of them limits.
//!
//! It goes through clients with `send`, pipelined like the measured part,
//! one thread per producer, each owning a contiguous range of accounts; per
//! account the open, the deposit and the limits go in that order from one
//! client, which the engine applies in order.

/// Requests a setup client keeps in flight at least.
const SETUP_IN_FLIGHT_MIN: usize = 8192;

use crate::args::Config;
use crate::producer::{drain, DRAIN_TIMEOUT, USD_EXPONENT};
use crate::report::{proc_status_mb, SetupReport, CODE_COUNT};
use crate::workload::account_id;
use debitcore::{AmountArg, Code, Currency, Engine, LimitsArg, Request, VelocityArg};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Setup gives up when no outcome at all arrives for this long: the engine
/// is stuck, and saying so beats hanging.
const SETUP_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Every account starts with $1 trillion (10^14 cents), so that even the
/// hottest zipf account cannot run dry in a run: insufficient funds would
/// measure the setup, not the engine.
pub const DEPOSIT_MINOR: u64 = 100_000_000_000_000;

/// Id of the funding deposit (random ids are u64s; 0 is as good as any and
/// sequential ids start at 1).
const DEPOSIT_ID: u64 = 0;

/// Setup requests by kind, used as their tags.
const SETUP_OPS: [&str; 3] = ["open_account", "deposit", "set_limits"];

/// The limits of a limited account, in USD cents: per transaction $2,000,
/// $20,000 a day, review above $1,000, and review a 21st debit of at most
/// $5 within a minute. With the purchase amounts of `workload`, about 1% of
/// debits on such an account meet review or the per-transaction limit.
pub fn limits() -> LimitsArg {
    let usd = |minor| AmountArg::from_minor(minor, USD_EXPONENT);
    LimitsArg {
        per_txn: Some(usd(200_000)),
        daily: Some(usd(2_000_000)),
        review_above: Some(usd(100_000)),
        velocity: Some(VelocityArg {
            max: 20,
            window_ms: 60_000,
            below: usd(500),
        }),
    }
}

/// Whether account `index` gets limits: a fixed hash of the index against
/// the fraction, so the choice is spread over the account space and the
/// same for every run with one seed.
pub fn has_limits(index: u64, fraction: f64, seed: u64) -> bool {
    let h = debitcore::hash::mix(seed, index);
    (h as f64) < fraction * 18_446_744_073_709_551_616.0
}

/// Whether account `index` is opened with history: as [`has_limits`],
/// with another salt, so the two choices are independent.
pub fn has_history(index: u64, fraction: f64, seed: u64) -> bool {
    has_limits(index, fraction, seed ^ 0x4157_0000_0000_0001)
}

/// Opens and funds every account; returns what it took.
pub fn fund(engine: &Engine, config: &Config) -> SetupReport {
    if config.merchants > 0 {
        open_merchants(engine, config.merchants);
    }
    let threads = config.producers.min(config.accounts as usize).max(1) as u64;
    let chunk = config.accounts.div_ceil(threads);
    let started = Instant::now();
    let progress = AtomicU64::new(0);
    let results: Vec<ThreadResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let client = engine.client();
                let range = (t * chunk)..((t + 1) * chunk).min(config.accounts);
                let progress = &progress;
                scope.spawn(move || fund_range(client, range, config, progress))
            })
            .collect();
        let (mut seen, mut last_change) = (0, Instant::now());
        while handles.iter().any(|h| !h.is_finished()) {
            std::thread::sleep(Duration::from_millis(10));
            let now_seen = progress.load(Ordering::Relaxed);
            if now_seen != seen {
                (seen, last_change) = (now_seen, Instant::now());
            } else if last_change.elapsed() >= SETUP_STALL_TIMEOUT {
                eprintln!(
                    "loadgen: setup stalled: no outcome for {} s after {seen} outcomes; the engine hangs",
                    SETUP_STALL_TIMEOUT.as_secs()
                );
                std::process::exit(3);
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("setup thread panicked"))
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut outcomes = [[0u64; CODE_COUNT]; 3];
    let (mut requests, mut limited, mut lost, mut with_history) = (0, 0, 0, 0);
    for result in &results {
        requests += result.sent;
        limited += result.limited;
        with_history += result.with_history;
        lost += result.lost;
        for (total, part) in outcomes.iter_mut().zip(&result.outcomes) {
            for (a, b) in total.iter_mut().zip(part) {
                *a += b;
            }
        }
    }
    let mut failures = Vec::new();
    for (op, per_code) in SETUP_OPS.iter().zip(&outcomes) {
        for code in Code::ALL {
            if code != Code::Ok && per_code[code as usize] > 0 {
                failures.push((*op, code.name(), per_code[code as usize]));
            }
        }
    }
    SetupReport {
        accounts: config.accounts,
        limited,
        with_history,
        requests,
        seconds,
        rss_mb_after: proc_status_mb("VmRSS"),
        failures,
        lost,
    }
}

#[derive(Default)]
struct ThreadResult {
    sent: u64,
    limited: u64,
    with_history: u64,
    lost: u64,
    outcomes: [[u64; CODE_COUNT]; 3],
}

/// One setup thread's pipeline: a client, its outstanding count and the
/// tally of outcomes by setup op (the tag) and code.
struct Pipeline<'a> {
    client: debitcore::Client,
    outstanding: u64,
    in_flight_max: u64,
    result: ThreadResult,
    progress: &'a AtomicU64,
}

impl Pipeline<'_> {
    /// Sends one request, first waiting while too many are in flight.
    fn send(&mut self, tag: u64, request: Request) {
        while self.outstanding >= self.in_flight_max {
            let outcomes = &mut self.result.outcomes;
            let got = self.client.wait(|tag, outcome| {
                outcomes[tag as usize][outcome.code as usize] += 1;
            });
            assert!(
                got > 0,
                "client has nothing in flight, {} due",
                self.outstanding
            );
            self.took(got);
        }
        self.client.send(tag, request);
        self.result.sent += 1;
        self.outstanding += 1;
        let outcomes = &mut self.result.outcomes;
        let got = self.client.poll(|tag, outcome| {
            outcomes[tag as usize][outcome.code as usize] += 1;
        });
        self.took(got);
    }

    fn took(&mut self, got: usize) {
        if got > 0 {
            self.outstanding -= got as u64;
            self.progress.fetch_add(got as u64, Ordering::Relaxed);
        }
    }

    /// Takes the remaining outcomes; what does not come back is lost.
    fn finish(mut self) -> ThreadResult {
        let outcomes = &mut self.result.outcomes;
        let drained = drain(
            &mut self.client,
            &mut self.outstanding,
            DRAIN_TIMEOUT,
            |tag, outcome| {
                outcomes[tag as usize][outcome.code as usize] += 1;
            },
        );
        if !drained {
            self.result.lost = self.outstanding;
            // As in the producer: dropping the client would wait forever.
            std::mem::forget(self.client);
        }
        self.result
    }
}

/// Merchants 1..=n, USD, 100 bps: broadcasts, one client, in batches.
fn open_merchants(engine: &Engine, n: u64) {
    let mut client = engine.client();
    let ids: Vec<u64> = (1..=n).collect();
    for chunk in ids.chunks(1024) {
        let opens: Vec<Request> = chunk
            .iter()
            .map(|&merchant| Request::OpenMerchant {
                merchant,
                currency: Some(Currency::USD),
                fee_bps: Some(MERCHANT_FEE_BPS),
            })
            .collect();
        for (merchant, outcome) in chunk.iter().zip(client.submit_batch(&opens)) {
            if outcome.code != Code::Ok {
                eprintln!(
                    "loadgen: setup: open_merchant {merchant}: {}",
                    outcome.code.name()
                );
                std::process::exit(1);
            }
        }
    }
}

/// The fee rate of the merchants `--merchants` opens.
pub const MERCHANT_FEE_BPS: u16 = 100;

fn fund_range(
    client: debitcore::Client,
    range: std::ops::Range<u64>,
    config: &Config,
    progress: &AtomicU64,
) -> ThreadResult {
    let mut pipeline = Pipeline {
        client,
        outstanding: 0,
        // Setup is not measured: pipeline deeply whatever the run's
        // --in-flight (at 1 in flight, a durable setup of 1M accounts
        // would wait for 2M fsyncs).
        in_flight_max: config.in_flight.max(SETUP_IN_FLIGHT_MIN) as u64,
        result: ThreadResult::default(),
        progress,
    };
    let deposit = AmountArg::from_minor(DEPOSIT_MINOR, USD_EXPONENT);
    for index in range {
        let account = account_id(index);
        let history = config.history_fraction > 0.0
            && has_history(index, config.history_fraction, config.seed);
        pipeline.result.with_history += u64::from(history);
        let open = Request::OpenAccount {
            account,
            currency: Some(Currency::USD),
            overdraft: None,
            history,
        };
        pipeline.send(0, open);
        let fund = Request::Deposit {
            id: DEPOSIT_ID,
            account,
            amount: deposit,
        };
        pipeline.send(1, fund);
        if config.limits_fraction > 0.0 && has_limits(index, config.limits_fraction, config.seed) {
            let set = Request::SetLimits {
                account,
                limits: Box::new(limits()),
            };
            pipeline.send(2, set);
            pipeline.result.limited += 1;
        }
    }
    pipeline.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_fraction_is_respected() {
        let n = 100_000;
        for fraction in [0.0, 0.1, 0.5, 1.0] {
            let limited = (0..n).filter(|&i| has_limits(i, fraction, 1)).count() as f64;
            assert!(
                (limited / n as f64 - fraction).abs() < 0.01,
                "fraction {fraction}: {limited} of {n}"
            );
        }
    }

    #[test]
    fn limits_are_valid_amounts() {
        let l = limits();
        for amount in [
            l.per_txn,
            l.daily,
            l.review_above,
            l.velocity.map(|v| v.below),
        ] {
            let minor = amount.unwrap().to_positive_minor(USD_EXPONENT);
            assert!(minor.is_some(), "{amount:?} must be a positive USD amount");
        }
        assert!(AmountArg::from_minor(DEPOSIT_MINOR, USD_EXPONENT)
            .to_positive_minor(USD_EXPONENT)
            .is_some());
    }
}
