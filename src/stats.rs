//! What a running engine reports about itself: counts, memory, and
//! histograms of how long its worker rounds and log syncs took.
//!
//! Everything here is cumulative since the engine started, so that any
//! number of readers (a gateway's `/metrics`, loadgen's per-second line)
//! can take a reading now and another later and subtract
//! ([`Durations::since`]) without the engine keeping a window for each.

/// Sub-buckets per power of two: a recorded duration lands in a bucket at
/// most 1/8 (12.5%) wider than its lower bound.
const SUB_BUCKETS: usize = 8;
const SUB_BITS: u32 = SUB_BUCKETS.trailing_zeros();
/// Buckets for every `u64`: 0..8 exactly, then 8 per power of two from 2^3.
const BUCKETS: usize = SUB_BUCKETS * (64 - SUB_BITS as usize + 1);

/// A cumulative histogram of durations in nanoseconds: log-linear buckets
/// (8 per power of two, so a quantile is within 12.5% of the truth), the
/// count, the sum and the largest value seen.
///
/// Recording is a few instructions and no allocation, so the engine keeps
/// one per worker (rounds) and per flusher (syncs), off any request's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Durations {
    counts: Box<[u64; BUCKETS]>,
    count: u64,
    sum_ns: u64,
    max_ns: u64,
}

impl Default for Durations {
    fn default() -> Self {
        Durations {
            counts: Box::new([0; BUCKETS]),
            count: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }
}

impl Durations {
    /// Records one duration of `ns` nanoseconds.
    pub fn record(&mut self, ns: u64) {
        self.counts[bucket_of(ns)] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum of every recorded duration, in nanoseconds (saturating).
    pub fn sum_ns(&self) -> u64 {
        self.sum_ns
    }

    /// The largest duration recorded, in nanoseconds. For a difference
    /// ([`Durations::since`]) it is the upper bound of the highest bucket
    /// that gained a count (within 12.5%), since a maximum cannot be
    /// subtracted.
    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }

    /// The duration at quantile `q` (0.0 to 1.0; 0.99 is p99), in
    /// nanoseconds: the upper bound of the bucket that holds it, never more
    /// than the maximum. 0 when nothing was recorded.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper_bound(i).min(self.max_ns);
            }
        }
        self.max_ns
    }

    /// What was recorded after `earlier` (a reading of the same histogram
    /// taken before this one).
    pub fn since(&self, earlier: &Durations) -> Durations {
        let mut diff = Durations::default();
        for (i, (now, then)) in self.counts.iter().zip(earlier.counts.iter()).enumerate() {
            let n = now.saturating_sub(*then);
            diff.counts[i] = n;
            if n > 0 {
                diff.max_ns = upper_bound(i).min(self.max_ns);
            }
        }
        diff.count = self.count.saturating_sub(earlier.count);
        diff.sum_ns = self.sum_ns.saturating_sub(earlier.sum_ns);
        diff
    }

    /// Adds `other`'s counts to these (for a figure over every shard).
    pub fn add(&mut self, other: &Durations) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// The non-empty buckets, smallest first, each as (its inclusive upper
    /// bound in nanoseconds, the number of durations at most that bound):
    /// the cumulative form Prometheus histograms use.
    pub fn cumulative(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut seen = 0;
        self.counts.iter().enumerate().filter_map(move |(i, &n)| {
            seen += n;
            (n > 0).then_some((upper_bound(i), seen))
        })
    }
}

/// The bucket of `ns`: values below 8 have one each; above, the power of
/// two and the next three bits pick it.
fn bucket_of(ns: u64) -> usize {
    if ns < SUB_BUCKETS as u64 {
        return ns as usize;
    }
    let exponent = 63 - ns.leading_zeros();
    let mantissa = (ns >> (exponent - SUB_BITS)) as usize & (SUB_BUCKETS - 1);
    SUB_BUCKETS * (exponent - SUB_BITS + 1) as usize + mantissa
}

/// The largest value that lands in bucket `i`.
fn upper_bound(i: usize) -> u64 {
    if i < SUB_BUCKETS {
        return i as u64;
    }
    let exponent = (i / SUB_BUCKETS) as u32 + SUB_BITS - 1;
    let mantissa = (i % SUB_BUCKETS) as u64;
    let width = 1u64 << (exponent - SUB_BITS);
    let lower = (1u64 << exponent) + mantissa * width;
    lower + (width - 1)
}

/// What one shard reports: its tables' counts and memory as of its
/// worker's last published reading, its work and its log. Taken by
/// [`Engine::stats`](crate::Engine::stats); every count is cumulative since
/// the engine started (or the shard's table sizes, for the first six).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Open accounts.
    pub accounts: usize,
    /// Remembered idempotency keys.
    pub keys: usize,
    /// Holds remembered (active, and ended ones still within the window).
    pub holds: usize,
    /// Hold expiry timers pending (stale ones included until they come up).
    pub timers: usize,
    /// Bytes of the account array and its index.
    pub account_bytes: usize,
    /// Bytes of the key table.
    pub key_bytes: usize,
    /// Merchants known (every shard knows all of them).
    pub merchants: usize,
    /// Bytes of this shard's merchant table and its index.
    pub merchant_bytes: usize,
    /// Debits waiting for the next `run_batch`.
    pub queued_debits: usize,
    /// Bytes of the queue of waiting debits and its per-account counts
    /// (their keys are in `key_bytes`).
    pub queued_bytes: usize,
    /// Accounts that keep a statement (opened with history).
    pub history_accounts: usize,
    /// Statement entries kept, over all of them.
    pub history_entries: usize,
    /// Bytes the statements take (their map and their entries' capacity).
    pub history_bytes: usize,
    /// Batches waiting in the shard's queue when the reading was taken
    /// (read live; a batch holds up to a client's batch size of requests).
    pub queued_batches: usize,
    /// Requests the worker has applied.
    pub requests: u64,
    /// How long each worker round took, from taking its batches to handing
    /// its outcomes on (to the flusher when durable, to the clients when
    /// not).
    pub round_ns: Durations,
    /// Bytes of log written (durable engines; 0 in memory).
    pub log_bytes: u64,
    /// Log flushes made (each one fdatasync of every file a group wrote);
    /// read live.
    pub log_syncs: u64,
    /// How long each log flush took: the fdatasync calls of one group
    /// commit, as the flusher timed them; read live.
    pub sync_ns: Durations,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_bucket_that_bounds_it() {
        let mut values: Vec<u64> = (0..2000).collect();
        values.extend((3..64).flat_map(|e| [(1u64 << e) - 1, 1 << e, (1 << e) + 1]));
        values.push(u64::MAX);
        for v in values {
            let i = bucket_of(v);
            assert!(i < BUCKETS, "{v}");
            assert!(
                upper_bound(i) >= v,
                "{v}: bucket {i} ends at {}",
                upper_bound(i)
            );
            if i > 0 {
                assert!(upper_bound(i - 1) < v, "{v}: bucket {i} starts too late");
            }
            // At most 12.5% wide.
            assert!(upper_bound(i) - v <= v / 8, "{v}: bucket too wide");
        }
    }

    #[test]
    fn quantiles_and_differences() {
        let mut h = Durations::default();
        for ns in 1..=1000u64 {
            h.record(ns * 1000);
        }
        let p50 = h.quantile_ns(0.5);
        assert!((500_000..=562_500).contains(&p50), "{p50}");
        assert_eq!(h.quantile_ns(1.0), 1_000_000);
        assert_eq!(h.max_ns(), 1_000_000);
        let earlier = h.clone();
        h.record(50);
        h.record(7_000_000);
        let diff = h.since(&earlier);
        assert_eq!(diff.count(), 2);
        assert_eq!(diff.sum_ns(), 7_000_050);
        assert!((50..=51).contains(&diff.quantile_ns(0.5)), "bucket 48..=51");
        assert!(diff.max_ns() >= 7_000_000 && diff.max_ns() <= 7_000_000 * 9 / 8);
        let cumulative: Vec<(u64, u64)> = diff.cumulative().collect();
        assert_eq!(cumulative.len(), 2);
        assert_eq!(cumulative[1].1, 2);
        let mut sum = Durations::default();
        sum.add(&diff);
        sum.add(&diff);
        assert_eq!(sum.count(), 4);
        assert_eq!(Durations::default().quantile_ns(0.99), 0);
    }
}
