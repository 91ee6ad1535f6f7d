//! debitcore: a sharded, in-memory debit and pre-authorization engine.
//!
//! A payment gateway embeds this crate. Every card or wallet payment becomes
//! a request: a debit, or a pre-authorization (a hold on funds) that is later
//! captured or voided, plus deposits, refunds, limits and queries. The engine
//! answers each with a typed [`Outcome`] whose [`Code`] is `ok` or the reason
//! nothing happened, exactly once per idempotency key (account, id): a retry
//! gets the original outcome back, marked `replayed`, and moves no money.
//!
//! Every account lives on one shard; each shard is owned by one worker
//! thread that alone touches its tables, so no lock is on the path of a
//! request. Gateway threads hold a [`Client`] that batches their requests on
//! the way in. Amounts are sent as decimal text in major units
//! ([`AmountArg::parse`], or [`AmountArg::from_decimal`] from a
//! `rust_decimal::Decimal`) and held as integer minor units inside.
//!
//! In the repository (the links work from the source tree):
//!
//! - [docs/behaviour.md](../docs/behaviour.md): what every request means,
//!   its checks in order, and the line format of `debitcore run`.
//! - [ARCHITECTURE.md](../ARCHITECTURE.md): the map of the modules and the
//!   path of one request; its section "Decisions where SPEC is silent" says
//!   what the project chose where the contract leaves a choice open.
//! - Durability: give [`EngineConfig::data_dir`] and start with
//!   [`Engine::open`] ([below](#durable-a-data-directory)); the log's byte
//!   layout is in [docs/wal-format.md](../docs/wal-format.md).
//!
//! # Blocking: one request, one outcome
//!
//! [`Client::submit`] sends a request and waits for its outcome. One client
//! per gateway thread; [`Engine::client`] makes as many as needed.
//!
//! ```
//! use debitcore::{AmountArg, Code, Currency, Engine, EngineConfig, Request};
//!
//! let engine = Engine::start(EngineConfig { shards: 2, ..EngineConfig::default() });
//! let mut client = engine.client();
//!
//! let open = Request::OpenAccount { account: 42, currency: Some(Currency::EUR), overdraft: None, history: false };
//! assert_eq!(client.submit(open).code, Code::Ok);
//! let deposit = Request::Deposit { id: 1, account: 42, amount: AmountArg::parse("100.00") };
//! assert_eq!(client.submit(deposit).code, Code::Ok);
//!
//! let debit = Request::Debit { id: 2, account: 42, amount: AmountArg::parse("25.50"), merchant: None };
//! assert_eq!(client.submit(debit.clone()).code, Code::Ok);
//! // A retry with the same key is answered again, and debits nothing more.
//! assert!(client.submit(debit).replayed);
//!
//! let too_much = Request::Debit { id: 3, account: 42, amount: AmountArg::parse("500"), merchant: None };
//! assert_eq!(client.submit(too_much).code, Code::InsufficientFunds);
//!
//! let balance = client.submit(Request::Balance { account: 42 });
//! assert_eq!(balance.balance_strings().unwrap(), ["74.50", "0.00", "74.50"]);
//! ```
//!
//! # Pipelined: many in flight
//!
//! [`Client::send`] queues a request under a tag of the caller's choosing
//! and returns at once; the client hands requests to their shards in
//! batches. [`Client::wait`] (blocking) and [`Client::poll`] (not) hand
//! outcomes back with their tags, in the order they complete. Requests on
//! one account still take effect in the order they were sent.
//!
//! ```
//! use debitcore::{AmountArg, Code, Currency, Engine, EngineConfig, Request};
//!
//! let engine = Engine::start(EngineConfig { shards: 2, ..EngineConfig::default() });
//! let mut client = engine.client();
//! for account in 1..=10 {
//!     client.submit(Request::OpenAccount { account, currency: Some(Currency::USD), overdraft: None, history: false });
//!     let amount = AmountArg::parse("1.00");
//!     client.submit(Request::Deposit { id: 1, account, amount });
//! }
//!
//! // 30 debits of 0.50 over 10 accounts: each can afford two of its three.
//! for tag in 0..30u64 {
//!     let debit = Request::Debit { id: 100 + tag, account: 1 + tag % 10, amount: AmountArg::parse("0.50"), merchant: None };
//!     client.send(tag, debit);
//! }
//! let mut codes = vec![None; 30];
//! while client.in_flight() > 0 {
//!     client.wait(|tag, outcome| codes[tag as usize] = Some(outcome.code));
//! }
//! let ok = codes.iter().filter(|&&c| c == Some(Code::Ok)).count();
//! assert_eq!(ok, 20);
//! // Per account in send order: the third debit (tags 20..30) found no funds.
//! assert!(codes[20..].iter().all(|&c| c == Some(Code::InsufficientFunds)));
//! ```
//!
//! # Async: a future per request
//!
//! [`Engine::submit_async`] returns an [`OutcomeFuture`] that any executor
//! can drive: the worker wakes the task's waker, so the crate needs no async
//! runtime. Each call is its own queue push, so a busy thread does better
//! with a [`Client`]. Here the smallest executor there is, written with
//! `std` alone, stands in for the gateway's runtime:
//!
//! ```
//! use debitcore::{AmountArg, Code, Currency, Engine, EngineConfig, Request};
//! use std::future::Future;
//! use std::sync::Arc;
//! use std::task::{Context, Poll, Wake, Waker};
//!
//! /// Polls `future` on this thread, parking it until the waker unparks it.
//! fn block_on<F: Future>(future: F) -> F::Output {
//!     struct Unpark(std::thread::Thread);
//!     impl Wake for Unpark {
//!         fn wake(self: Arc<Self>) {
//!             self.0.unpark();
//!         }
//!     }
//!     let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
//!     let mut cx = Context::from_waker(&waker);
//!     let mut future = std::pin::pin!(future);
//!     loop {
//!         match future.as_mut().poll(&mut cx) {
//!             Poll::Ready(output) => return output,
//!             Poll::Pending => std::thread::park(),
//!         }
//!     }
//! }
//!
//! let engine = Engine::start(EngineConfig { shards: 2, ..EngineConfig::default() });
//! let open = Request::OpenAccount { account: 7, currency: Some(Currency::JPY), overdraft: None, history: false };
//! assert_eq!(block_on(engine.submit_async(open)).code, Code::Ok);
//! let deposit = Request::Deposit { id: 1, account: 7, amount: AmountArg::parse("5000") };
//! assert_eq!(block_on(engine.submit_async(deposit)).code, Code::Ok);
//!
//! // A hold, then a capture of part of it; the rest is released.
//! let hold = Request::Authorize { id: 2, account: 7, amount: AmountArg::parse("3000"), expires_in_ms: None, merchant: None };
//! assert_eq!(block_on(engine.submit_async(hold)).code, Code::Ok);
//! let capture = Request::Capture {
//!     id: 3, account: 7, auth: 2, amount: Some(AmountArg::parse("1200")), is_final: true,
//! };
//! assert_eq!(block_on(engine.submit_async(capture)).code, Code::Ok);
//! let balance = block_on(engine.submit_async(Request::Balance { account: 7 }));
//! assert_eq!(balance.balance_strings().unwrap(), ["3800", "0", "3800"]);
//! ```
//!
//! # Durable: a data directory
//!
//! With [`EngineConfig::data_dir`], every state change goes into a
//! per-shard write-ahead log, and (with the default [`Durability::Sync`]) an
//! outcome is handed back only once its record is on stable storage.
//! [`Engine::open`] recovers what an earlier engine left in the directory
//! and returns an [`OpenError`] if it is locked by another engine or
//! damaged. The shard count is fixed when the directory is made.
//!
//! ```
//! use debitcore::{AmountArg, Code, Currency, Engine, EngineConfig, Request, WalOptions};
//!
//! let dir = std::env::temp_dir().join(format!("debitcore-doc-{}", std::process::id()));
//! let config = || EngineConfig {
//!     shards: 1,
//!     data_dir: Some(dir.clone()),
//!     // Small segment files, for the example; the default is 64 MiB.
//!     wal: WalOptions { segment_bytes: 64 << 10, ..WalOptions::default() },
//!     ..EngineConfig::default()
//! };
//!
//! let engine = Engine::open(config()).expect("a fresh directory opens");
//! let mut client = engine.client();
//! client.submit(Request::OpenAccount { account: 1, currency: Some(Currency::GBP), overdraft: None, history: false });
//! let deposit = Request::Deposit { id: 1, account: 1, amount: AmountArg::parse("10") };
//! assert_eq!(client.submit(deposit.clone()).code, Code::Ok);
//! drop(client);
//! engine.shutdown();
//!
//! // A new engine over the same directory recovers the account and its keys.
//! let engine = Engine::open(config()).expect("the directory reopens");
//! let mut client = engine.client();
//! assert!(client.submit(deposit).replayed);
//! let balance = client.submit(Request::Balance { account: 1 });
//! assert_eq!(balance.balance_strings().unwrap(), ["10.00", "0.00", "10.00"]);
//! drop(client);
//! engine.shutdown();
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod engine;
pub mod hash;
mod hugemem;
mod index;
pub mod inspect;
pub mod limits;
pub mod money;
pub mod outcome;
pub mod request;
pub mod risk;
pub mod runner;
pub mod shard;
pub mod stats;
mod table;
pub mod wal;

pub use engine::{
    Client, ClockMode, Engine, EngineConfig, OutcomeFuture, RecoveryReport, Submitter,
};
pub use money::{AmountArg, Currency};
pub use outcome::{
    BatchFigures, Code, HistoryEntry, HistoryPage, Info, MerchantFigures, Moved, Outcome,
    Settlement,
};
pub use request::{AccountId, Internal, LimitsArg, MerchantId, Op, Request, TxnId, VelocityArg};
pub use risk::{RiskContext, RiskDecision, RiskPolicy, SpecRules};
pub use stats::{Durations, ShardStats};
pub use wal::{Durability, OpenError, WalOptions};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
