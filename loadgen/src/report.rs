//! Counting, the once-a-second report, the final summary and the JSON file.
//!
//! Producers never share a cache line or a lock on their hot path: each
//! counts into plain local variables and, every [`PUBLISH_INTERVAL_NS`],
//! stores its running totals into its own cache-padded [`ProducerSlot`] and
//! merges its local latency histogram into the slot's mutex-guarded one.
//! The reporter reads the slots once a second. A per-second line therefore
//! attributes work to the right second within one publish interval.

use crate::args::Config;
use crate::workload::OpKind;
use debitcore::{Code, Durations};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// How often a producer hands its counts and latencies to the reporter.
pub const PUBLISH_INTERVAL_NS: u64 = 50_000_000;

/// Longest latency the histograms track (one minute, in ns); longer ones
/// are recorded as this value.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// Number of outcome codes.
pub const CODE_COUNT: usize = Code::ALL.len();

/// A latency histogram in nanoseconds with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static histogram bounds are valid")
}

/// Running totals of one producer (or, summed, of the whole run).
#[derive(Clone, Debug, PartialEq)]
pub struct Counts {
    pub sent: [u64; OpKind::COUNT],
    /// Outcomes received, by the op that was sent and the code it got.
    pub outcomes: [[u64; CODE_COUNT]; OpKind::COUNT],
    /// Outcomes marked `replayed`; every id is fresh, so this must stay 0.
    pub replayed: u64,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            sent: [0; OpKind::COUNT],
            outcomes: [[0; CODE_COUNT]; OpKind::COUNT],
            replayed: 0,
        }
    }
}

impl Counts {
    pub fn sent_total(&self) -> u64 {
        self.sent.iter().sum()
    }

    pub fn received_of(&self, kind: OpKind) -> u64 {
        self.outcomes[kind.index()].iter().sum()
    }

    pub fn received_total(&self) -> u64 {
        self.outcomes.iter().flatten().sum()
    }

    /// Outcomes per code over all ops.
    pub fn by_code(&self) -> [u64; CODE_COUNT] {
        let mut total = [0; CODE_COUNT];
        for per_op in &self.outcomes {
            for (sum, n) in total.iter_mut().zip(per_op) {
                *sum += n;
            }
        }
        total
    }

    pub fn add(&mut self, other: &Counts) {
        for (a, b) in self.sent.iter_mut().zip(&other.sent) {
            *a += b;
        }
        for (row_a, row_b) in self.outcomes.iter_mut().zip(&other.outcomes) {
            for (a, b) in row_a.iter_mut().zip(row_b) {
                *a += b;
            }
        }
        self.replayed += other.replayed;
    }

    /// `self - earlier`, for counters that only grow.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut delta = self.clone();
        for (a, b) in delta.sent.iter_mut().zip(&earlier.sent) {
            *a -= b;
        }
        for (row_a, row_b) in delta.outcomes.iter_mut().zip(&earlier.outcomes) {
            for (a, b) in row_a.iter_mut().zip(row_b) {
                *a -= b;
            }
        }
        delta.replayed -= earlier.replayed;
        delta
    }
}

/// What one producer shares with the reporter. Aligned to 128 bytes (two
/// cache lines, as adjacent-line prefetch pairs them) so that producers'
/// stores never invalidate each other's lines.
#[repr(align(128))]
pub struct ProducerSlot {
    sent: [AtomicU64; OpKind::COUNT],
    outcomes: [[AtomicU64; CODE_COUNT]; OpKind::COUNT],
    replayed: AtomicU64,
    histogram: Mutex<Histogram<u64>>,
}

impl Default for ProducerSlot {
    fn default() -> Self {
        ProducerSlot {
            sent: std::array::from_fn(|_| AtomicU64::new(0)),
            outcomes: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            replayed: AtomicU64::new(0),
            histogram: Mutex::new(new_histogram()),
        }
    }
}

impl ProducerSlot {
    /// Stores the producer's running totals and moves its latencies over.
    /// Only the owning producer writes, so plain stores suffice.
    pub fn publish(&self, counts: &Counts, latencies: &mut Histogram<u64>) {
        for (slot, &n) in self.sent.iter().zip(&counts.sent) {
            slot.store(n, Ordering::Relaxed);
        }
        for (row, counts_row) in self.outcomes.iter().zip(&counts.outcomes) {
            for (slot, &n) in row.iter().zip(counts_row) {
                slot.store(n, Ordering::Relaxed);
            }
        }
        self.replayed.store(counts.replayed, Ordering::Relaxed);
        if !latencies.is_empty() {
            let mut shared = self
                .histogram
                .lock()
                .expect("reporter never panics holding it");
            shared
                .add(&*latencies)
                .expect("histograms share their bounds");
            latencies.reset();
        }
    }

    pub fn read(&self) -> Counts {
        let mut counts = Counts::default();
        for (n, slot) in counts.sent.iter_mut().zip(&self.sent) {
            *n = slot.load(Ordering::Relaxed);
        }
        for (counts_row, row) in counts.outcomes.iter_mut().zip(&self.outcomes) {
            for (n, slot) in counts_row.iter_mut().zip(row) {
                *n = slot.load(Ordering::Relaxed);
            }
        }
        counts.replayed = self.replayed.load(Ordering::Relaxed);
        counts
    }

    /// Moves the published latencies into `into`.
    pub fn take_histogram(&self, into: &mut Histogram<u64>) {
        let mut shared = self
            .histogram
            .lock()
            .expect("producers never panic holding it");
        into.add(&*shared).expect("histograms share their bounds");
        shared.reset();
    }
}

/// One line of the per-second report.
#[derive(Clone, Debug)]
pub struct Interval {
    /// Seconds since the start of the measured part, at the end of the interval.
    pub t_s: f64,
    pub length_s: f64,
    pub counts: Counts,
    pub latency: Latency,
    /// Bytes of write-ahead log written during the interval.
    pub log_bytes: u64,
    /// The engine's own timings during the interval.
    pub engine: EngineTimings,
}

/// What the engine timed itself, over all shards, between two readings of
/// `Engine::stats`: its worker rounds and its log's fdatasyncs.
#[derive(Clone, Debug, Default)]
pub struct EngineTimings {
    pub rounds: Durations,
    pub syncs: Durations,
}

impl EngineTimings {
    /// The running totals now.
    pub fn read(engine: &debitcore::Engine) -> EngineTimings {
        let mut t = EngineTimings::default();
        for s in engine.stats() {
            t.rounds.add(&s.round_ns);
            t.syncs.add(&s.sync_ns);
        }
        t
    }

    pub fn since(&self, earlier: &EngineTimings) -> EngineTimings {
        EngineTimings {
            rounds: self.rounds.since(&earlier.rounds),
            syncs: self.syncs.since(&earlier.syncs),
        }
    }

    fn to_json(&self) -> Value {
        let s = &self.syncs;
        json!({
            "rounds": self.rounds.count(),
            "round_max_ns": self.rounds.max_ns(),
            "syncs": s.count(),
            "sync_p50_ns": s.quantile_ns(0.5),
            "sync_p99_ns": s.quantile_ns(0.99),
            "sync_p999_ns": s.quantile_ns(0.999),
            "sync_max_ns": s.max_ns(),
        })
    }
}

/// Latency percentiles in ns; `None` when nothing was recorded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        Latency {
            count: histogram.len(),
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            p9999: histogram.value_at_quantile(0.9999),
            max: histogram.max(),
            mean: histogram.mean(),
        }
    }

    fn to_json(self) -> Value {
        if self.count == 0 {
            return Value::Null;
        }
        let us = |ns: u64| ns as f64 / 1e3;
        json!({
            "samples": self.count,
            "p50_us": us(self.p50),
            "p90_us": us(self.p90),
            "p99_us": us(self.p99),
            "p99_9_us": us(self.p999),
            "p99_99_us": us(self.p9999),
            "max_us": us(self.max),
            "mean_us": self.mean / 1e3,
        })
    }
}

/// Bytes of log the engine's shards have written (as of their last
/// published statistics).
pub fn log_bytes(engine: &debitcore::Engine) -> u64 {
    engine.stats().iter().map(|s| s.log_bytes).sum()
}

/// Collects the slots once a second and prints the per-second lines.
pub struct Reporter<'a> {
    slots: &'a [ProducerSlot],
    engine: &'a debitcore::Engine,
    last_log_bytes: u64,
    /// The engine's timings at the start of the measured part, and at the
    /// last tick.
    pub first_timings: EngineTimings,
    last_timings: EngineTimings,
    start: Instant,
    last: Counts,
    last_t_s: f64,
    interval_histogram: Histogram<u64>,
    pub total_histogram: Histogram<u64>,
    pub intervals: Vec<Interval>,
}

impl<'a> Reporter<'a> {
    pub fn new(
        slots: &'a [ProducerSlot],
        engine: &'a debitcore::Engine,
        start: Instant,
    ) -> Reporter<'a> {
        Reporter {
            slots,
            engine,
            last_log_bytes: log_bytes(engine),
            first_timings: EngineTimings::read(engine),
            last_timings: EngineTimings::read(engine),
            start,
            last: Counts::default(),
            last_t_s: 0.0,
            interval_histogram: new_histogram(),
            total_histogram: new_histogram(),
            intervals: Vec::new(),
        }
    }

    pub fn print_columns() {
        println!(
            "{:>6}  {:>10}  {:>10}  {:>11}  {:>9}  {:>9}  {:>8}  {:>8}  {:>8}  {:>8}  {:>7}  {:>8}  {:>26}  rejected by reason",
            "t(s)", "debit/s", "req/s", "ok", "held", "rejected", "p50", "p99", "p99.9", "max", "logMB/s",
            "round", "sync p50/p99/p99.9"
        );
    }

    /// Sums what producers published so far.
    pub fn totals(&self) -> Counts {
        let mut total = Counts::default();
        for slot in self.slots {
            total.add(&slot.read());
        }
        total
    }

    /// Closes the interval ending now: records it and prints its line.
    pub fn tick(&mut self) -> &Interval {
        let t_s = self.start.elapsed().as_secs_f64();
        let totals = self.totals();
        self.interval_histogram.reset();
        for slot in self.slots {
            slot.take_histogram(&mut self.interval_histogram);
        }
        self.total_histogram
            .add(&self.interval_histogram)
            .expect("histograms share their bounds");
        let log_now = log_bytes(self.engine);
        let timings = EngineTimings::read(self.engine);
        let interval = Interval {
            t_s,
            length_s: t_s - self.last_t_s,
            counts: totals.since(&self.last),
            latency: Latency::of(&self.interval_histogram),
            log_bytes: log_now.saturating_sub(self.last_log_bytes),
            engine: timings.since(&self.last_timings),
        };
        self.last_timings = timings;
        self.last_log_bytes = log_now;
        self.last = totals;
        self.last_t_s = t_s;
        print_interval(&interval);
        self.intervals.push(interval);
        self.intervals.last().expect("just pushed")
    }

    /// Takes in whatever producers published after the last tick (the
    /// drain), for the whole-run totals and percentiles.
    pub fn finish(&mut self) -> Counts {
        let mut rest = new_histogram();
        for slot in self.slots {
            slot.take_histogram(&mut rest);
        }
        self.total_histogram
            .add(&rest)
            .expect("histograms share their bounds");
        self.totals()
    }
}

fn print_interval(interval: &Interval) {
    let c = &interval.counts;
    let per_s = |n: u64| n as f64 / interval.length_s.max(1e-9);
    let codes = c.by_code();
    let ok = codes[Code::Ok as usize];
    let held = codes[Code::HeldForReview as usize];
    let received = c.received_total();
    let lat = interval.latency;
    let show = |ns: u64| {
        if lat.count == 0 {
            "-".to_string()
        } else {
            duration_text(ns)
        }
    };
    let e = &interval.engine;
    let round = if e.rounds.count() == 0 {
        "-".to_string()
    } else {
        duration_text(e.rounds.max_ns())
    };
    println!(
        "{:>6.1}  {:>10}  {:>10}  {:>11}  {:>9}  {:>9}  {:>8}  {:>8}  {:>8}  {:>8}  {:>7}  {:>8}  {:>26}  {}",
        interval.t_s,
        thousands(per_s(c.received_of(OpKind::Debit)) as u64),
        thousands(per_s(received) as u64),
        thousands(ok),
        thousands(held),
        thousands(received - ok - held),
        show(lat.p50),
        show(lat.p99),
        show(lat.p999),
        show(lat.max),
        format!(
            "{:.1}",
            interval.log_bytes as f64 / 1e6 / interval.length_s.max(1e-9)
        ),
        round,
        sync_text(&e.syncs),
        rejections_text(&codes),
    );
}

/// `1.20ms/3.40ms/5.60ms`, or `-` when nothing was synced.
fn sync_text(syncs: &Durations) -> String {
    if syncs.count() == 0 {
        return "-".to_string();
    }
    format!(
        "{}/{}/{}",
        duration_text(syncs.quantile_ns(0.5)),
        duration_text(syncs.quantile_ns(0.99)),
        duration_text(syncs.quantile_ns(0.999)),
    )
}

/// `insufficient_funds 12, auth_not_found 3` for the nonzero rejection codes.
fn rejections_text(codes: &[u64; CODE_COUNT]) -> String {
    let parts: Vec<String> = Code::ALL
        .into_iter()
        .filter(|code| !code.is_effective() && codes[*code as usize] > 0)
        .map(|code| format!("{} {}", code.name(), thousands(codes[code as usize])))
        .collect();
    parts.join(", ")
}

/// `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A latency for people: `850ns`, `12.3us`, `4.56ms`, `1.20s`.
pub fn duration_text(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

/// The machine the numbers come from.
#[derive(Clone, Debug)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub load_average: Option<String>,
}

impl Machine {
    pub fn detect() -> Machine {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        Machine {
            cores,
            cpu_model,
            load_average: load_average(),
        }
    }
}

/// A `/proc/self/status` field in MB (`VmHWM` is peak resident memory).
pub fn proc_status_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The 1, 5 and 15 minute load averages: the cores are shared, so a run
/// says how busy the machine was when it started.
pub fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    (fields.len() == 3).then(|| fields.join(" "))
}

/// CPU seconds (user + system) this process has used, all threads.
pub fn process_cpu_s() -> Option<f64> {
    // Linux reports them in clock ticks of USER_HZ, which is 100 on every
    // architecture Rust targets (it is fixed in the kernel ABI).
    const TICKS_PER_S: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may contain spaces: fields count from after ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_S)
}

/// The engine's own counts, summed over shards.
#[derive(Clone, Copy, Debug, Default)]
pub struct EngineTotals {
    pub accounts: usize,
    pub keys: usize,
    pub holds: usize,
    pub account_bytes: usize,
    pub key_bytes: usize,
    pub history_entries: usize,
    pub history_bytes: usize,
    pub log_bytes: u64,
    pub log_syncs: u64,
    /// Merchants (every shard has each), and the bytes of all shards'
    /// merchant tables.
    pub merchants: usize,
    pub merchant_bytes: usize,
    pub queued_debits: usize,
    pub queued_bytes: usize,
}

impl EngineTotals {
    pub fn of(stats: &[debitcore::shard::ShardStats]) -> EngineTotals {
        let mut t = EngineTotals::default();
        for s in stats {
            t.accounts += s.accounts;
            t.keys += s.keys;
            t.holds += s.holds;
            t.account_bytes += s.account_bytes;
            t.key_bytes += s.key_bytes;
            t.history_entries += s.history_entries;
            t.history_bytes += s.history_bytes;
            t.log_bytes += s.log_bytes;
            t.log_syncs += s.log_syncs;
            t.merchants = t.merchants.max(s.merchants);
            t.merchant_bytes += s.merchant_bytes;
            t.queued_debits += s.queued_debits;
            t.queued_bytes += s.queued_bytes;
        }
        t
    }
}

pub fn print_header(machine: &Machine, config: &Config) {
    println!("loadgen: debitcore embedded the way a payment gateway embeds it");
    println!(
        "machine   {} cores, {}, load average {}",
        machine.cores,
        machine.cpu_model,
        machine.load_average.as_deref().unwrap_or("?")
    );
    println!(
        "config    accounts {}, shards {}, producers {}, duration {} s, in-flight {}/producer, seed {}",
        thousands(config.accounts),
        config.shards,
        config.producers,
        config.duration_s,
        config.in_flight,
        config.seed,
    );
    if config.async_tasks > 0 {
        println!(
            "async     {} tokio tasks awaiting submit_async one request at a time (in-flight above does not apply)",
            thousands(config.async_tasks as u64)
        );
    }
    let rate = config
        .rate
        .map_or("closed loop (as fast as answered)".to_string(), |r| {
            format!("open loop at {} req/s", thousands(r as u64))
        });
    println!(
        "workload  mix {}, skew {}, ids {}, limits on {}% of accounts, history on {}%, {}",
        config.mix,
        config.skew,
        config.id_order.name(),
        config.limits_fraction * 100.0,
        config.history_fraction * 100.0,
        rate,
    );
    println!(
        "engine    durability {}, dedup window {} ms, clock wall, tables sized for {} keys",
        config.durability.name(),
        config.dedup_window_ms,
        if config.expect_keys == 0 {
            "0 (growing)".to_string()
        } else {
            thousands(config.expect_keys as u64)
        }
    );
}

/// What setup did, for the summary.
#[derive(Clone, Debug)]
pub struct SetupReport {
    pub accounts: u64,
    pub limited: u64,
    pub with_history: u64,
    pub requests: u64,
    pub seconds: f64,
    pub rss_mb_after: Option<f64>,
    /// (op, code, count) of every setup request that was not ok.
    pub failures: Vec<(&'static str, &'static str, u64)>,
    pub lost: u64,
}

impl SetupReport {
    pub fn print(&self) {
        println!(
            "setup     opened and funded {} accounts ({} with limits, {} with history): {} requests in {:.2} s, {} req/s; RSS {}",
            thousands(self.accounts),
            thousands(self.limited),
            thousands(self.with_history),
            thousands(self.requests),
            self.seconds,
            thousands((self.requests as f64 / self.seconds.max(1e-9)) as u64),
            self.rss_mb_after.map_or("?".to_string(), |mb| format!("{mb:.0} MB")),
        );
    }

    fn to_json(&self) -> Value {
        json!({
            "accounts": self.accounts,
            "accounts_with_limits": self.limited,
            "accounts_with_history": self.with_history,
            "requests": self.requests,
            "seconds": self.seconds,
            "requests_per_s": self.requests as f64 / self.seconds.max(1e-9),
            "rss_mb_after": self.rss_mb_after,
            "failures": self.failures.iter().map(|(op, code, n)| json!({"op": op, "code": code, "count": n})).collect::<Vec<_>>(),
            "lost_outcomes": self.lost,
        })
    }
}

/// The end of a run.
#[derive(Clone, Debug)]
pub struct Summary {
    pub measured_s: f64,
    pub totals: Counts,
    pub lost: u64,
    /// The steady window: from the end of the first interval to the end of
    /// the last one, skipping the warm-up second.
    pub steady_from_s: f64,
    pub steady_to_s: f64,
    pub steady: Counts,
    pub latency: Latency,
    pub peak_rss_mb: Option<f64>,
    pub drain_s: f64,
    pub drain_timed_out: bool,
    /// Cores' worth of CPU the process used during the measured part.
    pub cpu_cores_used: Option<f64>,
    /// Shard stats as of each worker's last report (every 64 rounds).
    pub engine: EngineTotals,
    /// Log bytes written during the measured part (setup excluded).
    pub log_bytes_measured: u64,
    /// The engine's timings over the measured part and the drain.
    pub timings: EngineTimings,
}

impl Summary {
    pub fn build(
        reporter: &Reporter,
        totals: Counts,
        drain_s: f64,
        timed_out: bool,
        cpu_s: Option<f64>,
    ) -> Summary {
        let intervals = &reporter.intervals;
        // Skip the first second when there is more than one interval.
        let skip = usize::from(intervals.len() > 1);
        let steady_from_s = if skip == 1 { intervals[0].t_s } else { 0.0 };
        let steady_to_s = intervals.last().map_or(0.0, |i| i.t_s);
        let mut steady = Counts::default();
        for interval in &intervals[skip..] {
            steady.add(&interval.counts);
        }
        Summary {
            measured_s: steady_to_s,
            lost: totals.sent_total() - totals.received_total(),
            totals,
            steady_from_s,
            steady_to_s,
            steady,
            latency: Latency::of(&reporter.total_histogram),
            peak_rss_mb: proc_status_mb("VmHWM"),
            drain_s,
            drain_timed_out: timed_out,
            cpu_cores_used: cpu_s.map(|cpu| cpu / steady_to_s.max(1e-9)),
            engine: EngineTotals::default(),
            log_bytes_measured: 0,
            timings: EngineTimings::read(reporter.engine).since(&reporter.first_timings),
        }
    }

    fn steady_rate(&self, n: u64) -> f64 {
        n as f64 / (self.steady_to_s - self.steady_from_s).max(1e-9)
    }

    pub fn print(&self, config: &Config) {
        let t = &self.totals;
        println!();
        println!("summary");
        println!(
            "  requests    sent {}, outcomes received {}, lost outcomes {}{}",
            thousands(t.sent_total()),
            thousands(t.received_total()),
            self.lost,
            if self.drain_timed_out {
                " (drain timed out!)"
            } else {
                ""
            },
        );
        println!(
            "  throughput  {} req/s, {} debit/s (mean over the steady part, {:.1}-{:.1} s)",
            thousands(self.steady_rate(self.steady.received_total()) as u64),
            thousands(self.steady_rate(self.steady.received_of(OpKind::Debit)) as u64),
            self.steady_from_s,
            self.steady_to_s,
        );
        if let Some(rate) = config.rate {
            // Open loop: did the producers keep to the schedule? Sends
            // behind it still count their latency from the intended time.
            let sent_rate = t.sent_total() as f64 / self.measured_s.max(1e-9);
            println!(
                "  schedule    target {} req/s, sent {} req/s ({:.1}% of target)",
                thousands(rate as u64),
                thousands(sent_rate as u64),
                sent_rate / rate * 100.0,
            );
        }
        let l = self.latency;
        println!(
            "  latency     p50 {}, p90 {}, p99 {}, p99.9 {}, p99.99 {}, max {}, mean {} (submit to outcome, whole run)",
            duration_text(l.p50),
            duration_text(l.p90),
            duration_text(l.p99),
            duration_text(l.p999),
            duration_text(l.p9999),
            duration_text(l.max),
            duration_text(l.mean as u64),
        );
        let codes = t.by_code();
        println!(
            "  outcomes    ok {}, held_for_review {}, rejected {}{}{}",
            thousands(codes[Code::Ok as usize]),
            thousands(codes[Code::HeldForReview as usize]),
            thousands(
                t.received_total() - codes[Code::Ok as usize] - codes[Code::HeldForReview as usize]
            ),
            if rejections_text(&codes).is_empty() {
                ""
            } else {
                ": "
            },
            rejections_text(&codes),
        );
        // Sent shares can differ from the mix: ops that find no hold or
        // debit in the producer's book fall back to authorize or debit.
        for kind in OpKind::ALL {
            if t.sent[kind.index()] == 0 {
                continue;
            }
            let share = t.sent[kind.index()] as f64 / t.sent_total().max(1) as f64;
            let per_code: Vec<String> = Code::ALL
                .into_iter()
                .filter(|code| t.outcomes[kind.index()][*code as usize] > 0)
                .map(|code| {
                    format!(
                        "{} {}",
                        code.name(),
                        thousands(t.outcomes[kind.index()][code as usize])
                    )
                })
                .collect();
            println!(
                "  {:<16}sent {:>12} ({:>5.1}%, mix {:>5.1}%)  {}",
                kind.name(),
                thousands(t.sent[kind.index()]),
                share * 100.0,
                config.mix.share(kind) * 100.0,
                per_code.join(", ")
            );
        }
        if t.replayed > 0 {
            println!(
                "  WARNING     {} outcomes came back replayed although every id was fresh",
                t.replayed
            );
        }
        println!(
            "  memory      peak RSS (VmHWM) {}",
            self.peak_rss_mb
                .map_or("?".to_string(), |mb| format!("{mb:.0} MB"))
        );
        let e = self.engine;
        println!(
            "  engine      {} accounts, {} keys, {} holds (active or remembered); tables {:.0} MB accounts + {:.0} MB keys (shard stats, refreshed every 64 worker rounds)",
            thousands(e.accounts as u64),
            thousands(e.keys as u64),
            thousands(e.holds as u64),
            e.account_bytes as f64 / 1048576.0,
            e.key_bytes as f64 / 1048576.0,
        );
        if e.merchants > 0 {
            println!(
                "  merchants   {} merchants: {:.0} bytes each over all shards' tables",
                thousands(e.merchants as u64),
                e.merchant_bytes as f64 / e.merchants as f64,
            );
        }
        if e.queued_debits > 0 {
            println!(
                "  queued      {} debits waiting for a batch: {:.1} bytes each beside their keys",
                thousands(e.queued_debits as u64),
                e.queued_bytes as f64 / e.queued_debits as f64,
            );
        }
        if e.history_entries > 0 {
            println!(
                "  engine      {} statement entries, {:.1} MB, {:.1} bytes an entry (rings' capacity and map included)",
                thousands(e.history_entries as u64),
                e.history_bytes as f64 / 1048576.0,
                e.history_bytes as f64 / e.history_entries as f64,
            );
        }
        let rounds = &self.timings.rounds;
        let syncs = &self.timings.syncs;
        println!(
            "  engine      worker rounds {}, longest {}{}",
            thousands(rounds.count()),
            duration_text(rounds.max_ns()),
            if syncs.count() == 0 {
                String::new()
            } else {
                format!(
                    "; fdatasync p50 {}, p99 {}, p99.9 {}, max {} over {} syncs (the engine's own timing, this run)",
                    duration_text(syncs.quantile_ns(0.5)),
                    duration_text(syncs.quantile_ns(0.99)),
                    duration_text(syncs.quantile_ns(0.999)),
                    duration_text(syncs.max_ns()),
                    thousands(syncs.count()),
                )
            },
        );
        println!(
            "  cpu         {} cores busy on average during the measured part",
            self.cpu_cores_used
                .map_or("?".to_string(), |c| format!("{c:.2}"))
        );
        println!(
            "  drain       {:.3} s after the measured part",
            self.drain_s
        );
        let e = &self.engine;
        if e.log_bytes == 0 {
            println!("  log         none (durability none)");
        } else {
            let requests = self.totals.received_total().max(1);
            println!(
                "  log         {:.1} MB during the run ({:.1} bytes per request); {:.1} MB and {} flushes with setup",
                self.log_bytes_measured as f64 / 1e6,
                self.log_bytes_measured as f64 / requests as f64,
                e.log_bytes as f64 / 1e6,
                thousands(e.log_syncs),
            );
        }
    }

    pub fn to_json(
        &self,
        machine: &Machine,
        config: &Config,
        setup: &SetupReport,
        intervals: &[Interval],
    ) -> Value {
        let per_second: Vec<Value> = intervals.iter().map(interval_json).collect();
        let t = &self.totals;
        let mut per_op = Map::new();
        for kind in OpKind::ALL {
            per_op.insert(
                kind.name().to_string(),
                json!({
                    "sent": t.sent[kind.index()],
                    "outcomes": codes_json(&t.outcomes[kind.index()]),
                }),
            );
        }
        json!({
            "machine": {
                "cores": machine.cores,
                "cpu_model": machine.cpu_model,
                "load_average_at_start": machine.load_average,
            },
            "config": {
                "accounts": config.accounts,
                "shards": config.shards,
                "producers": config.producers,
                "duration_s": config.duration_s,
                "mix": config.mix.to_string(),
                "skew": config.skew.to_string(),
                "id_order": config.id_order.name(),
                "rate": config.rate,
                "limits_fraction": config.limits_fraction,
                "history_fraction": config.history_fraction,
                "durability": config.durability.name(),
                "seed": config.seed,
                "in_flight": config.in_flight,
                "dedup_window_ms": config.dedup_window_ms,
                "expect_keys": config.expect_keys,
                "async_tasks": config.async_tasks,
            },
            "setup": setup.to_json(),
            "per_second": per_second,
            "summary": {
                "measured_s": self.measured_s,
                "sent": t.sent_total(),
                "received": t.received_total(),
                "lost_outcomes": self.lost,
                "replayed_outcomes": t.replayed,
                "drain_s": self.drain_s,
                "drain_timed_out": self.drain_timed_out,
                "steady_window_s": [self.steady_from_s, self.steady_to_s],
                "steady_requests_per_s": self.steady_rate(self.steady.received_total()),
                "steady_debits_per_s": self.steady_rate(self.steady.received_of(OpKind::Debit)),
                "outcomes": codes_json(&t.by_code()),
                "per_op": per_op,
                "latency": self.latency.to_json(),
                "peak_rss_mb": self.peak_rss_mb,
                "cpu_cores_used": self.cpu_cores_used,
                "engine": {
                    "accounts": self.engine.accounts,
                    "keys": self.engine.keys,
                    "holds": self.engine.holds,
                    "account_bytes": self.engine.account_bytes,
                    "key_bytes": self.engine.key_bytes,
                    "history_entries": self.engine.history_entries,
                    "history_bytes": self.engine.history_bytes,
                },
                "engine_timings": self.timings.to_json(),
                "log_mb_per_s": Value::Null,
            },
        })
    }
}

fn interval_json(interval: &Interval) -> Value {
    let c = &interval.counts;
    let length = interval.length_s.max(1e-9);
    json!({
        "t_s": interval.t_s,
        "length_s": interval.length_s,
        "requests_per_s": c.received_total() as f64 / length,
        "debits_per_s": c.received_of(OpKind::Debit) as f64 / length,
        "sent": c.sent_total(),
        "received": c.received_total(),
        "outcomes": codes_json(&c.by_code()),
        "latency": interval.latency.to_json(),
        "engine_timings": interval.engine.to_json(),
        "log_mb_per_s": Value::Null,
    })
}

/// `{"ok": 12, "insufficient_funds": 3}` with the nonzero codes.
fn codes_json(codes: &[u64; CODE_COUNT]) -> Value {
    let mut map = Map::new();
    for code in Code::ALL {
        if codes[code as usize] > 0 {
            map.insert(code.name().to_string(), json!(codes[code as usize]));
        }
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(duration_text(850), "850ns");
        assert_eq!(duration_text(12_345), "12.3us");
        assert_eq!(duration_text(4_560_000), "4.56ms");
        assert_eq!(duration_text(1_200_000_000), "1.20s");
    }

    #[test]
    fn counts_add_and_subtract() {
        let mut a = Counts::default();
        a.sent[OpKind::Debit.index()] = 5;
        a.outcomes[OpKind::Debit.index()][Code::Ok as usize] = 4;
        a.outcomes[OpKind::Void.index()][Code::AuthNotFound as usize] = 1;
        let mut b = a.clone();
        b.add(&a);
        assert_eq!(b.sent_total(), 10);
        assert_eq!(b.received_total(), 10);
        assert_eq!(b.since(&a), a);
        assert_eq!(b.by_code()[Code::Ok as usize], 8);
        assert_eq!(rejections_text(&b.by_code()), "auth_not_found 2");
    }

    #[test]
    fn slot_publishes_and_hands_over_latencies() {
        let slot = ProducerSlot::default();
        let mut counts = Counts::default();
        counts.sent[0] = 3;
        let mut local = new_histogram();
        local.record(1_000).unwrap();
        local.record(2_000).unwrap();
        slot.publish(&counts, &mut local);
        assert!(local.is_empty(), "published latencies leave the producer");
        assert_eq!(slot.read(), counts);
        let mut taken = new_histogram();
        slot.take_histogram(&mut taken);
        assert_eq!(taken.len(), 2);
        slot.take_histogram(&mut taken);
        assert_eq!(taken.len(), 2, "taken once only");
    }
}
