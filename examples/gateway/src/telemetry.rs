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

const SHARD_GAUGES: [(&str, &str); 7] = [
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
    (
        "debitcore_shard_queued_batches",
        "batches waiting in the shard's queue (a submit_async request is one batch)",
    ),
];

const SHARD_COUNTERS: [(&str, &str); 3] = [
    (
        "debitcore_shard_requests_total",
        "requests the shard's worker has applied",
    ),
    (
        "debitcore_shard_log_bytes_total",
        "bytes the shard wrote to its log since the engine started",
    ),
    (
        "debitcore_shard_log_syncs_total",
        "log flushes (fdatasync) of the shard since the engine started",
    ),
];

/// Copies every shard's stats into the per-shard gauges and counters, and
/// returns its two histograms (worker rounds, log syncs) rendered in the
/// text format, to follow what the recorder renders: the engine keeps them
/// as cumulative bucket counts, which the `metrics` facade (it records
/// samples) cannot take.
pub fn record_engine_stats(engine: &Engine) -> String {
    let stats = engine.stats();
    let mut rounds = Family::new(
        "debitcore_shard_round_seconds",
        "time a shard worker's round took, from taking its batches to handing on their outcomes",
    );
    let mut syncs = Family::new(
        "debitcore_shard_log_sync_seconds",
        "time a shard's log flush (the fdatasync calls of one group commit) took",
    );
    for (index, stats) in stats.into_iter().enumerate() {
        let shard = index.to_string();
        let gauges = [
            stats.accounts,
            stats.keys,
            stats.holds,
            stats.timers,
            stats.account_bytes,
            stats.key_bytes,
            stats.queued_batches,
        ];
        for ((name, _), value) in SHARD_GAUGES.iter().zip(gauges) {
            gauge!(*name, "shard" => shard.clone()).set(value as f64);
        }
        let counters = [stats.requests, stats.log_bytes, stats.log_syncs];
        for ((name, _), value) in SHARD_COUNTERS.iter().zip(counters) {
            counter!(*name, "shard" => shard.clone()).absolute(value);
        }
        rounds.add(&shard, &stats.round_ns);
        syncs.add(&shard, &stats.sync_ns);
    }
    let mut text = rounds.text;
    text.push_str(&syncs.text);
    text
}

/// The bucket bounds the engine's histograms are exported with, in
/// nanoseconds: 1 µs to 1 s, three a decade.
const ENGINE_BUCKETS_NS: [u64; 19] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// One histogram family in the Prometheus text format, a series per shard.
struct Family {
    name: &'static str,
    text: String,
}

impl Family {
    fn new(name: &'static str, help: &str) -> Family {
        Family {
            name,
            text: format!("# HELP {name} {help}\n# TYPE {name} histogram\n"),
        }
    }

    /// The shard's series. The engine's buckets are finer (12.5% wide) and
    /// do not line up with these bounds: a bound counts the engine buckets
    /// that end at or below it, so a count may lag by the one bucket that
    /// straddles it (a duration up to 12.5% under the bound).
    fn add(&mut self, shard: &str, durations: &debitcore::Durations) {
        use std::fmt::Write;
        let name = self.name;
        let mut fine = durations.cumulative().peekable();
        let mut below = 0;
        for bound_ns in ENGINE_BUCKETS_NS {
            while let Some(&(upper_ns, seen)) = fine.peek() {
                if upper_ns > bound_ns {
                    break;
                }
                below = seen;
                fine.next();
            }
            let le = bound_ns as f64 / 1e9;
            let _ = writeln!(
                self.text,
                "{name}_bucket{{shard=\"{shard}\",le=\"{le}\"}} {below}"
            );
        }
        let count = durations.count();
        let sum = durations.sum_ns() as f64 / 1e9;
        let _ = writeln!(
            self.text,
            "{name}_bucket{{shard=\"{shard}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(self.text, "{name}_sum{{shard=\"{shard}\"}} {sum}");
        let _ = writeln!(self.text, "{name}_count{{shard=\"{shard}\"}} {count}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_histograms_render_cumulative_buckets() {
        let mut durations = debitcore::Durations::default();
        for ns in [800, 3_000, 3_000, 40_000_000, 5_000_000_000] {
            durations.record(ns);
        }
        let mut family = Family::new("x_seconds", "help");
        family.add("0", &durations);
        let line = |le: &str| {
            let prefix = format!("x_seconds_bucket{{shard=\"0\",le=\"{le}\"}} ");
            let found = family.text.lines().find_map(|l| l.strip_prefix(&prefix));
            found
                .unwrap_or_else(|| panic!("no bucket {le}:\n{}", family.text))
                .to_string()
        };
        assert_eq!(line("0.000001"), "1");
        assert_eq!(line("0.0000025"), "1");
        assert_eq!(line("0.000005"), "3");
        assert_eq!(line("0.025"), "3");
        assert_eq!(line("0.05"), "4");
        assert_eq!(line("1"), "4");
        assert_eq!(line("+Inf"), "5");
        assert!(family.text.contains("x_seconds_count{shard=\"0\"} 5\n"));
        assert!(family.text.contains("# TYPE x_seconds histogram\n"));
    }
}
