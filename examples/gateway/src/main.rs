//! `gateway`: debitcore over HTTP.
//!
//! ```sh
//! cargo run --release -p gateway -- --listen 127.0.0.1:8080 [--data-dir DIR] [--shards N]
//! ```
//!
//! In memory by default; durable with `--data-dir`. Prints
//! `listening on http://ADDR` on stdout once it takes requests (so
//! `--listen 127.0.0.1:0` works for tests and scripts). SIGTERM or Ctrl-C:
//! stop accepting, answer what is in flight, shut the engine down (which
//! closes its log), exit 0. Bad arguments exit 2; an engine or address that
//! cannot be opened exits 1.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use debitcore::limits::{DEDUP_WINDOW_MS_DEFAULT, SHARD_COUNT_MAX};
use debitcore::{ClockMode, Engine, EngineConfig};
use gateway::{AppState, Backend};

/// `--durability batched`: the longest an outcome waits for company (as
/// `debitcore run`).
const BATCHED_DELAY_US: u64 = 1_000;

#[derive(Parser)]
#[command(name = "gateway", version, about = "debitcore over HTTP (JSON)")]
struct Cli {
    /// Address to listen on; port 0 takes a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Keep state in this directory (write-ahead log and snapshots);
    /// without it the engine runs in memory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Shards (engine worker threads); default: the number of cores. A data
    /// directory keeps the count it was made with.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=SHARD_COUNT_MAX as i64))]
    shards: Option<u16>,
    /// With --data-dir: when an outcome may be answered relative to the
    /// log flush (sync: after it).
    #[arg(long, value_enum)]
    durability: Option<Durability>,
    /// Engine time: the wall clock, or a manual clock that only
    /// `POST /clock/advance` moves.
    #[arg(long, value_enum, default_value_t = Clock::Wall)]
    clock: Clock,
    /// Remember keys at least this long (ms of engine time).
    #[arg(long, default_value_t = DEDUP_WINDOW_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..))]
    dedup_window_ms: u64,
    /// HTTP worker threads (tokio); default: the number of cores.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    http_threads: Option<u16>,
    /// `none`: answer every well-formed request `ok` without an engine, to
    /// measure what HTTP alone costs. Not for payments.
    #[arg(long, value_enum, default_value_t = EngineMode::Debitcore)]
    engine: EngineMode,
    /// Log filter (RUST_LOG's form: `info`, `debug`, `gateway=debug`);
    /// default: RUST_LOG, else `info`.
    #[arg(long)]
    log: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Durability {
    Sync,
    Batched,
    None,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Clock {
    Wall,
    Manual,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EngineMode {
    Debitcore,
    None,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    let filter = cli.log.clone().or_else(|| std::env::var("RUST_LOG").ok());
    if let Err(e) = gateway::telemetry::init_logs(filter.as_deref()) {
        eprintln!("gateway: {e}");
        return ExitCode::from(2);
    }
    let durability = match (cli.durability, &cli.data_dir) {
        (Some(Durability::Sync) | None, Some(_)) => debitcore::Durability::Sync,
        (Some(Durability::Batched), Some(_)) => debitcore::Durability::Batched {
            max_delay_us: BATCHED_DELAY_US,
        },
        (Some(Durability::None) | None, _) => debitcore::Durability::None,
        (Some(_), None) => {
            eprintln!("gateway: --durability sync|batched needs --data-dir DIR");
            return ExitCode::from(2);
        }
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.http_threads {
        runtime.worker_threads(usize::from(threads));
    }
    let runtime = match runtime.thread_name("gateway-http").enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("gateway: cannot start the HTTP runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let engine = match cli.engine {
        EngineMode::None => None,
        EngineMode::Debitcore => match open_engine(&cli, durability) {
            Ok(engine) => Some(Arc::new(engine)),
            Err(e) => {
                tracing::error!("cannot open the engine: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let metrics = match gateway::telemetry::install_metrics() {
        Ok(handle) => handle,
        Err(e) => {
            tracing::error!("cannot install the metrics recorder: {e}");
            return ExitCode::from(1);
        }
    };
    let backend = match &engine {
        Some(engine) => Backend::Engine(Arc::clone(engine)),
        None => Backend::Bypass,
    };
    let state = AppState::new(backend, Some(metrics));
    let served = runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        let listener = tokio::net::TcpListener::bind(cli.listen).await?;
        let address = listener.local_addr()?;
        tracing::info!(
            %address,
            engine = if engine.is_some() { "debitcore" } else { "none (HTTP only)" },
            data_dir = ?cli.data_dir,
            "listening"
        );
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{address}")?;
        stdout.flush()?;
        drop(stdout);
        gateway::serve(listener, state, shutdown).await
    });
    // The runtime's tasks are done (or past the drain timeout): drop them,
    // so that this is the engine's last reference.
    drop(runtime);
    if let Some(engine) = engine {
        match Arc::into_inner(engine) {
            Some(engine) => {
                engine.shutdown();
                tracing::info!("engine stopped: every accepted request answered, log closed");
            }
            None => tracing::warn!("engine still referenced at exit"),
        }
    }
    match served {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("cannot serve on {}: {e}", cli.listen);
            ExitCode::from(1)
        }
    }
}

fn open_engine(cli: &Cli, durability: debitcore::Durability) -> Result<Engine, String> {
    let config = EngineConfig {
        shards: cli.shards.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            usize::from,
        ),
        clock: match cli.clock {
            Clock::Wall => ClockMode::Wall,
            Clock::Manual => ClockMode::Manual,
        },
        dedup_window_ms: cli.dedup_window_ms,
        data_dir: cli.data_dir.clone(),
        durability,
        ..EngineConfig::default()
    };
    let engine = Engine::open(config).map_err(|e| e.to_string())?;
    for (shard, report) in engine.recovery_report().iter().enumerate() {
        tracing::info!(
            shard,
            records_replayed = report.records_replayed,
            snapshot_lsn = report.snapshot_lsn,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "recovered"
        );
        for note in &report.notes {
            tracing::warn!(shard, "{note}");
        }
    }
    if let Some(asked) = cli.shards.map(usize::from) {
        let has = engine.shard_count();
        if asked != has {
            tracing::warn!(
                "the data directory has {has} shards (fixed when it was made); \
                 --shards {asked} is ignored"
            );
        }
    }
    Ok(engine)
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT). The handlers are installed
/// here, before the address is printed, so a signal sent as soon as a
/// script sees the address is a graceful shutdown, not the default death.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT"),
            _ = terminate.recv() => tracing::info!("SIGTERM"),
        }
    })
}
