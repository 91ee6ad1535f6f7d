//! Throughput through the queues: one client thread sending pipelined
//! requests to 1 and 2 shard workers, and the hand-off cost on its own.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use debitcore::{AmountArg, ClockMode, Code, Currency, Engine, EngineConfig, Request};

const ACCOUNTS: u64 = 1_000_000;
const REQUESTS: u64 = 100_000;

fn engine(shards: usize, accounts: u64) -> Engine {
    let engine = Engine::start(EngineConfig {
        shards,
        clock: ClockMode::Manual,
        dedup_window_ms: u64::MAX / 4,
        ..EngineConfig::default()
    });
    let mut client = engine.client();
    for account in 0..accounts {
        client.send(
            0,
            Request::OpenAccount {
                account,
                currency: Some(Currency::USD),
                overdraft: None,
                history: false,
            },
        );
        client.send(
            0,
            Request::Deposit {
                id: 0,
                account,
                amount: AmountArg::from_minor(1 << 40, 2),
            },
        );
        client.poll(|_, o| assert_eq!(o.code, Code::Ok));
    }
    while client.in_flight() > 0 {
        client.wait(|_, o| assert_eq!(o.code, Code::Ok));
    }
    drop(client);
    engine
}

fn run(engine: &Engine, requests: impl Iterator<Item = Request>) {
    let mut client = engine.client();
    for request in requests {
        client.send(0, request);
        client.poll(|_, o| {
            std::hint::black_box(o);
        });
    }
    while client.in_flight() > 0 {
        client.wait(|_, o| {
            std::hint::black_box(o);
        });
    }
}

fn bench_end_to_end(c: &mut Criterion) {
    let mut group = c.benchmark_group("end_to_end");
    group.throughput(Throughput::Elements(REQUESTS));
    group.sample_size(10);
    for shards in [1, 2] {
        let engine = engine(shards, ACCOUNTS);
        let mut next_id = 1u64;
        group.bench_function(format!("debit_{shards}_shards_1m_accounts"), |b| {
            b.iter(|| {
                let start = next_id;
                next_id += REQUESTS;
                run(
                    &engine,
                    (start..start + REQUESTS).map(|id| Request::Debit {
                        id,
                        account: debitcore::hash::fold(id) % ACCOUNTS,
                        amount: AmountArg::from_minor(100, 2),
                        merchant: None,
                    }),
                )
            })
        });
    }
    // Hand-off alone: `balance` of one account costs almost nothing to
    // apply, so this is the queue round trip per request in batches of 64.
    let engine = engine(1, 1);
    group.bench_function("handoff_balance_1_shard", |b| {
        b.iter(|| {
            run(
                &engine,
                (0..REQUESTS).map(|_| Request::Balance { account: 0 }),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench_end_to_end);
criterion_main!(benches);
