//! The `debitcore` command.
//!
//! `debitcore run` reads requests as JSON Lines on standard input and writes
//! one outcome line per request on standard output (`docs/behaviour.md`,
//! "The runner"). Bad arguments print usage and exit 2.

use clap::{Parser, Subcommand, ValueEnum};
use debitcore::limits::{DEDUP_WINDOW_MS_DEFAULT, SHARD_COUNT_MAX};
use debitcore::runner::{self, RunOptions};
use std::path::PathBuf;
use std::process::ExitCode;

/// `--durability batched`: the longest an outcome waits for company.
const BATCHED_DELAY_US: u64 = 1_000;

#[derive(Parser)]
#[command(
    name = "debitcore",
    version,
    about = "An in-memory debit and pre-authorization engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reads requests (JSON Lines) on stdin, writes outcomes on stdout.
    Run {
        /// Shards (worker threads); default: the number of cores.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=SHARD_COUNT_MAX as i64))]
        shards: Option<u16>,
        /// Engine time: the wall clock, or a manual clock moved by
        /// `advance_clock` requests.
        #[arg(long, value_enum, default_value_t = Clock::Wall)]
        clock: Clock,
        /// Keep state in this directory (write-ahead log and snapshots).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// When an outcome may be handed back relative to the log flush.
        #[arg(long, value_enum)]
        durability: Option<Durability>,
        /// Remember keys at least this long (ms of engine time).
        #[arg(long, default_value_t = DEDUP_WINDOW_MS_DEFAULT,
              value_parser = clap::value_parser!(u64).range(1..))]
        dedup_window_ms: u64,
    },
    /// Verifies a data directory (read-only) and prints a summary; exits 1
    /// if anything is damaged (a torn tail is not damage).
    Inspect {
        /// The data directory.
        dir: PathBuf,
        /// Print every record as JSON Lines (the summary goes to stderr).
        #[arg(long)]
        dump: bool,
        /// Print only the records of this account (its audit trail).
        #[arg(long)]
        account: Option<u64>,
        /// Also rebuild each shard and check every recorded result.
        #[arg(long)]
        replay: bool,
        /// The dedup window the engine ran with (for --replay).
        #[arg(long, default_value_t = DEDUP_WINDOW_MS_DEFAULT,
              value_parser = clap::value_parser!(u64).range(1..))]
        dedup_window_ms: u64,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Clock {
    Wall,
    Manual,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Durability {
    Sync,
    Batched,
    None,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version: not errors.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // Every argument error names the usage, not only some of clap's.
            let _ = e.print();
            let usage = <Cli as clap::CommandFactory>::command().render_usage();
            eprintln!("\n{usage}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Run {
            shards,
            clock,
            data_dir,
            durability,
            dedup_window_ms,
        } => {
            let durability = match (durability, &data_dir) {
                (Some(Durability::Sync) | None, Some(_)) => debitcore::Durability::Sync,
                (Some(Durability::Batched), Some(_)) => debitcore::Durability::Batched {
                    max_delay_us: BATCHED_DELAY_US,
                },
                (Some(Durability::None) | None, _) => debitcore::Durability::None,
                (Some(_), None) => {
                    eprintln!("debitcore run: --durability sync|batched needs --data-dir DIR");
                    return ExitCode::from(2);
                }
            };
            let options = RunOptions {
                shards: shards.map_or_else(
                    || std::thread::available_parallelism().map_or(1, |n| n.get()),
                    usize::from,
                ),
                manual_clock: clock == Clock::Manual,
                dedup_window_ms,
            };
            let config = debitcore::EngineConfig {
                data_dir,
                durability,
                ..options.engine_config()
            };
            let engine = match debitcore::Engine::open(config) {
                Ok(engine) => engine,
                Err(e) => {
                    eprintln!("debitcore run: {e}");
                    return ExitCode::from(1);
                }
            };
            for (shard, report) in engine.recovery_report().iter().enumerate() {
                for note in &report.notes {
                    eprintln!("debitcore run: shard {shard}: {note}");
                }
            }
            // A data directory keeps the shard count it was made with
            // (accounts are placed by it): say so rather than ignore a
            // `--shards` that asks for another.
            if let Some(asked) = shards.map(usize::from) {
                let has = engine.shard_count();
                if asked != has {
                    eprintln!(
                        "debitcore run: the data directory has {has} shards (fixed when it \
                         was made); --shards {asked} is ignored"
                    );
                }
            }
            let stdout = std::io::stdout().lock();
            match runner::run_on(&engine, std::io::stdin(), stdout, options.manual_clock) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("debitcore run: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Inspect {
            dir,
            dump,
            account,
            replay,
            dedup_window_ms,
        } => {
            let options = debitcore::inspect::InspectOptions {
                dump,
                account,
                replay,
                dedup_window_ms,
            };
            ExitCode::from(debitcore::inspect::cli(&dir, &options))
        }
    }
}
