//! One shard's state and the rules of SPEC: the deterministic state machine.
//!
//! A [`Shard`] owns its accounts, holds, remembered keys and hold-expiry
//! timers, and is touched by exactly one thread (its worker). It changes
//! only through two calls:
//!
//! - [`Shard::advance_to`] moves engine time forward, expiring due holds and
//!   forgetting keys older than the dedup window;
//! - [`Shard::apply`] applies one request and returns its outcome.
//!
//! Both are pure functions of (state, input): that is what makes the runner's
//! output a function of its input, and what the write-ahead log will replay.
//!
//! **Architecture Invariant:** nothing in this module locks, allocates per
//! plain debit, or knows about threads or queues.
//!
//! Where each rule lives (one concept a file, all of them `impl Shard`):
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the `Shard` and its tables, time (`advance_to`), the dispatch of a request to its rule (`apply`), prefetching (`apply_each`), the account lookup |
//! | `accounts.rs` | the 48-byte account record and its rare parts; opening, freezing, the overdraft floor, the funds check |
//! | `keys.rs` | idempotency: the keyed frame (replay, conflict, first time), what keys compare by, forgetting past the window |
//! | `debits.rs` | deposits and real-time debits |
//! | `limits.rs` | per-transaction and daily limits, risk routing (review, velocity, a custom policy), `set_limits` |
//! | `holds.rs` | holds: authorize, capture, increment, void, expiry |
//! | `refunds.rs` | refunds and what an original moved |
//! | `closing.rs` | `close_account`, what a closed account still answers |
//! | `history.rs` | statements of accounts opened with history, the `history` query |
//! | `invariants.rs` | the checks below |
//! | `snapshot.rs` | the snapshot format of every table |
//!
//! Invariants (checked by [`Shard::check_invariants`] in debug builds):
//! - every account: `available = balance - held >= -overdraft`, `held >= 0`;
//! - every account: `held` = sum of what is left of its active holds;
//! - money: sum of balances = ok deposits - ok debits - ok captures + ok refunds;
//! - refunds of an ok debit or capture add up to at most what it moved, which
//!   its key record holds (a debit's amount) or `capture_amounts` beside it;
//! - a closed account has balance 0, held 0 and no active hold;
//! - exactly the accounts with the history flag have a statement.

use crate::hash::WordMap;
use crate::hugemem::prefetch;
use crate::index::AccountIndex;
use crate::limits::{DAY_MS, HOLD_EXPIRES_IN_MS_DEFAULT, MINOR_UNITS_MAX};
use crate::money::{AmountArg, Currency};
use crate::outcome::{Code, Info, Outcome};
use crate::request::{AccountId, Internal, LimitsArg, Op, Request, Step, TxnId};
use crate::risk::{Limits, RiskContext, RiskDecision, RiskPolicy, SpecRules, Velocity};
use crate::table::{clears_in_key, KeyRecord, KeySpare, KeyTable, Payload, SWEEP_CELLS_PER_STEP};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

mod accounts;
mod batch;
mod closing;
mod debits;
mod history;
mod holds;
mod invariants;
mod keys;
mod limits;
mod merchants;
mod refunds;
mod snapshot;
#[cfg(test)]
mod tests;

use crate::request::MerchantId;
use accounts::{Account, AccountExt, CLOSED, EXT_NONE, HISTORY};
use batch::QueuedDebit;
use history::History;
use holds::{Hold, HoldState};
use keys::{fingerprint, optional_fingerprint, Fields, Forgetting, NO_MERCHANT};
pub use merchants::FEE_BPS_MAX;
use merchants::{Merchant, MerchantIndex, SettleKey};

/// How many requests ahead of the one being applied [`Shard::apply_each`]
/// prefetches account records and key cells (and twice as far, index
/// cells). Enough to cover a DRAM miss at ~150 ns of work per request.
pub const PREFETCH_AHEAD: usize = 8;

/// Money moved by ok requests since the shard started, for the
/// conservation invariant.
#[derive(Clone, Copy, Debug, Default)]
struct Ledger {
    deposits: i128,
    debits: i128,
    captures: i128,
    refunds: i128,
}

pub use crate::stats::ShardStats;

/// One shard's state machine: its accounts, holds, keys, expiry timers
/// and limits, and every rule of the behaviour contract.
///
/// A deterministic function of (state, request, engine time): it knows
/// nothing of threads, queues or clocks. The engine gives one to each
/// worker; it is public for benches, the examples' probes and tests, which
/// drive it directly.
pub struct Shard {
    accounts: Vec<Account>,
    index: AccountIndex,
    /// While `apply_each` applies a request: the slot its prefetch found
    /// for the request's account (0: none). A guess that `slot_of` confirms
    /// against the record, so a stale or wrong hint only costs a lookup.
    slot_hint: u32,
    exts: Vec<AccountExt>,
    keys: KeyTable,
    holds: WordMap<(u32, TxnId), Hold>,
    /// Minor units refunded so far, per refundable original (slot, id).
    refunded: WordMap<(u32, TxnId), i64>,
    /// Minor units each ok capture moved (what refunds of it may return),
    /// by the capture's key (slot, id): its key record holds a fingerprint
    /// of its fields, not an amount. Kept exactly as long as that key.
    capture_amounts: WordMap<(u32, TxnId), i64>,
    /// Every merchant (all shards know all of them), with this shard's
    /// part of its current batch, in the order they were opened (the same
    /// on every shard). Never forgotten. A merchant debit's key names its
    /// merchant by its index here (`Payload::Cleared`).
    merchants: Vec<Merchant>,
    /// Merchant id -> index in `merchants` (its own open addressing: one
    /// multiply to hash, no std hasher, a quarter full).
    merchant_index: MerchantIndex,
    /// The merchant each ok debit or capture that cleared went to, by its
    /// key (slot, id), for a refund's charge-back. Kept exactly as long as
    /// that key.
    cleared_to: WordMap<(u32, TxnId), MerchantId>,
    /// Settle keys (merchant, id) and their outcomes; the same on every
    /// shard. Forgotten as keys are.
    settles: WordMap<(MerchantId, TxnId), SettleKey>,
    /// Debits waiting for the next `run_batch`, in the order queued.
    queued: Vec<QueuedDebit>,
    /// How many of `queued` each account has (only accounts with some).
    queued_per_slot: WordMap<u32, u32>,
    /// The statement of every account opened with history, by slot; no
    /// other account has one.
    histories: WordMap<u32, History>,
    /// Entries kept over all statements.
    history_entries: usize,
    /// Entries the statements' rings have room for, over all of them
    /// (kept as they grow, so that `stats` is O(1)).
    history_capacity: usize,
    /// Hold expiries, earliest first; an entry whose hold moved its expiry
    /// (increment) or ended is stale and skipped when it comes up.
    timers: BinaryHeap<Reverse<(u64, u32, TxnId)>>,
    now_ms: u64,
    /// `now_ms / DAY_MS`, kept with `now_ms` (a division per debit saved).
    today: u64,
    dedup_window_ms: u64,
    /// `now_ms / dedup_window_ms`, kept with `now_ms` (the dedup-window
    /// generation every new key record carries; a division per keyed
    /// request saved).
    generation: u64,
    /// Generation (now / window) up to which forgetting has been done.
    swept_generation: u64,
    /// The rule of the key sweep under way, if any (`forget_before`).
    forgetting: Forgetting,
    policy: Option<Box<dyn RiskPolicy>>,
    ledger: Ledger,
    /// Requests that every shard sees (`advance_clock`) applied here so
    /// far: the engine numbers them 1, 2, 3, ... in one order for all
    /// shards, so this is also the number of the last one applied, which
    /// recovery compares across shards to complete a broadcast that a crash
    /// left on some shards only.
    broadcasts: u64,
}

impl Shard {
    /// An empty shard at engine time `now_ms`. `policy: None` is SPEC's rules.
    pub fn new(now_ms: u64, dedup_window_ms: u64, policy: Option<Box<dyn RiskPolicy>>) -> Shard {
        assert!(dedup_window_ms > 0, "the dedup window must be positive");
        Shard {
            // Slot 0 is never an account: key cells use it for "empty".
            accounts: vec![Account {
                id: 0,
                balance: 0,
                held: 0,
                day_total: 0,
                day: 0,
                ext: EXT_NONE,
                currency: Currency::USD,
                frozen: false,
                flags: 0,
            }],
            index: AccountIndex::new(),
            slot_hint: 0,
            exts: Vec::new(),
            keys: KeyTable::new(),
            holds: WordMap::default(),
            refunded: WordMap::default(),
            capture_amounts: WordMap::default(),
            merchants: Vec::new(),
            merchant_index: MerchantIndex::default(),
            cleared_to: WordMap::default(),
            settles: WordMap::default(),
            queued: Vec::new(),
            queued_per_slot: WordMap::default(),
            histories: WordMap::default(),
            history_entries: 0,
            history_capacity: 0,
            timers: BinaryHeap::new(),
            now_ms,
            today: now_ms / DAY_MS,
            dedup_window_ms,
            generation: now_ms / dedup_window_ms,
            swept_generation: now_ms / dedup_window_ms,
            forgetting: Forgetting::default(),
            policy,
            ledger: Ledger::default(),
            broadcasts: 0,
        }
    }

    /// Engine time, ms, as of the last `advance_to` (or creation).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// How many requests that every shard sees this shard has applied
    /// (see the field).
    pub fn broadcasts(&self) -> u64 {
        self.broadcasts
    }

    /// Takes broadcasts up to `n` as applied, for a data directory whose
    /// logs predate their numbering (nothing to complete them from).
    pub(crate) fn assume_broadcasts(&mut self, n: u64) {
        debug_assert!(n >= self.broadcasts);
        self.broadcasts = n;
    }

    /// Counts and memory of the shard's tables (the engine fills in the
    /// rest: its work, its queue, its log).
    pub fn stats(&self) -> ShardStats {
        let index_bytes = self.index.bytes();
        ShardStats {
            accounts: self.accounts.len() - 1,
            keys: self.keys.len(),
            holds: self.holds.len(),
            timers: self.timers.len(),
            account_bytes: self.accounts.capacity() * std::mem::size_of::<Account>() + index_bytes,
            key_bytes: self.keys.bytes(),
            merchants: self.merchants.len(),
            merchant_bytes: self.merchants.capacity() * std::mem::size_of::<Merchant>()
                + self.merchant_index.bytes(),
            queued_debits: self.queued.len(),
            queued_bytes: self.queued.capacity() * std::mem::size_of::<QueuedDebit>()
                // A std map's entry and its control byte.
                + self.queued_per_slot.capacity() * (std::mem::size_of::<(u32, u32)>() + 1),
            history_accounts: self.histories.len(),
            history_entries: self.history_entries,
            history_bytes: self.history_bytes(),
            ..ShardStats::default()
        }
    }

    /// Reserves room for `accounts` more accounts and `keys` more keys, so
    /// that a known load does not pay for growth on the hot path.
    pub fn reserve(&mut self, accounts: usize, keys: usize) {
        self.accounts.reserve(accounts);
        self.index.reserve(accounts);
        if keys > self.keys.len() {
            let mut bigger = KeyTable::sized_for(self.keys.len() + keys);
            let old = std::mem::replace(&mut self.keys, KeyTable::new());
            old.records().for_each(|record| bigger.insert(*record));
            self.keys = bigger;
        }
    }

    /// The capacity of key table the next growth will need, once it is
    /// near; see [`KeySpare`]. Memory only: no effect on any outcome.
    pub(crate) fn key_spare_wanted(&self) -> Option<usize> {
        self.keys.spare_wanted()
    }

    /// Whether `more` new keys would make the key table grow.
    pub(crate) fn keys_would_grow(&self, more: usize) -> bool {
        self.keys.would_grow(more)
    }

    pub(crate) fn give_key_spare(&mut self, spare: KeySpare) {
        self.keys.give_spare(spare);
    }

    /// Moves engine time to `now_ms` (never backwards): expires the holds
    /// that are due and forgets what the dedup window lets go.
    pub fn advance_to(&mut self, now_ms: u64) {
        if now_ms <= self.now_ms {
            return;
        }
        self.now_ms = now_ms;
        self.today = now_ms / DAY_MS;
        self.generation = now_ms / self.dedup_window_ms;
        self.expire_due_holds();
        let generation = self.generation;
        if generation != self.swept_generation {
            self.forget_before(generation);
        }
    }

    /// Applies `items` in order, calling `each` with every outcome, and
    /// prefetches ahead of the apply: the account index cells of the
    /// requests `2 * PREFETCH_AHEAD` further on, and the account records and
    /// key cells of those `PREFETCH_AHEAD` further on (their index cells in
    /// cache by then). A debit's three dependent cache misses (index,
    /// account, key) then overlap with other requests' work instead of
    /// following one another. Same outcomes as `apply` one by one.
    #[inline]
    pub fn apply_each<T>(
        &mut self,
        items: &[T],
        request_of: impl Fn(&T) -> &Request,
        mut each: impl FnMut(&T, Outcome),
    ) {
        const FAR: usize = 2 * PREFETCH_AHEAD;
        // What stage one read of the requests between stage one and the
        // apply, so stage two neither matches a request nor hashes again.
        let mut ahead = [Ahead::NONE; FAR];
        for (i, item) in items.iter().take(FAR).enumerate() {
            ahead[i] = self.prefetch_index(request_of(item));
        }
        // Stage two's index lookups, kept for the apply (confirmed there).
        let mut hints = [0u32; PREFETCH_AHEAD];
        for (i, a) in ahead
            .iter()
            .take(items.len().min(PREFETCH_AHEAD))
            .enumerate()
        {
            hints[i] = self.prefetch_records(a);
        }
        for (i, item) in items.iter().enumerate() {
            if let Some(later) = items.get(i + FAR) {
                ahead[i % FAR] = self.prefetch_index(request_of(later));
            }
            self.slot_hint = hints[i % PREFETCH_AHEAD];
            let outcome = self.apply(request_of(item));
            if i + PREFETCH_AHEAD < items.len() {
                hints[i % PREFETCH_AHEAD] =
                    self.prefetch_records(&ahead[(i + PREFETCH_AHEAD) % FAR]);
            }
            each(item, outcome);
        }
        self.slot_hint = 0;
    }

    /// Prefetch stage one: the index cell where the account's lookup starts.
    #[inline]
    fn prefetch_index(&self, request: &Request) -> Ahead {
        let ahead = Ahead::of(request);
        if ahead.has_account {
            prefetch(self.index.home_by_hash(ahead.hash));
        }
        ahead
    }

    /// Prefetch stage two: the account record and the key's table cells,
    /// found through the (by now cached) index without reading the record.
    /// Returns the slot found (unconfirmed), or 0.
    #[inline]
    fn prefetch_records(&self, ahead: &Ahead) -> u32 {
        if !ahead.has_account {
            return 0;
        }
        let Some(slot) = self.index.candidate_by_hash(ahead.hash) else {
            return 0;
        };
        if let Some(record) = self.accounts.get(slot as usize) {
            // A record may straddle two cache lines: its first and last
            // fields (repr(C)) are on either side.
            prefetch(&record.id);
            prefetch(&record.frozen);
        }
        if let Some(id) = ahead.id {
            self.keys.prefetch(slot, id);
        }
        slot
    }

    /// Applies one request at the current engine time.
    pub fn apply(&mut self, request: &Request) -> Outcome {
        if cfg!(debug_assertions) {
            let outcome = self.dispatch(request);
            if let Some(account) = request.account() {
                self.debug_check_account(account);
            }
            return outcome;
        }
        self.dispatch(request)
    }

    /// `apply`'s dispatch of a request to its rule. Its `match` is the
    /// value returned, so that every arm builds its outcome where the
    /// caller wants it (a local that `apply` returned instead made them
    /// all build it on the stack, and copy it: +3% on a plain debit).
    #[inline(always)]
    fn dispatch(&mut self, request: &Request) -> Outcome {
        match *request {
            Request::OpenAccount {
                account,
                currency,
                overdraft,
                history,
            } => Outcome::new(self.open_account(account, currency, overdraft, history)),
            Request::Deposit {
                id,
                account,
                amount,
            } => self.keyed(
                account,
                id,
                Op::Deposit,
                Fields::Amount(amount),
                None,
                |s, slot| s.deposit(slot, amount),
            ),
            Request::Debit {
                id,
                account,
                amount,
                merchant: None,
            } => self.keyed(
                account,
                id,
                Op::Debit,
                Fields::Amount(amount),
                None,
                |s, slot| s.debit(slot, id, amount, None),
            ),
            Request::Debit {
                id,
                account,
                amount,
                merchant: Some(merchant),
            } => {
                // A debit for a merchant keeps its amount and its
                // merchant's index in its key (`Payload::Cleared`), which
                // is all a replay compares and a refund needs.
                match self.merchant_slot(merchant) {
                    Some(index) => {
                        let fields = Fields::Cleared {
                            amount,
                            merchant,
                            index,
                        };
                        self.keyed(
                            account,
                            id,
                            Op::Debit,
                            fields,
                            Some(merchant),
                            |s, slot| match s.merchant_allows_at(slot, Some(index)) {
                                Code::Ok => s.debit(slot, id, amount, Some(index)),
                                refused => (refused, 0),
                            },
                        )
                    }
                    None => self.unknown_merchant(account, id, Op::Debit, amount, merchant),
                }
            }
            Request::Authorize {
                id,
                account,
                amount,
                expires_in_ms,
                merchant,
            } => {
                let expires_in_ms = expires_in_ms.unwrap_or(HOLD_EXPIRES_IN_MS_DEFAULT);
                // Without a merchant, the fingerprint of before merchants
                // existed (keys in old logs and snapshots still compare).
                let fp = match merchant {
                    None => fingerprint(Op::Authorize, &[amount.fingerprint(), expires_in_ms]),
                    Some(m) => {
                        fingerprint(Op::Authorize, &[amount.fingerprint(), expires_in_ms, 1, m])
                    }
                };
                self.keyed(
                    account,
                    id,
                    Op::Authorize,
                    Fields::Hashed(fp),
                    merchant,
                    |s, slot| match s.merchant_allows(slot, merchant) {
                        Code::Ok => s.authorize(slot, id, amount, expires_in_ms, merchant),
                        refused => (refused, 0),
                    },
                )
            }
            Request::Increment {
                id,
                account,
                auth,
                amount,
                expires_in_ms,
            } => {
                let expires = expires_in_ms.unwrap_or(u64::MAX);
                let fp = fingerprint(Op::Increment, &[auth, amount.fingerprint(), expires]);
                self.keyed(
                    account,
                    id,
                    Op::Increment,
                    Fields::Hashed(fp),
                    None,
                    |s, slot| s.increment(slot, auth, amount, expires_in_ms),
                )
            }
            Request::Capture {
                id,
                account,
                auth,
                amount,
                is_final,
            } => {
                let fp = fingerprint(
                    Op::Capture,
                    &[auth, optional_fingerprint(amount), u64::from(is_final)],
                );
                self.keyed(
                    account,
                    id,
                    Op::Capture,
                    Fields::Hashed(fp),
                    None,
                    |s, slot| s.capture(slot, id, auth, amount, is_final),
                )
            }
            Request::Void { id, account, auth } => {
                let fp = fingerprint(Op::Void, &[auth]);
                self.keyed(
                    account,
                    id,
                    Op::Void,
                    Fields::Hashed(fp),
                    None,
                    |s, slot| s.void(slot, auth),
                )
            }
            Request::Refund {
                id,
                account,
                of,
                amount,
            } => {
                let fp = fingerprint(Op::Refund, &[of, optional_fingerprint(amount)]);
                self.keyed(
                    account,
                    id,
                    Op::Refund,
                    Fields::Hashed(fp),
                    None,
                    |s, slot| s.refund(slot, of, amount),
                )
            }
            Request::SetLimits {
                account,
                ref limits,
            } => match self.slot_of(account) {
                Some(slot) if self.is_closed(slot) => Outcome::new(Code::AccountClosed),
                Some(slot) => Outcome::new(self.set_limits(slot, limits)),
                None => Outcome::new(Code::UnknownAccount),
            },
            Request::Freeze { account } => self.set_frozen(account, true),
            Request::Unfreeze { account } => self.set_frozen(account, false),
            Request::Balance { account } => match self.slot_of(account) {
                Some(slot) => {
                    let a = &self.accounts[slot as usize];
                    Outcome {
                        code: Code::Ok,
                        replayed: false,
                        info: Info::Balance {
                            currency: a.currency,
                            balance: a.balance,
                            held: a.held,
                        },
                    }
                }
                None => Outcome::new(Code::UnknownAccount),
            },
            Request::Status { account, id } => match self.slot_of(account) {
                Some(slot) => match self.keys.get(slot, id) {
                    Some(record) => Outcome {
                        code: Code::Ok,
                        replayed: false,
                        info: Info::Status {
                            op: Op::from_u8(record.op()),
                            status: Code::from_u8(record.code),
                        },
                    },
                    None => Outcome::new(Code::UnknownId),
                },
                None => Outcome::new(Code::UnknownAccount),
            },
            Request::AdvanceClock { ms } => {
                self.broadcasts += 1;
                self.advance_to(self.now_ms.saturating_add(ms));
                Outcome::new(Code::Ok)
            }
            Request::OpenMerchant {
                merchant,
                currency,
                fee_bps,
            } => {
                self.broadcasts += 1;
                Outcome::new(self.open_merchant(merchant, currency, fee_bps))
            }
            Request::Merchant { merchant } => self.merchant_figures(merchant),
            Request::QueueDebit {
                id,
                account,
                amount,
                merchant,
            } => {
                let fields = match merchant {
                    None => Fields::Amount(amount),
                    Some(m) => Fields::Cleared {
                        amount,
                        merchant: m,
                        index: self.merchant_slot(m).unwrap_or(NO_MERCHANT),
                    },
                };
                let mut outcome = self.keyed(
                    account,
                    id,
                    Op::QueueDebit,
                    fields,
                    merchant,
                    |s, slot| match s.merchant_allows(slot, merchant) {
                        Code::Ok => s.queue_debit(slot, id, amount, merchant),
                        refused => (refused, 0),
                    },
                );
                if outcome.replayed && self.queued_then_batched(account, id) {
                    // Its own answer was `queued`, whatever its batch gave.
                    outcome.code = Code::Queued;
                }
                outcome
            }
            Request::RunBatch => {
                self.broadcasts += 1;
                self.run_batch(None)
            }
            Request::Settle { id, merchant } => self.settle_cut(merchant, id),
            Request::Internal(Internal(ref step)) => {
                self.broadcasts += 1;
                match **step {
                    Step::RunBatchAt { at_ms } => self.run_batch(Some(at_ms)),
                    Step::SettleClose {
                        merchant,
                        id,
                        code,
                        figures,
                    } => self.settle_close(merchant, id, code, figures),
                }
            }
            Request::CloseAccount { account } => Outcome::new(self.close_account(account)),
            Request::History {
                account,
                limit,
                before,
            } => self.history(account, limit, before),
        }
    }

    #[inline]
    fn slot_of(&self, account: AccountId) -> Option<u32> {
        // The hint is a guess from prefetching: used only once confirmed.
        let hint = self.slot_hint as usize;
        if hint != 0 && self.accounts.get(hint).is_some_and(|a| a.id == account) {
            return Some(self.slot_hint);
        }
        self.index
            .get(account, |slot| self.accounts[slot as usize].id == account)
    }
}

/// What the prefetch stages need of a request, read from it once: the index
/// hash of its account and the id it is keyed by.
#[derive(Clone, Copy)]
struct Ahead {
    has_account: bool,
    hash: u32,
    id: Option<TxnId>,
}

impl Ahead {
    const NONE: Ahead = Ahead {
        has_account: false,
        hash: 0,
        id: None,
    };

    #[inline]
    fn of(request: &Request) -> Ahead {
        let (account, id) = match *request {
            Request::Deposit { id, account, .. }
            | Request::Debit { id, account, .. }
            | Request::Authorize { id, account, .. }
            | Request::Increment { id, account, .. }
            | Request::Capture { id, account, .. }
            | Request::Void { id, account, .. }
            | Request::Refund { id, account, .. }
            | Request::QueueDebit { id, account, .. } => (account, Some(id)),
            _ => match request.account() {
                Some(account) => (account, None),
                None => return Ahead::NONE,
            },
        };
        Ahead {
            has_account: true,
            hash: crate::index::hash32(account),
            id,
        }
    }
}
