//! Setup before the measured part: open every account, fund it, and give
//! the `--limits-fraction` of them limits.
//!
//! It goes through clients with `send`, pipelined like the measured part,
//! one thread per producer, each owning a contiguous range of accounts; per
//! account the open, the deposit and the limits go in that order from one
//! client, which the engine applies in order.

use crate::args::Config;
use crate::producer::{drain, DRAIN_TIMEOUT, USD_EXPONENT};
use crate::report::{proc_status_mb, SetupReport, CODE_COUNT};
use crate::workload::account_id;
use debitcore::{AmountArg, Code, Currency, Engine, LimitsArg, Request, VelocityArg};
use std::time::Instant;

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

/// Opens and funds every account; returns what it took.
pub fn fund(engine: &Engine, config: &Config) -> SetupReport {
    let threads = config.producers.min(config.accounts as usize).max(1) as u64;
    let chunk = config.accounts.div_ceil(threads);
    let started = Instant::now();
    let results: Vec<ThreadResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let client = engine.client();
                let range = (t * chunk)..((t + 1) * chunk).min(config.accounts);
                scope.spawn(move || fund_range(client, range, config))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("setup thread panicked"))
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut outcomes = [[0u64; CODE_COUNT]; 3];
    let (mut requests, mut limited, mut lost) = (0, 0, 0);
    for result in &results {
        requests += result.sent;
        limited += result.limited;
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
        requests,
        seconds,
        rss_mb_after: proc_status_mb("VmRSS"),
        failures,
        lost,
    }
}

struct ThreadResult {
    sent: u64,
    limited: u64,
    lost: u64,
    outcomes: [[u64; CODE_COUNT]; 3],
}

fn fund_range(
    mut client: debitcore::Client,
    range: std::ops::Range<u64>,
    config: &Config,
) -> ThreadResult {
    let mut result = ThreadResult {
        sent: 0,
        limited: 0,
        lost: 0,
        outcomes: [[0; CODE_COUNT]; 3],
    };
    let mut outstanding: u64 = 0;
    let limit = config.in_flight as u64;
    let deposit = AmountArg::from_minor(DEPOSIT_MINOR, USD_EXPONENT);
    let mut send =
        |client: &mut debitcore::Client, result: &mut ThreadResult, tag: u64, request: Request| {
            while outstanding >= limit {
                let got = client.wait(|tag, outcome| {
                    result.outcomes[tag as usize][outcome.code as usize] += 1;
                });
                assert!(
                    got > 0,
                    "client says nothing is in flight while {outstanding} outcomes are due"
                );
                outstanding -= got as u64;
            }
            client.send(tag, request);
            result.sent += 1;
            outstanding += 1;
            let got = client.poll(|tag, outcome| {
                result.outcomes[tag as usize][outcome.code as usize] += 1;
            });
            outstanding -= got as u64;
        };
    for index in range {
        let account = account_id(index);
        let open = Request::OpenAccount {
            account,
            currency: Some(Currency::USD),
            overdraft: None,
        };
        send(&mut client, &mut result, 0, open);
        let fund = Request::Deposit {
            id: DEPOSIT_ID,
            account,
            amount: deposit,
        };
        send(&mut client, &mut result, 1, fund);
        if config.limits_fraction > 0.0 && has_limits(index, config.limits_fraction, config.seed) {
            let set = Request::SetLimits {
                account,
                limits: Box::new(limits()),
            };
            send(&mut client, &mut result, 2, set);
            result.limited += 1;
        }
    }
    let drained = drain(
        &mut client,
        &mut outstanding,
        DRAIN_TIMEOUT,
        |tag, outcome| {
            result.outcomes[tag as usize][outcome.code as usize] += 1;
        },
    );
    if !drained {
        result.lost = outstanding;
    }
    result
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
