//! What one random memory access costs on this machine, by working-set
//! size: the floor under a debit's cache misses (PERF.md, "The machine and
//! its limits").
//!
//! For each size it fills an array on transparent huge pages (as the
//! engine's tables are) and times, in one thread:
//! - independent loads at random places (`sum += a[random]`): the out-of-order
//!   core keeps as many in flight as it can, so this is the throughput
//!   cost of a miss, the figure a batch of prefetched debits pays;
//! - dependent loads (a random cyclic chain): the latency of one miss;
//! - and, before either, writing the fresh mapping once and then again:
//!   what first touching new memory costs (the kernel zeroes each page; a
//!   virtual machine's host may fault it in too) against memory already
//!   touched, in GB/s. Growing tables pay the first.
//!
//! Run: `cargo run --release --example gather_probe [MAX_MIB]`

use memmap2::{Advice, MmapMut};
use std::time::Instant;

const LOADS: usize = 1 << 23;

fn main() {
    let max_mib: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("MAX_MIB: a number"))
        .unwrap_or(4096);
    println!(
        "{:>9} {:>14} {:>14} {:>14} {:>14}",
        "MiB", "ns/independent", "ns/dependent", "GB/s 1st write", "GB/s 2nd write"
    );
    let mut mib = 1;
    while mib <= max_mib {
        let m = measure(mib << 20);
        println!(
            "{mib:>9} {:>14.1} {:>14.1} {:>14.2} {:>14.2}",
            m.independent, m.dependent, m.first_write, m.second_write
        );
        mib *= 4;
    }
}

/// xorshift64*: cheap, good enough to scatter addresses.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

struct Measured {
    independent: f64,
    dependent: f64,
    first_write: f64,
    second_write: f64,
}

fn measure(bytes: usize) -> Measured {
    let words = bytes / 8;
    let mut map = MmapMut::map_anon(bytes).expect("an anonymous mapping");
    map.advise(Advice::HugePage).expect("madvise");
    let a: &mut [u64] = bytemuck_words(&mut map);
    let gb_per_s = |start: Instant| bytes as f64 / start.elapsed().as_nanos() as f64;
    let start = Instant::now();
    a.fill(1);
    let first_write = gb_per_s(start);
    let start = Instant::now();
    a.fill(2);
    let second_write = gb_per_s(start);
    // A random cycle through one word per cache line (Sattolo's shuffle),
    // stored in the array itself for the dependent walk.
    let lines = words / 8;
    let mut order: Vec<u32> = (0..lines as u32).collect();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..lines).rev() {
        let j = (next(&mut state) % i as u64) as usize;
        order.swap(i, j);
    }
    for k in 0..lines {
        let from = order[k] as usize;
        let to = order[(k + 1) % lines] as usize;
        a[from * 8] = (to * 8) as u64;
    }
    drop(order);

    let targets: Vec<u32> = (0..LOADS)
        .map(|_| ((next(&mut state) % lines as u64) * 8) as u32)
        .collect();
    let start = Instant::now();
    let mut sum = 0u64;
    for &t in &targets {
        sum = sum.wrapping_add(a[t as usize]);
    }
    let independent = start.elapsed().as_nanos() as f64 / LOADS as f64;

    let steps = LOADS / 4;
    let start = Instant::now();
    let mut at = 0usize;
    for _ in 0..steps {
        at = a[at] as usize;
    }
    let dependent = start.elapsed().as_nanos() as f64 / steps as f64;
    std::hint::black_box((sum, at));
    Measured {
        independent,
        dependent,
        first_write,
        second_write,
    }
}

/// The mapping as words (its length is a multiple of 8 and it is
/// page-aligned).
fn bytemuck_words(map: &mut MmapMut) -> &mut [u64] {
    let (head, words, tail) = {
        // SAFETY: every bit pattern is a valid u64, and `align_to_mut`
        // returns only the aligned middle; a page-aligned mapping of a
        // multiple of 8 bytes has no head or tail, asserted below.
        #[allow(unsafe_code)]
        unsafe {
            map.align_to_mut::<u64>()
        }
    };
    assert!(head.is_empty() && tail.is_empty());
    words
}
