//! Single-shard apply cost per request, no queues: the state machine alone.
//!
//! 1,000,000 funded accounts, random account ids and random transaction ids
//! (what gateways send), keys accumulating as they would in a real window.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use debitcore::shard::Shard;
use debitcore::{AmountArg, Currency, Request};

const ACCOUNTS_DEFAULT: u64 = 1_000_000;
const CHUNK: usize = 10_000;

/// Accounts in the shard; `DEBITCORE_BENCH_ACCOUNTS` overrides (to tell
/// compute cost from memory cost).
fn accounts() -> u64 {
    std::env::var("DEBITCORE_BENCH_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ACCOUNTS_DEFAULT)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        debitcore::hash::fold(self.0)
    }
}

fn account_id(i: u64) -> u64 {
    // Sparse, random-looking account ids, as a gateway's would be.
    debitcore::hash::fold(i ^ 0x5EED)
}

fn funded_shard() -> Shard {
    let mut shard = Shard::new(0, u64::MAX / 4, None);
    shard.reserve(accounts() as usize, 0);
    for i in 0..accounts() {
        let account = account_id(i);
        shard.apply(&Request::OpenAccount {
            account,
            currency: Some(Currency::USD),
            overdraft: None,
            history: false,
        });
        shard.apply(&Request::Deposit {
            id: 0,
            account,
            amount: AmountArg::from_minor(1 << 40, 2),
        });
    }
    shard
}

fn debits(rng: &mut Rng) -> Vec<Request> {
    (0..CHUNK)
        .map(|_| Request::Debit {
            id: rng.next(),
            account: account_id(rng.next() % accounts()),
            amount: AmountArg::from_minor(1 + rng.next() % 10_000, 2),
            merchant: None,
        })
        .collect()
}

fn bench_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("shard_apply");
    group.throughput(Throughput::Elements(CHUNK as u64));
    group.sample_size(30);
    let mut shard = funded_shard();
    let mut rng = Rng(1);
    group.bench_function("debit_1m_accounts_random", |b| {
        b.iter_batched(
            || debits(&mut rng),
            |requests| {
                for request in &requests {
                    std::hint::black_box(shard.apply(request));
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("debit_1m_accounts_random_prefetched", |b| {
        b.iter_batched(
            || debits(&mut rng),
            |requests| {
                for batch in requests.chunks(64) {
                    shard.apply_each(
                        batch,
                        |r| r,
                        |_, outcome| {
                            std::hint::black_box(outcome);
                        },
                    );
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.throughput(Throughput::Elements(2 * CHUNK as u64));
    group.bench_function("authorize_capture_1m_accounts_random", |b| {
        b.iter_batched(
            || {
                (0..CHUNK)
                    .flat_map(|_| {
                        let (id, account) = (rng.next(), account_id(rng.next() % accounts()));
                        [
                            Request::Authorize {
                                id,
                                account,
                                amount: AmountArg::from_minor(5_000, 2),
                                expires_in_ms: None,
                                merchant: None,
                            },
                            Request::Capture {
                                id: id ^ 1,
                                account,
                                auth: id,
                                amount: Some(AmountArg::from_minor(4_000, 2)),
                                is_final: true,
                            },
                        ]
                    })
                    .collect::<Vec<_>>()
            },
            |requests| {
                for request in &requests {
                    std::hint::black_box(shard.apply(request));
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
    let stats = shard.stats();
    eprintln!(
        "memory: {} accounts, {:.1} B/account; {} keys, {:.1} B/key",
        stats.accounts,
        stats.account_bytes as f64 / stats.accounts as f64,
        stats.keys,
        stats.key_bytes as f64 / stats.keys as f64
    );
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
