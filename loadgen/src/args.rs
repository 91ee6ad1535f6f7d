//! Command-line flags and the resolved run configuration.
//!
//! clap rejects malformed values itself (usage message, exit code 2); what
//! needs the machine (core count) or the state of the project (no
//! write-ahead log yet) is decided in [`Args::resolve`], whose error the
//! caller also turns into exit code 2.

use crate::workload::{Mix, Skew};
use clap::{Parser, ValueEnum};
use debitcore::limits::{CLIENT_IN_FLIGHT_MAX_DEFAULT, DEDUP_WINDOW_MS_DEFAULT, SHARD_COUNT_MAX};
use std::path::PathBuf;

/// Most producer threads; far above any useful count, it only stops typos.
pub const PRODUCERS_MAX: usize = 1024;

/// Longest run; it only stops typos (a run is meant to take seconds).
pub const DURATION_S_MAX: f64 = 86_400.0;

/// Load generator for debitcore: embeds the engine as a payment gateway
/// would and measures throughput and submit-to-outcome latency.
#[derive(Parser, Debug, Clone)]
#[command(name = "loadgen", version)]
pub struct Args {
    /// Funded accounts opened before the measured part.
    #[arg(long, default_value_t = 1_000_000, value_parser = parse_accounts)]
    pub accounts: u64,

    /// Engine shards [default: all cores].
    #[arg(long, value_parser = parse_shards)]
    pub shards: Option<usize>,

    /// Producer threads, one client each [default: all cores].
    #[arg(long, value_parser = parse_producers)]
    pub producers: Option<usize>,

    /// Length of the measured part, in seconds (fractions allowed).
    #[arg(long, default_value_t = 10.0, value_parser = parse_duration)]
    pub duration: f64,

    /// Op mix as op=weight pairs; ops: debit, authorize, capture,
    /// partial_capture, increment, void, refund.
    #[arg(long, default_value = "debit=90,authorize=6,capture=3,void=1", value_parser = Mix::parse)]
    pub mix: Mix,

    /// Account popularity: uniform, or zipf:S for hot accounts.
    #[arg(long, default_value = "uniform", value_parser = Skew::parse)]
    pub skew: Skew,

    /// How request ids are chosen.
    #[arg(long, value_enum, default_value_t = IdOrder::Random)]
    pub id_order: IdOrder,

    /// Open-loop target rate in total requests/s; without it producers run
    /// closed-loop, as fast as the engine answers.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Fraction of accounts (0..1) given per_txn, daily, review_above and
    /// velocity limits during setup.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub limits_fraction: f64,

    /// Fraction of accounts (0..1) opened with history (a statement of
    /// every keyed request), chosen independently of the limited ones.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub history_fraction: f64,

    /// Durability mode: `sync` (outcome after fdatasync), `batched` (flushes
    /// wait up to 1 ms for company), `none` (no log).
    #[arg(long, value_enum, default_value_t = Durability::Sync)]
    pub durability: Durability,

    /// Data directory for the write-ahead log; default: a temporary
    /// directory removed at exit. Must not exist yet or be a debitcore one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// Also write the whole report as one JSON document to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Seed of every random choice; each producer derives its own stream.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Requests one producer keeps in flight at most before it waits
    /// (default: 8192 when durable, 1024 in memory).
    #[arg(long, value_parser = parse_in_flight)]
    pub in_flight: Option<usize>,

    /// How long the engine must remember keys, in ms (24 hours by default).
    #[arg(long, default_value_t = DEDUP_WINDOW_MS_DEFAULT)]
    pub dedup_window_ms: u64,

    /// Keys the engine sizes its idempotency tables for at start, over all
    /// shards (`EngineConfig::expected_keys`); 0 (the default): they grow
    /// as keys arrive. A table at its window's size, as in a long-running
    /// gateway, never grows: this measures that steady state.
    #[arg(long, default_value_t = 0)]
    pub expect_keys: usize,

    /// Drive the engine through `submit_async` from this many tokio tasks
    /// (spread over the producer threads, a current-thread runtime each),
    /// each awaiting one request at a time, as an async HTTP gateway's
    /// handlers do; 0 (the default): pipelined clients. Closed loop only.
    #[arg(long, default_value_t = 0)]
    pub async_tasks: usize,

    /// Merchants opened at setup (ids 1..=N, USD, fee 100 bps); every
    /// debit, authorize and queued debit then names one of them at random.
    /// 0 (the default): no merchants.
    #[arg(long, default_value_t = 0)]
    pub merchants: u64,

    /// Settle one merchant (at random, a fresh key) every this many ms,
    /// from a thread of its own, timed apart from the other requests;
    /// needs --merchants. 0 (the default): never.
    #[arg(long, default_value_t = 0.0, value_parser = parse_period)]
    pub settle_every_ms: f64,

    /// Send `run_batch` every this many ms from that thread (queued debits
    /// come from `queue_debit` in --mix), timed apart. 0: never.
    #[arg(long, default_value_t = 0.0, value_parser = parse_period)]
    pub batch_every_ms: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IdOrder {
    /// A random u64 per request.
    Random,
    /// A per-producer counter.
    Sequential,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    None,
    Sync,
    Batched,
}

impl IdOrder {
    pub fn name(self) -> &'static str {
        match self {
            IdOrder::Random => "random",
            IdOrder::Sequential => "sequential",
        }
    }
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::None => "none",
            Durability::Sync => "sync",
            Durability::Batched => "batched",
        }
    }
}

/// Everything a run needs, with defaults filled in.
#[derive(Clone, Debug)]
pub struct Config {
    pub accounts: u64,
    pub shards: usize,
    pub producers: usize,
    pub duration_s: f64,
    pub mix: Mix,
    pub skew: Skew,
    pub id_order: IdOrder,
    pub rate: Option<f64>,
    pub limits_fraction: f64,
    pub history_fraction: f64,
    pub durability: Durability,
    pub data_dir: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub seed: u64,
    pub in_flight: usize,
    pub dedup_window_ms: u64,
    pub expect_keys: usize,
    /// 0: pipelined clients; else tasks awaiting `submit_async`.
    pub async_tasks: usize,
    /// Merchants opened at setup; 0: debits name none.
    pub merchants: u64,
    /// Period of settles and of batch runs, ms; 0: none.
    pub settle_every_ms: f64,
    pub batch_every_ms: f64,
}

impl Args {
    /// Fills in machine-dependent defaults and refuses what cannot run yet.
    /// `cores` is passed in so that tests do not depend on the machine.
    pub fn resolve(self, cores: usize) -> Result<Config, String> {
        if self.durability == Durability::None && self.data_dir.is_some() {
            return Err("--data-dir needs --durability sync or batched".to_string());
        }
        let cores = cores.max(1);
        let shards = self.shards.unwrap_or(cores.min(SHARD_COUNT_MAX));
        let producers = self.producers.unwrap_or(cores.min(PRODUCERS_MAX));
        if self.async_tasks > 0 && self.rate.is_some() {
            return Err("--async-tasks runs closed loop; it takes no --rate".to_string());
        }
        if self.async_tasks > 0 && self.async_tasks < producers {
            return Err(format!(
                "--async-tasks {} is fewer than one task per producer ({producers})",
                self.async_tasks
            ));
        }
        if self.settle_every_ms > 0.0 && self.merchants == 0 {
            return Err("--settle-every-ms needs --merchants".to_string());
        }
        if let Some(rate) = self.rate {
            // Below one request per second per producer the schedule would
            // have gaps longer than a report interval; say so plainly.
            if rate < producers as f64 {
                return Err(format!(
                    "--rate {rate} is below one request/s per producer ({producers} producers)"
                ));
            }
        }
        Ok(Config {
            accounts: self.accounts,
            shards,
            producers,
            duration_s: self.duration,
            mix: self.mix,
            skew: self.skew,
            id_order: self.id_order,
            rate: self.rate,
            limits_fraction: self.limits_fraction,
            history_fraction: self.history_fraction,
            durability: self.durability,
            data_dir: self.data_dir,
            json: self.json,
            seed: self.seed,
            // Durable outcomes wait for an fdatasync (~4-5 ms here): by
            // Little's law a producer needs thousands in flight to keep the
            // shards busy. In memory, more only adds queueing.
            in_flight: self.in_flight.unwrap_or(match self.durability {
                Durability::None => IN_FLIGHT_DEFAULT_MEMORY,
                Durability::Sync | Durability::Batched => IN_FLIGHT_DEFAULT_DURABLE,
            }),
            dedup_window_ms: self.dedup_window_ms,
            expect_keys: self.expect_keys,
            async_tasks: self.async_tasks,
            merchants: self.merchants,
            settle_every_ms: self.settle_every_ms,
            batch_every_ms: self.batch_every_ms,
        })
    }
}

fn parse_accounts(text: &str) -> Result<u64, String> {
    let n: u64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    // Account ids are index + 1, so the largest index must leave room.
    if n == 0 || n == u64::MAX {
        return Err("need at least one account (and fewer than 2^64 - 1)".to_string());
    }
    Ok(n)
}

fn parse_period(text: &str) -> Result<f64, String> {
    let ms: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of ms"))?;
    if !ms.is_finite() || ms < 0.0 {
        return Err("a period is a number of ms >= 0".to_string());
    }
    Ok(ms)
}

fn parse_shards(text: &str) -> Result<usize, String> {
    parse_count(text, 1, SHARD_COUNT_MAX)
}

fn parse_producers(text: &str) -> Result<usize, String> {
    parse_count(text, 1, PRODUCERS_MAX)
}

const IN_FLIGHT_DEFAULT_MEMORY: usize = 1024;
const IN_FLIGHT_DEFAULT_DURABLE: usize = 8192;

fn parse_in_flight(text: &str) -> Result<usize, String> {
    // The client blocks inside send beyond its own in-flight bound; staying
    // within it keeps every wait in the producer, where it is measured.
    parse_count(text, 1, CLIENT_IN_FLIGHT_MAX_DEFAULT)
}

fn parse_count(text: &str, min: usize, max: usize) -> Result<usize, String> {
    let n: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    if !(min..=max).contains(&n) {
        return Err(format!("must be in {min}..={max}"));
    }
    Ok(n)
}

fn parse_duration(text: &str) -> Result<f64, String> {
    let s: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !(s.is_finite() && s > 0.0 && s <= DURATION_S_MAX) {
        return Err(format!("must be > 0 and at most {DURATION_S_MAX} seconds"));
    }
    Ok(s)
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let r: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !(r.is_finite() && r > 0.0) {
        return Err("must be a positive number of requests per second".to_string());
    }
    Ok(r)
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    let f: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !(0.0..=1.0).contains(&f) {
        return Err("must be between 0 and 1".to_string());
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("loadgen").chain(flags.iter().copied()))
    }

    #[test]
    fn defaults_are_sensible() {
        let config = parse(&[]).unwrap().resolve(8).unwrap();
        assert_eq!(config.accounts, 1_000_000);
        assert_eq!(config.shards, 8);
        assert_eq!(config.producers, 8);
        assert_eq!(config.duration_s, 10.0);
        assert_eq!(
            config.mix.to_string(),
            "debit=90,authorize=6,capture=3,void=1"
        );
        assert_eq!(config.skew, Skew::Uniform);
        assert_eq!(config.id_order, IdOrder::Random);
        assert_eq!(config.rate, None);
        assert_eq!(config.limits_fraction, 0.0);
        assert_eq!(config.history_fraction, 0.0);
        assert_eq!(config.durability, Durability::Sync);
    }

    #[test]
    fn flags_are_taken() {
        let config = parse(&[
            "--accounts=1000",
            "--shards=3",
            "--producers=5",
            "--duration=2.5",
            "--mix=debit=1,refund=1",
            "--skew=zipf:1.1",
            "--id-order=sequential",
            "--rate=500000",
            "--limits-fraction=0.1",
            "--history-fraction=0.25",
            "--json=out.json",
            "--seed=9",
        ])
        .unwrap()
        .resolve(2)
        .unwrap();
        assert_eq!(config.accounts, 1000);
        assert_eq!((config.shards, config.producers), (3, 5));
        assert_eq!(config.duration_s, 2.5);
        assert_eq!(config.skew, Skew::Zipf(1.1));
        assert_eq!(config.id_order, IdOrder::Sequential);
        assert_eq!(config.rate, Some(500_000.0));
        assert_eq!(config.limits_fraction, 0.1);
        assert_eq!(config.history_fraction, 0.25);
        assert_eq!(config.seed, 9);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for flags in [
            &["--accounts=0"][..],
            &["--accounts=-5"],
            &["--shards=0"],
            &["--shards=100000"],
            &["--producers=0"],
            &["--duration=0"],
            &["--duration=-1"],
            &["--duration=abc"],
            &["--mix=debit=1,bogus=1"],
            &["--skew=zipf:0"],
            &["--id-order=shuffled"],
            &["--rate=0"],
            &["--limits-fraction=1.5"],
            &["--history-fraction=-0.1"],
            &["--durability=fast"],
            &["--in-flight=0"],
            &["--no-such-flag"],
        ] {
            let error = parse(flags).expect_err(&format!("{flags:?} must fail"));
            assert_eq!(error.exit_code(), 2, "{flags:?}");
        }
    }

    #[test]
    fn durability_modes_and_data_dir() {
        for (flag, mode) in [("sync", Durability::Sync), ("batched", Durability::Batched)] {
            let config = parse(&["--durability", flag]).unwrap().resolve(2).unwrap();
            assert_eq!(config.durability, mode);
            assert_eq!(
                config.data_dir, None,
                "a temporary directory is chosen at run time"
            );
        }
        let config = parse(&["--data-dir=/tmp/x"]).unwrap().resolve(2).unwrap();
        assert_eq!(config.data_dir, Some(PathBuf::from("/tmp/x")));
        let error = parse(&["--durability=none", "--data-dir=/tmp/x"])
            .unwrap()
            .resolve(2)
            .unwrap_err();
        assert!(error.contains("--data-dir needs --durability"), "{error}");
        assert!(parse(&["--durability=none"]).unwrap().resolve(2).is_ok());
    }

    #[test]
    fn rate_below_one_per_producer_is_refused() {
        let error = parse(&["--rate=3", "--producers=4"]).unwrap().resolve(2);
        assert!(error.is_err());
        assert!(parse(&["--rate=4", "--producers=4"])
            .unwrap()
            .resolve(2)
            .is_ok());
    }

    #[test]
    fn async_tasks_are_closed_loop_and_at_least_one_per_producer() {
        let config = parse(&["--async-tasks=1000", "--producers=2"])
            .unwrap()
            .resolve(2)
            .unwrap();
        assert_eq!(config.async_tasks, 1000);
        assert!(parse(&["--async-tasks=1000", "--rate=5000"])
            .unwrap()
            .resolve(2)
            .is_err());
        assert!(parse(&["--async-tasks=1", "--producers=2"])
            .unwrap()
            .resolve(2)
            .is_err());
        assert_eq!(parse(&[]).unwrap().resolve(2).unwrap().async_tasks, 0);
    }
}
