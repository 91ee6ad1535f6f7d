//! `loadgen`: drives debitcore the way a payment gateway embeds it and
//! reports throughput and submit-to-outcome latency.
//!
//! The main thread sets up the engine and the accounts, starts one producer
//! thread per `--producers` (each with its own client), and then acts as the
//! reporter: once a second it reads what producers published and prints a
//! line. After `--duration` producers stop sending and drain; the summary
//! follows, and the JSON document when asked for.
//!
//! Exit codes: 0 on a clean run, 2 for bad flags, 1 when the engine lost
//! outcomes or setup failed, 3 when producers hung.

mod args;
mod producer;
mod report;
mod settler;
mod setup;
mod workload;

use args::{Args, Config, Durability};
use clap::Parser;
use debitcore::{ClockMode, Engine, EngineConfig};
use report::{Machine, ProducerSlot, Reporter, Summary};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// mimalloc, because the engine allocates per account and per remembered
/// key, and the system allocator's contention would be measured instead.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--durability batched`: the longest a group waits for more rounds.
const BATCHED_DELAY_US: u64 = 1_000;

/// Longest the last per-second line waits for producers to stop sending.
const FINAL_TICK_PATIENCE: Duration = Duration::from_secs(1);

/// Slack past duration + drain timeout before producers count as hung.
const HANG_SLACK: Duration = Duration::from_secs(5);

fn main() {
    let machine = Machine::detect();
    let config = match Args::parse().resolve(machine.cores) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("loadgen: {message}");
            std::process::exit(2);
        }
    };
    report::print_header(&machine, &config);

    // A durable run without --data-dir logs into a temporary directory,
    // removed at the end.
    let temp_dir = (config.durability != Durability::None && config.data_dir.is_none())
        .then(|| std::env::temp_dir().join(format!("loadgen-{}", std::process::id())));
    let data_dir = config.data_dir.clone().or_else(|| temp_dir.clone());
    let engine = match Engine::open(EngineConfig {
        shards: config.shards,
        clock: ClockMode::Wall,
        dedup_window_ms: config.dedup_window_ms,
        data_dir: data_dir.clone(),
        durability: match config.durability {
            Durability::None => debitcore::Durability::None,
            Durability::Sync => debitcore::Durability::Sync,
            Durability::Batched => debitcore::Durability::Batched {
                max_delay_us: BATCHED_DELAY_US,
            },
        },
        expected_accounts: config.accounts as usize,
        expected_keys: config.expect_keys,
        ..EngineConfig::default()
    }) {
        Ok(engine) => engine,
        Err(error) => {
            eprintln!("loadgen: {error}");
            std::process::exit(1);
        }
    };
    if let Some(dir) = &data_dir {
        println!("log       {}", dir.display());
    }
    let setup = setup::fund(&engine, &config);
    setup.print();
    if !setup.failures.is_empty() || setup.lost > 0 {
        for (op, code, n) in &setup.failures {
            eprintln!("loadgen: setup: {n} {op} requests answered {code}");
        }
        if setup.lost > 0 {
            eprintln!("loadgen: setup: {} outcomes never came back", setup.lost);
        }
        std::process::exit(1);
    }

    let (mut summary, intervals, settler) = measure(&engine, &config);
    summary.engine = report::EngineTotals::of(&engine.stats());
    summary.log_bytes_measured = intervals.iter().map(|i| i.log_bytes).sum();
    summary.print(&config);
    if let Some(settler) = &settler {
        settler.print();
    }

    let shutdown_started = Instant::now();
    engine.shutdown();
    if let Some(dir) = &temp_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    println!(
        "  shutdown    {:.3} s",
        shutdown_started.elapsed().as_secs_f64()
    );

    if let Some(path) = &config.json {
        let document = summary.to_json(&machine, &config, &setup, &intervals);
        let text = serde_json::to_string_pretty(&document).expect("a JSON value serializes");
        if let Err(error) = std::fs::write(path, text + "\n") {
            eprintln!("loadgen: cannot write {}: {error}", path.display());
            std::process::exit(1);
        }
        println!("  json        {}", path.display());
    }
    if summary.lost > 0 {
        eprintln!("loadgen: the engine lost {} outcomes", summary.lost);
        std::process::exit(1);
    }
}

/// The measured part: producers send for `duration`, the reporter prints
/// a line a second, then everything drains.
fn measure(
    engine: &Engine,
    config: &Config,
) -> (
    Summary,
    Vec<report::Interval>,
    Option<settler::SettlerResult>,
) {
    // The async mode's tasks must own what they use ('static): the run's
    // configuration and the producers' slots live for the process (one
    // run, a few MB).
    let config: &'static Config = Box::leak(Box::new(config.clone()));
    let slots: &'static [ProducerSlot] = Box::leak(
        (0..config.producers)
            .map(|_| ProducerSlot::default())
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let clients: Vec<_> = (0..config.producers).map(|_| engine.client()).collect();
    let duration = Duration::from_secs_f64(config.duration_s);
    let end_ns = duration.as_nanos() as u64;
    println!();
    Reporter::print_columns();
    let cpu_at_start = report::process_cpu_s();
    let start = Instant::now();
    let run: &producer::Run<'static> = &producer::Run {
        config,
        start,
        end_ns,
        stopped: AtomicUsize::new(0),
    };
    // The tasks, spread over the producers.
    let tasks_of = |index: usize| {
        config.async_tasks / config.producers
            + usize::from(index < config.async_tasks % config.producers)
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = clients
            .into_iter()
            .zip(slots)
            .enumerate()
            .map(|(index, (client, slot))| {
                let submitter = engine.submitter();
                scope.spawn(move || {
                    if config.async_tasks > 0 {
                        drop(client);
                        producer::run_async(index, run, slot, submitter, tasks_of(index))
                    } else {
                        producer::run(index, run, slot, client)
                    }
                })
            })
            .collect();

        let settler = (config.settle_every_ms > 0.0 || config.batch_every_ms > 0.0).then(|| {
            let client = engine.client();
            scope.spawn(move || settler::run(client, config, start, duration))
        });
        let mut reporter = Reporter::new(slots, engine, start);
        let mut tick = 1u64;
        loop {
            let tick_at = Duration::from_secs(tick).min(duration);
            if let Some(rest) = tick_at.checked_sub(start.elapsed()) {
                std::thread::sleep(rest);
            }
            if tick_at >= duration {
                // The last line waits (briefly) for every producer's final
                // counts; a producer stuck in the engine is caught below.
                let patience = Instant::now() + FINAL_TICK_PATIENCE;
                while run.stopped.load(Ordering::Acquire) < config.producers
                    && Instant::now() < patience
                {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            reporter.tick();
            if tick_at >= duration {
                break;
            }
            tick += 1;
        }
        let cpu_s = report::process_cpu_s()
            .zip(cpu_at_start)
            .map(|(end, begin)| end - begin);

        // Producers drain for up to DRAIN_TIMEOUT; past that and some slack
        // they are stuck inside the engine (send or wait never returned).
        let hang_deadline = start + duration + producer::DRAIN_TIMEOUT + HANG_SLACK;
        while handles.iter().any(|h| !h.is_finished()) {
            if Instant::now() >= hang_deadline {
                let stuck = handles.iter().filter(|h| !h.is_finished()).count();
                eprintln!(
                    "loadgen: {stuck} of {} producers still blocked in the engine {:.0} s after the end; giving up",
                    handles.len(),
                    (producer::DRAIN_TIMEOUT + HANG_SLACK).as_secs_f64()
                );
                std::process::exit(3);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let results: Vec<producer::ProducerResult> = handles
            .into_iter()
            .map(|h| h.join().expect("producer thread panicked"))
            .collect();
        let totals = reporter.finish();
        let drain_s = results.iter().map(|r| r.drain_s).fold(0.0, f64::max);
        let timed_out = results.iter().any(|r| r.drain_timed_out);
        debug_assert_eq!(
            results.iter().map(|r| r.sent).sum::<u64>(),
            totals.sent_total()
        );
        debug_assert_eq!(
            results.iter().map(|r| r.received).sum::<u64>(),
            totals.received_total()
        );
        let summary = Summary::build(&reporter, totals, drain_s, timed_out, cpu_s);
        let settler = settler.map(|h| h.join().expect("settler thread panicked"));
        (summary, reporter.intervals, settler)
    })
}
