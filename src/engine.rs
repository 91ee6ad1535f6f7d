//! The engine: shard workers, the queues into them, and the clients that
//! gateway threads submit through.
//!
//! ```text
//!  gateway thread                       shard worker (one per shard)
//!  Client::send ─► per-shard buffer ─►  Port::queue (MPSC, batches) ─► Shard::apply
//!                  (flush at 64 or                                          │
//!                   on wait/flush)       Inbox::done (per client) ◄─────────┘
//!  Client::poll/wait ◄──────────────────  outcomes, one Vec per batch
//! ```
//!
//! A client buffers requests per shard and hands a shard a whole batch with
//! one queue push, so the cost of the hand-off (a CAS, a fence) is paid per
//! batch, not per request. A worker takes up to
//! [`WORKER_MESSAGES_PER_ROUND_MAX`] batches, reads the clock once, applies
//! them in order and sends each batch's outcomes back with one push.
//!
//! **Architecture Invariant:** a shard's tables are touched only by its
//! worker thread; no lock is taken on the path of a request. Locks
//! (parking_lot) appear only where a thread must sleep: a worker with an
//! empty queue, a client waiting for outcomes, a future's waker.
//!
//! Ordering: one client's requests for one shard travel in one FIFO queue,
//! so requests on one account take effect in the order that client sent
//! them. `advance_clock` is sent to every shard in the same per-shard
//! streams, so each shard sees it at its place in the client's order.

use crate::hash;
use crate::limits::{
    CLIENT_BATCH_SIZE_DEFAULT, CLIENT_IN_FLIGHT_MAX_DEFAULT, SHARD_COUNT_MAX, SPIN_LIMIT,
    WORKER_MESSAGES_PER_ROUND_MAX, WORKER_PARK_TIMEOUT_US,
};
use crate::outcome::{Code, Info, Outcome, Settlement};
use crate::request::{AccountId, MerchantId, Request, TxnId};
use crate::risk::RiskPolicy;
use crate::shard::{Shard, ShardStats};
use crate::stats::Durations;
use crate::table::KeySpare;
use crate::wal::broadcasts::{self, BroadcastLog, BROADCASTS_NAME};
use crate::wal::record::Record;
use crate::wal::recovery::{self, Recovered};
use crate::wal::writer::{Flusher, ShardLog, SyncStats};
use crate::wal::{shard_dir, DataDir, Durability, OpenError, WalOptions};
use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where engine time comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClockMode {
    /// Milliseconds since the Unix epoch, read once per worker round and
    /// never allowed to go backwards.
    #[default]
    Wall,
    /// Starts at 0; moves only on `Request::AdvanceClock`.
    Manual,
}

/// Builds one risk policy per shard (the argument is the shard index).
pub type RiskPolicyFactory = Arc<dyn Fn(usize) -> Box<dyn RiskPolicy> + Send + Sync>;

/// How to start an engine.
#[derive(Clone)]
pub struct EngineConfig {
    /// Number of shards, each with its own worker thread (default: cores).
    pub shards: usize,
    /// Where engine time comes from (default: the wall clock).
    pub clock: ClockMode,
    /// Keys and ended holds are remembered at least this long.
    pub dedup_window_ms: u64,
    /// `None`: SPEC's built-in rules (`review_above`, `velocity`).
    pub risk_policy: Option<RiskPolicyFactory>,
    /// Keep state here (write-ahead log and snapshots); `None`: in memory.
    pub data_dir: Option<PathBuf>,
    /// With a data directory: when outcomes are handed back.
    pub durability: Durability,
    /// Segment size, snapshot frequency and the fault-injection seam of the log
    /// (with a data directory only).
    pub wal: WalOptions,
    /// Room to set aside at start, over all shards (0: grow as needed):
    /// accounts, and keys remembered at once (about a dedup window's keyed
    /// requests). Growing the key table moves every key (a few per request,
    /// never a stall) into fresh memory the kernel must zero; an embedder
    /// that knows its traffic sizes it once. Memory is still only touched
    /// as it fills.
    pub expected_accounts: usize,
    /// See `expected_accounts`: keys remembered at once, over all shards.
    pub expected_keys: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            clock: ClockMode::Wall,
            dedup_window_ms: crate::limits::DEDUP_WINDOW_MS_DEFAULT,
            risk_policy: None,
            data_dir: None,
            durability: Durability::Sync,
            wal: WalOptions::default(),
            expected_accounts: 0,
            expected_keys: 0,
        }
    }
}

/// What opening a data directory found and did, per shard.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// The last LSN (log sequence number) the snapshot recovery started from
    /// holds; 0: there was none, and replay started at the log's beginning.
    pub snapshot_lsn: u64,
    /// Log records applied after the snapshot.
    pub records_replayed: u64,
    /// Bytes of log those records took.
    pub bytes_replayed: u64,
    /// How long recovering the shard took (snapshot load and replay).
    pub elapsed: Duration,
    /// What recovery did that an operator should know (a torn tail cut).
    pub notes: Vec<String>,
    /// The shard's engine time once recovered, ms.
    pub now_ms: u64,
    /// Requests that every shard sees (`advance_clock`) the shard had
    /// applied once recovered, those completed from the broadcast log
    /// included: the same number on every shard.
    pub broadcasts: u64,
}

/// Submits requests from async tasks; see [`Engine::submitter`].
#[derive(Clone)]
pub struct Submitter {
    inner: Arc<Inner>,
}

impl Submitter {
    /// As [`Engine::submit_async`].
    pub fn submit_async(&self, request: Request) -> OutcomeFuture {
        self.inner.submit_async(request)
    }
}

/// A running engine. Dropping it (or [`Engine::shutdown`]) stops the workers
/// after they have answered everything already handed to them.
pub struct Engine {
    inner: Arc<Inner>,
    workers: Vec<JoinHandle<()>>,
    recovery: Vec<RecoveryReport>,
    /// Holds the data directory's lock for the engine's life.
    _data_dir: Option<DataDir>,
}

struct Inner {
    ports: Vec<CachePadded<Port>>,
    clock: ClockMode,
    /// Set when shutdown begins: workers finish their queues and exit.
    stopping: AtomicBool,
    /// Set when every worker has exited.
    stopped: AtomicBool,
    /// Set when a worker panicked (a broken invariant): its shard's state
    /// can no longer be trusted, and waiting clients panic rather than wait
    /// forever for outcomes that will not come.
    failed: AtomicBool,
    /// Numbers requests that every shard sees and hands them to every
    /// shard in that order; see [`Broadcaster`].
    broadcaster: Mutex<Broadcaster>,
}

/// Requests that every shard sees (`advance_clock`) go out one at a time,
/// under this lock: numbered, written to the broadcast log and synced
/// (durable engines), then pushed to every shard's queue. So every shard
/// applies them in one order, and one that any shard may have applied is
/// in the broadcast log, from which recovery completes it on the others
/// (`wal/broadcasts.rs`). They are rare; the lock is never on the path of
/// a request that names an account.
struct Broadcaster {
    log: Option<BroadcastLog>,
    /// The number the next broadcast gets (the first is 1).
    next: u64,
}

impl Broadcaster {
    /// Numbers `request` and makes it durable in the broadcast log; `None`
    /// if the log cannot be written (then no shard may be given it).
    fn number(&mut self, request: &Request) -> Option<u64> {
        let number = self.next;
        if let Some(log) = self.log.as_mut() {
            if let Err(e) = log.append(number, request) {
                eprintln!("debitcore: cannot write the broadcast log: {e}");
                return None;
            }
        }
        self.next += 1;
        Some(number)
    }
}

/// The way into one shard.
struct Port {
    queue: SegQueue<Batch>,
    /// Its worker panicked: nothing will ever pop `queue` again, so a
    /// batch pushed there is dropped instead (which fails a future's
    /// reply; see [`FutureReply`]).
    dead: AtomicBool,
    /// The worker is asleep, or about to be: a producer must wake it.
    parked: AtomicBool,
    sleep: Mutex<()>,
    wake: Condvar,
    stats: Mutex<ShardStats>,
    /// The shard's flusher's count and timings of syncs (durable engines),
    /// read live by [`Engine::stats`].
    syncs: Option<Arc<SyncStats>>,
}

/// Requests from one client for one shard, answered together.
struct Batch {
    items: Vec<Item>,
    reply: Reply,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Sent with `Client::send`: handed back through `poll`/`wait`.
    User,
    /// Sent by `Client::submit`/`submit_batch`: kept by that call.
    Sync,
}

struct Item {
    tag: u64,
    kind: Kind,
    /// `advance_clock`: one copy per shard, answered once all are done.
    broadcast: bool,
    request: Request,
}

struct Done {
    tag: u64,
    kind: Kind,
    broadcast: bool,
    outcome: Outcome,
}

enum Reply {
    Client(Arc<Inbox>),
    Future(FutureReply),
    /// A settle's first step: every shard's answer, kept apart.
    Gather(Arc<Gather>),
    /// Nobody waits (a settle's second step: its outcome is known).
    Discard,
}

/// The answers of every shard to one request, for a caller that waits for
/// all of them and reads each (a settle's cut).
struct Gather {
    expected: usize,
    answers: Mutex<Vec<Outcome>>,
    all_in: Condvar,
}

impl Gather {
    fn new(expected: usize) -> Gather {
        Gather {
            expected,
            answers: Mutex::new(Vec::with_capacity(expected)),
            all_in: Condvar::new(),
        }
    }

    fn add(&self, outcome: Outcome) {
        let mut answers = self.answers.lock();
        answers.push(outcome);
        if answers.len() == self.expected {
            self.all_in.notify_all();
        }
    }

    /// Blocks until every shard answered; panics, as a waiting client
    /// does, if a worker panicked (its answer would never come).
    fn wait(&self, failed: &AtomicBool) -> Vec<Outcome> {
        let mut answers = self.answers.lock();
        while answers.len() < self.expected {
            if failed.load(Ordering::SeqCst) {
                drop(answers);
                panic!("debitcore: a shard worker panicked (see above); the engine cannot answer");
            }
            self.all_in
                .wait_for(&mut answers, Duration::from_millis(10));
        }
        std::mem::take(&mut *answers)
    }
}

/// Where a client's outcomes arrive, from any shard.
struct Inbox {
    done: SegQueue<Vec<Done>>,
    waiting: AtomicBool,
    sleep: Mutex<()>,
    wake: Condvar,
}

impl Engine {
    /// Starts an in-memory engine (or opens `config.data_dir`), panicking
    /// if the data directory cannot be opened; see [`Engine::open`].
    pub fn start(config: EngineConfig) -> Engine {
        Engine::open(config).unwrap_or_else(|e| panic!("debitcore: {e}"))
    }

    /// Starts the engine. With a data directory and a durable mode, first
    /// recovers every shard (snapshot, then log replay; in parallel) and
    /// takes the directory's lock.
    pub fn open(config: EngineConfig) -> Result<Engine, OpenError> {
        let durable_dir = config
            .data_dir
            .as_ref()
            .filter(|_| config.durability != Durability::None);
        let data_dir = match durable_dir {
            Some(path) => Some(DataDir::open(path, config.shards)?),
            None => None,
        };
        let shards = data_dir.as_ref().map_or(config.shards, |d| d.shards);
        assert!(
            (1..=SHARD_COUNT_MAX).contains(&shards),
            "shards must be 1..={SHARD_COUNT_MAX}"
        );
        let start_ms = match config.clock {
            ClockMode::Wall => wall_ms(),
            ClockMode::Manual => 0,
        };
        let policy = |index: usize| config.risk_policy.as_ref().map(|factory| factory(index));
        // Recover (or create) every shard's state.
        let mut states: Vec<(Shard, Option<DurableShard>)> = Vec::with_capacity(shards);
        let mut recovery = Vec::new();
        match &data_dir {
            None => {
                for index in 0..shards {
                    states.push((
                        Shard::new(start_ms, config.dedup_window_ms, policy(index)),
                        None,
                    ));
                }
            }
            Some(dir) => {
                let recovered: Vec<Result<Recovered, OpenError>> = std::thread::scope(|scope| {
                    let handles: Vec<_> = (0..shards)
                        .map(|index| {
                            let policy = policy(index);
                            let path = &dir.path;
                            let window = config.dedup_window_ms;
                            scope.spawn(move || recovery::recover(path, index, window, policy))
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("recovery does not panic"))
                        .collect()
                });
                for (index, result) in recovered.into_iter().enumerate() {
                    let r = result?;
                    recovery.push(RecoveryReport {
                        snapshot_lsn: r.snapshot_lsn,
                        records_replayed: r.records_replayed,
                        bytes_replayed: r.bytes_replayed,
                        elapsed: r.elapsed,
                        notes: r.notes,
                        now_ms: r.shard.now_ms(),
                        broadcasts: r.shard.broadcasts(),
                    });
                    let log = ShardLog::new(
                        shard_dir(&dir.path, index),
                        index,
                        config.wal.clone(),
                        r.tail,
                        r.next_lsn,
                        r.segments,
                        r.bytes_replayed,
                    );
                    let flusher = Flusher::spawn(
                        format!("debitcore-flush-{index}"),
                        config.durability,
                        Arc::clone(&config.wal.faults),
                        r.next_lsn - 1,
                        deliver_commit,
                    );
                    let durable = DurableShard {
                        log,
                        flusher,
                        data_dir: dir.path.clone(),
                        dedup_window_ms: config.dedup_window_ms,
                        policy: config.risk_policy.clone(),
                        wal: config.wal.clone(),
                    };
                    states.push((r.shard, Some(durable)));
                }
            }
        }
        // Complete every broadcast that a crash left on some shards only,
        // before any shard runs.
        let (broadcast_log, broadcasts_done) = match &data_dir {
            None => (None, 0),
            Some(dir) => {
                let io = |e| OpenError::Io(dir.path.join(BROADCASTS_NAME), e);
                let (mut log, entries) = BroadcastLog::open(&dir.path).map_err(io)?;
                let done = complete_broadcasts(&mut states, &entries, &mut recovery)
                    .map_err(|(path, e)| OpenError::Io(path, e))?;
                log.reset().map_err(io)?;
                (Some(log), done)
            }
        };
        let ports = states
            .iter()
            .map(|(_, durable)| {
                CachePadded::new(Port {
                    queue: SegQueue::new(),
                    parked: AtomicBool::new(false),
                    dead: AtomicBool::new(false),
                    sleep: Mutex::new(()),
                    wake: Condvar::new(),
                    stats: Mutex::new(ShardStats::default()),
                    syncs: durable.as_ref().map(|d| d.flusher.sync_stats()),
                })
            })
            .collect();
        let inner = Arc::new(Inner {
            ports,
            clock: config.clock,
            stopping: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            broadcaster: Mutex::new(Broadcaster {
                log: broadcast_log,
                next: broadcasts_done + 1,
            }),
        });
        // Routing by hash gives a shard n/shards ± a few standard
        // deviations (sqrt(n/shards)): room for 4 of them, so that the
        // busiest shard's account array does not double for a few extra.
        let per_shard = |n: usize| {
            let mean = n.div_ceil(shards);
            if mean == 0 {
                0
            } else {
                mean + 4 * mean.isqrt() + 64
            }
        };
        let (expected_accounts, expected_keys) = (
            per_shard(config.expected_accounts),
            per_shard(config.expected_keys),
        );
        let workers = states
            .into_iter()
            .enumerate()
            .map(|(index, (mut shard, durable))| {
                let inner = Arc::clone(&inner);
                std::thread::Builder::new()
                    .name(format!("debitcore-shard-{index}"))
                    .spawn(move || {
                        let has = shard.stats();
                        shard.reserve(
                            expected_accounts.saturating_sub(has.accounts),
                            expected_keys.saturating_sub(has.keys),
                        );
                        let run =
                            std::panic::AssertUnwindSafe(|| worker(&inner, index, shard, durable));
                        if std::panic::catch_unwind(run).is_err() {
                            // The panic message is already on stderr.
                            inner.failed.store(true, Ordering::SeqCst);
                            inner.bury(index);
                        }
                    })
                    .expect("spawning a shard worker")
            })
            .collect();
        Ok(Engine {
            inner,
            workers,
            recovery,
            _data_dir: data_dir,
        })
    }

    /// What opening the data directory did, per shard (empty in memory).
    pub fn recovery_report(&self) -> &[RecoveryReport] {
        &self.recovery
    }

    /// A new client for one gateway thread.
    pub fn client(&self) -> Client {
        Client::new(Arc::clone(&self.inner))
    }

    /// How many shards the engine runs. With a data directory this is the
    /// count stored in it, which wins over [`EngineConfig::shards`] (accounts are
    /// placed by it).
    pub fn shard_count(&self) -> usize {
        self.inner.ports.len()
    }

    /// The shard that owns `account`: a fixed, well-mixed function of the id.
    pub fn shard_of(&self, account: AccountId) -> usize {
        self.inner.shard_of(account)
    }

    /// Counts, memory and timings of every shard, as its worker last
    /// published them (every 64 rounds, and whenever it goes quiet), with
    /// each queue's depth read now. Cumulative: subtract two readings for
    /// a rate ([`crate::Durations::since`] for the histograms).
    pub fn stats(&self) -> Vec<ShardStats> {
        self.inner
            .ports
            .iter()
            .map(|p| {
                let mut stats = p.stats.lock().clone();
                stats.queued_batches = p.queue.len();
                if let Some(syncs) = &p.syncs {
                    stats.log_syncs = syncs.count();
                    stats.sync_ns = syncs.durations();
                }
                stats
            })
            .collect()
    }

    /// Submits one request from any thread or task; the future resolves to
    /// its outcome. Needs no async runtime: the worker wakes the task's
    /// waker. Each call is its own queue push (no batching on the way in),
    /// so a busy gateway thread should prefer a [`Client`].
    pub fn submit_async(&self, request: Request) -> OutcomeFuture {
        self.inner.submit_async(request)
    }

    /// A handle that submits requests like [`Engine::submit_async`] and can
    /// be cloned into tasks that must own what they use (`tokio::spawn`,
    /// an axum handler's state). It keeps the engine's workers reachable,
    /// not running: once the engine is shut down, its requests answer
    /// `shutting_down`.
    pub fn submitter(&self) -> Submitter {
        Submitter {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Stops the workers once they have answered what they were given.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        for port in &self.inner.ports {
            let _guard = port.sleep.lock();
            port.wake.notify_one();
        }
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                // The panic was already reported on stderr by the worker
                // thread; stop the others cleanly anyway.
                continue;
            }
        }
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.answer_orphans();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    fn shard_of(&self, account: AccountId) -> usize {
        hash::range(hash::fold(account), self.ports.len())
    }

    fn submit_async(self: &Arc<Self>, request: Request) -> OutcomeFuture {
        if let Request::Settle { id, merchant } = request {
            // Two steps, the second made of the first's answers: on a
            // thread of its own, so that no executor thread blocks.
            let slot = Arc::new(FutureSlot {
                remaining: AtomicUsize::new(1),
                state: Mutex::new((None, None)),
                failed: AtomicBool::new(false),
            });
            let reply = FutureReply(Some(Arc::clone(&slot)));
            let inner = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("debitcore-settle".into())
                .spawn(move || {
                    let outcome = inner.settle(merchant, id);
                    Reply::Future(reply).deliver(vec![Done {
                        tag: 0,
                        kind: Kind::User,
                        broadcast: false,
                        outcome,
                    }]);
                });
            if spawned.is_err() {
                return OutcomeFuture::ready(Outcome::new(Code::StorageUnavailable));
            }
            return OutcomeFuture {
                slot: Some(slot),
                ready: None,
            };
        }
        let request = self.stamp(request);
        let broadcast = request.account().is_none();
        let shards: Vec<usize> = match request.account() {
            Some(account) => vec![self.shard_of(account)],
            None if self.refuses_on_this_clock(&request) => {
                return OutcomeFuture::ready(Outcome::new(Code::ClockNotManual));
            }
            None => (0..self.ports.len()).collect(),
        };
        let slot = Arc::new(FutureSlot {
            remaining: AtomicUsize::new(shards.len()),
            state: Mutex::new((None, None)),
            failed: AtomicBool::new(false),
        });
        // A broadcast goes out numbered, in the one order of all of them.
        let mut broadcaster = broadcast.then(|| self.broadcaster.lock());
        if let Some(b) = broadcaster.as_mut() {
            if let Some(code) = self.refuse_broadcast(b, &request) {
                return OutcomeFuture::ready(Outcome::new(code));
            }
        }
        for shard in shards {
            let batch = Batch {
                items: vec![Item {
                    tag: 0,
                    kind: Kind::User,
                    broadcast: false,
                    request: request.clone(),
                }],
                reply: Reply::Future(FutureReply(Some(Arc::clone(&slot)))),
            };
            self.push(shard, batch);
        }
        OutcomeFuture {
            slot: Some(slot),
            ready: None,
        }
    }

    /// Under the broadcaster's lock: numbers a broadcast and makes it
    /// durable, or says why it may not go out (then nothing has it).
    fn refuse_broadcast(&self, broadcaster: &mut Broadcaster, request: &Request) -> Option<Code> {
        if self.stopping.load(Ordering::SeqCst) {
            // Numbered now, it would be completed at the next open on
            // shards that never answered it.
            return Some(Code::ShuttingDown);
        }
        if !request.is_numbered_broadcast() {
            // A query: in the same order as the numbered ones (under the
            // lock), but nothing to make durable.
            return None;
        }
        broadcaster
            .number(request)
            .is_none()
            .then_some(Code::StorageUnavailable)
    }

    /// `advance_clock` under the wall clock: refused (the library's
    /// `clock_not_manual`).
    fn refuses_on_this_clock(&self, request: &Request) -> bool {
        self.clock == ClockMode::Wall && matches!(request, Request::AdvanceClock { .. })
    }

    /// `run_batch` under the wall clock takes one engine time, the same on
    /// every shard: stamped here (every shard's clock reads the wall on its
    /// own, a little apart). Other requests go as they are.
    fn stamp(&self, request: Request) -> Request {
        match request {
            Request::RunBatch if self.clock == ClockMode::Wall => Request::run_batch_at(wall_ms()),
            other => other,
        }
    }

    /// `settle` (see `shard/merchants.rs`), under the broadcast lock for
    /// both of its steps, so that no other broadcast comes between them:
    /// every shard cuts its part (or answers a replay); the parts are
    /// summed, the batch numbered and charged; the close with those figures
    /// is numbered, made durable in the broadcast log and handed to every
    /// shard. The outcome is handed back then: from there on it survives a
    /// crash (recovery completes the close on every shard from that log),
    /// and every later request of any client reaches each shard after the
    /// close. The caller has handed its earlier requests over already.
    fn settle(&self, merchant: MerchantId, id: TxnId) -> Outcome {
        let mut broadcaster = self.broadcaster.lock();
        if self.stopping.load(Ordering::SeqCst) {
            return Outcome::new(Code::ShuttingDown);
        }
        let shards = self.ports.len();
        let gather = Arc::new(Gather::new(shards));
        for shard in 0..shards {
            let item = Item {
                tag: 0,
                kind: Kind::User,
                broadcast: false,
                request: Request::Settle { id, merchant },
            };
            self.push(
                shard,
                Batch {
                    items: vec![item],
                    reply: Reply::Gather(Arc::clone(&gather)),
                },
            );
        }
        let parts = gather.wait(&self.failed);
        if let Some(replay) = parts.iter().find(|o| o.replayed) {
            // Seen before: every shard has its outcome (a shard that cut
            // anyway, having forgotten it a moment sooner, keeps its cut
            // pending for the merchant's next settle).
            return replay.clone();
        }
        if let Some(refused) = parts.iter().find(|o| o.code != Code::Ok) {
            // `unknown_merchant` (every shard), or a shard could not take
            // it (its cut, if others made theirs, waits for the next one).
            return Outcome::new(refused.code);
        }
        let mut sum: Option<Settlement> = None;
        for part in &parts {
            let Info::Settlement(part) = &part.info else {
                unreachable!("an ok cut carries its part");
            };
            match &mut sum {
                None => sum = Some(**part),
                Some(sum) => {
                    debug_assert_eq!(sum.batch, part.batch, "settled figures are alike");
                    sum.count += part.count;
                    sum.gross += part.gross;
                    sum.refunded += part.refunded;
                }
            }
        }
        let mut figures = sum.expect("at least one shard");
        let code = if figures.is_empty() {
            figures = Settlement {
                batch: 0,
                ..figures
            };
            Code::NothingToSettle
        } else {
            figures.batch += 1;
            // Clearings are > 0, so gross is >= 0 and division rounds down.
            figures.fee = figures.gross * i128::from(figures.fee_bps) / 10_000;
            figures.net = figures.gross - figures.refunded - figures.fee;
            Code::Ok
        };
        let close = Request::settle_close(merchant, id, code, figures);
        if broadcaster.number(&close).is_none() {
            // Every part stays cut and pending; a retry cuts again (taking
            // them in) and closes.
            return Outcome::new(Code::StorageUnavailable);
        }
        for shard in 0..shards {
            let item = Item {
                tag: 0,
                kind: Kind::User,
                broadcast: false,
                request: close.clone(),
            };
            self.push(
                shard,
                Batch {
                    items: vec![item],
                    reply: Reply::Discard,
                },
            );
        }
        drop(broadcaster);
        Outcome {
            code,
            replayed: false,
            info: if code == Code::Ok {
                Info::Settlement(Box::new(figures))
            } else {
                Info::None
            },
        }
    }

    fn push(&self, shard: usize, batch: Batch) {
        if self.stopped.load(Ordering::SeqCst) {
            deliver_all(batch, |_| Outcome::new(Code::ShuttingDown));
            return;
        }
        let port = &self.ports[shard];
        port.queue.push(batch);
        // Pairs with the fence in `worker` between setting `parked` and
        // looking at the queue once more: one of the two sees the other.
        // Likewise with the one in `bury`.
        fence(Ordering::SeqCst);
        if port.dead.load(Ordering::Relaxed) {
            self.drop_queued(port);
            return;
        }
        if port.parked.load(Ordering::Relaxed) {
            let _guard = port.sleep.lock();
            port.wake.notify_one();
        }
    }

    /// After shard `index`'s worker panicked: marks its port dead and drops
    /// what waits in its queue. A push that comes after sees `dead` and
    /// drops its batch itself (the two fences pair up), so no batch waits
    /// forever for a worker that is gone: a future fails, a waiting client
    /// sees `failed` and panics.
    fn bury(&self, index: usize) {
        let port = &self.ports[index];
        port.dead.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.drop_queued(port);
    }

    fn drop_queued(&self, port: &Port) {
        while let Some(batch) = port.queue.pop() {
            drop(batch);
        }
    }

    /// Answers batches pushed after the workers exited.
    fn answer_orphans(&self) {
        for port in &self.ports {
            while let Some(batch) = port.queue.pop() {
                deliver_all(batch, |_| Outcome::new(Code::ShuttingDown));
            }
        }
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A shard's log, when the engine is durable.
struct DurableShard {
    log: ShardLog,
    flusher: Flusher<Vec<(Reply, Vec<Done>)>>,
    data_dir: PathBuf,
    dedup_window_ms: u64,
    policy: Option<RiskPolicyFactory>,
    wal: WalOptions,
}

/// The flusher's way of releasing a commit's outcomes.
fn deliver_commit(replies: Vec<(Reply, Vec<Done>)>, durable: bool) {
    for (reply, mut done) in replies {
        if !durable {
            for d in &mut done {
                d.outcome = Outcome::new(Code::StorageUnavailable);
            }
        }
        reply.deliver(done);
    }
}

/// Whether applying `request` with `outcome` changed the shard's state (and
/// so must be in the log). Replays, conflicts, unknown accounts and queries
/// change nothing.
fn changes_state(request: &Request, outcome: &Outcome) -> bool {
    match request {
        Request::Balance { .. }
        | Request::Status { .. }
        | Request::Merchant { .. }
        | Request::History { .. } => false,
        // Every shard counts these (`Shard::broadcasts`), refused or not:
        // replay must count them too.
        Request::AdvanceClock { .. }
        | Request::OpenMerchant { .. }
        | Request::RunBatch
        | Request::Internal(_) => true,
        // A cut: a replay or an unknown merchant changed nothing.
        Request::Settle { .. } => outcome.code == Code::Ok && !outcome.replayed,
        Request::OpenAccount { .. }
        | Request::Freeze { .. }
        | Request::Unfreeze { .. }
        | Request::SetLimits { .. }
        | Request::CloseAccount { .. } => outcome.code == Code::Ok,
        _ => !outcome.replayed && !matches!(outcome.code, Code::IdConflict | Code::UnknownAccount),
    }
}

/// The shard worker: takes batches, applies them, logs what changed state,
/// and sends outcomes back (through the flusher when durable).
fn worker(inner: &Inner, index: usize, mut shard: Shard, mut durable: Option<DurableShard>) {
    let port = &inner.ports[index];
    let mut round: Vec<Batch> = Vec::with_capacity(WORKER_MESSAGES_PER_ROUND_MAX);
    // The round's outcomes in request order (kept across rounds: no
    // allocation per round once it has grown).
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut rounds: u64 = 0;
    // The rounds the last published stats counted.
    let mut rounds_published: u64 = u64::MAX;
    let mut work = WorkerCounters::default();
    let mut spare = SpareMaker::default();
    loop {
        while round.len() < WORKER_MESSAGES_PER_ROUND_MAX {
            match port.queue.pop() {
                Some(batch) => round.push(batch),
                None => break,
            }
        }
        if round.is_empty() {
            if rounds_published != rounds {
                // Going quiet: what a reader sees is then current.
                publish_stats(port, &shard, durable.as_ref(), &work);
                rounds_published = rounds;
            }
            if inner.stopping.load(Ordering::SeqCst) && port.queue.is_empty() {
                return;
            }
            idle(inner, port);
            continue;
        }
        let round_start = Instant::now();
        if let Some(d) = durable.as_mut() {
            if d.flusher.failed() && !rebuild(index, &mut shard, d) {
                for batch in round.drain(..) {
                    deliver_all(batch, |_| Outcome::new(Code::StorageUnavailable));
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        if let Some(d) = durable.as_mut() {
            // Room for the whole round, a tick and a group record, before
            // anything is applied: a full disk refuses cleanly. (One
            // reservation: a second one could start another segment before
            // anything went into the one the first started.)
            let records: usize = round.iter().map(|b| b.items.len()).sum();
            if let Err(e) = d.log.reserve(records + 2) {
                eprintln!("debitcore: shard {index}: cannot extend the log: {e}");
                for batch in round.drain(..) {
                    deliver_all(batch, |_| Outcome::new(Code::StorageUnavailable));
                }
                continue;
            }
            let durable_lsn = d.flusher.durable_lsn();
            d.log.append(&Record::Group { durable_lsn });
            if inner.clock == ClockMode::Wall {
                let now_ms = wall_ms();
                if now_ms > shard.now_ms() {
                    shard.advance_to(now_ms);
                    d.log.append(&Record::Tick { now_ms });
                }
            }
        } else if inner.clock == ClockMode::Wall {
            shard.advance_to(wall_ms());
        }
        spare.tend(index, &mut shard, round.iter().map(|b| b.items.len()).sum());
        // One pass over every request of the round, in order, so that the
        // prefetching runs ahead across batch boundaries (client batches
        // are often small).
        let all: Vec<&Item> = round.iter().flat_map(|b| b.items.iter()).collect();
        work.requests += all.len() as u64;
        outcomes.clear();
        shard.apply_each(
            &all,
            |item| &item.request,
            |item, outcome| {
                if let Some(d) = durable.as_mut() {
                    if changes_state(&item.request, &outcome) {
                        d.log.append_request(&item.request, outcome.code);
                    }
                }
                outcomes.push(outcome);
            },
        );
        drop(all);
        // Each batch's outcomes go back in the allocation its requests came
        // in (an in-place collect: a `Done` is smaller than an `Item`), whose
        // lines the worker has just read, rather than in a new one.
        let mut outcome_of = outcomes.drain(..);
        let mut replies: Vec<(Reply, Vec<Done>)> = Vec::with_capacity(round.len());
        for Batch { items, reply } in round.drain(..) {
            let done: Vec<Done> = items
                .into_iter()
                .map(|item| Done {
                    tag: item.tag,
                    kind: item.kind,
                    broadcast: item.broadcast,
                    outcome: outcome_of.next().expect("one outcome per request"),
                })
                .collect();
            replies.push((reply, done));
        }
        debug_assert!(outcome_of.next().is_none());
        drop(outcome_of);
        match durable.as_mut() {
            Some(d) => {
                let files = d.log.files_to_sync();
                d.flusher.commit(files, d.log.next_lsn() - 1, replies);
                if d.log.snapshot_due() {
                    snapshot(index, &shard, d);
                }
            }
            None => {
                for (reply, done) in replies {
                    reply.deliver(done);
                }
            }
        }
        rounds += 1;
        work.round_ns
            .record(u64::try_from(round_start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        if cfg!(debug_assertions) {
            let stats = shard.stats();
            if stats.accounts + stats.holds <= 4096 || rounds.is_multiple_of(256) {
                if let Err(broken) = shard.check_invariants() {
                    panic!("shard {index}: invariant broken after round {rounds}: {broken}");
                }
            }
        }
        if rounds == 1 || rounds.is_multiple_of(64) {
            publish_stats(port, &shard, durable.as_ref(), &work);
            rounds_published = rounds;
        }
    }
}

/// Makes the key table's next table ready on a thread of its own, so the
/// kernel's zeroing of its pages (hundreds of MiB for a large table; ~400 ms
/// rounds when the worker faulted them in itself) happens off the worker.
#[derive(Default)]
struct SpareMaker {
    job: Option<JoinHandle<KeySpare>>,
}

impl SpareMaker {
    /// Before a round of `upcoming` requests: takes a finished spare, or
    /// waits for an unfinished one if the round may grow the table (its
    /// pages are part faulted in already; growing without it would throw
    /// that work away and fault in a table again, on the worker); starts
    /// a spare when the table wants one.
    fn tend(&mut self, index: usize, shard: &mut Shard, upcoming: usize) {
        let growing = shard.keys_would_grow(upcoming);
        if let Some(job) = self.job.take_if(|job| growing || job.is_finished()) {
            // A table that no longer fits (the shard grew without it) is
            // dropped by `give_key_spare`.
            if let Ok(table) = job.join() {
                shard.give_key_spare(table);
            }
        }
        if self.job.is_none() {
            if let Some(capacity) = shard.key_spare_wanted() {
                self.job = std::thread::Builder::new()
                    .name(format!("debitcore-spare-{index}"))
                    .spawn(move || KeySpare::make(capacity))
                    .ok();
            }
        }
    }
}

/// What a worker counts of its own work, for [`ShardStats`].
#[derive(Default)]
struct WorkerCounters {
    requests: u64,
    round_ns: Durations,
}

fn publish_stats(
    port: &Port,
    shard: &Shard,
    durable: Option<&DurableShard>,
    work: &WorkerCounters,
) {
    let mut stats = shard.stats();
    stats.requests = work.requests;
    stats.round_ns.clone_from(&work.round_ns);
    if let Some(d) = durable {
        stats.log_bytes = d.log.bytes_written;
    }
    *port.stats.lock() = stats;
}

/// Writes a snapshot once everything it covers is durable.
fn snapshot(index: usize, shard: &Shard, d: &mut DurableShard) {
    d.flusher.drain();
    let mut body = Vec::new();
    shard.encode_snapshot(&mut body);
    if let Err(e) = d.log.write_snapshot(&body) {
        // The log still has everything; the next round tries again.
        eprintln!("debitcore: shard {index}: snapshot failed: {e}");
    }
}

/// After a failed flush: the shard's memory may hold effects the log lost,
/// so rebuild it from what is on disk. Returns whether the shard is usable.
fn rebuild(index: usize, shard: &mut Shard, d: &mut DurableShard) -> bool {
    // The broadcasts this shard had applied in memory: every other shard
    // applies them too, so the rebuilt state must have them all (its disk
    // may have lost the last ones with the failed flush).
    let broadcasts = shard.broadcasts();
    d.flusher.drain();
    d.log.stop_spare();
    let policy = d.policy.as_ref().map(|factory| factory(index));
    match recovery::recover(&d.data_dir, index, d.dedup_window_ms, policy) {
        Ok(r) => {
            for note in &r.notes {
                eprintln!("debitcore: shard {index}: {note}");
            }
            *shard = r.shard;
            d.log = ShardLog::new(
                shard_dir(&d.data_dir, index),
                index,
                d.wal.clone(),
                r.tail,
                r.next_lsn,
                r.segments,
                r.bytes_replayed,
            );
            d.flusher.reset(r.next_lsn - 1);
            let entries = match broadcasts::read(&d.data_dir.join(BROADCASTS_NAME)) {
                Ok(entries) => entries,
                Err(e) => {
                    eprintln!("debitcore: shard {index}: cannot read the broadcast log: {e}");
                    return false;
                }
            };
            let lacking = shard.broadcasts() + 1..=broadcasts;
            let missing = entries.iter().filter(|(n, _)| lacking.contains(n));
            let mut appended = false;
            for (_, request) in missing {
                if d.log.reserve(1).is_err() {
                    return false;
                }
                let code = shard.apply(request).code;
                d.log.append_request(request, code);
                appended = true;
            }
            if shard.broadcasts() != broadcasts {
                eprintln!(
                    "debitcore: shard {index}: broadcasts {}..={broadcasts} are not in the broadcast log",
                    shard.broadcasts() + 1
                );
                return false;
            }
            if appended && d.log.sync_now().is_err() {
                return false;
            }
            true
        }
        Err(e) => {
            eprintln!("debitcore: shard {index}: cannot recover after a failed flush: {e}");
            false
        }
    }
}

/// At open, before any shard runs: applies to every shard each broadcast
/// it lacks, up to the last one any shard applied or the broadcast log
/// holds, from the log, in order, writing each to the shard's own log and
/// syncing it there (then the broadcast log may be emptied). Returns the
/// number of the last broadcast, which every shard has now applied.
fn complete_broadcasts(
    states: &mut [(Shard, Option<DurableShard>)],
    entries: &[(u64, Request)],
    recovery: &mut [RecoveryReport],
) -> Result<u64, (PathBuf, std::io::Error)> {
    let applied = states
        .iter()
        .map(|(s, _)| s.broadcasts())
        .max()
        .unwrap_or(0);
    let target = applied.max(entries.last().map_or(0, |&(n, _)| n));
    for (index, (shard, durable)) in states.iter_mut().enumerate() {
        let Some(d) = durable.as_mut() else { continue };
        let from = shard.broadcasts() + 1;
        if from > target {
            continue;
        }
        for n in from..=target {
            let Some((_, request)) = entries.iter().find(|&&(m, _)| m == n) else {
                // Only a directory from before the broadcast log (whose
                // shards did not count them either) gets here.
                recovery[index].notes.push(format!(
                    "broadcasts {n}..={target} are in no log; taken as applied"
                ));
                shard.assume_broadcasts(target);
                break;
            };
            d.log
                .reserve(1)
                .map_err(|e| (shard_dir(&d.data_dir, index), e))?;
            let code = shard.apply(request).code;
            d.log.append_request(request, code);
        }
        d.log
            .sync_now()
            .map_err(|e| (shard_dir(&d.data_dir, index), e))?;
        let report = &mut recovery[index];
        report.notes.push(format!(
            "completed broadcasts {from}..={target} from the broadcast log"
        ));
        report.now_ms = shard.now_ms();
        report.broadcasts = shard.broadcasts();
    }
    Ok(target)
}

/// Spins briefly, then sleeps until a producer pushes (or a short timeout,
/// after which the wall clock is read again).
fn idle(inner: &Inner, port: &Port) {
    for _ in 0..SPIN_LIMIT {
        if !port.queue.is_empty() {
            return;
        }
        std::hint::spin_loop();
    }
    let mut guard = port.sleep.lock();
    port.parked.store(true, Ordering::Relaxed);
    fence(Ordering::SeqCst);
    if port.queue.is_empty() && !inner.stopping.load(Ordering::SeqCst) {
        port.wake
            .wait_for(&mut guard, Duration::from_micros(WORKER_PARK_TIMEOUT_US));
    }
    port.parked.store(false, Ordering::Relaxed);
}

impl Reply {
    fn deliver(self, done: Vec<Done>) {
        match self {
            Reply::Client(inbox) => {
                inbox.done.push(done);
                fence(Ordering::SeqCst);
                if inbox.waiting.load(Ordering::Relaxed) {
                    let _guard = inbox.sleep.lock();
                    inbox.wake.notify_one();
                }
            }
            Reply::Future(mut reply) => {
                let slot = reply.0.take().expect("delivered once");
                for d in done {
                    slot.complete(d.outcome);
                }
            }
            Reply::Gather(gather) => {
                for d in done {
                    gather.add(d.outcome);
                }
            }
            Reply::Discard => {}
        }
    }
}

/// The answer of a request that every shard answered: the shards' parts
/// summed where an answer is a sum over shards (a merchant's pending
/// figure), and otherwise any shard's answer, a refusal before an `ok`
/// (every shard gives the same one, but for a refusal of the engine's own:
/// `storage_unavailable`, `shutting_down`).
fn combine(so_far: Option<Outcome>, next: Outcome) -> Outcome {
    let Some(mut so_far) = so_far else {
        return next;
    };
    if next.code != Code::Ok {
        return next;
    }
    if so_far.code != Code::Ok {
        return so_far;
    }
    if let (Info::Merchant(sum), Info::Merchant(part)) = (&mut so_far.info, &next.info) {
        debug_assert_eq!(
            sum.batches, part.batches,
            "settled figures are alike on every shard"
        );
        sum.pending += part.pending;
    }
    if let (Info::Batch(sum), Info::Batch(part)) = (&mut so_far.info, &next.info) {
        sum.applied += part.applied;
        sum.ok += part.ok;
        sum.held += part.held;
        sum.rejected += part.rejected;
    }
    so_far
}

fn deliver_all(batch: Batch, outcome: impl Fn(&Request) -> Outcome) {
    let done = batch
        .items
        .into_iter()
        .map(|item| Done {
            tag: item.tag,
            kind: item.kind,
            broadcast: item.broadcast,
            outcome: outcome(&item.request),
        })
        .collect();
    batch.reply.deliver(done);
}

/// A gateway thread's handle: buffers requests per shard on the way in and
/// takes outcomes on the way out. Not shared between threads (it is `Send`,
/// so it may move to another thread).
pub struct Client {
    inner: Arc<Inner>,
    inbox: Arc<Inbox>,
    pending: Vec<Vec<Item>>,
    /// Requests handed to shards (or buffered) whose outcomes have not come
    /// back yet; `advance_clock` counts once per shard.
    outstanding: usize,
    /// Outcomes of `send` that came back while the client waited for
    /// something else, to hand out by the next `poll`/`wait`.
    ready: VecDeque<(u64, Outcome)>,
    /// Outcomes of `submit`/`submit_batch` in progress, by tag, and how
    /// many are still missing.
    sync_results: Vec<Option<Outcome>>,
    sync_missing: usize,
    /// `advance_clock` sends in progress: tag, shards still to answer.
    /// Requests sent to every shard and not yet answered by all: (tag,
    /// kind, shards still to answer, the answers combined so far).
    broadcasts: Vec<(u64, Kind, usize, Option<Outcome>)>,
    batch_size: usize,
    in_flight_max: usize,
}

impl Client {
    fn new(inner: Arc<Inner>) -> Client {
        let shards = inner.ports.len();
        Client {
            inner,
            inbox: Arc::new(Inbox {
                done: SegQueue::new(),
                waiting: AtomicBool::new(false),
                sleep: Mutex::new(()),
                wake: Condvar::new(),
            }),
            pending: (0..shards).map(|_| Vec::new()).collect(),
            outstanding: 0,
            ready: VecDeque::new(),
            sync_results: Vec::new(),
            sync_missing: 0,
            broadcasts: Vec::new(),
            batch_size: CLIENT_BATCH_SIZE_DEFAULT,
            in_flight_max: CLIENT_IN_FLIGHT_MAX_DEFAULT,
        }
    }

    /// Requests buffered per shard before a batch is handed over (default
    /// 64). 1 hands every request over at once: lowest latency, most cost.
    pub fn set_batch_size(&mut self, batch_size: usize) {
        self.batch_size = batch_size.max(1);
    }

    /// Sends one request and waits for its outcome.
    pub fn submit(&mut self, request: Request) -> Outcome {
        self.submit_batch(std::slice::from_ref(&request))
            .pop()
            .expect("one outcome per request")
    }

    /// Sends requests in order and waits for all their outcomes, returned
    /// in the same order.
    pub fn submit_batch(&mut self, requests: &[Request]) -> Vec<Outcome> {
        self.sync_results.clear();
        self.sync_results.resize(requests.len(), None);
        self.sync_missing = requests.len();
        for (i, request) in requests.iter().enumerate() {
            self.enqueue(i as u64, Kind::Sync, request.clone());
        }
        self.flush();
        while self.sync_missing > 0 {
            self.block_for_inbox();
            self.take_inbox();
        }
        self.sync_results
            .drain(..)
            .map(|o| o.expect("answered"))
            .collect()
    }

    /// Sends one request without waiting; its outcome comes back with `tag`
    /// through [`Client::poll`] or [`Client::wait`]. Blocks only while the
    /// client has too many requests in flight.
    pub fn send(&mut self, tag: u64, request: Request) {
        self.enqueue(tag, Kind::User, request);
        if self.outstanding >= self.in_flight_max {
            self.flush();
            while self.outstanding >= self.in_flight_max {
                self.block_for_inbox();
                self.take_inbox();
            }
        }
    }

    /// Hands every buffered request to its shard now.
    pub fn flush(&mut self) {
        for shard in 0..self.pending.len() {
            self.flush_shard(shard);
        }
    }

    /// Hands back outcomes that have arrived, without blocking; returns how
    /// many.
    pub fn poll(&mut self, mut on_outcome: impl FnMut(u64, Outcome)) -> usize {
        self.take_inbox();
        let count = self.ready.len();
        for (tag, outcome) in self.ready.drain(..) {
            on_outcome(tag, outcome);
        }
        count
    }

    /// Flushes, then blocks until at least one outcome is there and hands
    /// back all that have arrived. Returns 0 at once if nothing is in flight.
    pub fn wait(&mut self, on_outcome: impl FnMut(u64, Outcome)) -> usize {
        self.flush();
        self.take_inbox();
        while self.ready.is_empty() && self.outstanding > 0 {
            self.block_for_inbox();
            self.take_inbox();
        }
        self.poll(on_outcome)
    }

    /// Like [`Client::poll`], but if nothing has arrived, sleeps until an
    /// outcome does or `deadline` passes, whichever comes first (with
    /// nothing in flight, until `deadline`). Does not flush. For a gateway
    /// thread with nothing to send before `deadline`: it gives its core to
    /// the shard workers and flushers instead of spinning, and still takes
    /// an outcome the moment it is handed back.
    pub fn poll_until(&mut self, deadline: Instant, on_outcome: impl FnMut(u64, Outcome)) -> usize {
        self.take_inbox();
        if self.ready.is_empty() {
            if self.outstanding > 0 {
                self.block_for_inbox_until(Some(deadline));
                self.take_inbox();
            } else if let Some(rest) = deadline.checked_duration_since(Instant::now()) {
                std::thread::sleep(rest);
            }
        }
        self.poll(on_outcome)
    }

    /// Requests sent whose outcomes have not been handed back yet.
    pub fn in_flight(&self) -> usize {
        self.outstanding + self.ready.len()
    }

    fn enqueue(&mut self, tag: u64, kind: Kind, request: Request) {
        match request.account() {
            Some(account) => {
                let shard = self.inner.shard_of(account);
                self.outstanding += 1;
                self.pending[shard].push(Item {
                    tag,
                    kind,
                    broadcast: false,
                    request,
                });
                if self.pending[shard].len() >= self.batch_size {
                    self.flush_shard(shard);
                }
            }
            None if self.inner.refuses_on_this_clock(&request) => {
                self.finish(tag, kind, Outcome::new(Code::ClockNotManual));
            }
            None if matches!(request, Request::Settle { .. }) => {
                // Behind everything this client sent before it; its cut
                // is answered before `send` returns, so the client's later
                // requests come after it on every shard.
                let Request::Settle { id, merchant } = request else {
                    unreachable!()
                };
                self.flush();
                let outcome = self.inner.settle(merchant, id);
                self.finish(tag, kind, outcome);
            }
            None => {
                let request = self.inner.stamp(request);
                // Behind everything this client sent before it, on every
                // shard; then alone, numbered, in the one order of all
                // broadcasts (see `Broadcaster`).
                let shards = self.pending.len();
                for shard in 0..shards {
                    self.flush_shard(shard);
                }
                let mut broadcaster = self.inner.broadcaster.lock();
                if let Some(code) = self.inner.refuse_broadcast(&mut broadcaster, &request) {
                    drop(broadcaster);
                    self.finish(tag, kind, Outcome::new(code));
                    return;
                }
                self.broadcasts.push((tag, kind, shards, None));
                for shard in 0..shards {
                    self.outstanding += 1;
                    let item = Item {
                        tag,
                        kind,
                        broadcast: true,
                        request: request.clone(),
                    };
                    self.inner.push(
                        shard,
                        Batch {
                            items: vec![item],
                            reply: Reply::Client(Arc::clone(&self.inbox)),
                        },
                    );
                }
            }
        }
    }

    fn flush_shard(&mut self, shard: usize) {
        if self.pending[shard].is_empty() {
            return;
        }
        let items = std::mem::replace(
            &mut self.pending[shard],
            Vec::with_capacity(self.batch_size),
        );
        self.inner.push(
            shard,
            Batch {
                items,
                reply: Reply::Client(Arc::clone(&self.inbox)),
            },
        );
    }

    fn take_inbox(&mut self) {
        while let Some(batch) = self.inbox.done.pop() {
            for done in batch {
                self.outstanding -= 1;
                if done.broadcast {
                    let i = self
                        .broadcasts
                        .iter()
                        .position(|&(tag, kind, ..)| tag == done.tag && kind == done.kind)
                        .expect("a broadcast in progress");
                    let (_, _, remaining, so_far) = &mut self.broadcasts[i];
                    *so_far = Some(combine(so_far.take(), done.outcome));
                    *remaining -= 1;
                    if *remaining > 0 {
                        continue;
                    }
                    let (tag, kind, _, outcome) = self.broadcasts.remove(i);
                    self.finish(tag, kind, outcome.expect("every shard answered"));
                    continue;
                }
                self.finish(done.tag, done.kind, done.outcome);
            }
        }
    }

    fn finish(&mut self, tag: u64, kind: Kind, outcome: Outcome) {
        match kind {
            Kind::User => self.ready.push_back((tag, outcome)),
            Kind::Sync => {
                debug_assert!(self.sync_results[tag as usize].is_none());
                self.sync_results[tag as usize] = Some(outcome);
                self.sync_missing -= 1;
            }
        }
    }

    /// Waits until the inbox has something: spins briefly, then sleeps.
    fn block_for_inbox(&self) {
        self.block_for_inbox_until(None);
    }

    /// As [`Client::block_for_inbox`], giving up at `deadline` if given.
    fn block_for_inbox_until(&self, deadline: Option<Instant>) {
        let inbox = &self.inbox;
        for _ in 0..SPIN_LIMIT {
            if !inbox.done.is_empty() {
                return;
            }
            std::hint::spin_loop();
        }
        let mut guard = inbox.sleep.lock();
        inbox.waiting.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        while inbox.done.is_empty() {
            if self.inner.failed.load(Ordering::SeqCst) {
                inbox.waiting.store(false, Ordering::Relaxed);
                drop(guard);
                panic!("debitcore: a shard worker panicked (see above); the engine cannot answer");
            }
            if self.inner.stopped.load(Ordering::SeqCst) {
                self.inner.answer_orphans();
            }
            let mut timeout = Duration::from_millis(1);
            if let Some(deadline) = deadline {
                match deadline.checked_duration_since(Instant::now()) {
                    Some(rest) if !rest.is_zero() => timeout = timeout.min(rest),
                    _ => break,
                }
            }
            inbox.wake.wait_for(&mut guard, timeout);
        }
        inbox.waiting.store(false, Ordering::Relaxed);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Outcomes of requests still buffered would have nowhere to go, but
        // the requests themselves were promised to the engine: hand them
        // over and wait for them, so a dropped client never leaves a
        // request half-sent.
        if self.inner.failed.load(Ordering::SeqCst) || std::thread::panicking() {
            return;
        }
        self.flush();
        while self.outstanding > 0 {
            self.block_for_inbox();
            self.take_inbox();
        }
    }
}

/// The shared state of one `submit_async`.
struct FutureSlot {
    /// Shards still to answer (more than one only for requests that go to
    /// every shard: `advance_clock`, `open_merchant`, `merchant`).
    remaining: AtomicUsize,
    state: Mutex<(Option<Outcome>, Option<Waker>)>,
    /// A shard will never answer: its worker panicked.
    failed: AtomicBool,
}

/// A future's side of one batch. Delivering completes the future; dropped
/// undelivered (the worker panicked with the batch in hand or in its
/// queue), it fails the future, which then panics when polled, as a
/// waiting [`Client`] does, instead of pending forever.
struct FutureReply(Option<Arc<FutureSlot>>);

impl Drop for FutureReply {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            let mut state = slot.state.lock();
            slot.failed.store(true, Ordering::Release);
            if let Some(waker) = state.1.take() {
                waker.wake();
            }
        }
    }
}

impl FutureSlot {
    fn complete(&self, outcome: Outcome) {
        let mut state = self.state.lock();
        state.0 = Some(combine(state.0.take(), outcome));
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(waker) = state.1.take() {
                waker.wake();
            }
        }
    }
}

/// The outcome of [`Engine::submit_async`], on any executor.
pub struct OutcomeFuture {
    slot: Option<Arc<FutureSlot>>,
    ready: Option<Outcome>,
}

impl OutcomeFuture {
    fn ready(outcome: Outcome) -> OutcomeFuture {
        OutcomeFuture {
            slot: None,
            ready: Some(outcome),
        }
    }
}

impl Future for OutcomeFuture {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        if let Some(outcome) = self.ready.take() {
            return Poll::Ready(outcome);
        }
        let slot = self.slot.as_ref().expect("polled after completion");
        let mut state = slot.state.lock();
        if slot.failed.load(Ordering::Acquire) {
            drop(state);
            self.slot = None;
            panic!("debitcore: a shard worker panicked (see above); the engine cannot answer");
        }
        if slot.remaining.load(Ordering::Acquire) == 0 {
            let outcome = state.0.take().expect("completed slots hold an outcome");
            drop(state);
            self.slot = None;
            return Poll::Ready(outcome);
        }
        state.1 = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::{AmountArg, Currency};
    use crate::request::Op;
    use std::time::Instant;

    fn engine(shards: usize) -> Engine {
        Engine::start(EngineConfig {
            shards,
            clock: ClockMode::Manual,
            ..EngineConfig::default()
        })
    }

    fn open(account: u64) -> Request {
        Request::OpenAccount {
            account,
            currency: Some(Currency::USD),
            overdraft: None,
            history: false,
        }
    }

    fn deposit(id: u64, account: u64, amount: &str) -> Request {
        Request::Deposit {
            id,
            account,
            amount: AmountArg::parse(amount),
        }
    }

    #[test]
    fn expected_keys_size_the_key_tables_at_start() {
        let key_bytes = |expected_keys| {
            let engine = Engine::start(EngineConfig {
                shards: 2,
                clock: ClockMode::Manual,
                durability: Durability::None,
                expected_keys,
                ..EngineConfig::default()
            });
            let mut client = engine.client();
            // One round on each shard publishes its stats.
            let accounts: Vec<u64> = (0..64).collect();
            let opens: Vec<Request> = accounts.iter().map(|&a| open(a)).collect();
            client.submit_batch(&opens);
            // Published just after the outcomes are handed back.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let least = engine.stats().iter().map(|s| s.key_bytes).min().unwrap();
                if least > 0 || Instant::now() > deadline {
                    return least;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let sized = key_bytes(1 << 20);
        assert!(sized >= (1 << 19) * 28, "{sized} bytes per shard");
        assert!(key_bytes(0) < (1 << 19) * 28);
    }

    #[test]
    fn blocking_submit_answers_in_order() {
        let engine = engine(2);
        let mut client = engine.client();
        let outcomes = client.submit_batch(&[open(1), open(2), open(1), deposit(1, 1, "5")]);
        let codes: Vec<Code> = outcomes.iter().map(|o| o.code).collect();
        assert_eq!(codes, [Code::Ok, Code::Ok, Code::AccountExists, Code::Ok]);
        assert!(client.submit(deposit(1, 1, "5.00")).replayed);
    }

    #[test]
    fn pipelined_sends_all_come_back() {
        let engine = engine(3);
        let mut client = engine.client();
        for account in 0..1000 {
            client.send(account, open(account));
        }
        let mut seen = vec![false; 1000];
        while client.in_flight() > 0 {
            client.wait(|tag, outcome| {
                assert_eq!(outcome.code, Code::Ok);
                assert!(!seen[tag as usize]);
                seen[tag as usize] = true;
            });
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn advance_clock_reaches_every_shard_and_answers_once() {
        let engine = engine(4);
        let mut client = engine.client();
        client.send(7, Request::AdvanceClock { ms: 5 });
        let mut answers = Vec::new();
        while client.in_flight() > 0 {
            client.wait(|tag, outcome| answers.push((tag, outcome.code)));
        }
        assert_eq!(answers, [(7, Code::Ok)]);
    }

    #[test]
    fn a_panicking_worker_fails_its_clients_instead_of_hanging_them() {
        struct Explodes;
        impl RiskPolicy for Explodes {
            fn assess(&mut self, _: &crate::risk::RiskContext<'_>) -> crate::risk::RiskDecision {
                panic!("policy bug");
            }
        }
        let engine = Engine::start(EngineConfig {
            shards: 1,
            clock: ClockMode::Manual,
            risk_policy: Some(Arc::new(|_| Box::new(Explodes) as Box<dyn RiskPolicy>)),
            ..EngineConfig::default()
        });
        let mut client = engine.client();
        assert_eq!(client.submit(open(1)).code, Code::Ok);
        assert_eq!(client.submit(deposit(1, 1, "5")).code, Code::Ok);
        let debit = Request::Debit {
            id: 2,
            account: 1,
            amount: AmountArg::parse("1"),
            merchant: None,
        };
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| client.submit(debit)));
        assert!(
            result.is_err(),
            "the client panics instead of waiting forever"
        );
    }

    /// A future whose worker panicked fails (panics when polled) instead of
    /// pending forever: the one in hand when the worker died, one queued
    /// behind it, and one submitted after.
    #[test]
    fn a_panicking_worker_fails_its_futures_instead_of_hanging_them() {
        struct ExplodesOnBigDebits;
        impl RiskPolicy for ExplodesOnBigDebits {
            fn assess(
                &mut self,
                context: &crate::risk::RiskContext<'_>,
            ) -> crate::risk::RiskDecision {
                assert!(context.amount < 1000, "policy bug");
                crate::risk::RiskDecision::Approve
            }
        }
        let engine = Engine::start(EngineConfig {
            shards: 1,
            clock: ClockMode::Manual,
            risk_policy: Some(Arc::new(|_| {
                Box::new(ExplodesOnBigDebits) as Box<dyn RiskPolicy>
            })),
            ..EngineConfig::default()
        });
        assert_eq!(block_on(engine.submit_async(open(1))).code, Code::Ok);
        assert_eq!(
            block_on(engine.submit_async(deposit(1, 1, "500"))).code,
            Code::Ok
        );
        let debit = |id, amount| Request::Debit {
            id,
            account: 1,
            amount: AmountArg::parse(amount),
            merchant: None,
        };
        assert_eq!(block_on(engine.submit_async(debit(2, "1"))).code, Code::Ok);
        let explodes = engine.submit_async(debit(3, "100"));
        let queued = engine.submit_async(debit(4, "1"));
        // Ok(None): still pending after 10 s; Err: the poll panicked.
        let outcome = |future| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                block_on_for(future, Duration::from_secs(10))
            }))
        };
        for future in [explodes, queued] {
            assert!(
                outcome(future).is_err(),
                "the future fails instead of pending"
            );
        }
        let after = engine.submit_async(debit(5, "1"));
        assert!(
            outcome(after).is_err(),
            "a future submitted after the panic fails too"
        );
    }

    #[test]
    fn wall_clock_refuses_advance() {
        let engine = Engine::start(EngineConfig {
            shards: 1,
            ..EngineConfig::default()
        });
        let mut client = engine.client();
        assert_eq!(
            client.submit(Request::AdvanceClock { ms: 1 }).code,
            Code::ClockNotManual
        );
    }

    #[test]
    fn futures_resolve_without_a_runtime() {
        let engine = engine(2);
        let futures: Vec<OutcomeFuture> = (0..10).map(|a| engine.submit_async(open(a))).collect();
        for future in futures {
            assert_eq!(block_on(future).code, Code::Ok);
        }
        assert_eq!(
            block_on(engine.submit_async(open(3))).code,
            Code::AccountExists
        );
        assert_eq!(
            block_on(engine.submit_async(Request::AdvanceClock { ms: 1 })).code,
            Code::Ok
        );
    }

    fn merchant_debit(id: u64, account: u64, amount: &str) -> Request {
        Request::Debit {
            id,
            account,
            amount: AmountArg::parse(amount),
            merchant: Some(7),
        }
    }

    fn settle_figures(outcome: &Outcome) -> Settlement {
        match &outcome.info {
            Info::Settlement(s) => **s,
            _ => panic!("{outcome:?}"),
        }
    }

    /// A settle through a future (its two steps run on a thread of their
    /// own) and a batch run through one, summed over both shards.
    #[test]
    fn settle_and_run_batch_resolve_as_futures() {
        let engine = engine(2);
        let mut client = engine.client();
        client.submit(Request::OpenMerchant {
            merchant: 7,
            currency: Some(Currency::USD),
            fee_bps: Some(100),
        });
        for account in 1..=8 {
            client.submit(open(account));
            client.submit(deposit(1, account, "100"));
            client.submit(merchant_debit(2, account, "10"));
            let queued = Request::QueueDebit {
                id: 3,
                account,
                amount: AmountArg::parse("5"),
                merchant: Some(7),
            };
            assert_eq!(client.submit(queued).code, Code::Queued);
        }
        let batch = block_on(engine.submit_async(Request::RunBatch));
        let Info::Batch(b) = &batch.info else {
            panic!("{batch:?}")
        };
        assert_eq!((b.applied, b.ok), (8, 8));
        let settled = block_on(engine.submit_async(Request::Settle { id: 1, merchant: 7 }));
        let s = settle_figures(&settled);
        assert_eq!(
            (s.batch, s.count, s.gross, s.fee, s.net),
            (1, 16, 12_000, 120, 11_880)
        );
        let again = block_on(engine.submit_async(Request::Settle { id: 1, merchant: 7 }));
        assert!(again.replayed);
        assert_eq!(settle_figures(&again), s);
    }

    /// Under the wall clock a batch run is stamped with one time for every
    /// shard (SPEC: "a `run_batch` takes one engine time"), and applies.
    #[test]
    fn a_wall_clock_batch_run_applies_at_one_time() {
        let engine = Engine::start(EngineConfig {
            shards: 2,
            clock: ClockMode::Wall,
            ..EngineConfig::default()
        });
        let mut client = engine.client();
        for account in 1..=6 {
            client.submit(open(account));
            client.submit(deposit(1, account, "10"));
            let queued = Request::QueueDebit {
                id: 2,
                account,
                amount: AmountArg::parse(if account == 6 { "11" } else { "4" }),
                merchant: None,
            };
            assert_eq!(client.submit(queued).code, Code::Queued);
        }
        assert_eq!(
            Inner::stamp(&engine.inner, Request::RunBatch).op(),
            Op::RunBatch
        );
        assert!(matches!(
            Inner::stamp(&engine.inner, Request::RunBatch),
            Request::Internal(_)
        ));
        let batch = client.submit(Request::RunBatch);
        let Info::Batch(b) = &batch.info else {
            panic!("{batch:?}")
        };
        assert_eq!((b.applied, b.ok, b.rejected), (6, 5, 1));
        let status = client.submit(Request::Status { account: 6, id: 2 });
        assert_eq!(
            status.info,
            Info::Status {
                op: Op::QueueDebit,
                status: Code::InsufficientFunds
            }
        );
    }

    /// Through a pipelined client, a settle is in line with the client's
    /// own requests on every shard: a debit sent before it is in the
    /// batch, one sent after it is in the next, whichever shards they
    /// are on.
    #[test]
    fn a_pipelined_settle_cuts_at_its_place_in_the_clients_line() {
        let engine = engine(2);
        let mut client = engine.client();
        client.submit(Request::OpenMerchant {
            merchant: 7,
            currency: Some(Currency::USD),
            fee_bps: None,
        });
        for account in 1..=8 {
            client.submit(open(account));
            client.submit(deposit(1, account, "100"));
        }
        let mut tag = 0;
        let mut send = |client: &mut Client, request: Request| {
            tag += 1;
            client.send(tag, request);
            tag
        };
        for account in 1..=8 {
            send(&mut client, merchant_debit(2, account, "1"));
        }
        let first = send(&mut client, Request::Settle { id: 1, merchant: 7 });
        for account in 1..=8 {
            send(&mut client, merchant_debit(3, account, "2"));
        }
        let second = send(&mut client, Request::Settle { id: 2, merchant: 7 });
        let mut settled = std::collections::BTreeMap::new();
        while client.in_flight() > 0 {
            client.wait(|tag, outcome| {
                settled.insert(tag, outcome);
            });
        }
        let (a, b) = (
            settle_figures(&settled[&first]),
            settle_figures(&settled[&second]),
        );
        assert_eq!((a.batch, a.count, a.gross), (1, 8, 800));
        assert_eq!((b.batch, b.count, b.gross), (2, 8, 1_600));
    }

    #[test]
    fn many_clients_on_many_threads() {
        let engine = Arc::new(engine(2));
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let engine = Arc::clone(&engine);
                std::thread::spawn(move || {
                    let mut client = engine.client();
                    let base = t * 1000;
                    for a in base..base + 200 {
                        client.send(a, open(a));
                        client.send(a, deposit(1, a, "1"));
                    }
                    let mut count = 0;
                    while client.in_flight() > 0 {
                        count += client.wait(|_, o| assert_eq!(o.code, Code::Ok));
                    }
                    count
                })
            })
            .collect();
        for handle in handles {
            assert_eq!(handle.join().unwrap(), 400);
        }
    }

    /// A minimal executor: parks the thread until the waker unparks it.
    fn block_on<F: Future>(future: F) -> F::Output {
        block_on_for(future, Duration::MAX).expect("no deadline")
    }

    /// Polls until ready, sleeping between wake-ups; `None` if still pending
    /// after `limit` (a test that would otherwise hang fails instead).
    fn block_on_for<F: Future>(future: F, limit: Duration) -> Option<F::Output> {
        use std::task::Wake;
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let deadline = Instant::now().checked_add(limit);
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return Some(output);
            }
            match deadline {
                None => std::thread::park(),
                Some(deadline) => {
                    let rest = deadline.checked_duration_since(Instant::now())?;
                    std::thread::park_timeout(rest);
                }
            }
        }
    }
}
