//! `history` on a quiet shard: one page of 20 entries (the default limit)
//! and one of 1,000 (the largest), of an account whose statement holds
//! 5,000 entries, among 10,000 accounts (a tenth of them with history).
//!
//! - `apply`: `Shard::apply` of the query alone (the page is copied out
//!   of the account's ring into the outcome);
//! - `apply_and_line`: the same, and its outcome line written
//!   (`codec::write_outcome`), as `debitcore run` answers it;
//! - `engine`: one `Client::submit` to a one-shard engine in memory: the
//!   queue hand-off to the worker and back included (what a gateway
//!   waits for); `engine_balance` is the same round trip for a `balance`,
//!   the hand-off's own cost.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use debitcore::shard::Shard;
use debitcore::{AmountArg, ClockMode, Code, Currency, Engine, EngineConfig, Request};

const ACCOUNTS: u64 = 10_000;
/// Entries of the account asked about.
const ENTRIES: u64 = 5_000;
/// The account asked about.
const ASKED: u64 = 7;

/// The requests that make the state: accounts (every tenth with history),
/// funded, and the asked account's statement filled with deposits and
/// debits.
fn setup() -> Vec<Request> {
    let mut requests = Vec::new();
    for account in 0..ACCOUNTS {
        requests.push(Request::OpenAccount {
            account,
            currency: Some(Currency::USD),
            overdraft: None,
            history: account % 10 == ASKED,
        });
        requests.push(Request::Deposit {
            id: 0,
            account,
            amount: AmountArg::from_minor(1 << 40, 2),
        });
    }
    for id in 1..ENTRIES {
        let amount = AmountArg::from_minor(100 + id, 2);
        requests.push(if id % 2 == 0 {
            Request::Deposit {
                id,
                account: ASKED,
                amount,
            }
        } else {
            Request::Debit {
                id,
                account: ASKED,
                amount,
                merchant: None,
            }
        });
    }
    requests
}

fn page(limit: u16) -> Request {
    Request::History {
        account: ASKED,
        limit: Some(limit),
        before: None,
    }
}

fn bench_history(c: &mut Criterion) {
    let mut shard = Shard::new(0, u64::MAX / 4, None);
    for request in setup() {
        assert_eq!(shard.apply(&request).code, Code::Ok, "{request:?}");
    }
    let engine = Engine::start(EngineConfig {
        shards: 1,
        clock: ClockMode::Manual,
        dedup_window_ms: u64::MAX / 4,
        ..EngineConfig::default()
    });
    let mut client = engine.client();
    for request in setup() {
        client.send(0, request);
        client.poll(|_, o| assert_eq!(o.code, Code::Ok));
    }
    while client.in_flight() > 0 {
        client.wait(|_, o| assert_eq!(o.code, Code::Ok));
    }
    let mut group = c.benchmark_group("history");
    for limit in [20u16, 1000] {
        let request = page(limit);
        group.bench_with_input(BenchmarkId::new("apply", limit), &request, |b, r| {
            b.iter(|| std::hint::black_box(shard.apply(r)))
        });
        let mut line = String::new();
        group.bench_with_input(
            BenchmarkId::new("apply_and_line", limit),
            &request,
            |b, r| {
                b.iter(|| {
                    line.clear();
                    debitcore::codec::write_outcome(&mut line, 1, &shard.apply(r));
                    std::hint::black_box(line.len())
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("engine", limit), &request, |b, r| {
            b.iter(|| std::hint::black_box(client.submit(r.clone())))
        });
    }
    // The hand-off alone, for comparison: a `balance` of the same account.
    let balance = Request::Balance { account: ASKED };
    group.bench_function("engine_balance", |b| {
        b.iter(|| std::hint::black_box(client.submit(balance.clone())))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench_history
}
criterion_main!(benches);
