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
//! Invariants (checked by [`Shard::check_invariants`] in debug builds):
//! - every account: `available = balance - held >= -overdraft`, `held >= 0`;
//! - every account: `held` = sum of what is left of its active holds;
//! - money: sum of balances = ok deposits - ok debits - ok captures + ok refunds;
//! - refunds of an ok debit or capture add up to at most what it moved, which
//!   its key record holds (a debit's amount) or `capture_amounts` beside it.

use crate::hash::WordMap;
use crate::hugemem::prefetch;
use crate::index::AccountIndex;
use crate::limits::{DAY_MS, HOLD_EXPIRES_IN_MS_DEFAULT, MINOR_UNITS_MAX};
use crate::money::{AmountArg, Currency};
use crate::outcome::{Code, Info, Outcome};
use crate::request::{AccountId, LimitsArg, Op, Request, TxnId};
use crate::risk::{Limits, RiskContext, RiskDecision, RiskPolicy, SpecRules, Velocity};
use crate::table::{KeyRecord, KeySpare, KeyTable, Payload, SWEEP_CELLS_PER_STEP};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// How many requests ahead of the one being applied [`Shard::apply_each`]
/// prefetches account records and key cells (and twice as far, index
/// cells). Enough to cover a DRAM miss at ~150 ns of work per request.
pub const PREFETCH_AHEAD: usize = 8;

/// A plain account: 48 bytes. What few accounts need (an overdraft, limits,
/// a velocity ring) lives in an [`AccountExt`] it points to.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Account {
    /// Its id: the index confirms a lookup against it.
    id: AccountId,
    balance: i64,
    held: i64,
    /// Minor units debits, authorizes, increments and reviews took on
    /// `day`; saturates at `MINOR_UNITS_MAX` (beyond any limit anyway).
    day_total: i64,
    /// UTC day of engine time that `day_total` counts.
    day: u64,
    /// `EXT_NONE` or an index into `Shard::exts`.
    ext: u32,
    currency: Currency,
    frozen: bool,
}

const _: () = assert!(std::mem::size_of::<Account>() == 48);

const EXT_NONE: u32 = u32::MAX;

/// The rare parts of an account.
#[derive(Clone, Debug, Default)]
struct AccountExt {
    overdraft: i64,
    limits: Option<Limits>,
    /// Times of ok small debits since the last `set_limits`, newest last,
    /// at most `velocity.max` of them; empty without a velocity rule.
    recent_small_debits: VecDeque<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum HoldState {
    Active,
    /// Ended by engine time reaching its expiry.
    Expired,
    /// Ended by a final capture, a capture of all that was left, or a void.
    Closed,
}

#[derive(Clone, Copy, Debug)]
struct Hold {
    /// Authorized so far, increments included.
    amount: i64,
    captured: i64,
    expires_at_ms: u64,
    state: HoldState,
    /// Dedup-window generation in which the hold ended (while not active).
    ended_generation: u64,
}

impl Hold {
    fn left(&self) -> i64 {
        self.amount - self.captured
    }
}

/// Money moved by ok requests since the shard started, for the
/// conservation invariant.
#[derive(Clone, Copy, Debug, Default)]
struct Ledger {
    deposits: i128,
    debits: i128,
    captures: i128,
    refunds: i128,
}

/// Counts a shard reports (for loadgen and PERF.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Accounts open on the shard.
    pub accounts: usize,
    /// Keys remembered (requests whose outcome a replay would return).
    pub keys: usize,
    /// Holds remembered: active ones, and ended ones not yet forgotten.
    pub holds: usize,
    /// Expiry timers queued, stale ones (moved or ended holds) included.
    pub timers: usize,
    /// Bytes of the account array and index, key table and hold map.
    pub account_bytes: usize,
    /// Bytes of the key table.
    pub key_bytes: usize,
    /// Bytes of log written since the engine started, and flushes made.
    pub log_bytes: u64,
    /// Flushes (fdatasync) made since the engine started.
    pub log_syncs: u64,
}

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
            }],
            index: AccountIndex::new(),
            slot_hint: 0,
            exts: Vec::new(),
            keys: KeyTable::new(),
            holds: WordMap::default(),
            refunded: WordMap::default(),
            capture_amounts: WordMap::default(),
            timers: BinaryHeap::new(),
            now_ms,
            today: now_ms / DAY_MS,
            dedup_window_ms,
            generation: now_ms / dedup_window_ms,
            swept_generation: now_ms / dedup_window_ms,
            forgetting: Forgetting::default(),
            policy,
            ledger: Ledger::default(),
        }
    }

    /// Engine time, ms, as of the last `advance_to` (or creation).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Counts and memory of the shard's tables (the log figures are 0 here;
    /// the engine fills them in).
    pub fn stats(&self) -> ShardStats {
        let index_bytes = self.index.bytes();
        ShardStats {
            accounts: self.accounts.len() - 1,
            keys: self.keys.len(),
            holds: self.holds.len(),
            timers: self.timers.len(),
            account_bytes: self.accounts.capacity() * std::mem::size_of::<Account>() + index_bytes,
            key_bytes: self.keys.bytes(),
            log_bytes: 0,
            log_syncs: 0,
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
        let outcome = match *request {
            Request::OpenAccount {
                account,
                currency,
                overdraft,
            } => Outcome::new(self.open_account(account, currency, overdraft)),
            Request::Deposit {
                id,
                account,
                amount,
            } => self.keyed(
                account,
                id,
                Op::Deposit,
                Fields::Amount(amount),
                |s, slot| s.deposit(slot, amount),
            ),
            Request::Debit {
                id,
                account,
                amount,
            } => self.keyed(account, id, Op::Debit, Fields::Amount(amount), |s, slot| {
                s.debit(slot, id, amount)
            }),
            Request::Authorize {
                id,
                account,
                amount,
                expires_in_ms,
            } => {
                let expires_in_ms = expires_in_ms.unwrap_or(HOLD_EXPIRES_IN_MS_DEFAULT);
                let fp = fingerprint(Op::Authorize, &[amount.fingerprint(), expires_in_ms]);
                self.keyed(account, id, Op::Authorize, Fields::Hashed(fp), |s, slot| {
                    s.authorize(slot, id, amount, expires_in_ms)
                })
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
                self.keyed(account, id, Op::Increment, Fields::Hashed(fp), |s, slot| {
                    s.increment(slot, auth, amount, expires_in_ms)
                })
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
                self.keyed(account, id, Op::Capture, Fields::Hashed(fp), |s, slot| {
                    s.capture(slot, auth, amount, is_final)
                })
            }
            Request::Void { id, account, auth } => {
                let fp = fingerprint(Op::Void, &[auth]);
                self.keyed(account, id, Op::Void, Fields::Hashed(fp), |s, slot| {
                    s.void(slot, auth)
                })
            }
            Request::Refund {
                id,
                account,
                of,
                amount,
            } => {
                let fp = fingerprint(Op::Refund, &[of, optional_fingerprint(amount)]);
                self.keyed(account, id, Op::Refund, Fields::Hashed(fp), |s, slot| {
                    s.refund(slot, of, amount)
                })
            }
            Request::SetLimits {
                account,
                ref limits,
            } => match self.slot_of(account) {
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
                self.advance_to(self.now_ms.saturating_add(ms));
                Outcome::new(Code::Ok)
            }
        };
        if let Some(account) = request.account() {
            self.debug_check_account(account);
        }
        outcome
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

    /// The common frame of every keyed request: unknown account, replay or
    /// conflict, else `body` decides and the key is remembered with its
    /// outcome (rejections included), and with what it moved if a refund
    /// may need it.
    #[inline]
    fn keyed(
        &mut self,
        account: AccountId,
        id: TxnId,
        op: Op,
        fields: Fields,
        body: impl FnOnce(&mut Shard, u32) -> (Code, i64),
    ) -> Outcome {
        let Some(slot) = self.slot_of(account) else {
            return Outcome::new(Code::UnknownAccount);
        };
        // Fixed for the account's life, as the slot is for the key's.
        let exponent = self.accounts[slot as usize].currency.exponent();
        // One probe finds the key or the cell it goes in; `body` inserts
        // no key, so that cell stays free for it (the sweep steps before).
        self.sweep_keys_some(SWEEP_CELLS_PER_STEP);
        self.keys.reserve_one();
        let vacant = match self.keys.probe(slot, id) {
            Ok(found) => {
                let r = self.keys.record(found);
                // Compared the way the record was made: by amount if it
                // holds one (a request without that exact amount differs),
                // else by fingerprint.
                let same = r.op() == op as u8
                    && match r.payload() {
                        Payload::Minor(minor) => fields.minor(exponent) == Some(minor),
                        Payload::Fingerprint(fp) => fields.fingerprint(op) == fp,
                    };
                return if same {
                    Outcome::replay(Code::from_u8(r.code))
                } else {
                    Outcome::new(Code::IdConflict)
                };
            }
            Err(vacant) => vacant,
        };
        let payload = fields.payload(op, exponent);
        let (code, moved) = body(self, slot);
        debug_assert!(moved == 0 || code == Code::Ok);
        match payload {
            // An ok debit moved the amount it names: the record keeps what
            // a refund of it may return.
            Payload::Minor(minor) => debug_assert!(moved == 0 || moved == minor),
            // Only a capture moves money its fields may not name (all that
            // is left of a hold): kept beside the key.
            Payload::Fingerprint(_) => {
                if moved != 0 {
                    debug_assert_eq!(op, Op::Capture);
                    let previous = self.capture_amounts.insert((slot, id), moved);
                    debug_assert!(previous.is_none(), "an amount outlives its key");
                }
            }
        }
        self.keys.fill(
            vacant,
            KeyRecord::new(
                id,
                slot,
                op as u8,
                code as u8,
                self.generation() as u16,
                payload,
            ),
        );
        Outcome::new(code)
    }

    fn generation(&self) -> u64 {
        debug_assert_eq!(self.generation, self.now_ms / self.dedup_window_ms);
        self.generation
    }

    fn open_account(
        &mut self,
        account: AccountId,
        currency: Option<Currency>,
        overdraft: Option<AmountArg>,
    ) -> Code {
        if self.slot_of(account).is_some() {
            return Code::AccountExists;
        }
        let Some(currency) = currency else {
            return Code::UnsupportedCurrency;
        };
        let overdraft = match overdraft {
            None => 0,
            Some(arg) => match arg.to_minor(currency.exponent()) {
                Some(minor) => minor,
                None => return Code::InvalidAmount,
            },
        };
        let slot = u32::try_from(self.accounts.len()).expect("fewer than 2^32 accounts per shard");
        assert!(slot != u32::MAX, "account slots exhausted");
        debug_assert!(slot != crate::table::SLOT_EMPTY);
        let mut record = Account {
            id: account,
            balance: 0,
            held: 0,
            day_total: 0,
            day: self.now_ms / DAY_MS,
            ext: EXT_NONE,
            currency,
            frozen: false,
        };
        if overdraft > 0 {
            record.ext = self.new_ext(overdraft);
        }
        self.accounts.push(record);
        self.index.insert(account, slot);
        Code::Ok
    }

    fn new_ext(&mut self, overdraft: i64) -> u32 {
        self.exts.push(AccountExt {
            overdraft,
            ..AccountExt::default()
        });
        u32::try_from(self.exts.len() - 1).expect("fewer than 2^32 extended accounts")
    }

    fn set_frozen(&mut self, account: AccountId, frozen: bool) -> Outcome {
        match self.slot_of(account) {
            Some(slot) => {
                self.accounts[slot as usize].frozen = frozen;
                Outcome::new(Code::Ok)
            }
            None => Outcome::new(Code::UnknownAccount),
        }
    }

    fn overdraft(&self, a: &Account) -> i64 {
        if a.ext == EXT_NONE {
            0
        } else {
            self.exts[a.ext as usize].overdraft
        }
    }

    fn limits(&self, a: &Account) -> Option<&Limits> {
        if a.ext == EXT_NONE {
            None
        } else {
            self.exts[a.ext as usize].limits.as_ref()
        }
    }

    /// Whether `amount` more can leave `available` without passing the floor.
    fn funds_allow(&self, a: &Account, amount: i64) -> bool {
        let available = i128::from(a.balance) - i128::from(a.held);
        available - i128::from(amount) >= -i128::from(self.overdraft(a))
    }

    fn day_total_now(&self, a: &Account) -> i64 {
        if a.day == self.today {
            a.day_total
        } else {
            0
        }
    }

    /// `limit_exceeded` checks for a debit, authorize (`hold_total` is the
    /// amount) or increment (`hold_total` is the hold's new total).
    fn limits_allow(&self, a: &Account, amount: i64, hold_total: i64) -> bool {
        let Some(limits) = self.limits(a) else {
            return true;
        };
        if limits.per_txn.is_some_and(|per_txn| hold_total > per_txn) {
            return false;
        }
        let today = i128::from(self.day_total_now(a)) + i128::from(amount);
        limits.daily.is_none_or(|daily| today <= i128::from(daily))
    }

    fn count_today(&mut self, slot: u32, amount: i64) {
        let day = self.today;
        let a = &mut self.accounts[slot as usize];
        if a.day != day {
            a.day = day;
            a.day_total = 0;
        }
        a.day_total = a.day_total.saturating_add(amount);
    }

    fn deposit(&mut self, slot: u32, amount: AmountArg) -> (Code, i64) {
        let a = &mut self.accounts[slot as usize];
        let Some(minor) = amount.to_positive_minor(a.currency.exponent()) else {
            return (Code::InvalidAmount, 0);
        };
        let Some(balance) = a.balance.checked_add(minor) else {
            return (Code::InvalidAmount, 0);
        };
        a.balance = balance;
        self.ledger.deposits += i128::from(minor);
        (Code::Ok, 0)
    }

    fn debit(&mut self, slot: u32, id: TxnId, amount: AmountArg) -> (Code, i64) {
        let a = self.accounts[slot as usize];
        let Some(minor) = amount.to_positive_minor(a.currency.exponent()) else {
            return (Code::InvalidAmount, 0);
        };
        if a.frozen {
            return (Code::AccountFrozen, 0);
        }
        if a.ext == EXT_NONE && self.policy.is_none() {
            // The plain path, spelled out so it inlines: no overdraft, no
            // limits, no rules, no velocity ring; only the day's sum, which
            // SPEC keeps for every account (a bound set at noon counts the
            // morning). `debit_now` is the same for the general case.
            if i128::from(a.balance) - i128::from(a.held) < i128::from(minor) {
                return (Code::InsufficientFunds, 0);
            }
            let today = self.today;
            let account = &mut self.accounts[slot as usize];
            account.balance -= minor;
            if account.day != today {
                account.day = today;
                account.day_total = 0;
            }
            account.day_total = account.day_total.saturating_add(minor);
            self.ledger.debits += i128::from(minor);
            return (Code::Ok, minor);
        }
        if !self.limits_allow(&a, minor, minor) {
            return (Code::LimitExceeded, 0);
        }
        match self.route(slot, minor) {
            RiskDecision::Approve => self.debit_now(slot, minor),
            RiskDecision::Reject => (Code::RiskRejected, 0),
            RiskDecision::Review => {
                let code = self.place_hold(slot, id, minor, HOLD_EXPIRES_IN_MS_DEFAULT);
                if code == Code::Ok {
                    (Code::HeldForReview, 0)
                } else {
                    (code, 0)
                }
            }
        }
    }

    fn route(&mut self, slot: u32, minor: i64) -> RiskDecision {
        let a = self.accounts[slot as usize];
        let ext = (a.ext != EXT_NONE).then(|| &self.exts[a.ext as usize]);
        let limits = ext.and_then(|e| e.limits.as_ref());
        let context = RiskContext {
            account: self.accounts[slot as usize].id,
            currency: a.currency,
            amount: minor,
            now_ms: self.now_ms,
            daily_total: self.day_total_now(&a),
            limits,
            recent_small_debits: ext
                .filter(|e| e.limits.is_some_and(|l| l.velocity.is_some()))
                .map(|e| &e.recent_small_debits),
        };
        match &mut self.policy {
            None => SpecRules::decide(&context),
            Some(policy) => policy.assess(&context),
        }
    }

    fn debit_now(&mut self, slot: u32, minor: i64) -> (Code, i64) {
        let a = self.accounts[slot as usize];
        if !self.funds_allow(&a, minor) {
            return (Code::InsufficientFunds, 0);
        }
        self.accounts[slot as usize].balance = a.balance - minor;
        self.ledger.debits += i128::from(minor);
        self.count_today(slot, minor);
        if a.ext != EXT_NONE {
            let now_ms = self.now_ms;
            let ext = &mut self.exts[a.ext as usize];
            if let Some(Velocity { max, below, .. }) = ext.limits.and_then(|l| l.velocity) {
                if minor <= below {
                    let ring = &mut ext.recent_small_debits;
                    if ring.len() == max as usize {
                        ring.pop_front();
                    }
                    ring.push_back(now_ms);
                }
            }
        }
        (Code::Ok, minor)
    }

    fn authorize(
        &mut self,
        slot: u32,
        id: TxnId,
        amount: AmountArg,
        expires_in_ms: u64,
    ) -> (Code, i64) {
        let a = self.accounts[slot as usize];
        let Some(minor) = amount.to_positive_minor(a.currency.exponent()) else {
            return (Code::InvalidAmount, 0);
        };
        if a.frozen {
            return (Code::AccountFrozen, 0);
        }
        if !self.limits_allow(&a, minor, minor) {
            return (Code::LimitExceeded, 0);
        }
        (self.place_hold(slot, id, minor, expires_in_ms), 0)
    }

    /// A new active hold `id` of `minor`, funds and bounds permitting.
    fn place_hold(&mut self, slot: u32, id: TxnId, minor: i64, expires_in_ms: u64) -> Code {
        let a = self.accounts[slot as usize];
        if !self.funds_allow(&a, minor) {
            return Code::InsufficientFunds;
        }
        let Some(held) = a.held.checked_add(minor) else {
            return Code::InvalidAmount;
        };
        self.accounts[slot as usize].held = held;
        self.count_today(slot, minor);
        let expires_at_ms = self.now_ms.saturating_add(expires_in_ms);
        let previous = self.holds.insert(
            (slot, id),
            Hold {
                amount: minor,
                captured: 0,
                expires_at_ms,
                state: HoldState::Active,
                ended_generation: 0,
            },
        );
        debug_assert!(previous.is_none(), "a hold outlives the key that made it");
        self.timers.push(Reverse((expires_at_ms, slot, id)));
        Code::Ok
    }

    /// The active hold `auth` on `slot`, or the rejection that names why not.
    fn active_hold(&mut self, slot: u32, auth: TxnId) -> Result<Hold, Code> {
        let now_ms = self.now_ms;
        let Some(hold) = self.holds.get(&(slot, auth)).copied() else {
            return Err(Code::AuthNotFound);
        };
        if hold.state == HoldState::Active && hold.expires_at_ms <= now_ms {
            // Time reached the expiry: the hold ended then, whether or not
            // its timer has come up yet.
            self.end_hold(slot, auth, HoldState::Expired);
            return Err(Code::AuthExpired);
        }
        match hold.state {
            HoldState::Active => Ok(hold),
            HoldState::Expired => Err(Code::AuthExpired),
            HoldState::Closed => Err(Code::AuthNotActive),
        }
    }

    /// Ends an active hold, releasing what is left of it.
    fn end_hold(&mut self, slot: u32, auth: TxnId, state: HoldState) {
        debug_assert!(state != HoldState::Active);
        let generation = self.generation();
        let hold = self
            .holds
            .get_mut(&(slot, auth))
            .expect("ending a hold that exists");
        debug_assert_eq!(hold.state, HoldState::Active);
        let left = hold.left();
        hold.state = state;
        hold.ended_generation = generation;
        let a = &mut self.accounts[slot as usize];
        a.held -= left;
        debug_assert!(a.held >= 0);
    }

    fn capture(
        &mut self,
        slot: u32,
        auth: TxnId,
        amount: Option<AmountArg>,
        is_final: bool,
    ) -> (Code, i64) {
        let hold = match self.active_hold(slot, auth) {
            Ok(hold) => hold,
            Err(code) => return (code, 0),
        };
        let left = hold.left();
        debug_assert!(left > 0, "an active hold has something left");
        let minor = match amount {
            None => left,
            Some(arg) => {
                let exponent = self.accounts[slot as usize].currency.exponent();
                match arg.to_positive_minor(exponent) {
                    Some(minor) => minor,
                    None => return (Code::InvalidAmount, 0),
                }
            }
        };
        if minor > left {
            return (Code::ExceedsAuthorized, 0);
        }
        // The captured part leaves `held` and `balance` together; a final
        // capture (or one that takes all that is left) then ends the hold,
        // which releases the rest.
        let a = &mut self.accounts[slot as usize];
        a.balance -= minor;
        a.held -= minor;
        self.ledger.captures += i128::from(minor);
        self.holds.get_mut(&(slot, auth)).expect("active").captured += minor;
        if is_final || minor == left {
            self.end_hold(slot, auth, HoldState::Closed);
        }
        (Code::Ok, minor)
    }

    fn void(&mut self, slot: u32, auth: TxnId) -> (Code, i64) {
        if let Err(code) = self.active_hold(slot, auth) {
            return (code, 0);
        }
        self.end_hold(slot, auth, HoldState::Closed);
        (Code::Ok, 0)
    }

    fn increment(
        &mut self,
        slot: u32,
        auth: TxnId,
        amount: AmountArg,
        expires_in_ms: Option<u64>,
    ) -> (Code, i64) {
        let hold = match self.active_hold(slot, auth) {
            Ok(hold) => hold,
            Err(code) => return (code, 0),
        };
        let a = self.accounts[slot as usize];
        let Some(minor) = amount.to_positive_minor(a.currency.exponent()) else {
            return (Code::InvalidAmount, 0);
        };
        if a.frozen {
            return (Code::AccountFrozen, 0);
        }
        if hold.captured > 0 {
            return (Code::CaptureStarted, 0);
        }
        let total = i128::from(hold.amount) + i128::from(minor);
        let total_capped = i64::try_from(total).unwrap_or(MINOR_UNITS_MAX);
        if !self.limits_allow(&a, minor, total_capped) {
            return (Code::LimitExceeded, 0);
        }
        if !self.funds_allow(&a, minor) {
            return (Code::InsufficientFunds, 0);
        }
        let (Ok(total), Some(held)) = (i64::try_from(total), a.held.checked_add(minor)) else {
            return (Code::InvalidAmount, 0);
        };
        self.accounts[slot as usize].held = held;
        self.count_today(slot, minor);
        let now_ms = self.now_ms;
        let hold = self.holds.get_mut(&(slot, auth)).expect("active");
        hold.amount = total;
        if let Some(expires_in_ms) = expires_in_ms {
            hold.expires_at_ms = now_ms.saturating_add(expires_in_ms);
            self.timers.push(Reverse((hold.expires_at_ms, slot, auth)));
        }
        (Code::Ok, 0)
    }

    fn refund(&mut self, slot: u32, of: TxnId, amount: Option<AmountArg>) -> (Code, i64) {
        let original = match self.keys.get(slot, of) {
            Some(r)
                if (r.op() == Op::Debit as u8 || r.op() == Op::Capture as u8)
                    && r.code == Code::Ok as u8 =>
            {
                *r
            }
            _ => return (Code::NotRefundable, 0),
        };
        let moved = self.moved_by(&original);
        debug_assert!(moved.is_some(), "{original:?} names no amount it moved");
        let Some(moved) = moved else {
            return (Code::NotRefundable, 0);
        };
        let refunded = self.refunded.get(&(slot, of)).copied().unwrap_or(0);
        let refundable = moved - refunded;
        debug_assert!(refundable >= 0);
        let minor = match amount {
            None => refundable,
            Some(arg) => {
                let exponent = self.accounts[slot as usize].currency.exponent();
                match arg.to_positive_minor(exponent) {
                    Some(minor) => minor,
                    None => return (Code::InvalidAmount, 0),
                }
            }
        };
        if minor > refundable || refundable == 0 {
            return (Code::ExceedsRefundable, 0);
        }
        let a = &mut self.accounts[slot as usize];
        let Some(balance) = a.balance.checked_add(minor) else {
            return (Code::InvalidAmount, 0);
        };
        a.balance = balance;
        self.ledger.refunds += i128::from(minor);
        self.refunded.insert((slot, of), refunded + minor);
        (Code::Ok, 0)
    }

    /// What the ok debit or capture of `record` moved: the amount its
    /// record holds (a debit's), else the one kept beside it (a capture's).
    /// `None` would be a broken invariant (`check_invariants` looks).
    fn moved_by(&self, record: &KeyRecord) -> Option<i64> {
        debug_assert_eq!(record.code, Code::Ok as u8);
        let moved = match record.payload() {
            Payload::Minor(minor) => Some(minor),
            Payload::Fingerprint(_) => self.capture_amounts.get(&(record.slot, record.id)).copied(),
        };
        moved.filter(|&m| m > 0)
    }

    fn set_limits(&mut self, slot: u32, arg: &LimitsArg) -> Code {
        let exponent = self.accounts[slot as usize].currency.exponent();
        let amount = |arg: Option<AmountArg>| -> Result<Option<i64>, Code> {
            match arg {
                None => Ok(None),
                Some(a) => a
                    .to_positive_minor(exponent)
                    .map(Some)
                    .ok_or(Code::InvalidAmount),
            }
        };
        let limits = (|| {
            Ok::<Limits, Code>(Limits {
                per_txn: amount(arg.per_txn)?,
                daily: amount(arg.daily)?,
                review_above: amount(arg.review_above)?,
                velocity: match arg.velocity {
                    None => None,
                    Some(v) => Some(Velocity {
                        max: v.max,
                        window_ms: v.window_ms,
                        below: amount(Some(v.below))?.expect("given"),
                    }),
                },
            })
        })();
        let limits = match limits {
            Ok(limits) => limits,
            Err(code) => return code,
        };
        debug_assert!(limits
            .velocity
            .is_none_or(|v| v.max >= 1 && v.window_ms >= 1));
        if self.accounts[slot as usize].ext == EXT_NONE {
            self.accounts[slot as usize].ext = self.new_ext(0);
        }
        let ext = &mut self.exts[self.accounts[slot as usize].ext as usize];
        ext.limits = Some(limits);
        ext.recent_small_debits.clear();
        Code::Ok
    }

    fn expire_due_holds(&mut self) {
        while let Some(&Reverse((at_ms, slot, id))) = self.timers.peek() {
            if at_ms > self.now_ms {
                break;
            }
            self.timers.pop();
            let due = self
                .holds
                .get(&(slot, id))
                .is_some_and(|h| h.state == HoldState::Active && h.expires_at_ms == at_ms);
            if due {
                self.end_hold(slot, id, HoldState::Expired);
            }
        }
    }

    /// Forgets keys first processed, and holds ended, two or more
    /// generations before `generation`: each was kept at least one window.
    /// The key that made a hold is kept while the hold is remembered, and
    /// refund progress and a capture's amount go with the key of their
    /// original.
    ///
    /// The key table is swept a few cells per keyed request
    /// (`sweep_keys_some`), not in one pause the size of the table; a
    /// small table is swept at once. A sweep still under way from the last
    /// generation change is finished first.
    fn forget_before(&mut self, generation: u64) {
        self.sweep_keys_some(usize::MAX);
        let jumped = generation - self.swept_generation >= 2;
        self.holds.retain(|_, hold| {
            hold.state == HoldState::Active || generation - hold.ended_generation < 2
        });
        self.forgetting = Forgetting {
            current: generation as u16,
            jumped,
        };
        self.keys.start_sweep();
        if self.keys.small() {
            self.sweep_keys_some(usize::MAX);
        }
        self.swept_generation = generation;
    }

    /// Goes on with the key sweep under way (if any) for up to `cells`
    /// cells, by the rule of the generation change that started it.
    #[inline]
    fn sweep_keys_some(&mut self, cells: usize) {
        if self.keys.sweeping() {
            self.sweep_keys_step(cells);
        }
    }

    /// Out of line: a sweep runs on few requests of a window, and its rule
    /// should not weigh on every keyed request's code.
    #[cold]
    #[inline(never)]
    fn sweep_keys_step(&mut self, cells: usize) {
        let Forgetting { current, jumped } = self.forgetting;
        let holds = &self.holds;
        let refunded = &mut self.refunded;
        let capture_amounts = &mut self.capture_amounts;
        self.keys.sweep_step(cells, |record| {
            // Keys that came after the sweep began are of `current`. Every
            // other record was written at or after the generation before
            // the last sweep's; a jump of two or more generations makes all
            // of them old.
            let old = record.generation != current
                && (jumped || current.wrapping_sub(record.generation) >= 2);
            let key = (record.slot, record.id);
            if !old || holds.contains_key(&key) {
                return false;
            }
            refunded.remove(&key);
            if record.op() == Op::Capture as u8 && record.code == Code::Ok as u8 {
                capture_amounts.remove(&key);
            }
            true
        });
    }

    /// Re-expresses the generations of a shard restored from a snapshot
    /// written under a dedup window of `written_ms` in the window it is
    /// opened with (an operator changed it between runs). Generations are
    /// counts of windows; read in the wrong unit they would make a sweep
    /// forget every key at once (a replay then debits again) or keep them
    /// far too long. Each key and each ended hold gets the new generation
    /// of the *latest* instant its old generation covers, so nothing is
    /// forgotten sooner than one new window after it happened.
    fn rewindow(&mut self, written_ms: u64) {
        let (now, window) = (self.now_ms, self.dedup_window_ms);
        // The snapshot's own current generation, in its unit.
        let written_current = self.swept_generation;
        let convert = |old: u64| -> u64 {
            let latest = old
                .saturating_add(1)
                .saturating_mul(written_ms)
                .saturating_sub(1)
                .min(now);
            latest / window
        };
        self.keys.regenerate(|old16| {
            // Records are at most 2^16 generations old (they are swept at
            // two), but for the keys of holds still remembered.
            let age = u64::from((written_current as u16).wrapping_sub(old16));
            convert(written_current.saturating_sub(age)) as u16
        });
        for hold in self.holds.values_mut() {
            if hold.state != HoldState::Active {
                hold.ended_generation = convert(hold.ended_generation);
            }
        }
        self.generation = now / window;
        self.swept_generation = self.generation;
    }

    fn debug_check_account(&self, account: AccountId) {
        if cfg!(debug_assertions) {
            if let Some(slot) = self.slot_of(account) {
                let a = &self.accounts[slot as usize];
                assert!(a.held >= 0, "account {account}: held {} < 0", a.held);
                assert!(
                    i128::from(a.balance) - i128::from(a.held) >= -i128::from(self.overdraft(a)),
                    "account {account}: available below the overdraft floor"
                );
            }
        }
    }

    /// Checks every invariant of the module header over the whole shard.
    /// O(accounts + holds + capture amounts + refunded originals): tests
    /// call it at quiet moments, the worker after batches in debug builds.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut held_by_slot: WordMap<u32, i128> = WordMap::default();
        for (&(slot, id), hold) in &self.holds {
            if hold.captured < 0 || hold.captured > hold.amount {
                return Err(format!(
                    "hold {id} on slot {slot}: captured {} of {}",
                    hold.captured, hold.amount
                ));
            }
            if hold.state == HoldState::Active {
                *held_by_slot.entry(slot).or_default() += i128::from(hold.left());
            }
        }
        let mut balances = 0i128;
        if self.index.len() != self.accounts.len() - 1 {
            return Err(format!(
                "{} accounts but {} in the index",
                self.accounts.len() - 1,
                self.index.len()
            ));
        }
        for (slot, a) in self.accounts.iter().enumerate().skip(1) {
            let account = a.id;
            if self.slot_of(account) != Some(slot as u32) {
                return Err(format!(
                    "account {account}: the index does not find slot {slot}"
                ));
            }
            let slot = slot as u32;
            let held = held_by_slot.get(&slot).copied().unwrap_or(0);
            if i128::from(a.held) != held {
                return Err(format!(
                    "account {account}: held {} but active holds leave {held}",
                    a.held
                ));
            }
            if i128::from(a.balance) - i128::from(a.held) < -i128::from(self.overdraft(a)) {
                return Err(format!("account {account}: available below -overdraft"));
            }
            balances += i128::from(a.balance);
        }
        let l = self.ledger;
        let expected = l.deposits - l.debits - l.captures + l.refunds;
        if balances != expected {
            return Err(format!(
                "money not conserved: balances {balances}, ledger {expected}"
            ));
        }
        self.check_refundable()
    }

    /// Every kept capture amount belongs to the key of an ok capture (its
    /// record holds no amount), and every original's refunds add up to at
    /// most what it moved.
    fn check_refundable(&self) -> Result<(), String> {
        for (&(slot, id), &amount) in &self.capture_amounts {
            let is_capture = self.keys.get(slot, id).is_some_and(|r| {
                r.op() == Op::Capture as u8
                    && r.code == Code::Ok as u8
                    && matches!(r.payload(), Payload::Fingerprint(_))
            });
            if !is_capture || amount <= 0 {
                return Err(format!(
                    "capture amount {amount} of ({slot}, {id}) without an ok capture's key"
                ));
            }
        }
        for (&(slot, id), &refunded) in &self.refunded {
            let moved = self
                .keys
                .get(slot, id)
                .filter(|r| r.code == Code::Ok as u8)
                .and_then(|r| self.moved_by(r));
            if moved.is_none_or(|moved| refunded <= 0 || refunded > moved) {
                return Err(format!("({slot}, {id}): refunded {refunded} of {moved:?}"));
            }
        }
        Ok(())
    }
}

/// The format of [`Shard::encode_snapshot`]'s bytes, their first word.
/// 1: the first format, whose bodies had no version word (`wal::snapshot`
/// hands a `DCSNAP01` file's body back behind a 1): 40-byte keys with an
/// amount and a fingerprint each. 2: 24-byte keys (`KeyRecord::to_words`),
/// and ok captures' amounts in a table of their own. Both are read.
pub(crate) const SNAPSHOT_VERSION: u64 = 2;

/// Snapshot encoding: every table, little-endian, in slot order. The
/// snapshot file (`wal::snapshot`) frames and checksums it.
impl Shard {
    pub(crate) fn encode_snapshot(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        w.u64(SNAPSHOT_VERSION);
        w.u64(self.now_ms);
        w.u64(self.swept_generation);
        w.u64(self.dedup_window_ms);
        for v in [
            self.ledger.deposits,
            self.ledger.debits,
            self.ledger.captures,
            self.ledger.refunds,
        ] {
            w.0.extend_from_slice(&v.to_le_bytes());
        }
        w.u64(self.accounts.len() as u64 - 1);
        for a in &self.accounts[1..] {
            w.u64(a.id);
            w.i64(a.balance);
            w.i64(a.held);
            w.i64(a.day_total);
            w.u64(a.day);
            w.u64(u64::from(a.ext));
            w.u64(a.currency as u64);
            w.u64(u64::from(a.frozen));
        }
        w.u64(self.exts.len() as u64);
        for ext in &self.exts {
            w.i64(ext.overdraft);
            match ext.limits {
                None => w.u64(0),
                Some(l) => {
                    w.u64(1);
                    for v in [l.per_txn, l.daily, l.review_above] {
                        w.opt_i64(v);
                    }
                    match l.velocity {
                        None => w.u64(0),
                        Some(v) => {
                            w.u64(1);
                            w.u64(u64::from(v.max));
                            w.u64(v.window_ms);
                            w.i64(v.below);
                        }
                    }
                }
            }
            w.u64(ext.recent_small_debits.len() as u64);
            for &t in &ext.recent_small_debits {
                w.u64(t);
            }
        }
        w.u64(self.keys.len() as u64);
        for r in self.keys.records() {
            for word in r.to_words() {
                w.u64(word);
            }
        }
        w.u64(self.holds.len() as u64);
        for (&(slot, id), h) in &self.holds {
            w.u64(u64::from(slot));
            w.u64(id);
            w.i64(h.amount);
            w.i64(h.captured);
            w.u64(h.expires_at_ms);
            w.u64(h.state as u64);
            w.u64(h.ended_generation);
        }
        for table in [&self.refunded, &self.capture_amounts] {
            w.u64(table.len() as u64);
            for (&(slot, id), &amount) in table {
                w.u64(u64::from(slot));
                w.u64(id);
                w.i64(amount);
            }
        }
        w.u64(self.timers.len() as u64);
        for &Reverse((at, slot, id)) in &self.timers {
            w.u64(at);
            w.u64(u64::from(slot));
            w.u64(id);
        }
    }

    /// Rebuilds a shard from [`Shard::encode_snapshot`]'s bytes; `None` if
    /// they do not describe a consistent shard.
    pub(crate) fn decode_snapshot(
        bytes: &[u8],
        dedup_window_ms: u64,
        policy: Option<Box<dyn RiskPolicy>>,
    ) -> Option<Shard> {
        let mut r = SnapReader(bytes);
        let version = r.u64()?;
        if version != 1 && version != SNAPSHOT_VERSION {
            return None;
        }
        let mut shard = Shard::new(0, dedup_window_ms, policy);
        shard.now_ms = r.u64()?;
        shard.today = shard.now_ms / DAY_MS;
        shard.generation = shard.now_ms / dedup_window_ms;
        shard.swept_generation = r.u64()?;
        // Version 1 did not say: taken to be the window it is opened with.
        let written_window = if version == 1 {
            dedup_window_ms
        } else {
            r.u64()?
        };
        if written_window == 0 {
            return None;
        }
        let mut ledger = [0i128; 4];
        for v in &mut ledger {
            *v = i128::from_le_bytes(r.take(16)?.try_into().ok()?);
        }
        shard.ledger = Ledger {
            deposits: ledger[0],
            debits: ledger[1],
            captures: ledger[2],
            refunds: ledger[3],
        };
        let accounts = r.len(56)?;
        shard.accounts.reserve(accounts);
        shard.index.reserve(accounts);
        for slot in 1..=accounts as u32 {
            let id = r.u64()?;
            let account = Account {
                id,
                balance: r.i64()?,
                held: r.i64()?,
                day_total: r.i64()?,
                day: r.u64()?,
                ext: u32::try_from(r.u64()?).ok()?,
                currency: *Currency::ALL.get(r.u64()? as usize)?,
                frozen: r.u64()? != 0,
            };
            if shard.slot_of(id).is_some() {
                return None;
            }
            shard.accounts.push(account);
            shard.index.insert(id, slot);
        }
        let exts = r.len(24)?;
        for _ in 0..exts {
            let overdraft = r.i64()?;
            let limits = match r.u64()? {
                0 => None,
                _ => Some(Limits {
                    per_txn: r.opt_i64()?,
                    daily: r.opt_i64()?,
                    review_above: r.opt_i64()?,
                    velocity: match r.u64()? {
                        0 => None,
                        _ => Some(Velocity {
                            max: u32::try_from(r.u64()?).ok()?,
                            window_ms: r.u64()?,
                            below: r.i64()?,
                        }),
                    },
                }),
            };
            let ring = r.len(8)?;
            let mut recent_small_debits = VecDeque::with_capacity(ring);
            for _ in 0..ring {
                recent_small_debits.push_back(r.u64()?);
            }
            shard.exts.push(AccountExt {
                overdraft,
                limits,
                recent_small_debits,
            });
        }
        let keys = r.len(if version == 1 { 40 } else { 24 })?;
        shard.keys = KeyTable::sized_for(keys);
        for _ in 0..keys {
            let (record, captured) = if version == 1 {
                r.key_v1()?
            } else {
                let words = [r.u64()?, r.u64()?, r.u64()?];
                (KeyRecord::from_words(words)?, None)
            };
            let (slot, id) = (record.slot, record.id);
            if slot as usize > accounts || shard.keys.get(slot, id).is_some() {
                return None;
            }
            shard.keys.insert(record);
            if let Some(amount) = captured {
                shard.capture_amounts.insert((slot, id), amount);
            }
        }
        let holds = r.len(56)?;
        for _ in 0..holds {
            let key = (u32::try_from(r.u64()?).ok()?, r.u64()?);
            let hold = Hold {
                amount: r.i64()?,
                captured: r.i64()?,
                expires_at_ms: r.u64()?,
                state: match r.u64()? {
                    0 => HoldState::Active,
                    1 => HoldState::Expired,
                    2 => HoldState::Closed,
                    _ => return None,
                },
                ended_generation: r.u64()?,
            };
            shard.holds.insert(key, hold);
        }
        // Version 1 had no table of capture amounts (they were in the keys).
        let tables = if version == 1 { 1 } else { 2 };
        for table in [&mut shard.refunded, &mut shard.capture_amounts]
            .into_iter()
            .take(tables)
        {
            for _ in 0..r.len(24)? {
                let key = (u32::try_from(r.u64()?).ok()?, r.u64()?);
                if table.insert(key, r.i64()?).is_some() {
                    return None;
                }
            }
        }
        let timers = r.len(24)?;
        for _ in 0..timers {
            let (at, slot, id) = (r.u64()?, u32::try_from(r.u64()?).ok()?, r.u64()?);
            shard.timers.push(Reverse((at, slot, id)));
        }
        if !r.0.is_empty() {
            return None;
        }
        if written_window != dedup_window_ms {
            shard.rewindow(written_window);
        }
        let ext_ok = shard
            .accounts
            .iter()
            .all(|a| a.ext == EXT_NONE || (a.ext as usize) < shard.exts.len());
        // Only deposits and debits hold an amount, and what a refund needs
        // of every ok debit and capture is there (the other way round is in
        // `check_invariants`).
        let keys_ok = shard.keys.records().all(|k| {
            let by_amount = k.op() == Op::Deposit as u8 || k.op() == Op::Debit as u8;
            let refundable = k.op() == Op::Debit as u8 || k.op() == Op::Capture as u8;
            (by_amount || matches!(k.payload(), Payload::Fingerprint(_)))
                && (k.code != Code::Ok as u8 || !refundable || shard.moved_by(k).is_some())
        });
        (ext_ok && keys_ok && shard.check_invariants().is_ok()).then_some(shard)
    }
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            None => self.u64(0),
            Some(v) => {
                self.u64(1);
                self.i64(v);
            }
        }
    }
}

struct SnapReader<'a>(&'a [u8]);

impl SnapReader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn opt_i64(&mut self) -> Option<Option<i64>> {
        match self.u64()? {
            0 => Some(None),
            _ => Some(Some(self.i64()?)),
        }
    }
    /// A key of a version 1 snapshot: `id`, slot, `op | code << 8 |
    /// generation << 16`, amount moved, fingerprint. As now, with the
    /// amount of an ok debit kept in the record instead of its fingerprint
    /// (the same replays: a debit's fields are its amount) and that of an ok
    /// capture returned to be kept beside it.
    fn key_v1(&mut self) -> Option<(KeyRecord, Option<i64>)> {
        let id = self.u64()?;
        let slot = u32::try_from(self.u64()?).ok()?;
        let packed = self.u64()?;
        let (op, code) = (packed as u8, (packed >> 8) as u8);
        let generation = (packed >> 16) as u16;
        let (amount, fingerprint) = (self.i64()?, self.u64()?);
        if slot == 0 || usize::from(op) >= Op::ALL.len() || usize::from(code) >= Code::ALL.len() {
            return None;
        }
        let ok = code == Code::Ok as u8;
        let (payload, captured) = if ok && op == Op::Debit as u8 {
            (Payload::Minor(amount), None)
        } else if ok && op == Op::Capture as u8 {
            (Payload::Fingerprint(fingerprint), Some(amount))
        } else {
            (Payload::Fingerprint(fingerprint), None)
        };
        // Only ok debits and captures moved money (a refund may return it).
        let moved = ok && (op == Op::Debit as u8 || op == Op::Capture as u8);
        if (moved && amount <= 0) || (!moved && amount != 0) {
            return None;
        }
        let record = KeyRecord::new(id, slot, op, code, generation, payload);
        Some((record, captured))
    }

    /// A count of items of at least `item_bytes` each, bounded by what is left.
    fn len(&mut self, item_bytes: usize) -> Option<usize> {
        let n = usize::try_from(self.u64()?).ok()?;
        (n <= self.0.len() / item_bytes).then_some(n)
    }
}

/// The rule of one key sweep: what `forget_before` decided at a generation
/// change, kept while the sweep goes on a few cells at a time.
#[derive(Clone, Copy, Debug, Default)]
struct Forgetting {
    /// The generation the sweep began in (modulo 2^16, as records keep it).
    current: u16,
    /// Two or more generations passed at once: every older record is old.
    jumped: bool,
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
            | Request::Refund { id, account, .. } => (account, Some(id)),
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

/// What tells a keyed request's replay from a conflict, besides its op.
#[derive(Clone, Copy, Debug)]
enum Fields {
    /// Deposit and debit: the amount is their only field.
    Amount(AmountArg),
    /// Every other keyed op: [`fingerprint`] of its fields.
    Hashed(u64),
}

impl Fields {
    /// The amount in minor units at `exponent`, where it is a whole number
    /// of them.
    #[inline]
    fn minor(self, exponent: u32) -> Option<i64> {
        match self {
            Fields::Amount(amount) => minor_value(amount, exponent),
            Fields::Hashed(_) => None,
        }
    }

    fn fingerprint(self, op: Op) -> u64 {
        match self {
            Fields::Amount(amount) => fingerprint(op, &[amount.fingerprint()]),
            Fields::Hashed(fp) => fp,
        }
    }

    /// What the key record keeps: the amount where it has minor units (a
    /// plain debit's case: no hashing), else the fingerprint.
    #[inline]
    fn payload(self, op: Op, exponent: u32) -> Payload {
        match self.minor(exponent) {
            Some(minor) => Payload::Minor(minor),
            None => Payload::Fingerprint(self.fingerprint(op)),
        }
    }
}

/// The number `amount` states, in minor units of a currency of `exponent`,
/// if it is a whole number of them that fits 63 bits. Unlike
/// [`AmountArg::to_minor`] it does not count the digits as written: "1.230"
/// is an invalid USD amount but the same number as "1.23", and SPEC's
/// replays compare numbers. One-to-one: an `AmountArg::Decimal` is
/// normalized (no trailing zero after the point), so two amounts give the
/// same minor units only if they are the same number.
#[inline]
fn minor_value(amount: AmountArg, exponent: u32) -> Option<i64> {
    const POW10: [u64; 4] = [1, 10, 100, 1000];
    match amount {
        AmountArg::Decimal {
            mantissa, scale, ..
        } if scale <= exponent => {
            let factor = *POW10.get((exponent - scale) as usize)?;
            i64::try_from(mantissa.checked_mul(factor)?).ok()
        }
        _ => None,
    }
}

fn fingerprint(op: Op, fields: &[u64]) -> u64 {
    fields
        .iter()
        .fold(crate::hash::mix(0xF1, op as u64), |h, &f| {
            crate::hash::mix(h, f)
        })
}

fn optional_fingerprint(amount: Option<AmountArg>) -> u64 {
    // An omitted amount differs from every given one.
    amount.map_or(0x0A11_0A11_0A11_0A11, |a| {
        crate::hash::mix(0xA4, a.fingerprint())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(text: &str) -> AmountArg {
        AmountArg::parse(text)
    }

    fn shard() -> Shard {
        shard_with_window(10_000)
    }

    /// Account 1 (USD) with 100 in it, at time 0.
    fn shard_with_window(dedup_window_ms: u64) -> Shard {
        let mut s = Shard::new(0, dedup_window_ms, None);
        s.apply(&Request::OpenAccount {
            account: 1,
            currency: Some(Currency::USD),
            overdraft: None,
        });
        s.apply(&Request::Deposit {
            id: 1,
            account: 1,
            amount: amount("100"),
        });
        s
    }

    fn code(s: &mut Shard, r: Request) -> Code {
        let outcome = s.apply(&r);
        s.check_invariants().unwrap();
        outcome.code
    }

    #[test]
    fn forgets_keys_after_the_window_but_not_before() {
        let mut s = shard();
        let debit = Request::Debit {
            id: 2,
            account: 1,
            amount: amount("1"),
        };
        assert_eq!(code(&mut s, debit.clone()), Code::Ok);
        s.advance_to(9_999);
        assert!(s.apply(&debit).replayed);
        s.advance_to(19_999);
        assert!(
            s.apply(&debit).replayed,
            "within the window of first processing"
        );
        s.advance_to(20_000);
        let again = s.apply(&debit);
        assert!(
            !again.replayed,
            "two generations later the key is new again"
        );
        assert_eq!(again.code, Code::Ok);
    }

    /// A snapshot written under one dedup window and opened under another:
    /// every key is kept at least one (new) window after it happened, and
    /// forgotten in time, whichever way the window changed. Read in the
    /// old unit, the generations made the first sweep forget every key
    /// (or underflowed).
    #[test]
    fn a_changed_window_keeps_keys_for_the_new_window() {
        let debit = |id| Request::Debit {
            id,
            account: 1,
            amount: amount("1"),
        };
        let mut s = shard_with_window(1_000);
        s.advance_to(5_500);
        assert_eq!(code(&mut s, debit(10)), Code::Ok);
        s.advance_to(6_200);
        assert_eq!(code(&mut s, debit(11)), Code::Ok);
        let mut bytes = Vec::new();
        s.encode_snapshot(&mut bytes);
        let reopen = |window| Shard::decode_snapshot(&bytes, window, None).expect("decodes");

        // Ten times longer: both keys live until at least 10 s after them.
        let mut longer = reopen(10_000);
        longer.advance_to(15_000);
        assert!(longer.apply(&debit(10)).replayed, "5.5 s + 10 s > 15 s");
        assert!(longer.apply(&debit(11)).replayed);
        longer.advance_to(40_000);
        let again = longer.apply(&debit(10));
        assert!(!again.replayed, "forgotten two new windows on");
        assert_eq!(again.code, Code::Ok);
        longer.check_invariants().unwrap();

        // Ten times shorter: 10 (at 5.5 s) goes at the first sweep; 11 (at
        // 6.2 s, in the snapshot's last window: taken as of the snapshot's
        // time) lives one new window after the snapshot, and goes at the
        // sweep after that.
        let mut shorter = reopen(100);
        shorter.advance_to(6_300);
        assert!(!shorter.apply(&debit(10)).replayed, "5.5 s + 0.1 s < 6.3 s");
        assert!(shorter.apply(&debit(11)).replayed, "6.2 s + 0.1 s >= 6.3 s");
        shorter.advance_to(6_400);
        assert!(!shorter.apply(&debit(11)).replayed);
        shorter.check_invariants().unwrap();
    }

    /// A large key table is swept a few cells per keyed request, not in
    /// one pause: right after the generation change old keys are still
    /// there; after enough requests they are gone, while the keys of the
    /// requests that came meanwhile (even after a jump of several windows,
    /// which makes every older key old) are kept.
    #[test]
    fn a_large_key_table_forgets_a_few_cells_per_request() {
        let mut s = shard_with_window(1_000);
        s.reserve(0, 100_000);
        assert!(!s.keys.small(), "the table is swept in steps");
        let debit = |id| Request::Debit {
            id,
            account: 1,
            amount: amount("0.01"),
        };
        let status = |s: &mut Shard, id| s.apply(&Request::Status { account: 1, id }).code;
        for id in 100..1_100 {
            assert_eq!(code(&mut s, debit(id)), Code::Ok);
        }
        // Five windows on: every key so far is old.
        s.advance_to(5_000);
        assert!(s.keys.sweeping());
        let mut new_ids = Vec::new();
        let mut id = 1_000_000;
        while s.keys.sweeping() {
            assert_eq!(code(&mut s, debit(id)), Code::Ok);
            new_ids.push(id);
            id += 1;
        }
        let cells = (100_000usize * 16).div_ceil(13);
        assert!(
            new_ids.len() >= cells / SWEEP_CELLS_PER_STEP / 2,
            "{} requests for {cells} cells: not a few cells each",
            new_ids.len()
        );
        for old in 100..1_100 {
            assert_eq!(status(&mut s, old), Code::UnknownId, "old key {old}");
        }
        for &new in &new_ids {
            assert_eq!(
                status(&mut s, new),
                Code::Ok,
                "key {new} of the sweep's time"
            );
        }
        s.check_invariants().unwrap();
    }

    #[test]
    fn a_hold_keeps_its_key_while_active() {
        let mut s = shard();
        let auth = Request::Authorize {
            id: 5,
            account: 1,
            amount: amount("10"),
            expires_in_ms: Some(1_000_000),
        };
        assert_eq!(code(&mut s, auth.clone()), Code::Ok);
        s.advance_to(50_000);
        assert!(s.apply(&auth).replayed);
        let capture = Request::Capture {
            id: 6,
            account: 1,
            auth: 5,
            amount: None,
            is_final: true,
        };
        assert_eq!(code(&mut s, capture), Code::Ok);
    }

    #[test]
    fn snapshots_round_trip_every_table() {
        let mut s = shard();
        let reqs = [
            Request::Authorize {
                id: 2,
                account: 1,
                amount: amount("10"),
                expires_in_ms: Some(500),
            },
            Request::Debit {
                id: 3,
                account: 1,
                amount: amount("5"),
            },
            Request::Refund {
                id: 4,
                account: 1,
                of: 3,
                amount: Some(amount("1")),
            },
            Request::SetLimits {
                account: 1,
                limits: Box::new(LimitsArg {
                    daily: Some(amount("90")),
                    velocity: Some(crate::request::VelocityArg {
                        max: 2,
                        window_ms: 100,
                        below: amount("1"),
                    }),
                    ..LimitsArg::default()
                }),
            },
            Request::Debit {
                id: 5,
                account: 1,
                amount: amount("0.5"),
            },
            Request::OpenAccount {
                account: 9,
                currency: Some(Currency::JPY),
                overdraft: Some(amount("7")),
            },
            Request::Freeze { account: 9 },
            Request::Capture {
                id: 6,
                account: 1,
                auth: 2,
                amount: Some(amount("4")),
                is_final: false,
            },
            Request::Capture {
                id: 7,
                account: 1,
                auth: 2,
                amount: None,
                is_final: true,
            },
            Request::Refund {
                id: 8,
                account: 1,
                of: 7,
                amount: Some(amount("2")),
            },
        ];
        for r in &reqs {
            assert!(s.apply(r).code.is_effective(), "{r:?}");
        }
        assert_eq!(s.capture_amounts.len(), 2);
        let mut bytes = Vec::new();
        s.encode_snapshot(&mut bytes);
        let mut copy = Shard::decode_snapshot(&bytes, 10_000, None).expect("decodes");
        let mut again = Vec::new();
        copy.encode_snapshot(&mut again);
        assert_eq!(bytes.len(), again.len());
        assert_eq!(copy.capture_amounts, s.capture_amounts);
        // Both go on identically: replays, and refunds of what is left.
        let refund = |id, of| refund(id, of, None);
        for r in reqs.iter().chain(
            [
                Request::Balance { account: 1 },
                Request::Status { account: 1, id: 3 },
                refund(10, 3),
                refund(11, 6),
                refund(12, 7),
                refund(13, 7),
                Request::Balance { account: 1 },
            ]
            .iter(),
        ) {
            assert_eq!(s.apply(r), copy.apply(r));
        }
        assert_eq!(copy.apply(&refund(12, 7)).code, Code::Ok);
        copy.check_invariants().unwrap();
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                Shard::decode_snapshot(&bytes[..cut], 10_000, None).is_none(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn refund_progress_and_limits() {
        let mut s = shard();
        let debit = Request::Debit {
            id: 2,
            account: 1,
            amount: amount("30"),
        };
        assert_eq!(code(&mut s, debit), Code::Ok);
        let refund = |id, a: Option<&str>| Request::Refund {
            id,
            account: 1,
            of: 2,
            amount: a.map(amount),
        };
        assert_eq!(code(&mut s, refund(3, Some("10"))), Code::Ok);
        assert_eq!(
            code(&mut s, refund(4, Some("20.01"))),
            Code::ExceedsRefundable
        );
        assert_eq!(code(&mut s, refund(5, None)), Code::Ok);
        assert_eq!(code(&mut s, refund(6, None)), Code::ExceedsRefundable);
        assert_eq!(code(&mut s, refund(7, Some("0"))), Code::InvalidAmount);
    }

    /// Two accounts whose index hashes collide: the prefetch stage's
    /// unconfirmed slot for the second is the first's, and `apply` must
    /// confirm the hint against the record before using it.
    #[test]
    fn apply_each_confirms_the_prefetched_slot() {
        let mut first_with: std::collections::HashMap<u32, AccountId> = Default::default();
        let (a, b) = (1u64..)
            .find_map(|id| {
                let h = crate::index::hash32(id);
                first_with.get(&h).map(|&other| (other, id)).or_else(|| {
                    first_with.insert(h, id);
                    None
                })
            })
            .expect("a 32-bit collision among a few 100k ids");
        let mut s = Shard::new(0, 10_000, None);
        for (account, money) in [(a, "100"), (b, "5")] {
            s.apply(&Request::OpenAccount {
                account,
                currency: Some(Currency::USD),
                overdraft: None,
            });
            s.apply(&Request::Deposit {
                id: 1,
                account,
                amount: amount(money),
            });
        }
        let requests: Vec<Request> = (0..40)
            .map(|i| Request::Debit {
                id: 10 + i,
                account: if i % 2 == 0 { b } else { a },
                amount: amount("1"),
            })
            .collect();
        let mut codes = Vec::new();
        s.apply_each(&requests, |r| r, |_, outcome| codes.push(outcome.code));
        // b had 5: five debits pass, fifteen are refused; a's all pass.
        let on_b = codes.iter().step_by(2);
        assert_eq!(on_b.filter(|&&c| c == Code::Ok).count(), 5);
        assert!(codes.iter().skip(1).step_by(2).all(|&c| c == Code::Ok));
        let balance = |s: &mut Shard, account| match s.apply(&Request::Balance { account }).info {
            Info::Balance { balance, .. } => balance,
            other => panic!("{other:?}"),
        };
        assert_eq!(balance(&mut s, a), 10_000 - 2_000);
        assert_eq!(balance(&mut s, b), 0);
        s.check_invariants().unwrap();
    }

    fn debit(id: TxnId, text: &str) -> Request {
        Request::Debit {
            id,
            account: 1,
            amount: amount(text),
        }
    }

    fn authorize(id: TxnId, text: &str) -> Request {
        Request::Authorize {
            id,
            account: 1,
            amount: amount(text),
            expires_in_ms: None,
        }
    }

    fn capture(id: TxnId, auth: TxnId, text: Option<&str>, is_final: bool) -> Request {
        Request::Capture {
            id,
            account: 1,
            auth,
            amount: text.map(amount),
            is_final,
        }
    }

    fn refund(id: TxnId, of: TxnId, text: Option<&str>) -> Request {
        Request::Refund {
            id,
            account: 1,
            of,
            amount: text.map(amount),
        }
    }

    fn balance(s: &mut Shard) -> i64 {
        match s.apply(&Request::Balance { account: 1 }).info {
            Info::Balance { balance, .. } => balance,
            other => panic!("{other:?}"),
        }
    }

    fn replayed(s: &mut Shard, r: &Request) -> Option<Code> {
        let outcome = s.apply(r);
        s.check_invariants().unwrap();
        outcome.replayed.then_some(outcome.code)
    }

    /// Deposit and debit keys hold the amount (as minor units, where it has
    /// them) and compare it as a number, as SPEC does: "12.3" is "12.30";
    /// "1.230" (invalid in USD) is still "1.23"; an amount with no minor
    /// units in the currency, or no number at all, by its fingerprint.
    #[test]
    fn deposit_and_debit_replays_compare_amounts_as_numbers() {
        type Make = fn(TxnId, &str) -> Request;
        let deposit: Make = |id, text| Request::Deposit {
            id,
            account: 1,
            amount: amount(text),
        };
        for make in [debit as Make, deposit] {
            let mut s = shard();
            let start = balance(&mut s);
            let sign = if matches!(make(0, "1"), Request::Debit { .. }) {
                -1
            } else {
                1
            };
            assert_eq!(code(&mut s, make(10, "12.3")), Code::Ok);
            let slot = s.slot_of(1).unwrap();
            let record = *s.keys.get(slot, 10).unwrap();
            assert_eq!(record.payload(), Payload::Minor(1230), "no hashing");
            for same in ["12.3", "12.30", "0012.3"] {
                assert_eq!(replayed(&mut s, &make(10, same)), Some(Code::Ok), "{same}");
            }
            // Not a whole number of cents, so never the same number.
            for other in ["12.31", "12.301", "123", "1.23", "x"] {
                assert_eq!(code(&mut s, make(10, other)), Code::IdConflict, "{other}");
            }
            assert_eq!(replayed(&mut s, &make(10, "12.300")), Some(Code::Ok));
            assert_eq!(balance(&mut s), start + sign * 1230, "moved once");

            // Too many digits for USD: invalid, remembered by fingerprint.
            assert_eq!(code(&mut s, make(11, "12.345")), Code::InvalidAmount);
            let record = *s.keys.get(slot, 11).unwrap();
            assert!(matches!(record.payload(), Payload::Fingerprint(_)));
            for same in ["12.345", "12.3450", "012.345"] {
                let again = replayed(&mut s, &make(11, same));
                assert_eq!(again, Some(Code::InvalidAmount), "{same}");
            }
            for other in ["12.34", "12.35", "12.346", "abc"] {
                assert_eq!(code(&mut s, make(11, other)), Code::IdConflict, "{other}");
            }

            // A number of cents written with one digit too many: invalid,
            // yet the same number as the valid spelling, either way round.
            assert_eq!(code(&mut s, make(12, "1.230")), Code::InvalidAmount);
            let again = replayed(&mut s, &make(12, "1.23"));
            assert_eq!(again, Some(Code::InvalidAmount));
            assert_eq!(code(&mut s, make(12, "1.24")), Code::IdConflict);
            assert_eq!(code(&mut s, make(13, "1.23")), Code::Ok);
            assert_eq!(replayed(&mut s, &make(13, "1.230")), Some(Code::Ok));
            assert_eq!(code(&mut s, make(13, "1.2300001")), Code::IdConflict);

            // Not a number: by its text.
            assert_eq!(code(&mut s, make(14, "12,30")), Code::InvalidAmount);
            let again = replayed(&mut s, &make(14, "12,30"));
            assert_eq!(again, Some(Code::InvalidAmount));
            assert_eq!(code(&mut s, make(14, "12.30")), Code::IdConflict);
            // Zero has minor units (0) and is invalid.
            assert_eq!(code(&mut s, make(15, "0.00")), Code::InvalidAmount);
            assert_eq!(replayed(&mut s, &make(15, "0")), Some(Code::InvalidAmount));
            assert_eq!(code(&mut s, make(15, "0.01")), Code::IdConflict);

            // The same amount under another op is another request.
            let other_op = if sign < 0 {
                deposit(10, "12.3")
            } else {
                debit(10, "12.3")
            };
            assert_eq!(code(&mut s, other_op), Code::IdConflict);
            assert_eq!(balance(&mut s), start + sign * (1230 + 123));
        }
    }

    /// In a currency of exponent 0 or 3 the same rules hold at its scale.
    #[test]
    fn amounts_compare_at_the_accounts_exponent() {
        let mut s = Shard::new(0, 10_000, None);
        for (account, currency) in [(1, Currency::JPY), (2, Currency::KWD)] {
            s.apply(&Request::OpenAccount {
                account,
                currency: Some(currency),
                overdraft: None,
            });
        }
        let deposit = |account, text| Request::Deposit {
            id: 1,
            account,
            amount: amount(text),
        };
        assert_eq!(code(&mut s, deposit(1, "500")), Code::Ok);
        // Invalid in JPY, but the same number.
        assert_eq!(replayed(&mut s, &deposit(1, "500.0")), Some(Code::Ok));
        assert_eq!(replayed(&mut s, &deposit(1, "0500")), Some(Code::Ok));
        assert_eq!(s.apply(&deposit(1, "500.5")).code, Code::IdConflict);
        assert_eq!(code(&mut s, deposit(2, "1.5")), Code::Ok);
        assert_eq!(replayed(&mut s, &deposit(2, "1.500")), Some(Code::Ok));
        assert_eq!(s.apply(&deposit(2, "1.5001")).code, Code::IdConflict);
    }

    /// A rejected debit is remembered with its amount too, and its replay
    /// stays the rejection, whatever the funds are now.
    #[test]
    fn an_insufficient_funds_debit_replays_as_such() {
        let mut s = shard();
        assert_eq!(code(&mut s, debit(2, "150")), Code::InsufficientFunds);
        let topup = Request::Deposit {
            id: 3,
            account: 1,
            amount: amount("100"),
        };
        assert_eq!(code(&mut s, topup), Code::Ok);
        let again = replayed(&mut s, &debit(2, "150.00"));
        assert_eq!(again, Some(Code::InsufficientFunds));
        assert_eq!(code(&mut s, debit(2, "149")), Code::IdConflict);
        assert_eq!(balance(&mut s), 20_000, "nothing debited");
        assert_eq!(code(&mut s, refund(4, 2, None)), Code::NotRefundable);
    }

    /// Refunds of a debit read its amount from its key; of a capture, from
    /// the amount kept beside its key (a capture's fields may not name it).
    #[test]
    fn refunds_return_what_a_debit_or_a_capture_moved() {
        let mut s = shard();
        assert_eq!(code(&mut s, debit(2, "30.5")), Code::Ok);
        assert_eq!(
            code(&mut s, refund(3, 2, Some("30.51"))),
            Code::ExceedsRefundable
        );
        assert_eq!(code(&mut s, refund(4, 2, Some("0.5"))), Code::Ok);
        assert_eq!(code(&mut s, refund(5, 2, None)), Code::Ok);
        assert_eq!(code(&mut s, refund(6, 2, None)), Code::ExceedsRefundable);
        assert_eq!(balance(&mut s), 10_000);

        assert_eq!(code(&mut s, authorize(7, "50")), Code::Ok);
        assert_eq!(code(&mut s, capture(8, 7, Some("20"), false)), Code::Ok);
        // All that is left, named by no amount field: 30.
        assert_eq!(code(&mut s, capture(9, 7, None, true)), Code::Ok);
        assert_eq!(balance(&mut s), 5_000);
        let slot = s.slot_of(1).unwrap();
        assert_eq!(s.capture_amounts.get(&(slot, 9)), Some(&3_000));
        assert_eq!(
            code(&mut s, refund(10, 8, Some("20.01"))),
            Code::ExceedsRefundable
        );
        assert_eq!(code(&mut s, refund(11, 8, Some("15"))), Code::Ok);
        assert_eq!(code(&mut s, refund(12, 8, None)), Code::Ok);
        assert_eq!(code(&mut s, refund(13, 8, None)), Code::ExceedsRefundable);
        assert_eq!(
            code(&mut s, refund(14, 9, Some("30.01"))),
            Code::ExceedsRefundable
        );
        assert_eq!(code(&mut s, refund(15, 9, None)), Code::Ok);
        assert_eq!(
            code(&mut s, refund(16, 9, Some("0.01"))),
            Code::ExceedsRefundable
        );
        assert_eq!(
            code(&mut s, refund(17, 7, None)),
            Code::NotRefundable,
            "a hold"
        );
        assert_eq!(balance(&mut s), 10_000, "every cent back once");
        // Replays of refunds move nothing.
        assert_eq!(replayed(&mut s, &refund(15, 9, None)), Some(Code::Ok));
        assert_eq!(balance(&mut s), 10_000);
    }

    #[test]
    fn capture_replays_and_conflicts_by_all_its_fields() {
        let mut s = shard();
        assert_eq!(code(&mut s, authorize(2, "50")), Code::Ok);
        assert_eq!(code(&mut s, authorize(3, "50")), Code::Ok);
        let id_5 = |auth, a, is_final| capture(5, auth, a, is_final);
        assert_eq!(code(&mut s, id_5(2, Some("10"), false)), Code::Ok);
        let again = replayed(&mut s, &id_5(2, Some("10.00"), false));
        assert_eq!(again, Some(Code::Ok));
        for other in [
            id_5(2, Some("10.01"), false),
            id_5(2, None, false),
            id_5(2, Some("10"), true),
            id_5(3, Some("10"), false),
            debit(5, "10"),
        ] {
            assert_eq!(code(&mut s, other.clone()), Code::IdConflict, "{other:?}");
        }
        assert_eq!(balance(&mut s), 9_000, "captured once");
        // A rejected capture is remembered too, and moved nothing.
        let over = capture(6, 2, Some("41"), true);
        assert_eq!(code(&mut s, over.clone()), Code::ExceedsAuthorized);
        assert_eq!(replayed(&mut s, &over), Some(Code::ExceedsAuthorized));
        let slot = s.slot_of(1).unwrap();
        assert!(!s.capture_amounts.contains_key(&(slot, 6)));
    }

    /// A capture's kept amount goes with its key: once the key is forgotten
    /// the capture is `not_refundable`, and nothing is left behind.
    #[test]
    fn a_forgotten_capture_is_not_refundable() {
        let mut s = shard();
        assert_eq!(code(&mut s, authorize(2, "50")), Code::Ok);
        assert_eq!(code(&mut s, capture(3, 2, None, true)), Code::Ok);
        assert_eq!(code(&mut s, refund(4, 3, Some("1"))), Code::Ok);
        s.advance_to(19_999);
        let again = code(&mut s, refund(5, 3, Some("1")));
        assert_eq!(again, Code::Ok, "still remembered");
        s.advance_to(20_000);
        assert_eq!(code(&mut s, refund(6, 3, Some("1"))), Code::NotRefundable);
        assert!(s.capture_amounts.is_empty());
        assert!(s.refunded.is_empty());
        assert_eq!(balance(&mut s), 10_000 - 5_000 + 100 + 100);
    }

    /// A version 1 snapshot body (it had no version word), built by hand
    /// from that format's description (docs/wal-format.md before version 2).
    fn v1_body(keys: &[(u64, Op, Code, i64, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer(&mut out);
        w.u64(5_000); // now_ms
        w.u64(0); // swept generation
                  // Ledger: deposits, debits, captures, refunds.
        for v in [10_000i128, 500, 300, 100] {
            w.0.extend_from_slice(&v.to_le_bytes());
        }
        w.u64(1); // one account: id, balance, held, day_total, day, ext, currency, frozen
        let usd = Currency::ALL
            .iter()
            .position(|&c| c == Currency::USD)
            .unwrap();
        for v in [1, 9_300, 0, 1_000, 0, u64::from(EXT_NONE), usd as u64, 0] {
            w.u64(v);
        }
        w.u64(0); // no extensions
        w.u64(keys.len() as u64);
        for &(id, op, code, amount, fingerprint) in keys {
            w.u64(id);
            w.u64(1);
            w.u64(op as u64 | (code as u64) << 8);
            w.i64(amount);
            w.u64(fingerprint);
        }
        w.u64(1); // the hold of authorize 4: amount, captured, expiry, closed, ended
        for v in [1, 4, 500, 300, 1_000_000, 2, 0] {
            w.u64(v);
        }
        w.u64(1); // refunded: 1.00 of debit 2
        for v in [1, 2, 100] {
            w.u64(v);
        }
        w.u64(0); // no timers
        out
    }

    /// `body` framed as a first-format snapshot file (magic `DCSNAP01`),
    /// written to disk and read back as recovery reads it.
    fn through_a_v1_file(body: &[u8]) -> Vec<u8> {
        let mut file = b"DCSNAP01".to_vec();
        for word in [0, 42, body.len() as u64] {
            file.extend_from_slice(&word.to_le_bytes());
        }
        file.extend_from_slice(body);
        let crc = crc32c::crc32c(&file);
        file.extend_from_slice(&crc.to_le_bytes());
        let dir = std::env::temp_dir().join(format!("debitcore-v1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(crate::wal::snapshot::snapshot_name(42));
        std::fs::write(&path, &file).unwrap();
        let read = crate::wal::snapshot::read(&path, 0).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let (lsn, body) = read.expect("a valid first-format snapshot");
        assert_eq!(lsn, 42);
        body
    }

    /// A snapshot of the first format converts without loss: an ok debit's
    /// amount into its record, an ok capture's beside it, fingerprints of
    /// everything else as they were; and it answers as the shard it was.
    #[test]
    fn a_version_1_snapshot_reads_into_the_new_records() {
        let fp = |text| amount(text).fingerprint();
        let keys = [
            (
                1,
                Op::Deposit,
                Code::Ok,
                0,
                fingerprint(Op::Deposit, &[fp("100")]),
            ),
            (
                2,
                Op::Debit,
                Code::Ok,
                500,
                fingerprint(Op::Debit, &[fp("5")]),
            ),
            (
                3,
                Op::Debit,
                Code::InsufficientFunds,
                0,
                fingerprint(Op::Debit, &[fp("1000")]),
            ),
            (
                4,
                Op::Authorize,
                Code::Ok,
                0,
                fingerprint(Op::Authorize, &[fp("5"), 1_000_000]),
            ),
            (
                5,
                Op::Capture,
                Code::Ok,
                300,
                fingerprint(
                    Op::Capture,
                    &[4, optional_fingerprint(Some(amount("3"))), 0],
                ),
            ),
            (
                6,
                Op::Refund,
                Code::Ok,
                0,
                fingerprint(Op::Refund, &[2, optional_fingerprint(Some(amount("1")))]),
            ),
        ];
        let body = through_a_v1_file(&v1_body(&keys));
        let mut s = Shard::decode_snapshot(&body, 10_000, None).expect("decodes");
        assert_eq!(s.keys.get(1, 2).unwrap().payload(), Payload::Minor(500));
        assert_eq!(
            s.keys.get(1, 3).unwrap().payload(),
            Payload::Fingerprint(keys[2].4)
        );
        assert_eq!(s.capture_amounts.get(&(1, 5)), Some(&300));

        // Re-encoded in the current format, it answers the same.
        let mut now = Vec::new();
        s.encode_snapshot(&mut now);
        let mut t = Shard::decode_snapshot(&now, 10_000, None).expect("decodes");
        let id_5 = |a, is_final| capture(5, 4, Some(a), is_final);
        for shard in [&mut s, &mut t] {
            assert_eq!(replayed(shard, &debit(2, "5.00")), Some(Code::Ok));
            assert_eq!(code(shard, debit(2, "5.01")), Code::IdConflict);
            let again = replayed(shard, &debit(3, "1000"));
            assert_eq!(again, Some(Code::InsufficientFunds));
            assert_eq!(code(shard, debit(3, "999")), Code::IdConflict);
            assert_eq!(replayed(shard, &id_5("3.0", false)), Some(Code::Ok));
            assert_eq!(code(shard, id_5("3", true)), Code::IdConflict);
            let again = replayed(shard, &refund(6, 2, Some("1")));
            assert_eq!(again, Some(Code::Ok));
            assert_eq!(
                code(shard, refund(7, 2, Some("4.01"))),
                Code::ExceedsRefundable
            );
            assert_eq!(code(shard, refund(8, 2, None)), Code::Ok);
            assert_eq!(
                code(shard, refund(9, 5, Some("3.01"))),
                Code::ExceedsRefundable
            );
            assert_eq!(code(shard, refund(10, 5, None)), Code::Ok);
            assert_eq!(balance(shard), 10_000);
        }

        // What the first format never held is refused.
        let decodes = |keys: &[(u64, Op, Code, i64, u64)]| {
            let mut body = 1u64.to_le_bytes().to_vec();
            body.extend_from_slice(&v1_body(keys));
            Shard::decode_snapshot(&body, 10_000, None).is_some()
        };
        assert!(decodes(&keys));
        let mut bad = keys;
        bad[1].3 = 0; // an ok debit that moved nothing
        assert!(!decodes(&bad));
        let mut bad = keys;
        bad[0].3 = 7; // a deposit with an amount moved
        assert!(!decodes(&bad));
        let mut unknown = body.clone();
        unknown[0] = 3;
        assert!(Shard::decode_snapshot(&unknown, 10_000, None).is_none());
    }

    /// An ok capture whose amount is missing (or an amount without its
    /// capture) is a snapshot that does not describe a shard.
    #[test]
    fn a_snapshot_without_a_captures_amount_is_refused() {
        let mut s = shard();
        assert_eq!(code(&mut s, authorize(2, "50")), Code::Ok);
        assert_eq!(code(&mut s, capture(3, 2, None, true)), Code::Ok);
        let encode = |s: &Shard| {
            let mut bytes = Vec::new();
            s.encode_snapshot(&mut bytes);
            bytes
        };
        assert!(Shard::decode_snapshot(&encode(&s), 10_000, None).is_some());
        let amounts = std::mem::take(&mut s.capture_amounts);
        assert!(Shard::decode_snapshot(&encode(&s), 10_000, None).is_none());
        s.capture_amounts = amounts;
        s.capture_amounts.insert((1, 2), 5);
        assert!(Shard::decode_snapshot(&encode(&s), 10_000, None).is_none());
    }

    /// `reserve` sizes the key table for the keys it is told of: they all
    /// fit without growth, at PERF.md's budget of at most 32 bytes a key.
    #[test]
    fn reserved_keys_fit_within_the_memory_budget() {
        let keys = 20_000;
        let mut s = shard();
        s.reserve(0, keys);
        let sized = s.stats().key_bytes;
        assert!(sized <= 32 * (keys + 1), "{sized} bytes for {keys} keys");
        for id in 2..=keys as u64 {
            let deposit = Request::Deposit {
                id,
                account: 1,
                amount: amount("0.01"),
            };
            assert_eq!(s.apply(&deposit).code, Code::Ok);
        }
        assert_eq!(s.stats().keys, keys);
        assert_eq!(s.stats().key_bytes, sized, "no growth, no spare");
    }
}
