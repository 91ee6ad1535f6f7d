//! The write-ahead log: recovery replay speed (records per second), and
//! durable debit throughput through the engine (append + group commit).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use debitcore::{AmountArg, ClockMode, Code, Currency, Durability, Engine, EngineConfig, Request};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ACCOUNTS: u64 = 100_000;
const DEBITS: u64 = 1_000_000;

fn config(dir: &Path, durability: Durability) -> EngineConfig {
    EngineConfig {
        shards: 1,
        clock: ClockMode::Manual,
        dedup_window_ms: u64::MAX / 4,
        data_dir: Some(dir.to_path_buf()),
        durability,
        ..EngineConfig::default()
    }
}

fn drive(engine: &Engine, requests: impl Iterator<Item = Request>) -> u64 {
    let mut client = engine.client();
    let mut ok = 0;
    for request in requests {
        client.send(0, request);
        client.poll(|_, o| ok += u64::from(o.code == Code::Ok));
    }
    while client.in_flight() > 0 {
        client.wait(|_, o| ok += u64::from(o.code == Code::Ok));
    }
    ok
}

fn setup_requests() -> impl Iterator<Item = Request> {
    (0..ACCOUNTS).flat_map(|account| {
        [
            Request::OpenAccount {
                account,
                currency: Some(Currency::USD),
                overdraft: None,
                history: false,
            },
            Request::Deposit {
                id: 0,
                account,
                amount: AmountArg::from_minor(1 << 40, 2),
            },
        ]
    })
}

fn debits(from: u64, count: u64) -> impl Iterator<Item = Request> {
    (from..from + count).map(|id| Request::Debit {
        id,
        account: debitcore::hash::fold(id) % ACCOUNTS,
        amount: AmountArg::from_minor(100, 2),
        merchant: None,
    })
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("debitcore-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn bench_wal(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal");
    group.sample_size(10);

    // Recovery: a log of 200,000 setup records and 1,000,000 debits,
    // replayed by every open.
    let dir = tempdir("recovery");
    {
        let engine = Engine::open(config(
            &dir,
            Durability::Batched {
                max_delay_us: 2_000,
            },
        ))
        .unwrap();
        drive(&engine, setup_requests());
        assert_eq!(drive(&engine, debits(1, DEBITS)), DEBITS);
    }
    let records = {
        let engine = Engine::open(config(&dir, Durability::Sync)).unwrap();
        engine.recovery_report()[0].records_replayed
    };
    group.throughput(Throughput::Elements(records));
    group.bench_function("recovery_replay_records", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let started = Instant::now();
                let engine = Engine::open(config(&dir, Durability::Sync)).unwrap();
                total += started.elapsed();
                drop(engine);
            }
            total
        })
    });
    std::fs::remove_dir_all(&dir).unwrap();

    // Durable debits through one client and one shard, sync vs none.
    const BATCH: u64 = 100_000;
    group.throughput(Throughput::Elements(BATCH));
    for (name, durability) in [("sync", Durability::Sync), ("none", Durability::None)] {
        let dir = tempdir(name);
        let engine = Engine::open(config(&dir, durability)).unwrap();
        drive(&engine, setup_requests());
        let mut next = 1;
        group.bench_function(format!("debit_1_shard_{name}"), |b| {
            b.iter(|| {
                let ok = drive(&engine, debits(next, BATCH));
                next += BATCH;
                assert_eq!(ok, BATCH);
            })
        });
        drop(engine);
        let _ = std::fs::remove_dir_all(&dir);
    }
    group.finish();
}

criterion_group!(benches, bench_wal);
criterion_main!(benches);
