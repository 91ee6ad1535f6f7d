//! Every bound the engine lives within, in one place.
//!
//! Names carry their unit at the end (`_ms`, `_max`, `_count`). Compile-time
//! assertions at the bottom state how the bounds relate.

/// Largest amount, balance, `held` total or hold amount, in minor units.
pub const MINOR_UNITS_MAX: i64 = i64::MAX;

/// Largest `expires_in_ms` and `window_ms` a request may carry.
pub const EXPIRES_IN_MS_MAX: u64 = 10_000_000_000_000;

/// Largest single `advance_clock` step.
pub const ADVANCE_CLOCK_MS_MAX: u64 = 10_000_000_000_000;

/// A hold's life when `expires_in_ms` is omitted: 7 days.
pub const HOLD_EXPIRES_IN_MS_DEFAULT: u64 = 7 * 24 * 60 * 60 * 1000;

/// How long a key (and an ended hold) is remembered at least: 24 hours.
pub const DEDUP_WINDOW_MS_DEFAULT: u64 = 24 * 60 * 60 * 1000;

/// Length of a UTC day of engine time, for the `daily` limit.
pub const DAY_MS: u64 = 86_400_000;

/// Largest `velocity.max`.
pub const VELOCITY_MAX_MAX: u32 = 1000;

/// Most shards an engine may run.
pub const SHARD_COUNT_MAX: usize = 256;

/// Requests a client buffers for one shard before it hands the batch over.
pub const CLIENT_BATCH_SIZE_DEFAULT: usize = 64;

/// Requests one client may have in flight (sent, outcome not yet taken).
pub const CLIENT_IN_FLIGHT_MAX_DEFAULT: usize = 16 * 1024;

/// Client batches a shard worker takes from its queue per round.
pub const WORKER_MESSAGES_PER_ROUND_MAX: usize = 64;

/// Spins a waiting thread makes before it parks.
pub const SPIN_LIMIT: u32 = 200;

/// Longest a parked shard worker sleeps before it looks at its clock again.
pub const WORKER_PARK_TIMEOUT_US: u64 = 2_000;

const _: () = assert!(EXPIRES_IN_MS_MAX == ADVANCE_CLOCK_MS_MAX);
const _: () = assert!(HOLD_EXPIRES_IN_MS_DEFAULT <= EXPIRES_IN_MS_MAX);
const _: () = assert!(CLIENT_BATCH_SIZE_DEFAULT <= CLIENT_IN_FLIGHT_MAX_DEFAULT);
const _: () = assert!(SHARD_COUNT_MAX <= u16::MAX as usize);

/// `history`'s `limit` when the request gives none.
pub const HISTORY_LIMIT_DEFAULT: u16 = 20;
/// The largest `limit` of a `history` request (1 is the smallest).
pub const HISTORY_LIMIT_MAX: u16 = 1000;
