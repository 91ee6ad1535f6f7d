//! The write-ahead log through the library: reopen, torn tails, damage in
//! the middle, a full disk, failed flushes, snapshots, the lock.
//!
//! Each test guards against one way of losing or inventing money after a
//! restart; the process-killing crash test is `tests/crash.rs`.

use debitcore::wal::record::{self, Frame, Record};
use debitcore::wal::{Durability, Faults, OpenError, WalOptions};
use debitcore::{AmountArg, ClockMode, Code, Currency, Engine, EngineConfig, Info, Request};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("debitcore-dur-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(dir: &Path, wal: WalOptions) -> EngineConfig {
    EngineConfig {
        shards: 1,
        clock: ClockMode::Manual,
        data_dir: Some(dir.to_path_buf()),
        durability: Durability::Sync,
        wal,
        ..EngineConfig::default()
    }
}

fn open(dir: &Path) -> Engine {
    Engine::open(config(dir, WalOptions::default())).expect("opens")
}

fn amount(text: &str) -> AmountArg {
    AmountArg::parse(text)
}

fn debit(id: u64, text: &str) -> Request {
    Request::Debit {
        id,
        account: 1,
        amount: amount(text),
        merchant: None,
    }
}

fn setup(engine: &Engine) {
    let mut c = engine.client();
    let open = Request::OpenAccount {
        account: 1,
        currency: Some(Currency::USD),
        overdraft: None,
        history: false,
    };
    assert_eq!(c.submit(open).code, Code::Ok);
    let deposit = Request::Deposit {
        id: 1,
        account: 1,
        amount: amount("1000000"),
    };
    assert_eq!(c.submit(deposit).code, Code::Ok);
}

fn balance(engine: &Engine) -> (i64, i64) {
    match engine.client().submit(Request::Balance { account: 1 }).info {
        Info::Balance { balance, held, .. } => (balance, held),
        other => panic!("not a balance: {other:?}"),
    }
}

fn status(engine: &Engine, id: u64) -> Code {
    let outcome = engine.client().submit(Request::Status { account: 1, id });
    match outcome.info {
        Info::Status { status, .. } => status,
        _ => outcome.code,
    }
}

/// Every record of shard 0 as (file, offset, lsn, record), in order.
fn records(dir: &Path) -> Vec<(PathBuf, usize, u64, Record)> {
    shard_records(dir, 0)
}

/// Every record of shard `index` as (file, offset, lsn, record), in order.
fn shard_records(dir: &Path, index: usize) -> Vec<(PathBuf, usize, u64, Record)> {
    let shard = debitcore::wal::shard_dir(dir, index);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&shard)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let mut offset = debitcore::wal::segment::SEGMENT_HEADER_BYTES;
        while let Frame::Valid { lsn, record, size } = record::decode(&bytes[offset..]) {
            out.push((file.clone(), offset, lsn, record));
            offset += size;
        }
    }
    out
}

/// A crash image: the file's bytes from `offset` on never reached the
/// disk (zeros, as a torn tail reads).
fn tear_off(file: &Path, offset: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[offset..].fill(0);
    std::fs::write(file, bytes).unwrap();
}

fn flip_byte(file: &Path, offset: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[offset] ^= 0x40;
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn acknowledged_outcomes_survive_a_reopen() {
    let dir = tempdir("reopen");
    let engine = open(&dir);
    setup(&engine);
    let mut c = engine.client();
    assert_eq!(c.submit(debit(2, "10.00")).code, Code::Ok);
    assert_eq!(c.submit(debit(3, "2000000")).code, Code::InsufficientFunds);
    let hold = Request::Authorize {
        id: 4,
        account: 1,
        amount: amount("5"),
        expires_in_ms: Some(1_000),
        merchant: None,
    };
    assert_eq!(c.submit(hold).code, Code::Ok);
    assert_eq!(c.submit(Request::AdvanceClock { ms: 400 }).code, Code::Ok);
    drop(c);
    let before = balance(&engine);
    drop(engine);

    let engine = open(&dir);
    assert_eq!(balance(&engine), before);
    assert_eq!(status(&engine, 2), Code::Ok);
    assert_eq!(
        status(&engine, 3),
        Code::InsufficientFunds,
        "rejections are remembered too"
    );
    let mut c = engine.client();
    let again = c.submit(debit(2, "10"));
    assert!(again.replayed && again.code == Code::Ok);
    // The manual clock resumed at 400: the hold expires 600 ms later, not 1000.
    assert_eq!(c.submit(Request::AdvanceClock { ms: 600 }).code, Code::Ok);
    let void = Request::Void {
        id: 5,
        account: 1,
        auth: 4,
    };
    assert_eq!(c.submit(void).code, Code::AuthExpired);
    drop(c);
    assert_eq!(balance(&engine), (before.0, 0));
    drop(engine);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torn_tail_is_cut_and_reported() {
    let dir = tempdir("torn");
    let engine = open(&dir);
    setup(&engine);
    let mut c = engine.client();
    for id in 2..12 {
        assert_eq!(c.submit(debit(id, "1")).code, Code::Ok);
    }
    drop(c);
    drop(engine);
    let all = records(&dir);
    let (file, offset, _, last) = all.last().unwrap().clone();
    assert!(matches!(last, Record::Request { .. }));
    flip_byte(&file, offset + 20);

    let engine = open(&dir);
    let notes = &engine.recovery_report()[0].notes;
    assert!(notes.iter().any(|n| n.contains("torn tail")), "{notes:?}");
    assert_eq!(
        status(&engine, 11),
        Code::UnknownId,
        "the torn record is gone"
    );
    assert_eq!(status(&engine, 10), Code::Ok, "everything before it stays");
    assert_eq!(balance(&engine).0, 100_000_000 - 900);
    // The log goes on where it was cut.
    assert_eq!(engine.client().submit(debit(11, "1")).code, Code::Ok);
    drop(engine);
    let engine = open(&dir);
    assert!(engine.recovery_report()[0].notes.is_empty());
    assert_eq!(status(&engine, 11), Code::Ok);
    drop(engine);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damage_in_the_middle_stops_the_open_naming_file_and_offset() {
    let dir = tempdir("middle");
    let engine = open(&dir);
    setup(&engine);
    let mut c = engine.client();
    for id in 2..30 {
        assert_eq!(c.submit(debit(id, "1")).code, Code::Ok);
    }
    drop(c);
    drop(engine);
    let all = records(&dir);
    let (file, offset, lsn, _) = all
        .iter()
        .find(|(_, _, _, r)| {
            matches!(
                r,
                Record::Request {
                    request: Request::Debit { id: 5, .. },
                    ..
                }
            )
        })
        .unwrap()
        .clone();
    flip_byte(&file, offset + 30);
    match Engine::open(config(&dir, WalOptions::default())) {
        Err(OpenError::Damaged {
            file: f, offset: o, ..
        }) => {
            assert_eq!(f, file);
            assert_eq!(o, offset as u64, "LSN {lsn}");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("opened over a damaged log"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_full_disk_refuses_requests_and_loses_nothing() {
    let dir = tempdir("full");
    let faults = Arc::new(Faults::default());
    let wal = WalOptions {
        segment_bytes: 8 << 10,
        faults: Arc::clone(&faults),
        ..WalOptions::default()
    };
    let engine = Engine::open(config(&dir, wal.clone())).unwrap();
    faults.fail_allocations(1);
    let open = Request::OpenAccount {
        account: 1,
        currency: Some(Currency::USD),
        overdraft: None,
        history: false,
    };
    let mut c = engine.client();
    assert_eq!(c.submit(open.clone()).code, Code::StorageUnavailable);
    drop(c);
    setup(&engine);
    let mut c = engine.client();
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for id in 2..400u64 {
        if id == 100 {
            faults.fail_allocations(u32::MAX);
        }
        if id == 300 {
            faults.fail_allocations(0);
        }
        match c.submit(debit(id, "1")).code {
            Code::Ok => ok.push(id),
            Code::StorageUnavailable => refused.push(id),
            other => panic!("debit {id}: {}", other.name()),
        }
    }
    assert!(
        !refused.is_empty(),
        "segments of 8 KiB fill up between 100 and 300"
    );
    assert!(
        ok.contains(&350),
        "the engine works again once space returns"
    );
    drop(c);
    drop(engine);
    let engine = Engine::open(config(&dir, wal)).unwrap();
    for &id in &ok {
        assert_eq!(status(&engine, id), Code::Ok, "acknowledged debit {id}");
    }
    for &id in &refused {
        assert_eq!(
            status(&engine, id),
            Code::UnknownId,
            "refused debit {id} never happened"
        );
    }
    assert_eq!(balance(&engine).0, 100_000_000 - 100 * ok.len() as i64);
    drop(engine);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_flush_refuses_its_group_and_the_shard_recovers() {
    let dir = tempdir("eio");
    let faults = Arc::new(Faults::default());
    let wal = WalOptions {
        faults: Arc::clone(&faults),
        ..WalOptions::default()
    };
    let engine = Engine::open(config(&dir, wal.clone())).unwrap();
    setup(&engine);
    let mut c = engine.client();
    assert_eq!(c.submit(debit(2, "1")).code, Code::Ok);
    faults.fail_flushes(1);
    assert_eq!(c.submit(debit(3, "1")).code, Code::StorageUnavailable);
    // The shard rebuilt itself from disk and goes on.
    assert_eq!(c.submit(debit(4, "1")).code, Code::Ok);
    // Debit 3 either happened or not; a retry answers consistently.
    let retry = c.submit(debit(3, "1"));
    assert_eq!(retry.code, Code::Ok);
    drop(c);
    let before = balance(&engine);
    assert_eq!(before.0, 100_000_000 - 300);
    drop(engine);
    let engine = Engine::open(config(&dir, wal)).unwrap();
    assert_eq!(balance(&engine), before);
    drop(engine);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn snapshots_bound_the_log_and_recovery_starts_from_them() {
    let dir = tempdir("snap");
    let wal = WalOptions {
        segment_bytes: 16 << 10,
        snapshot_every_bytes: 32 << 10,
        ..WalOptions::default()
    };
    let engine = Engine::open(config(&dir, wal.clone())).unwrap();
    setup(&engine);
    let mut c = engine.client();
    for id in 2..5_000u64 {
        c.send(id, debit(id, "0.01"));
        c.poll(|_, o| assert_eq!(o.code, Code::Ok));
    }
    while c.in_flight() > 0 {
        c.wait(|_, o| assert_eq!(o.code, Code::Ok));
    }
    drop(c);
    let before = balance(&engine);
    drop(engine);
    let shard = debitcore::wal::shard_dir(&dir, 0);
    let names: Vec<String> = std::fs::read_dir(&shard)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let segments = names.iter().filter(|n| n.ends_with(".wal")).count();
    let snapshots = names.iter().filter(|n| n.ends_with(".snap")).count();
    assert_eq!(snapshots, 1, "older snapshots are deleted: {names:?}");
    assert!(
        segments <= 4,
        "segments before the snapshot are deleted: {names:?}"
    );

    let engine = Engine::open(config(&dir, wal)).unwrap();
    let report = &engine.recovery_report()[0];
    assert!(report.snapshot_lsn > 0);
    assert!(
        report.records_replayed < 2_000,
        "replay starts at the snapshot: {report:?}"
    );
    assert_eq!(balance(&engine), before);
    assert!(engine.client().submit(debit(7, "0.01")).replayed);
    drop(engine);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_engine_is_locked_out() {
    let dir = tempdir("lock");
    let engine = open(&dir);
    match Engine::open(config(&dir, WalOptions::default())) {
        Err(OpenError::Locked(path)) => assert_eq!(path, dir),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("two engines on one directory"),
    }
    drop(engine);
    let again = open(&dir);
    drop(again);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A durable engine's stats count what it did: every request applied, a
/// round for each, a timed flush for each sync, the bytes it logged. A
/// reader that subtracts two readings sees only what happened between.
#[test]
fn stats_count_requests_rounds_and_timed_syncs() {
    let dir = tempdir("stats");
    let engine = open(&dir);
    let mut client = engine.client();
    let settle = |engine: &Engine, requests: u64| {
        // Stats are published when a worker goes quiet, just after it
        // handed back its last outcomes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let stats = engine.stats().remove(0);
            if stats.requests >= requests || std::time::Instant::now() > deadline {
                return stats;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    };
    client.submit(Request::OpenAccount {
        account: 1,
        currency: Some(Currency::USD),
        overdraft: None,
        history: false,
    });
    client.submit(Request::Deposit {
        id: 1,
        account: 1,
        amount: amount("100"),
    });
    let before = settle(&engine, 2);
    assert_eq!(before.requests, 2);
    assert_eq!(before.accounts, 1);
    assert!(
        before.round_ns.count() >= 2,
        "{:?}",
        before.round_ns.count()
    );
    assert!(before.log_bytes > 0);
    assert!(before.log_syncs >= 2, "each submit waited for its own sync");
    assert_eq!(before.sync_ns.count(), before.log_syncs);
    for id in 2..12 {
        assert_eq!(client.submit(debit(id, "1")).code, Code::Ok);
    }
    let after = settle(&engine, 12);
    assert_eq!(after.requests, 12);
    let syncs = after.sync_ns.since(&before.sync_ns);
    assert_eq!(syncs.count(), after.log_syncs - before.log_syncs);
    assert!(syncs.count() >= 10, "{}", syncs.count());
    assert!(syncs.quantile_ns(0.5) > 0, "an fdatasync takes time");
    assert!(syncs.max_ns() >= syncs.quantile_ns(0.99));
    assert!(after.round_ns.since(&before.round_ns).count() >= 10);
    assert_eq!(after.queued_batches, 0, "nothing is waiting");
    drop(client);
    engine.shutdown();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// SPEC: a request that every shard sees and that was not handed back
/// before a crash happened on every shard or on none. The crash image: the
/// last `advance_clock` is on shard 0's stable storage but torn off shard
/// 1's (shards sync independently). Reopened, both shards have it: shard 1
/// gets it from the broadcast log, and the clock agrees everywhere.
#[test]
fn a_broadcast_on_some_shards_only_is_completed_on_the_others() {
    let dir = tempdir("broadcast");
    let two_shards = EngineConfig {
        shards: 2,
        ..config(&dir, WalOptions::default())
    };
    let engine = Engine::open(two_shards.clone()).unwrap();
    let mut c = engine.client();
    for ms in [1_000, 2_000, 3_000] {
        assert_eq!(c.submit(Request::AdvanceClock { ms }).code, Code::Ok);
    }
    drop(c);
    drop(engine);
    // Shard 1 loses its last record, the third advance_clock.
    let shard1 = shard_records(&dir, 1);
    let (file, offset, _, last) = shard1.last().unwrap().clone();
    assert_eq!(
        last,
        Record::Request {
            request: Request::AdvanceClock { ms: 3_000 },
            code: Code::Ok
        }
    );
    tear_off(&file, offset);
    // And the broadcast log has it, as it had before shard 0 was given it
    // (reopening emptied it of the first ones; the crash came after the
    // third was written).
    let mut log = debitcore::wal::broadcasts::BroadcastLog::open(&dir)
        .unwrap()
        .0;
    log.append(3, &Request::AdvanceClock { ms: 3_000 }).unwrap();
    drop(log);

    let engine = Engine::open(two_shards.clone()).unwrap();
    let report = engine.recovery_report();
    assert_eq!(report[0].now_ms, 6_000);
    assert_eq!(report[1].now_ms, 6_000, "shard 1 completed the broadcast");
    assert_eq!(report[0].broadcasts, 3);
    assert_eq!(report[1].broadcasts, 3);
    assert!(
        report[1]
            .notes
            .iter()
            .any(|n| n.contains("completed broadcasts 3..=3")),
        "{:?}",
        report[1].notes
    );
    assert!(report[0].notes.is_empty(), "{:?}", report[0].notes);
    // Numbering goes on after the last one, and what shard 1 was given
    // at the open is on its own log now: a second reopen needs nothing.
    assert_eq!(
        engine.client().submit(Request::AdvanceClock { ms: 1 }).code,
        Code::Ok
    );
    drop(engine);
    let engine = Engine::open(two_shards).unwrap();
    for shard in engine.recovery_report() {
        assert_eq!((shard.now_ms, shard.broadcasts), (6_001, 4));
        assert!(shard.notes.is_empty(), "{:?}", shard.notes);
    }
    drop(engine);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Merchant 5 (USD, 30 bps), and accounts 1..=8 (on both shards), each
/// with 50 deposited and a debit of 1.25 (id 2) for the merchant. Returns
/// the merchant's `open_merchant`.
fn merchant_with_payers(c: &mut debitcore::Client) -> Request {
    let open = Request::OpenMerchant {
        merchant: 5,
        currency: Some(Currency::USD),
        fee_bps: Some(30),
    };
    assert_eq!(c.submit(open.clone()).code, Code::Ok);
    for account in 1..=8 {
        c.submit(Request::OpenAccount {
            account,
            currency: Some(Currency::USD),
            overdraft: None,
            history: false,
        });
        c.submit(Request::Deposit {
            id: 1,
            account,
            amount: amount("50"),
        });
        let debit = Request::Debit {
            id: 2,
            account,
            amount: amount("1.25"),
            merchant: Some(5),
        };
        assert_eq!(c.submit(debit).code, Code::Ok);
    }
    open
}

/// Merchants (known to every shard) and what was cleared to them survive
/// a reopen: the merchant answers with the same figures, summed over both
/// shards, and a refund after the reopen is charged back to it.
#[test]
fn merchants_and_clearings_survive_a_reopen() {
    let dir = tempdir("merchants");
    let two_shards = EngineConfig {
        shards: 2,
        ..config(&dir, WalOptions::default())
    };
    let engine = Engine::open(two_shards.clone()).unwrap();
    let mut c = engine.client();
    let open = merchant_with_payers(&mut c);
    let figures = c.submit(Request::Merchant { merchant: 5 });
    assert_eq!(figures.code, Code::Ok);
    let debitcore::Info::Merchant(m) = &figures.info else {
        panic!("{figures:?}")
    };
    assert_eq!(m.pending, 1000, "8 x 1.25");
    drop(c);
    drop(engine);

    let engine = Engine::open(two_shards).unwrap();
    let mut c = engine.client();
    assert_eq!(c.submit(Request::Merchant { merchant: 5 }), figures);
    assert_eq!(c.submit(open).code, Code::MerchantExists);
    let refund = Request::Refund {
        id: 3,
        account: 4,
        of: 2,
        amount: None,
    };
    assert_eq!(c.submit(refund).code, Code::Ok);
    let after = c.submit(Request::Merchant { merchant: 5 });
    let debitcore::Info::Merchant(m) = &after.info else {
        panic!("{after:?}")
    };
    assert_eq!(m.pending, 875, "the refund charged 1.25 back");
    drop(c);
    drop(engine);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Eight accounts on two shards, each debiting 1.25 for merchant 5 (fee
/// 30 bps), a settle (id 1: ok, batch 1), then one more debit; queued
/// debits and a batch run in between. Returns the settle's outcome.
fn settled_session(dir: &Path, two_shards: &EngineConfig) -> debitcore::Outcome {
    let engine = Engine::open(two_shards.clone()).unwrap();
    let mut c = engine.client();
    merchant_with_payers(&mut c);
    for account in 1..=8 {
        let queued = Request::QueueDebit {
            id: 3,
            account,
            amount: amount("0.75"),
            merchant: Some(5),
        };
        assert_eq!(c.submit(queued).code, Code::Queued);
    }
    let batch = c.submit(Request::RunBatch);
    let Info::Batch(b) = &batch.info else {
        panic!("{batch:?}")
    };
    assert_eq!((b.applied, b.ok), (8, 8), "{batch:?}");
    let settled = c.submit(Request::Settle { id: 1, merchant: 5 });
    let Info::Settlement(s) = &settled.info else {
        panic!("{settled:?}")
    };
    // 8 x (1.25 + 0.75) = 16.00; fee 30 bps of it = 0.048, rounded down.
    assert_eq!(
        (s.batch, s.count, s.gross, s.fee, s.net),
        (1, 16, 1600, 4, 1596)
    );
    drop(c);
    drop(engine);
    let _ = dir;
    settled
}

fn merchant_figures(c: &mut debitcore::Client) -> debitcore::MerchantFigures {
    let figures = c.submit(Request::Merchant { merchant: 5 });
    match figures.info {
        Info::Merchant(m) => *m,
        _ => panic!("{figures:?}"),
    }
}

/// SPEC, Durability: a `settle` handed back survives with the same
/// figures. The crash image: the settle's close (its second step) is on
/// shard 0's stable storage and torn off shard 1's. Reopened, shard 1 gets
/// it from the broadcast log the engine wrote before handing it to any
/// shard: the merchant is settled once on both shards (one batch, nothing
/// pending twice), and the key replays.
#[test]
fn a_settle_closed_on_one_shard_only_is_closed_on_the_other() {
    let dir = tempdir("settle-close");
    let two_shards = EngineConfig {
        shards: 2,
        ..config(&dir, WalOptions::default())
    };
    let settled = settled_session(&dir, &two_shards);
    let shard1 = shard_records(&dir, 1);
    let (file, offset, _, last) = shard1.last().unwrap().clone();
    let Record::Request { request, .. } = &last else {
        panic!("{last:?}")
    };
    assert_eq!(request.op(), debitcore::Op::Settle, "{last:?}");
    assert!(
        matches!(request, Request::Internal(_)),
        "the close: {last:?}"
    );
    tear_off(&file, offset);

    let engine = Engine::open(two_shards.clone()).unwrap();
    let report = engine.recovery_report();
    assert_eq!(report[0].broadcasts, report[1].broadcasts, "{report:?}");
    let mut c = engine.client();
    let m = merchant_figures(&mut c);
    assert_eq!(
        (m.batches, m.pending, m.settled_net, m.fees),
        (1, 0, 1596, 4)
    );
    let again = c.submit(Request::Settle { id: 1, merchant: 5 });
    assert!(again.replayed);
    assert_eq!((again.code, &again.info), (settled.code, &settled.info));
    drop(c);
    drop(engine);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// SPEC, Durability: a `settle` not handed back "is either wholly there or
/// wholly absent (a retry of its key then settles or replays)". The crash
/// image: both shards cut their parts (the first step) but the close is
/// nowhere (the crash came before the engine wrote it). Reopened, the cut
/// parts are still pending, nothing is settled, and a retry of the key
/// settles all of them in batch 1.
#[test]
fn a_settle_cut_without_its_close_is_absent_and_its_retry_settles() {
    let dir = tempdir("settle-cut");
    let two_shards = EngineConfig {
        shards: 2,
        ..config(&dir, WalOptions::default())
    };
    let settled = settled_session(&dir, &two_shards);
    for shard in 0..2 {
        let records = shard_records(&dir, shard);
        let (file, offset, _, last) = records.last().unwrap().clone();
        assert!(
            matches!(
                &last,
                Record::Request {
                    request: Request::Internal(_),
                    ..
                }
            ),
            "shard {shard}: {last:?}"
        );
        tear_off(&file, offset);
    }
    let (mut log, entries) = debitcore::wal::broadcasts::BroadcastLog::open(&dir).unwrap();
    let (last, close) = entries.last().unwrap().clone();
    assert!(matches!(close, Request::Internal(_)), "{close:?}");
    log.reset().unwrap();
    for (n, request) in &entries {
        if *n != last {
            log.append(*n, request).unwrap();
        }
    }
    drop(log);

    let engine = Engine::open(two_shards.clone()).unwrap();
    let mut c = engine.client();
    let m = merchant_figures(&mut c);
    assert_eq!((m.batches, m.pending, m.settled_net), (0, 1600, 0), "{m:?}");
    let again = c.submit(Request::Settle { id: 1, merchant: 5 });
    assert!(!again.replayed, "{again:?}");
    assert_eq!((again.code, &again.info), (settled.code, &settled.info));
    let m = merchant_figures(&mut c);
    assert_eq!(
        (m.batches, m.pending, m.settled_net, m.fees),
        (1, 0, 1596, 4)
    );
    drop(c);
    drop(engine);
    // And all of it again from the logs alone.
    let engine = Engine::open(two_shards).unwrap();
    let mut c = engine.client();
    let m = merchant_figures(&mut c);
    assert_eq!(
        (m.batches, m.pending, m.settled_net, m.fees),
        (1, 0, 1596, 4)
    );
    drop(c);
    drop(engine);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Closed accounts and statements, from a log alone and from a snapshot
/// with log after it: after a reopen every statement is the same, entry
/// for entry, closed accounts still refuse, and new entries number on.
#[test]
fn closing_and_statements_survive_a_reopen() {
    for (name, snapshot_every_bytes) in [("history-log", 512 << 20), ("history-snap", 8 << 10)] {
        let dir = tempdir(name);
        let two_shards = EngineConfig {
            shards: 2,
            wal: WalOptions {
                segment_bytes: 16 << 10,
                snapshot_every_bytes,
                ..WalOptions::default()
            },
            ..config(&dir, WalOptions::default())
        };
        let engine = Engine::open(two_shards.clone()).unwrap();
        let mut c = engine.client();
        let accounts = 1..=6u64;
        for account in accounts.clone() {
            let open = Request::OpenAccount {
                account,
                currency: Some(Currency::EUR),
                overdraft: None,
                history: account % 3 != 0,
            };
            assert_eq!(c.submit(open).code, Code::Ok);
        }
        // Enough traffic to pass the snapshot threshold several times.
        for round in 0..60u64 {
            c.submit(Request::AdvanceClock { ms: 250 });
            for account in accounts.clone() {
                let id = 10 * round;
                c.submit(Request::Deposit {
                    id: id + 1,
                    account,
                    amount: amount("10"),
                });
                c.submit(Request::Authorize {
                    id: id + 2,
                    account,
                    amount: amount("4"),
                    expires_in_ms: None,
                    merchant: None,
                });
                c.submit(Request::Capture {
                    id: id + 3,
                    account,
                    auth: id + 2,
                    amount: Some(amount("1.5")),
                    is_final: true,
                });
                c.submit(Request::Debit {
                    id: id + 4,
                    account,
                    amount: amount("100"),
                    merchant: None,
                });
                c.submit(Request::Refund {
                    id: id + 5,
                    account,
                    of: id + 3,
                    amount: Some(amount("0.5")),
                });
            }
        }
        // Empty and close accounts 1 (history) and 3 (none).
        for account in [1, 3] {
            let Info::Balance { balance, .. } = c.submit(Request::Balance { account }).info else {
                panic!("a balance");
            };
            let all = AmountArg::parse(&format!("{}.{:02}", balance / 100, balance % 100));
            let debit = Request::Debit {
                id: 9_999,
                account,
                amount: all,
                merchant: None,
            };
            assert_eq!(c.submit(debit).code, Code::Ok);
            assert_eq!(c.submit(Request::CloseAccount { account }).code, Code::Ok);
            let late = Request::Deposit {
                id: 10_000,
                account,
                amount: amount("1"),
            };
            assert_eq!(c.submit(late).code, Code::AccountClosed);
        }
        let statements = |c: &mut debitcore::Client| -> Vec<debitcore::Outcome> {
            let mut out = Vec::new();
            for account in accounts.clone() {
                for (limit, before) in [(Some(1000), None), (Some(7), Some(100)), (None, None)] {
                    out.push(c.submit(Request::History {
                        account,
                        limit,
                        before,
                    }));
                }
                out.push(c.submit(Request::Balance { account }));
            }
            out
        };
        let before = statements(&mut c);
        let Info::History(page) = &before[0].info else {
            panic!("{:?}", before[0]);
        };
        assert_eq!(
            page.entries.len(),
            60 * 5 + 2,
            "account 1's whole statement"
        );
        assert_eq!(page.entries[0].result, Code::AccountClosed);
        assert_eq!(before[4 * 2].code, Code::NoHistory, "account 3 has none");
        drop(c);
        drop(engine);

        let engine = Engine::open(two_shards).unwrap();
        if snapshot_every_bytes < 1 << 20 {
            let report = engine.recovery_report();
            assert!(
                report.iter().all(|r| r.snapshot_lsn > 0),
                "every shard started from a snapshot: {report:?}"
            );
        }
        let mut c = engine.client();
        assert_eq!(
            statements(&mut c),
            before,
            "{name}: statements after the reopen"
        );
        for account in [1, 3] {
            assert_eq!(
                c.submit(Request::CloseAccount { account }).code,
                Code::AccountClosed
            );
            let late = Request::Deposit {
                id: 10_000,
                account,
                amount: amount("1"),
            };
            assert!(
                c.submit(late).replayed,
                "a key seen after the close replays"
            );
        }
        let reopen = Request::OpenAccount {
            account: 1,
            currency: Some(Currency::EUR),
            overdraft: None,
            history: false,
        };
        assert_eq!(c.submit(reopen).code, Code::AccountExists);
        let next = Request::Deposit {
            id: 20_000,
            account: 2,
            amount: amount("1"),
        };
        assert_eq!(c.submit(next).code, Code::Ok);
        let newest = c.submit(Request::History {
            account: 2,
            limit: Some(1),
            before: None,
        });
        let Info::History(page) = &newest.info else {
            panic!("{newest:?}");
        };
        assert_eq!(page.entries[0].seq, 60 * 5 + 1, "numbering goes on");
        drop(c);
        drop(engine);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
