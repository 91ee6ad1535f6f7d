//! debitcore: a sharded, in-memory debit and pre-authorization engine.
//!
//! A payment gateway embeds this crate. Every account lives on one shard;
//! each shard is owned by one worker thread that alone touches its tables.
//! Gateway threads hold a [`Client`] that batches their requests on the way
//! in. See `ARCHITECTURE.md` for the map and `docs/behaviour.md` for the
//! meaning of every request.
#![deny(unsafe_code)]

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

pub use engine::{Client, ClockMode, Engine, EngineConfig, OutcomeFuture, RecoveryReport};
pub use money::{AmountArg, Currency};
pub use outcome::{Code, Info, Outcome};
pub use request::{AccountId, LimitsArg, Op, Request, TxnId, VelocityArg};
pub use risk::{RiskContext, RiskDecision, RiskPolicy, SpecRules};
pub use stats::{Durations, ShardStats};
pub use wal::{Durability, OpenError, WalOptions};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
