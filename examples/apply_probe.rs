//! Applies N debits to one shard and prints ns per debit: a probe for
//! callgrind (`valgrind --tool=callgrind`) and quick what-ifs.
//! Usage: apply_probe ACCOUNTS DEBITS [BATCH [GROW]]: with BATCH (not 0),
//! requests go through `Shard::apply_each` a batch at a time (prefetching
//! ahead), as the shard worker does; without, through `Shard::apply` one by
//! one. GROW = 1 leaves the key table unsized, so it grows (and moves
//! records) during the run, as in a live engine.
use debitcore::shard::Shard;
use debitcore::{AmountArg, Currency, Request};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let (accounts, debits) = (
        args.first().copied().unwrap_or(1_000_000),
        args.get(1).copied().unwrap_or(1_000_000),
    );
    let mut shard = Shard::new(0, u64::MAX / 4, None);
    let grow = args.get(3).copied().unwrap_or(0) == 1;
    let keys = if grow { 0 } else { accounts + debits };
    shard.reserve(accounts as usize, keys as usize);
    for account in 0..accounts {
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
    let requests: Vec<Request> = (1..=debits)
        .map(|i| Request::Debit {
            id: debitcore::hash::fold(i),
            account: debitcore::hash::fold(i ^ 77) % accounts,
            amount: AmountArg::from_minor(100, 2),
            merchant: None,
        })
        .collect();
    let batch = args.get(2).copied().unwrap_or(0) as usize;
    let start = std::time::Instant::now();
    let mut ok = 0;
    for chunk in requests.chunks(batch.max(1)) {
        if batch > 0 {
            shard.apply_each(
                chunk,
                |r| r,
                |_, outcome| ok += usize::from(outcome.code == debitcore::Code::Ok),
            );
        } else {
            for r in chunk {
                ok += usize::from(shard.apply(r).code == debitcore::Code::Ok);
            }
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / debits as f64;
    println!("{ns:.1} ns/debit, {ok} ok");
}
