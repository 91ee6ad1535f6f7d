//! What the load looks like: the op mix, which account a request touches,
//! how large its amount is, and the random numbers behind all of it.
//!
//! Everything here is pure and deterministic given a seed, so a run can be
//! repeated and the pieces can be unit-tested without an engine.

use std::fmt;

/// The kinds of request a producer issues during the measured part.
///
/// `PartialCapture` is not an engine op of its own: it is a `Capture` with
/// `is_final: false` of part of a hold, listed separately because it
/// exercises a different path (the hold stays active) and the mix names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    Debit,
    Authorize,
    Capture,
    PartialCapture,
    Increment,
    Void,
    Refund,
    /// `queue_debit`: applied at the next `run_batch` (--batch-every-ms).
    QueueDebit,
}

impl OpKind {
    pub const COUNT: usize = 8;
    pub const ALL: [OpKind; OpKind::COUNT] = [
        OpKind::Debit,
        OpKind::Authorize,
        OpKind::Capture,
        OpKind::PartialCapture,
        OpKind::Increment,
        OpKind::Void,
        OpKind::Refund,
        OpKind::QueueDebit,
    ];

    /// The spelling used by `--mix` and in the report.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Debit => "debit",
            OpKind::Authorize => "authorize",
            OpKind::Capture => "capture",
            OpKind::PartialCapture => "partial_capture",
            OpKind::Increment => "increment",
            OpKind::Void => "void",
            OpKind::Refund => "refund",
            OpKind::QueueDebit => "queue_debit",
        }
    }

    pub fn from_name(name: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Index into per-op counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The op mix: relative weights per kind, in the order the user gave them.
///
/// Sampling draws one `u64` and compares it with cumulative thresholds, so
/// choosing an op costs a handful of comparisons and no floating point.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    entries: Vec<(OpKind, f64)>,
    /// `thresholds[i]`: upper bound (exclusive) of entry i's share of `u64`.
    thresholds: Vec<u64>,
}

impl Mix {
    /// Parses `debit=90,authorize=6,capture=3,void=1`. Weights are
    /// non-negative numbers and need not add up to 100; at least one must be
    /// positive, and no op may appear twice.
    pub fn parse(text: &str) -> Result<Mix, String> {
        let mut entries: Vec<(OpKind, f64)> = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(format!("empty entry in mix {text:?}"));
            }
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("mix entry {part:?} is not of the form op=weight"))?;
            let name = name.trim();
            let kind = OpKind::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = OpKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown op {name:?} in mix (known: {})", known.join(", "))
            })?;
            let weight: f64 = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight {:?} of {name} is not a number", weight.trim()))?;
            if !weight.is_finite() || weight < 0.0 {
                return Err(format!("weight of {name} must be a finite number >= 0"));
            }
            if entries.iter().any(|&(k, _)| k == kind) {
                return Err(format!("op {name} appears twice in mix"));
            }
            entries.push((kind, weight));
        }
        let total: f64 = entries.iter().map(|&(_, w)| w).sum();
        if total <= 0.0 {
            return Err("mix needs at least one op with a positive weight".to_string());
        }
        let mut thresholds = Vec::with_capacity(entries.len());
        let mut cumulative = 0.0;
        for &(_, weight) in &entries {
            cumulative += weight;
            let share = cumulative / total;
            // 2^64 as f64; the float-to-int cast saturates at u64::MAX.
            thresholds.push((share * 18_446_744_073_709_551_616.0) as u64);
        }
        Ok(Mix {
            entries,
            thresholds,
        })
    }

    /// Picks an op for the random word `r`.
    pub fn sample(&self, r: u64) -> OpKind {
        for (i, &threshold) in self.thresholds.iter().enumerate() {
            if r < threshold {
                return self.entries[i].0;
            }
        }
        // Only `r` at the very top of the range gets here (rounding of the
        // last threshold): give it to the last op that has any weight.
        self.entries
            .iter()
            .rev()
            .find(|&&(_, w)| w > 0.0)
            .expect("parse guarantees a positive weight")
            .0
    }

    /// The share (0..=1) of `kind` in the mix, 0 when absent.
    pub fn share(&self, kind: OpKind) -> f64 {
        let total: f64 = self.entries.iter().map(|&(_, w)| w).sum();
        self.entries
            .iter()
            .find(|&&(k, _)| k == kind)
            .map_or(0.0, |&(_, w)| w / total)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (kind, weight)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={}", kind.name(), weight)?;
        }
        Ok(())
    }
}

/// How requests spread over accounts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Skew {
    /// Every account equally likely.
    Uniform,
    /// Zipf with this exponent: account of rank k has weight k^-s.
    Zipf(f64),
}

impl Skew {
    /// Parses `uniform` or `zipf:S` with S a finite number > 0.
    pub fn parse(text: &str) -> Result<Skew, String> {
        if text == "uniform" {
            return Ok(Skew::Uniform);
        }
        let exponent = text
            .strip_prefix("zipf:")
            .ok_or_else(|| format!("skew {text:?} is neither \"uniform\" nor \"zipf:S\""))?;
        let exponent: f64 = exponent
            .parse()
            .map_err(|_| format!("zipf exponent {exponent:?} is not a number"))?;
        if !exponent.is_finite() || exponent <= 0.0 {
            return Err(format!("zipf exponent must be > 0, got {exponent}"));
        }
        Ok(Skew::Zipf(exponent))
    }
}

impl fmt::Display for Skew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skew::Uniform => f.write_str("uniform"),
            Skew::Zipf(s) => write!(f, "zipf:{s}"),
        }
    }
}

/// A small, fast PRNG: splitmix64 (Steele, Lea, Flood 2014).
///
/// One add and a mixing function per word; good enough statistically for
/// load generation, and cheap enough not to show in the producer's profile.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// An independent stream for `stream` (e.g. a producer index) off one seed.
    pub fn for_stream(seed: u64, stream: u64) -> Rng {
        let mut base = Rng::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Rng::new(base.next_u64())
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is < n / 2^64).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `low..=high`.
    #[inline]
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }
}

/// Zipf sampling over ranks `1..=n` by rejection-inversion.
///
/// Hörmann and Derflinger, "Rejection-inversion to generate variates from
/// monotone discrete distributions" (ACM TOMACS, 1996), in the form Apache
/// Commons uses: O(1) time and memory per sample whatever `n` is, with an
/// expected number of iterations close to 1. A precomputed CDF table would
/// cost 8 bytes per account and a cache-missing binary search per sample.
#[derive(Clone, Debug)]
pub struct Zipf {
    n: f64,
    exponent: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    s: f64,
}

impl Zipf {
    pub fn new(n: u64, exponent: f64) -> Zipf {
        assert!(n >= 1, "zipf needs at least one element");
        assert!(
            exponent > 0.0 && exponent.is_finite(),
            "zipf exponent must be > 0"
        );
        let mut zipf = Zipf {
            n: n as f64,
            exponent,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            s: 0.0,
        };
        zipf.h_integral_x1 = zipf.h_integral(1.5) - 1.0;
        zipf.h_integral_n = zipf.h_integral(zipf.n + 0.5);
        zipf.s = 2.0 - zipf.h_integral_inverse(zipf.h_integral(2.5) - zipf.h(2.0));
        zipf
    }

    /// A rank in `1..=n`; rank 1 is the most likely.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        loop {
            let u = self.h_integral_n + rng.next_f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.s || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
    }

    /// `h(x) = x^-exponent`, the unnormalized density.
    fn h(&self, x: f64) -> f64 {
        (-self.exponent * x.ln()).exp()
    }

    /// An antiderivative of `h`, written to stay accurate near exponent 1.
    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.exponent) * log_x) * log_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.exponent)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// `ln(1 + x) / x`, continuous at 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// `(e^x - 1) / x`, continuous at 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

/// Picks the account (as an index in `0..n`) a new request touches.
///
/// Under zipf, rank k maps to index `(k - 1) * stride mod n` with `stride`
/// coprime to `n`: a bijection, so hot accounts are scattered over the
/// account space (and so over shards and table slots) instead of being the
/// first few ids.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    Uniform { n: u64 },
    Zipf { zipf: Zipf, n: u64, stride: u64 },
}

impl KeyChooser {
    pub fn new(n: u64, skew: Skew) -> KeyChooser {
        match skew {
            Skew::Uniform => KeyChooser::Uniform { n },
            Skew::Zipf(exponent) => {
                let mut stride = 0x9E37_79B9_7F4A_7C15 % n.max(1);
                while gcd(stride, n) != 1 {
                    stride = (stride + 1) % n;
                }
                KeyChooser::Zipf {
                    zipf: Zipf::new(n, exponent),
                    n,
                    stride,
                }
            }
        }
    }

    #[inline]
    pub fn choose(&self, rng: &mut Rng) -> u64 {
        match self {
            KeyChooser::Uniform { n } => rng.below(*n),
            KeyChooser::Zipf { zipf, n, stride } => {
                let rank = zipf.sample(rng);
                ((u128::from(rank - 1) * u128::from(*stride)) % u128::from(*n)) as u64
            }
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The engine's account id for account index `index` (ids start at 1).
#[inline]
pub fn account_id(index: u64) -> u64 {
    index + 1
}

/// A purchase amount in USD cents: mostly small tickets, a tail of large
/// ones (90% $1-$100, 9% $100-$1,000, 1% $1,000-$5,000), roughly the shape
/// of card traffic, so that limits and review thresholds bite sometimes.
#[inline]
pub fn purchase_amount_minor(rng: &mut Rng) -> u64 {
    let bucket = rng.below(100);
    if bucket < 90 {
        rng.between(100, 10_000)
    } else if bucket < 99 {
        rng.between(10_000, 100_000)
    } else {
        rng.between(100_000, 500_000)
    }
}

/// An increment of a hold in USD cents ($1-$50: a tip, a late fee).
#[inline]
pub fn increment_amount_minor(rng: &mut Rng) -> u64 {
    rng.between(100, 5_000)
}

/// How a producer picks the `id` of each request.
#[derive(Clone, Debug)]
pub enum IdGen {
    /// A fresh random u64 per request (the default; what gateways that use
    /// UUID-derived keys look like to the engine's tables).
    Random,
    /// A per-producer counter, with the producer index in the top 16 bits
    /// so that producers never reuse each other's ids on a shared account.
    Sequential { next: u64 },
}

impl IdGen {
    pub fn sequential(producer: usize) -> IdGen {
        IdGen::Sequential {
            next: ((producer as u64) << 48) | 1,
        }
    }

    #[inline]
    pub fn next(&mut self, rng: &mut Rng) -> u64 {
        match self {
            IdGen::Random => rng.next_u64(),
            IdGen::Sequential { next } => {
                let id = *next;
                *next += 1;
                id
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_round_trips() {
        let mix = Mix::parse("debit=90,authorize=6,capture=3,void=1").unwrap();
        assert_eq!(mix.to_string(), "debit=90,authorize=6,capture=3,void=1");
        assert_eq!(mix.share(OpKind::Debit), 0.9);
        assert_eq!(mix.share(OpKind::Refund), 0.0);
        let all = Mix::parse(
            "debit=50,authorize=20,capture=10,partial_capture=5,increment=5,void=5,refund=5",
        )
        .unwrap();
        assert_eq!(all.share(OpKind::PartialCapture), 0.05);
        assert!(Mix::parse(" debit = 1.5 , void=0").is_ok());
    }

    #[test]
    fn mix_rejects_bad_text() {
        for bad in [
            "",
            "debit",
            "debit=",
            "debit=x",
            "debit=-1",
            "debit=inf",
            "debit=1,,void=1",
            "debit=1,debit=2",
            "deposit=1",
            "Debit=1",
            "debit=0,void=0",
        ] {
            assert!(Mix::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn mix_samples_in_proportion() {
        let mix = Mix::parse("debit=90,authorize=6,capture=3,void=1,refund=0").unwrap();
        let mut rng = Rng::new(7);
        let mut counts = [0u64; OpKind::COUNT];
        let draws = 1_000_000;
        for _ in 0..draws {
            counts[mix.sample(rng.next_u64()).index()] += 1;
        }
        let share = |k: OpKind| counts[k.index()] as f64 / draws as f64;
        assert!((share(OpKind::Debit) - 0.90).abs() < 0.005);
        assert!((share(OpKind::Authorize) - 0.06).abs() < 0.003);
        assert!((share(OpKind::Capture) - 0.03).abs() < 0.002);
        assert!((share(OpKind::Void) - 0.01).abs() < 0.001);
        assert_eq!(
            counts[OpKind::Refund.index()],
            0,
            "zero weight is never drawn"
        );
        assert_eq!(
            mix.sample(u64::MAX),
            OpKind::Void,
            "top of range lands on a weighted op"
        );
        assert_eq!(mix.sample(0), OpKind::Debit);
    }

    #[test]
    fn skew_parses() {
        assert_eq!(Skew::parse("uniform"), Ok(Skew::Uniform));
        assert_eq!(Skew::parse("zipf:1.1"), Ok(Skew::Zipf(1.1)));
        assert_eq!(Skew::parse("zipf:0.5"), Ok(Skew::Zipf(0.5)));
        for bad in [
            "zipf", "zipf:", "zipf:0", "zipf:-1", "zipf:nan", "zipf:abc", "normal",
        ] {
            assert!(Skew::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    /// Exact Zipf probabilities for ranks 1..=n.
    fn zipf_pmf(n: u64, s: f64) -> Vec<f64> {
        let weights: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-s)).collect();
        let total: f64 = weights.iter().sum();
        weights.into_iter().map(|w| w / total).collect()
    }

    fn check_zipf(n: u64, s: f64) {
        let zipf = Zipf::new(n, s);
        let mut rng = Rng::new(12345);
        let draws = 2_000_000usize;
        let mut counts = vec![0u64; n as usize];
        for _ in 0..draws {
            let k = zipf.sample(&mut rng);
            assert!((1..=n).contains(&k), "rank {k} out of 1..={n}");
            counts[(k - 1) as usize] += 1;
        }
        let pmf = zipf_pmf(n, s);
        // Pearson chi-square over all ranks; with n - 1 degrees of freedom
        // the statistic is about n, and far above 2n only if the sampler is
        // wrong (a deterministic seed keeps the test from flaking).
        let chi2: f64 = counts
            .iter()
            .zip(&pmf)
            .map(|(&c, &p)| {
                let expected = p * draws as f64;
                (c as f64 - expected).powi(2) / expected
            })
            .sum();
        assert!(chi2 < 2.0 * n as f64, "n={n} s={s}: chi2 {chi2} too large");
        // And the head directly: rank 1's share within 2% of its probability.
        let head = counts[0] as f64 / draws as f64;
        assert!(
            (head - pmf[0]).abs() < 0.02 * pmf[0],
            "n={n} s={s}: head {head} vs {}",
            pmf[0]
        );
    }

    #[test]
    fn zipf_matches_its_distribution() {
        check_zipf(100, 1.1);
        check_zipf(1000, 0.8);
        check_zipf(1000, 1.0);
        check_zipf(50, 2.0);
    }

    #[test]
    fn zipf_handles_edges() {
        let mut rng = Rng::new(1);
        let one = Zipf::new(1, 1.2);
        assert!((0..1000).all(|_| one.sample(&mut rng) == 1));
        let big = Zipf::new(1_000_000_000_000, 1.1);
        for _ in 0..10_000 {
            assert!((1..=1_000_000_000_000).contains(&big.sample(&mut rng)));
        }
    }

    #[test]
    fn key_chooser_is_a_bijection_on_ranks() {
        let n = 1000;
        let chooser = KeyChooser::new(n, Skew::Zipf(1.0));
        let KeyChooser::Zipf { stride, .. } = chooser else {
            panic!("zipf chooser expected")
        };
        let mut seen = vec![false; n as usize];
        for rank in 0..n {
            let index = ((u128::from(rank) * u128::from(stride)) % u128::from(n)) as usize;
            assert!(!seen[index], "two ranks map to account index {index}");
            seen[index] = true;
        }
        let mut rng = Rng::new(3);
        let uniform = KeyChooser::new(n, Skew::Uniform);
        assert!((0..10_000).all(|_| uniform.choose(&mut rng) < n));
    }

    #[test]
    fn rng_streams_differ_and_ranges_hold() {
        let mut a = Rng::for_stream(1, 0);
        let mut b = Rng::for_stream(1, 1);
        assert_ne!(a.next_u64(), b.next_u64());
        let mut rng = Rng::new(9);
        for _ in 0..10_000 {
            let x = rng.between(5, 9);
            assert!((5..=9).contains(&x));
            let f = rng.next_f64();
            assert!((0.0..1.0).contains(&f));
            let amount = purchase_amount_minor(&mut rng);
            assert!((100..=500_000).contains(&amount));
        }
    }

    #[test]
    fn sequential_ids_are_disjoint_across_producers() {
        let mut rng = Rng::new(0);
        let mut p0 = IdGen::sequential(0);
        let mut p1 = IdGen::sequential(1);
        let a: Vec<u64> = (0..3).map(|_| p0.next(&mut rng)).collect();
        let b: Vec<u64> = (0..3).map(|_| p1.next(&mut rng)).collect();
        assert_eq!(a, vec![1, 2, 3]);
        assert_eq!(b[0], (1 << 48) | 1);
        assert!(a.iter().all(|x| !b.contains(x)));
    }
}
