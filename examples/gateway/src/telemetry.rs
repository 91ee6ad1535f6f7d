//! Metrics (the `metrics` facade, rendered by `metrics-exporter-prometheus`
//! on `GET /metrics`) and logs (`tracing`).
//!
//! Request metrics are recorded where a request is answered; the engine's
//! per-shard figures are read from `Engine::stats()` when `/metrics` is
//! scraped, so they cost the engine nothing between scrapes.

use std::time::Duration;

use debitcore::Engine;
use metrics::{counter, gauge, histogram, Unit};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

/// Requests answered, by `op` and `result` (an engine code or a gateway
/// error code).
pub const REQUESTS: &str = "gateway_requests_total";
/// Requests answered with `Idempotent-Replayed: true`, by `op`.
pub const REPLAYS: &str = "gateway_replays_total";
/// Time from the handler's start to its response, by `op`.
pub const LATENCY: &str = "gateway_request_duration_seconds";

/// Latency buckets, seconds: 25 µs to 1 s, about three a decade.
const LATENCY_BUCKETS_SECONDS: [f64; 15] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0,
];

/// Installs the process-wide recorder; the handle renders `/metrics`.
pub fn install_metrics() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS_SECONDS)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    metrics::describe_counter!(REQUESTS, "HTTP requests answered, by op and result");
    metrics::describe_counter!(
        REPLAYS,
        "answers to retries (Idempotent-Replayed: true), by op"
    );
    metrics::describe_histogram!(
        LATENCY,
        Unit::Seconds,
        "time to answer a request in the gateway, by op"
    );
    for (name, what) in SHARD_GAUGES {
        metrics::describe_gauge!(name, what);
    }
    for (name, what) in SHARD_COUNTERS {
        metrics::describe_counter!(name, what);
    }
}

/// Counts and times one answered request.
pub fn record_request(op: &'static str, result: &'static str, replayed: bool, elapsed: Duration) {
    counter!(REQUESTS, "op" => op, "result" => result).increment(1);
    if replayed {
        counter!(REPLAYS, "op" => op).increment(1);
    }
    histogram!(LATENCY, "op" => op).record(elapsed.as_secs_f64());
}

const SHARD_GAUGES: [(&str, &str); 6] = [
    ("debitcore_shard_accounts", "accounts on the shard"),
    (
        "debitcore_shard_keys",
        "idempotency keys the shard remembers",
    ),
    (
        "debitcore_shard_holds",
        "holds the shard keeps (active and recently ended)",
    ),
    (
        "debitcore_shard_timers",
        "hold expiry timers pending on the shard",
    ),
    (
        "debitcore_shard_account_bytes",
        "bytes of the shard's account array and index",
    ),
    (
        "debitcore_shard_key_bytes",
        "bytes of the shard's key table",
    ),
];

const SHARD_COUNTERS: [(&str, &str); 2] = [
    (
        "debitcore_shard_log_bytes_total",
        "bytes the shard wrote to its log since the engine started",
    ),
    (
        "debitcore_shard_log_syncs_total",
        "log flushes (fdatasync) of the shard since the engine started",
    ),
];

/// Copies every shard's stats (as of its worker's last round) into the
/// per-shard gauges and counters.
pub fn record_engine_stats(engine: &Engine) {
    for (index, stats) in engine.stats().into_iter().enumerate() {
        let shard = index.to_string();
        let gauges = [
            stats.accounts,
            stats.keys,
            stats.holds,
            stats.timers,
            stats.account_bytes,
            stats.key_bytes,
        ];
        for ((name, _), value) in SHARD_GAUGES.iter().zip(gauges) {
            gauge!(*name, "shard" => shard.clone()).set(value as f64);
        }
        let counters = [stats.log_bytes, stats.log_syncs];
        for ((name, _), value) in SHARD_COUNTERS.iter().zip(counters) {
            counter!(*name, "shard" => shard.clone()).absolute(value);
        }
    }
}

/// Logs to stderr, one line per event. `filter` is `RUST_LOG`'s form
/// (`info`, `gateway=debug`, ...); the default is `info`: start and stop.
/// At `debug` every request is a line.
pub fn init_logs(filter: Option<&str>) -> Result<(), String> {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let targets: Targets = filter
        .unwrap_or("info")
        .parse()
        .map_err(|e| format!("bad log filter {filter:?}: {e}"))?;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .with(targets)
        .try_init()
        .map_err(|e| e.to_string())
}
