//! The thread that settles merchants and runs batches on a schedule
//! (`--settle-every-ms`, `--batch-every-ms`) during the measured part, with
//! a client of its own, timing each apart from the producers' requests: a
//! settle crosses every shard's queue, and its latency is compared with a
//! debit's in the same run.

use crate::args::Config;
use crate::report::new_histogram;
use crate::workload::Rng;
use debitcore::{Client, Code, Info, Request};
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// What the settler did.
pub struct SettlerResult {
    /// Settle latencies, ns, and their outcomes' codes.
    pub settles: Histogram<u64>,
    pub settled_ok: u64,
    pub settled_empty: u64,
    pub settle_refused: u64,
    /// Batch-run latencies, ns, and what they applied.
    pub batches: Histogram<u64>,
    pub applied: u64,
    pub applied_ok: u64,
    /// Time spent inside `run_batch` calls.
    pub batch_busy: Duration,
}

/// Runs until `end` (from `start`), sending what is due.
pub fn run(mut client: Client, config: &Config, start: Instant, end: Duration) -> SettlerResult {
    let mut rng = Rng::for_stream(config.seed, 0x5E77_1E00);
    let mut result = SettlerResult {
        settles: new_histogram(),
        settled_ok: 0,
        settled_empty: 0,
        settle_refused: 0,
        batches: new_histogram(),
        applied: 0,
        applied_ok: 0,
        batch_busy: Duration::ZERO,
    };
    let period = |ms: f64| (ms > 0.0).then(|| Duration::from_secs_f64(ms / 1e3));
    let (settle_every, batch_every) = (
        period(config.settle_every_ms),
        period(config.batch_every_ms),
    );
    let (mut next_settle, mut next_batch) = (settle_every, batch_every);
    let mut settle_id = 0u64;
    loop {
        let due = match (next_settle, next_batch) {
            (Some(s), Some(b)) => s.min(b),
            (Some(s), None) => s,
            (None, Some(b)) => b,
            (None, None) => return result,
        };
        if due >= end {
            return result;
        }
        if let Some(rest) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(rest);
        }
        if next_settle == Some(due) {
            settle_id += 1;
            let merchant = 1 + rng.below(config.merchants);
            let sent = Instant::now();
            let outcome = client.submit(Request::Settle {
                id: settle_id,
                merchant,
            });
            result.settles.saturating_record(elapsed_ns(sent));
            match outcome.code {
                Code::Ok => result.settled_ok += 1,
                Code::NothingToSettle => result.settled_empty += 1,
                _ => result.settle_refused += 1,
            }
            next_settle = settle_every.map(|p| due + p);
        } else {
            let sent = Instant::now();
            let outcome = client.submit(Request::RunBatch);
            let took = sent.elapsed();
            result.batches.saturating_record(elapsed_ns(sent));
            result.batch_busy += took;
            if let Info::Batch(b) = &outcome.info {
                result.applied += b.applied;
                result.applied_ok += b.ok;
            }
            next_batch = batch_every.map(|p| due + p);
        }
    }
}

fn elapsed_ns(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl SettlerResult {
    /// Lines for the summary.
    pub fn print(&self) {
        let q = |h: &Histogram<u64>, p: f64| crate::report::duration_text(h.value_at_quantile(p));
        if !self.settles.is_empty() {
            println!(
                "  settle      {} sent ({} ok, {} nothing_to_settle, {} refused)  p50 {}  p99 {}  max {}",
                self.settles.len(),
                self.settled_ok,
                self.settled_empty,
                self.settle_refused,
                q(&self.settles, 0.5),
                q(&self.settles, 0.99),
                crate::report::duration_text(self.settles.max()),
            );
        }
        if !self.batches.is_empty() {
            let rate = self.applied as f64 / self.batch_busy.as_secs_f64().max(1e-9);
            println!(
                "  run_batch   {} runs applied {} queued debits ({} ok) in {:.3} s: {:.0} applied/s while running  p50 {}  max {}",
                self.batches.len(),
                self.applied,
                self.applied_ok,
                self.batch_busy.as_secs_f64(),
                rate,
                q(&self.batches, 0.5),
                crate::report::duration_text(self.batches.max()),
            );
        }
    }
}
