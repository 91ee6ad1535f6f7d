//! Random request streams for the model test.
//!
//! The generator keeps its own copy of the reference model (assuming nothing
//! is ever forgotten) only to aim: at holds that are active, originals that
//! are refundable, limits about to be hit, keys about to leave the dedup
//! window. Whatever it aims at, the checking model alone decides the answer.
//!
//! Two rules keep every line's answer decidable under SPEC:
//! - a fresh id is one never sent on that account (only lines that stored no
//!   key, malformed or `unknown_account`, give their ids back);
//! - a key old enough to be forgotten is only reused by a request that can
//!   neither create a hold nor a refundable original (deposit, void, refund,
//!   increment), so "forgotten, then done again" never leaves two holds or two
//!   originals under one id.
//!
//! SPEC's last section (merchants, settle, batch debits, closing accounts,
//! history) is generated only for the features `DEBITCORE_MODEL_FEATURES`
//! switches on (see `FEATURES`), so the stream can follow an engine that
//! has some of them. Its accounts that are closed for good come from a pool
//! of their own (`CLOSE_POOL`) and are picked only now and then afterwards;
//! every `settle` and `run_batch` is mostly followed by `merchant` queries
//! (a quiet moment for the conservation check).

use std::collections::HashSet;
use std::hash::BuildHasherDefault;

use crate::reference::{
    format_minor, Account, FixedHasher, HoldState, Model, Req, VelocityArg, DAY_MS,
    DEFAULT_EXPIRY_MS, MINOR_MAX, TIME_ARG_MAX,
};

/// SplitMix64: small, fast, and the same on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi);
        lo + self.below(hi - lo + 1)
    }

    /// Uniform-ish in `lo..=hi` for money (`lo` when the range is empty).
    pub fn money(&mut self, lo: i128, hi: i128) -> i128 {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo) as u128 + 1;
        let r = (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64());
        lo + (r % span) as i128
    }

    pub fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    pub fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize].clone()
    }

    /// An index into `0..len` that favours the end (recent entries).
    pub fn recent_index(&mut self, len: usize) -> usize {
        let back = self.below(len as u64).min(self.below(len as u64));
        len - 1 - back as usize
    }
}

/// One line of the stream: its text and what it means.
#[derive(Clone, Debug)]
pub struct GenLine {
    pub text: String,
    pub req: Req,
    /// The account the line is about (also for malformed lines built from a
    /// request), to show its history when something goes wrong.
    pub account: Option<u64>,
}

/// Accounts the stream opens (some only after requests to them failed with
/// `unknown_account`). 2^53 + 1 catches ids read through a float.
const ACCOUNTS: [u64; 27] = [
    1,
    2,
    0,
    u64::MAX,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    20,
    21,
    22,
    1 << 63,
    9_007_199_254_740_993,
    4_294_967_297,
];
/// Extra accounts that open attempts (mostly invalid ones) go to.
const SPARE_ACCOUNTS: (u64, u64) = (100, 115);
/// Accounts that are never opened.
const NEVER_OPENED: [u64; 2] = [404, 31_337];
/// Deposits to these fill the balance up to (and past) 2^63 - 1.
const WHALES: [u64; 2] = [u64::MAX, 1 << 63];
/// Opened with the largest overdraft, so holds can pile up to 2^63 - 1.
const DEEP_OVERDRAFT: u64 = 0;

/// Merchants the stream opens (id, currency, fee_bps): every fee edge, ids
/// that are also account ids (a space of their own), the id edges.
const MERCHANTS: [(u64, &str, u64); 12] = [
    (1, "USD", 250),
    (2, "USD", 0),
    (3, "JPY", 10_000),
    (4, "KWD", 125),
    (5, "USD", 10_000),
    (0, "JPY", 1),
    (u64::MAX, "KWD", 0),
    (7, "EUR", 9_999),
    (8, "GBP", 33),
    (9, "BHD", 5_000),
    (1 << 63, "USD", 7),
    (9_007_199_254_740_993, "JPY", 333),
];
/// Merchants that are never opened.
const NEVER_MERCHANTS: [u64; 2] = [404, 77_777];
/// Accounts opened one by one to be closed (`emit_close_scenario`).
const CLOSE_POOL: u64 = 5_000;

const CURRENCIES: [&str; 10] = [
    "USD", "JPY", "KWD", "EUR", "GBP", "CNY", "HKD", "SGD", "KRW", "BHD",
];
const UNSUPPORTED: [&str; 10] = [
    "usd", "Usd", "jpy", "XXX", "AUD", "", " USD", "USD ", "US", "KWDX",
];
const SPECIAL_IDS: [u64; 5] = [
    0,
    u64::MAX,
    1 << 63,
    9_007_199_254_740_993,
    9_007_199_254_740_992,
];

pub struct Generator {
    pub rng: Rng,
    pub model: Model,
    next_id: u64,
    /// (account, id) pairs sent while the account was open and well-formed.
    used: HashSet<(u64, u64), BuildHasherDefault<FixedHasher>>,
    /// Open accounts, sorted (the model's map has no useful order).
    open: Vec<u64>,
    /// Ids that stored nothing (malformed or unknown account): fresh again.
    recyclable: Vec<(u64, u64)>,
    recent_ids: Vec<u64>,
    pub lines: Vec<GenLine>,
    /// The parts of SPEC's last section the stream exercises.
    features: Vec<&'static str>,
    /// Accounts of `CLOSE_POOL` opened so far (each closes for good).
    pool: Vec<u64>,
    next_settle_id: u64,
}

/// The parts of SPEC's section "Merchants and clearing, batch debits,
/// closing accounts, history" the generator can exercise, each switched on
/// by name in `DEBITCORE_MODEL_FEATURES` (comma-separated; default: all).
/// `merchants`: open_merchant, `merchant` on debit and authorize, clearing
/// and charge-backs, the `merchant` query; `settle`; `batch`: queue_debit
/// and run_batch; `closing`: close_account; `history`: the flag and the
/// statement. `settle` brings `merchants` with it (there is nothing to
/// settle without them).
pub const FEATURES: [&str; 5] = ["merchants", "settle", "batch", "closing", "history"];

/// The features switched on for this run.
pub fn features() -> Vec<&'static str> {
    match std::env::var("DEBITCORE_MODEL_FEATURES") {
        Err(_) => FEATURES.to_vec(),
        Ok(text) => {
            let wanted: Vec<&str> = text
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            for w in &wanted {
                assert!(
                    FEATURES.contains(w) || *w == "all" || *w == "none",
                    "DEBITCORE_MODEL_FEATURES: unknown feature {w:?} (known: {FEATURES:?}, all, none)"
                );
            }
            if wanted.contains(&"all") {
                return FEATURES.to_vec();
            }
            FEATURES
                .iter()
                .copied()
                .filter(|f| wanted.contains(f) || (*f == "merchants" && wanted.contains(&"settle")))
                .collect()
        }
    }
}

/// Generates `count` request lines for an engine with the given dedup window.
pub fn generate(seed: u64, count: usize, dedup_window_ms: u64) -> Vec<GenLine> {
    generate_with(seed, count, dedup_window_ms, features())
}

/// As `generate`, with the given features switched on.
pub fn generate_with(
    seed: u64,
    count: usize,
    dedup_window_ms: u64,
    features: Vec<&'static str>,
) -> Vec<GenLine> {
    let mut g = Generator {
        rng: Rng::new(seed),
        model: Model::new(dedup_window_ms),
        next_id: 0,
        used: HashSet::default(),
        open: Vec::new(),
        recyclable: Vec::new(),
        recent_ids: Vec::new(),
        lines: Vec::with_capacity(count),
        features,
        pool: Vec::new(),
        next_settle_id: 0,
    };
    g.next_id = g.rng.range(1, 1000);
    g.next_settle_id = g.rng.range(1, 1000);
    // Merchants first (some only later: until then they are unknown).
    if g.on("merchants") {
        for (merchant, currency, fee_bps) in MERCHANTS {
            if g.rng.percent(80) {
                if g.rng.percent(5) {
                    let bad = g.rng.pick(&UNSUPPORTED).to_string();
                    g.emit(Req::OpenMerchant {
                        merchant,
                        currency: bad,
                        fee_bps: Some(fee_bps),
                    });
                }
                let fee_bps = if fee_bps == 0 && g.rng.percent(50) {
                    None
                } else {
                    Some(fee_bps)
                };
                g.emit(Req::OpenMerchant {
                    merchant,
                    currency: currency.to_string(),
                    fee_bps,
                });
            }
        }
    }
    // Open most accounts first; the rest open later, between requests that
    // find them unknown.
    for account in ACCOUNTS {
        if g.lines.len() >= count {
            break;
        }
        if g.rng.percent(80) {
            let req = g.gen_open(Some(account));
            g.emit(req);
        }
    }
    while g.lines.len() < count {
        g.step();
    }
    g.lines.truncate(count);
    g.lines
}

/// Every field an op names, required ones first.
fn named_fields(op: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match op {
        "open_account" => (&["account", "currency"], &["overdraft", "history"]),
        "deposit" => (&["id", "account", "amount"], &[]),
        "debit" | "queue_debit" => (&["id", "account", "amount"], &["merchant"]),
        "authorize" => (&["id", "account", "amount"], &["expires_in_ms", "merchant"]),
        "increment" => (&["id", "account", "auth", "amount"], &["expires_in_ms"]),
        "capture" => (&["id", "account", "auth"], &["amount", "final"]),
        "void" => (&["id", "account", "auth"], &[]),
        "refund" => (&["id", "account", "of"], &["amount"]),
        "set_limits" => (
            &["account"],
            &["per_txn", "daily", "review_above", "velocity"],
        ),
        "freeze" | "unfreeze" | "balance" => (&["account"], &[]),
        "status" => (&["account", "id"], &[]),
        "advance_clock" => (&["ms"], &[]),
        "open_merchant" => (&["merchant", "currency"], &["fee_bps"]),
        "run_batch" => (&[], &[]),
        "settle" => (&["id", "merchant"], &[]),
        "merchant" => (&["merchant"], &[]),
        "close_account" => (&["account"], &[]),
        "history" => (&["account"], &["limit", "before"]),
        other => panic!("no fields for {other}"),
    }
}

const ALL_FIELDS: [&str; 19] = [
    "merchant",
    "fee_bps",
    "history",
    "limit",
    "before",
    "id",
    "account",
    "amount",
    "currency",
    "overdraft",
    "expires_in_ms",
    "auth",
    "final",
    "of",
    "per_txn",
    "daily",
    "review_above",
    "velocity",
    "ms",
];

/// Accounts whose balance the generator must know exactly (to fill it to
/// 2^63 - 1): nothing there may hinge on whether the engine forgot something,
/// as the generator's own model never forgets.
fn exact_balance(account: u64) -> bool {
    WHALES.contains(&account) || account == DEEP_OVERDRAFT
}

/// `DEBITCORE_MODEL_AVOID=tag,tag`: stop generating one class of input (to
/// look for other bugs while a known one is open). The model stays exact.
fn avoid(tag: &str) -> bool {
    std::env::var("DEBITCORE_MODEL_AVOID").is_ok_and(|v| v.split(',').any(|t| t.trim() == tag))
}

fn js(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// (key, raw JSON value) pairs of one line, in order.
type Fields = Vec<(String, String)>;

fn velocity_json(v: &VelocityArg) -> String {
    format!(
        "{{\"max\":{},\"window_ms\":{},\"below\":{}}}",
        v.max,
        v.window_ms,
        js(&v.below)
    )
}

impl Generator {
    fn exp_of(&self, account: u64) -> u32 {
        self.model.accounts.get(&account).map_or(2, |a| a.exp)
    }

    fn acct(&self, account: u64) -> Option<&Account> {
        self.model.accounts.get(&account)
    }

    // -----------------------------------------------------------------------
    // Choosing what to send.
    // -----------------------------------------------------------------------

    fn step(&mut self) {
        const WEIGHTS: [(u64, &str, &str); 31] = [
            (8, "open", ""),
            (100, "deposit", ""),
            (125, "debit", ""),
            (85, "authorize", ""),
            (40, "increment", ""),
            (80, "capture", ""),
            (30, "void", ""),
            (60, "refund", ""),
            (22, "set_limits", ""),
            (9, "freeze", ""),
            (110, "balance", ""),
            (35, "status", ""),
            (70, "advance_clock", ""),
            (55, "replay", ""),
            (30, "conflict", ""),
            (18, "old_key", ""),
            (40, "malformed", ""),
            (6, "burst", ""),
            (5, "window_edge", ""),
            (6, "velocity_edge", ""),
            (3, "open_merchant", "merchants"),
            (22, "merchant_query", "merchants"),
            (28, "settle", "settle"),
            (4, "settle_replay_burst", "settle"),
            (40, "queue_debit", "batch"),
            (10, "run_batch", "batch"),
            (5, "batch_scenario", "batch"),
            (5, "close", "closing"),
            (3, "close_scenario", "closing"),
            (16, "history", "history"),
            (2, "history_walk", "history"),
        ];
        let weights: Vec<(u64, &str)> = WEIGHTS
            .iter()
            .filter(|(_, _, feature)| feature.is_empty() || self.on(feature))
            .map(|(w, name, _)| (*w, *name))
            .collect();
        let total: u64 = weights.iter().map(|w| w.0).sum();
        let mut roll = self.rng.below(total);
        let mut choice = "balance";
        for (weight, name) in weights {
            if roll < weight {
                choice = name;
                break;
            }
            roll -= weight;
        }
        match choice {
            "open" => {
                let req = self.gen_open(None);
                self.emit(req)
            }
            "malformed" => self.emit_malformed(),
            "replay" => self.emit_replay(),
            "conflict" => self.emit_conflict(),
            "old_key" => self.emit_old_key(),
            "burst" => self.emit_burst(),
            "window_edge" => self.emit_window_edge(),
            "velocity_edge" => self.emit_velocity_edge(),
            "open_merchant" => {
                let req = self.gen_open_merchant();
                self.emit(req)
            }
            "merchant_query" => {
                let merchant = self.pick_merchant_any();
                self.emit(Req::Merchant { merchant })
            }
            "settle" => self.emit_settle(),
            "settle_replay_burst" => self.emit_settle_replay_burst(),
            "run_batch" => self.emit_run_batch(),
            "batch_scenario" => self.emit_batch_scenario(),
            "close" => self.emit_close(),
            "close_scenario" => self.emit_close_scenario(),
            "history_walk" => self.emit_history_walk(),
            "advance_clock" => {
                let req = self.gen_advance();
                self.emit(req)
            }
            op => {
                let account = self.pick_account();
                let req = self.gen_op(op, account);
                self.emit(req)
            }
        }
    }

    fn gen_op(&mut self, op: &str, account: u64) -> Req {
        match op {
            "deposit" => self.gen_deposit(account),
            "debit" => self.gen_debit(account),
            "authorize" => self.gen_authorize(account),
            "increment" => self.gen_increment(account),
            "capture" => self.gen_capture(account),
            "void" => self.gen_void(account),
            "refund" => self.gen_refund(account),
            "set_limits" => self.gen_set_limits(account),
            "freeze" => self.gen_freeze(account),
            "balance" => Req::Balance { account },
            "status" => self.gen_status(account),
            "queue_debit" => self.gen_queue_debit(account),
            "history" => self.gen_history(account),
            "close_account" => Req::Close { account },
            other => panic!("unknown op choice {other}"),
        }
    }

    /// Mostly an open account, a few hot ones more often; sometimes one that
    /// is not open (yet, or ever), or one that was closed.
    fn pick_account(&mut self) -> u64 {
        if !self.pool.is_empty() && self.rng.percent(2) {
            return self.rng.pick(&self.pool);
        }
        let open = &self.open;
        if open.is_empty() || self.rng.percent(4) {
            let mut closed: Vec<u64> = ACCOUNTS
                .iter()
                .copied()
                .filter(|a| !self.model.accounts.contains_key(a))
                .collect();
            closed.extend(NEVER_OPENED);
            return self.rng.pick(&closed);
        }
        let hot: Vec<u64> = ACCOUNTS[..6]
            .iter()
            .copied()
            .filter(|a| self.model.accounts.contains_key(a))
            .collect();
        if !hot.is_empty() && self.rng.percent(60) {
            return self.rng.pick(&hot);
        }
        let i = self.rng.below(open.len() as u64) as usize;
        self.open[i]
    }

    fn fresh_id(&mut self, account: u64) -> u64 {
        if self.rng.percent(15) {
            if let Some(pos) = self
                .recyclable
                .iter()
                .position(|&(a, id)| a == account && !self.used.contains(&(a, id)))
            {
                return self.recyclable.swap_remove(pos).1;
            }
        }
        if self.rng.percent(2) {
            for id in SPECIAL_IDS {
                if !self.used.contains(&(account, id)) {
                    return id;
                }
            }
        }
        if self.rng.percent(10) && !self.recent_ids.is_empty() {
            // An id another account used: keys are scoped to the account.
            let id = self.rng.pick(&self.recent_ids);
            if !self.used.contains(&(account, id)) {
                return id;
            }
        }
        loop {
            self.next_id += self.rng.range(1, 3);
            if !self.used.contains(&(account, self.next_id)) {
                return self.next_id;
            }
        }
    }

    // -----------------------------------------------------------------------
    // Amounts.
    // -----------------------------------------------------------------------

    /// `minor` minor units in major units, spelled one of the valid ways.
    fn spell(&mut self, minor: i128, exp: u32) -> String {
        let canonical = format_minor(minor, exp);
        let mut s = match self.rng.below(20) {
            0..=9 if exp > 0 => {
                let t = canonical.trim_end_matches('0');
                t.trim_end_matches('.').to_string()
            }
            _ => canonical,
        };
        if self.rng.percent(8) {
            s = format!("{}{s}", "0".repeat(self.rng.range(1, 3) as usize));
        }
        s
    }

    /// An amount that is `invalid_amount` in a currency with exponent `exp`.
    fn bad_amount(&mut self, exp: u32) -> String {
        match self.rng.below(6) {
            0 => self
                .rng
                .pick(if avoid("trailing-zeros") {
                    &["0", "00"]
                } else {
                    &["0", "0.0", "00", "0.00", "0.000", "000.0"]
                })
                .to_string(),
            1 => {
                // One fraction digit too many, sometimes a trailing zero.
                let minor = self.rng.money(1, 5000);
                let last = if self.rng.percent(50) && !avoid("trailing-zeros") {
                    0
                } else {
                    self.rng.range(1, 9)
                };
                format_minor(minor * 10 + i128::from(last), exp + 1)
            }
            2 => {
                let over = MINOR_MAX + self.rng.money(1, 3);
                match self.rng.below(3) {
                    0 => format_minor(over, exp),
                    1 => "99999999999999999999999999".to_string(),
                    _ => format!("1{}", "0".repeat(40)),
                }
            }
            3 => self
                .rng
                .pick(&[
                    "abc", "", " 1", "1 ", "1.", ".5", "+1", "1e3", "0x10", "1,5", "\u{0661}",
                    "1_0", "NaN", "Infinity", "1.2.3", "１",
                ])
                .to_string(),
            4 => self.rng.pick(&["-1", "-0.5", "-0", "--1"]).to_string(),
            _ => {
                // Zero with many digits, or just over the top.
                if self.rng.percent(50) {
                    format_minor(0, exp)
                } else {
                    format_minor(MINOR_MAX + 1, exp)
                }
            }
        }
    }

    /// A typical amount: a few major units, often whole.
    fn small(&mut self, exp: u32, max_units: i128) -> i128 {
        let unit = 10i128.pow(exp);
        if self.rng.percent(50) {
            self.rng.money(1, max_units) * unit
        } else {
            self.rng.money(1, max_units * unit)
        }
    }

    /// An amount for a debit or authorize: typical, or on the edge of what
    /// funds, limits or risk rules allow.
    fn take_amount(&mut self, account: u64, for_hold: bool) -> String {
        let Some(acct) = self.acct(account) else {
            let m = self.small(2, 40);
            return self.spell(m, 2);
        };
        let exp = acct.exp;
        let room = acct.available() + acct.overdraft;
        let limits = acct.limits.clone();
        let today = if acct.day == self.model.now_ms / DAY_MS {
            acct.day_sum
        } else {
            0
        };
        if self.rng.percent(7) {
            return self.bad_amount(exp);
        }
        if for_hold && account == DEEP_OVERDRAFT && self.rng.percent(30) {
            // Just up to, or just past, 2^63 - 1 held.
            let value = self.up_to_max_held(account);
            return self.spell(value, exp);
        }
        // Exactly on an edge, or one minor unit either side of it.
        let edge = |g: &mut Generator, v: i128| v + g.rng.money(-1, 1);
        let value = match self.rng.below(100) {
            0..=54 => self.small(exp, 40),
            // The deep-overdraft account keeps a positive balance, so that
            // its holds can reach 2^63 - 1.
            55..=64 if account != DEEP_OVERDRAFT => edge(self, room),
            55..=64 => self.small(exp, 40),
            65..=72 => match limits.per_txn {
                Some(p) => edge(self, p),
                None => self.small(exp, 40),
            },
            73..=80 => match limits.daily {
                Some(d) if d > today => edge(self, d - today),
                _ => self.small(exp, 40),
            },
            81..=88 => match limits.review_above {
                Some(r) => edge(self, r),
                None => self.small(exp, 40),
            },
            89..=96 => match &limits.velocity {
                Some(v) => {
                    if self.rng.percent(60) {
                        self.rng.money(1, v.below)
                    } else {
                        edge(self, v.below)
                    }
                }
                None => self.small(exp, 10),
            },
            _ => self.small(exp, 100_000),
        };
        let value = if value <= 0 {
            self.small(exp, 10)
        } else {
            value
        };
        self.spell(value, exp)
    }

    /// With nothing held, nearly 2^63 - 1; else exactly what fills `held`
    /// to 2^63 - 1, or one more.
    fn up_to_max_held(&mut self, account: u64) -> i128 {
        let held = self.acct(account).map_or(0, Account::held);
        if held == 0 {
            MINOR_MAX - self.rng.money(0, 1000)
        } else {
            (MINOR_MAX - held).max(1) + self.rng.money(0, 1)
        }
    }

    fn expires(&mut self) -> Option<u64> {
        match self.rng.below(100) {
            0..=44 => None,
            45..=69 => Some(self.rng.range(1, 20_000)),
            70..=89 => Some(self.rng.range(20_000, 4 * 3_600_000)),
            90..=94 => Some(DEFAULT_EXPIRY_MS),
            95..=97 => Some(1),
            _ => Some(TIME_ARG_MAX),
        }
    }

    // -----------------------------------------------------------------------
    // Requests.
    // -----------------------------------------------------------------------

    fn gen_open(&mut self, account: Option<u64>) -> Req {
        let account = account.unwrap_or_else(|| {
            let closed: Vec<u64> = ACCOUNTS
                .iter()
                .copied()
                .filter(|a| !self.model.accounts.contains_key(a))
                .collect();
            if !closed.is_empty() && self.rng.percent(75) {
                self.rng.pick(&closed)
            } else if self.rng.percent(50) {
                self.rng.range(SPARE_ACCOUNTS.0, SPARE_ACCOUNTS.1)
            } else {
                self.rng.pick(&ACCOUNTS)
            }
        });
        // Spare accounts mostly fail to open: that is what they are for.
        let spare = account >= SPARE_ACCOUNTS.0 && account <= SPARE_ACCOUNTS.1;
        let currency = if self.rng.percent(if spare { 45 } else { 12 }) {
            self.rng.pick(&UNSUPPORTED).to_string()
        } else {
            match self.rng.below(10) {
                0..=2 => "USD".to_string(),
                3..=4 => "JPY".to_string(),
                5..=6 => "KWD".to_string(),
                _ => self.rng.pick(&CURRENCIES).to_string(),
            }
        };
        let exp = crate::reference::currency_exponent(&currency).unwrap_or(2);
        let overdraft = if account == DEEP_OVERDRAFT {
            Some(format_minor(MINOR_MAX, exp))
        } else {
            match self.rng.below(100) {
                0..=54 => None,
                55..=62 if avoid("trailing-zeros") => Some("0".to_string()),
                55..=62 if avoid("trailing-zeros") => Some("0".to_string()),
                55..=62 => Some(self.rng.pick(&["0", "0.0", "00"]).to_string()),
                63..=84 => {
                    let m = self.small(exp, 50);
                    Some(self.spell(m, exp))
                }
                85..=89 => Some(format_minor(MINOR_MAX - self.rng.money(0, 1), exp)),
                _ => Some(self.bad_amount(exp)),
            }
        };
        let overdraft = if spare && self.rng.percent(35) {
            Some(self.bad_amount(exp))
        } else {
            overdraft
        };
        let overdraft = match overdraft {
            // Zero is a valid overdraft but not a valid amount.
            Some(o)
                if crate::reference::parse_amount(&o, exp, true) == Some(0)
                    && self.rng.percent(50) =>
            {
                Some(format_minor(0, exp))
            }
            other => other,
        };
        let history = if self.on("history") {
            match self.rng.below(100) {
                0..=34 => Some(true),
                35..=44 => Some(false),
                _ => None,
            }
        } else {
            None
        };
        Req::Open {
            account,
            currency,
            overdraft,
            history,
        }
    }

    fn gen_deposit(&mut self, account: u64) -> Req {
        let id = self.fresh_id(account);
        let exp = self.exp_of(account);
        let amount = if self.rng.percent(8) {
            self.bad_amount(exp)
        } else if (WHALES.contains(&account) || account == DEEP_OVERDRAFT) && self.rng.percent(40) {
            let balance = self.acct(account).map_or(0, |a| a.balance);
            // Exactly up to 2^63 - 1, or one past; from below zero, the
            // largest amount there is.
            let fill = if balance < 0 {
                MINOR_MAX
            } else {
                (MINOR_MAX - balance).max(1) + self.rng.money(0, 1)
            };
            self.spell(fill, exp)
        } else {
            let m = self.small(exp, 300);
            self.spell(m, exp)
        };
        Req::Deposit {
            id,
            account,
            amount,
        }
    }

    fn gen_debit(&mut self, account: u64) -> Req {
        let id = self.fresh_id(account);
        let amount = self.take_amount(account, false);
        let merchant = self.maybe_merchant(account);
        Req::Debit {
            id,
            account,
            amount,
            merchant,
        }
    }

    fn gen_authorize(&mut self, account: u64) -> Req {
        let id = self.fresh_id(account);
        let amount = self.take_amount(account, true);
        let expires_in_ms = self.expires();
        let merchant = self.maybe_merchant(account);
        Req::Authorize {
            id,
            account,
            amount,
            expires_in_ms,
            merchant,
        }
    }

    /// A hold id on `account`: active (captured or not), ended, or none.
    fn pick_hold(&mut self, account: u64, active_percent: u64, started_percent: u64) -> u64 {
        let Some(acct) = self.acct(account) else {
            return self.fresh_id(account);
        };
        let tail: Vec<u64> = acct.hold_order.iter().rev().take(120).copied().collect();
        let active: Vec<u64> = tail
            .iter()
            .copied()
            .filter(|id| {
                acct.holds
                    .get(id)
                    .is_some_and(|h| h.state == HoldState::Active)
            })
            .collect();
        let started: Vec<u64> = active
            .iter()
            .copied()
            .filter(|id| acct.holds[id].captured > 0)
            .collect();
        // Ended holds the engine must still remember, and older ones.
        let ended_since = |id: &u64| match acct.holds.get(id).map(|h| h.state) {
            Some(HoldState::Ended { at_ms, .. }) => Some(at_ms),
            _ => None,
        };
        let ended_sure: Vec<u64> = tail
            .iter()
            .copied()
            .filter(|id| ended_since(id).is_some_and(|at| !self.model.may_be_forgotten(at)))
            .collect();
        let ended_old: Vec<u64> = tail
            .iter()
            .copied()
            .filter(|id| ended_since(id).is_some_and(|at| self.model.may_be_forgotten(at)))
            .collect();
        let not_holds: Vec<u64> = acct
            .key_order
            .iter()
            .rev()
            .take(50)
            .copied()
            .filter(|id| !acct.holds.contains_key(id))
            .collect();
        let roll = self.rng.below(100);
        if roll < started_percent && !started.is_empty() {
            return self.rng.pick(&started);
        }
        if roll < active_percent && !active.is_empty() {
            return self.rng.pick(&active);
        }
        if roll < 86 && !ended_sure.is_empty() {
            return self.rng.pick(&ended_sure);
        }
        if roll < 92 && !ended_old.is_empty() {
            return self.rng.pick(&ended_old);
        }
        if roll < 96 && !not_holds.is_empty() {
            return self.rng.pick(&not_holds);
        }
        self.fresh_id(account)
    }

    fn gen_increment(&mut self, account: u64) -> Req {
        let auth = self.pick_hold(account, 80, 25);
        let id = self.fresh_id(account);
        let exp = self.exp_of(account);
        let hold_amount = self
            .acct(account)
            .and_then(|a| a.holds.get(&auth))
            .map_or(0, |h| h.amount);
        let per_txn = self.acct(account).and_then(|a| a.limits.per_txn);
        if account == DEEP_OVERDRAFT && self.rng.percent(30) {
            let m = self.up_to_max_held(account);
            let amount = self.spell(m, exp);
            return Req::Increment {
                id,
                account,
                auth,
                amount,
                expires_in_ms: None,
            };
        }
        let amount = match (self.rng.below(100), per_txn) {
            (0..=59, _) => {
                let m = self.small(exp, 20);
                self.spell(m, exp)
            }
            (60..=79, Some(p)) if p > hold_amount => {
                let m = p - hold_amount + self.rng.money(0, 1);
                self.spell(m, exp)
            }
            (80..=91, _) => self.take_amount(account, true),
            (92..=95, _) => {
                let m = self.small(exp, 100_000_000);
                self.spell(m, exp)
            }
            (96.., _) => self.bad_amount(exp),
            _ => {
                let m = self.small(exp, 5);
                self.spell(m, exp)
            }
        };
        let expires_in_ms = if self.rng.percent(60) {
            None
        } else {
            self.expires()
        };
        Req::Increment {
            id,
            account,
            auth,
            amount,
            expires_in_ms,
        }
    }

    fn gen_capture(&mut self, account: u64) -> Req {
        let auth = self.pick_hold(account, 75, 15);
        // Now and then the id of the hold itself: an id_conflict, as long as
        // that key is surely remembered.
        let auth_key_sure = self
            .acct(account)
            .and_then(|a| a.keys.get(&auth))
            .is_some_and(|k| !self.model.may_be_forgotten(k.first_ms));
        let id = if auth_key_sure && self.rng.percent(2) {
            auth
        } else {
            self.fresh_id(account)
        };
        let exp = self.exp_of(account);
        let left = self
            .acct(account)
            .and_then(|a| a.holds.get(&auth))
            .map_or(100, |h| h.left());
        let amount = match self.rng.below(100) {
            0..=34 => None,
            35..=44 => Some(self.spell(left.max(1), exp)),
            45..=74 => {
                let m = self.rng.money(1, (left - 1).max(1));
                Some(self.spell(m, exp))
            }
            75..=84 => Some(self.spell(left + 1, exp)),
            85..=89 => Some(self.bad_amount(exp)),
            _ => {
                let m = self.small(exp, 30);
                Some(self.spell(m, exp))
            }
        };
        let is_final = match self.rng.below(100) {
            0..=54 => None,
            55..=64 => Some(true),
            _ => Some(false),
        };
        Req::Capture {
            id,
            account,
            auth,
            amount,
            is_final,
        }
    }

    fn gen_void(&mut self, account: u64) -> Req {
        let auth = self.pick_hold(account, 65, 10);
        let id = self.fresh_id(account);
        Req::Void { id, account, auth }
    }

    fn gen_refund(&mut self, account: u64) -> Req {
        let id = self.fresh_id(account);
        let exp = self.exp_of(account);
        let (of, left) = match self.acct(account) {
            None => (self.rng.range(1, 1000), 100),
            Some(acct) => {
                // Originals the engine must still remember, and older ones.
                let mut sure: Vec<(u64, i128)> = Vec::new();
                let mut old: Vec<(u64, i128)> = Vec::new();
                for id in acct.key_order.iter().rev().take(150) {
                    if let Some(r) = acct.refundables.get(id) {
                        if self.model.may_be_forgotten(r.first_ms) {
                            old.push((*id, r.amount - r.refunded));
                        } else {
                            sure.push((*id, r.amount - r.refunded));
                        }
                    }
                }
                let others: Vec<u64> = acct
                    .key_order
                    .iter()
                    .rev()
                    .take(60)
                    .copied()
                    .filter(|id| !acct.refundables.contains_key(id))
                    .collect();
                let roll = self.rng.below(100);
                if roll < 65 && !sure.is_empty() {
                    self.rng.pick(&sure)
                } else if roll < 75 && !old.is_empty() && !exact_balance(account) {
                    self.rng.pick(&old)
                } else if roll < 95 && !others.is_empty() {
                    (self.rng.pick(&others), 100)
                } else {
                    (self.rng.range(0, 1_000_000), 100)
                }
            }
        };
        let amount = match self.rng.below(100) {
            0..=29 => None,
            30..=44 => Some(self.spell(left.max(1), exp)),
            45..=74 => {
                let m = self.rng.money(1, left.max(1));
                Some(self.spell(m, exp))
            }
            75..=84 => Some(self.spell(left + 1, exp)),
            85..=89 => Some(self.bad_amount(exp)),
            _ => {
                let m = self.small(exp, 50);
                Some(self.spell(m, exp))
            }
        };
        Req::Refund {
            id,
            account,
            of,
            amount,
        }
    }

    fn gen_set_limits(&mut self, account: u64) -> Req {
        let exp = self.exp_of(account);
        let unit = 10i128.pow(exp);
        let field = |g: &mut Generator, lo: i128, hi: i128| {
            if g.rng.percent(50) {
                let m = g.rng.money(lo * unit, hi * unit);
                Some(g.spell(m, exp))
            } else {
                None
            }
        };
        let clear = self.rng.percent(10);
        // The deep-overdraft account takes huge amounts: no bounds on them.
        let bounded = account != DEEP_OVERDRAFT;
        let mut per_txn = field(self, 20, 200).filter(|_| bounded);
        let mut daily = field(self, 50, 600).filter(|_| bounded);
        let mut review_above = field(self, 10, 150);
        let mut velocity = if self.rng.percent(55) {
            let max = match self.rng.below(20) {
                0 => 1000,
                1..=6 => 1,
                _ => self.rng.range(2, 4),
            };
            let window_ms = match self.rng.below(20) {
                0 => 1,
                1 => TIME_ARG_MAX,
                _ => self.rng.range(50, 5000),
            };
            let below = self.rng.money(unit, 30 * unit);
            Some(VelocityArg {
                max,
                window_ms,
                below: self.spell(below, exp),
            })
        } else {
            None
        };
        if clear {
            per_txn = None;
            daily = None;
            review_above = None;
            velocity = None;
        } else if self.rng.percent(10) {
            let bad = self.bad_amount(exp);
            match self.rng.below(4) {
                0 => per_txn = Some(bad),
                1 => daily = Some(bad),
                2 => review_above = Some(bad),
                _ => {
                    velocity = Some(VelocityArg {
                        max: 2,
                        window_ms: 1000,
                        below: bad,
                    })
                }
            }
        }
        Req::SetLimits {
            account,
            per_txn,
            daily,
            review_above,
            velocity,
        }
    }

    fn gen_freeze(&mut self, account: u64) -> Req {
        let frozen = self.acct(account).is_some_and(|a| a.frozen);
        let freeze = if frozen {
            self.rng.percent(10)
        } else {
            self.rng.percent(15)
        };
        if freeze {
            Req::Freeze { account }
        } else {
            Req::Unfreeze { account }
        }
    }

    fn gen_status(&mut self, account: u64) -> Req {
        let roll = self.rng.below(100);
        let n = self.acct(account).map_or(0, |a| a.key_order.len());
        let id = if roll < 85 && n > 0 {
            let i = if roll < 65 {
                self.rng.recent_index(n)
            } else {
                self.rng.below(n as u64) as usize
            };
            self.model.accounts[&account].key_order[i]
        } else {
            self.fresh_id(account)
        };
        Req::Status { account, id }
    }

    /// Small steps mostly; otherwise exactly onto (or one short of) an edge:
    /// a hold's expiry, a UTC day, a velocity window, the dedup window.
    fn gen_advance(&mut self) -> Req {
        let now = self.model.now_ms;
        let window = self.model.dedup_window_ms;
        let mut targets: Vec<u64> = Vec::new();
        let roll = self.rng.below(1000);
        let ms = match roll {
            0..=49 => 0,
            50..=449 => self.rng.range(1, 400),
            450..=599 => self.rng.range(400, 4000),
            600..=699 => {
                for acct in self.model.accounts.values() {
                    for id in &acct.active_holds {
                        targets.push(acct.holds[id].expires_at_ms);
                    }
                }
                self.edge_step(&mut targets, 1)
            }
            700..=779 => {
                let next_day = (now / DAY_MS + 1) * DAY_MS;
                targets.push(next_day);
                self.edge_step(&mut targets, 1)
            }
            780..=859 => {
                for acct in self.model.accounts.values() {
                    if let Some(v) = &acct.limits.velocity {
                        for (t, _) in acct.velocity_debits.iter().rev().take(5) {
                            targets.push(t + v.window_ms);
                        }
                    }
                }
                self.edge_step(&mut targets, 1)
            }
            860..=919 => {
                for acct in self.model.accounts.values() {
                    for id in acct.key_order.iter().rev().take(3) {
                        if let Some(k) = acct.keys.get(id) {
                            targets.push(k.first_ms + window);
                        }
                    }
                }
                self.edge_step(&mut targets, 1)
            }
            920..=990 => self.rng.range(4000, 60_000),
            991..=993 => {
                // Just short of the next UTC day.
                let next_day = (now / DAY_MS + 1) * DAY_MS;
                next_day - now - self.rng.range(1, 3000).min(next_day - now)
            }
            994..=997 => self
                .rng
                .pick(&[DAY_MS, DEFAULT_EXPIRY_MS, DAY_MS / 2, 3_600_000]),
            _ => {
                if self.rng.percent(10) {
                    TIME_ARG_MAX
                } else {
                    DEFAULT_EXPIRY_MS + self.rng.range(0, 1)
                }
            }
        };
        Req::AdvanceClock { ms }
    }

    /// A step onto one of `targets` (or `before` ms short of it), if one is
    /// ahead and not too far; else a small step.
    fn edge_step(&mut self, targets: &mut Vec<u64>, before: u64) -> u64 {
        let now = self.model.now_ms;
        let far = if self.rng.percent(2) {
            8 * DAY_MS
        } else {
            3_600_000
        };
        targets.retain(|&t| t > now && t - now <= far);
        // Collected from hash maps: sort so that a seed gives one stream.
        targets.sort_unstable();
        targets.dedup();
        if targets.is_empty() {
            return self.rng.range(1, 400);
        }
        let target = self.rng.pick(targets);
        let target = if self.rng.percent(50) && target - before > now {
            target - before
        } else {
            target
        };
        target - now
    }

    // -----------------------------------------------------------------------
    // Reusing ids.
    // -----------------------------------------------------------------------

    /// Ids of keys on `account`, the most recent first, with whether each is
    /// sure to be remembered.
    fn keys_of(&self, account: u64, take: usize) -> Vec<(u64, bool)> {
        let Some(acct) = self.acct(account) else {
            return Vec::new();
        };
        acct.key_order
            .iter()
            .rev()
            .take(take)
            .filter_map(|id| acct.keys.get(id).map(|k| (*id, self.model.key_sure(k))))
            .collect()
    }

    /// The same request again, spelled differently where SPEC says it is
    /// the same: amounts by value, omitted optionals as their defaults.
    fn equivalent(&mut self, req: &Req) -> Req {
        let mut req = req.clone();
        match &mut req {
            Req::Deposit { amount, .. }
            | Req::Debit { amount, .. }
            | Req::QueueDebit { amount, .. } => self.respell(amount),
            Req::Authorize {
                amount,
                expires_in_ms,
                ..
            } => {
                self.respell(amount);
                if self.rng.percent(30) {
                    *expires_in_ms = match expires_in_ms {
                        None => Some(DEFAULT_EXPIRY_MS),
                        Some(DEFAULT_EXPIRY_MS) => None,
                        Some(v) => Some(*v),
                    };
                }
            }
            Req::Increment { amount, .. } => self.respell(amount),
            Req::Capture {
                amount, is_final, ..
            } => {
                if let Some(a) = amount {
                    self.respell(a);
                }
                if self.rng.percent(40) {
                    *is_final = match is_final {
                        None => Some(true),
                        Some(true) => None,
                        Some(false) => Some(false),
                    };
                }
            }
            Req::Refund {
                amount: Some(a), ..
            } => self.respell(a),
            _ => {}
        }
        req
    }

    /// Same value, other digits: leading zeros, trailing zeros, fewer zeros.
    fn respell(&mut self, amount: &mut String) {
        if !crate::reference::amount_identity(amount).starts_with("number:") || self.rng.percent(30)
        {
            return;
        }
        *amount = match self.rng.below(3) {
            0 => format!("0{amount}"),
            1 if avoid("trailing-zeros") => format!("0{amount}"),
            1 if amount.contains('.') => format!("{amount}0"),
            1 => format!("{amount}.0"),
            _ if amount.contains('.') => {
                let t = amount.trim_end_matches('0');
                let t = t.trim_end_matches('.');
                t.to_string()
            }
            _ => format!("00{amount}"),
        };
    }

    /// The same id with something different: another op or another field.
    /// With `harmless_only`, the result is a deposit, void, refund or
    /// increment (see the module comment).
    fn conflicting(&mut self, req: &Req, harmless_only: bool) -> Req {
        let exp = req.account().map_or(2, |a| self.exp_of(a));
        let roll = self.rng.below(4);
        match req.clone() {
            Req::Deposit {
                id,
                account,
                amount,
            } => match roll {
                0 | 1 => Req::Deposit {
                    id,
                    account,
                    amount: self.other_amount(&amount, exp),
                },
                _ if harmless_only => Req::Refund {
                    id,
                    account,
                    of: id,
                    amount: None,
                },
                2 => Req::Debit {
                    id,
                    account,
                    amount,
                    merchant: None,
                },
                _ => Req::Authorize {
                    id,
                    account,
                    amount,
                    expires_in_ms: None,
                    merchant: None,
                },
            },
            Req::Debit {
                id,
                account,
                amount,
                merchant,
            }
            | Req::QueueDebit {
                id,
                account,
                amount,
                merchant,
            } => {
                let queued = matches!(req, Req::QueueDebit { .. });
                let rebuild = |amount: String, merchant: Option<u64>, queued: bool| {
                    if queued {
                        Req::QueueDebit {
                            id,
                            account,
                            amount,
                            merchant,
                        }
                    } else {
                        Req::Debit {
                            id,
                            account,
                            amount,
                            merchant,
                        }
                    }
                };
                match roll {
                    _ if harmless_only => Req::Refund {
                        id,
                        account,
                        of: id,
                        amount: None,
                    },
                    0 => rebuild(self.other_amount(&amount, exp), merchant, queued),
                    // "The merchant field takes part in replays like any
                    // field (omitted differs from given)".
                    1 if self.on("merchants") => {
                        let other = self.other_merchant(merchant);
                        rebuild(amount, other, queued)
                    }
                    2 if self.on("batch") => rebuild(amount, merchant, !queued),
                    _ => Req::Deposit {
                        id,
                        account,
                        amount,
                    },
                }
            }
            Req::Authorize {
                id,
                account,
                amount,
                expires_in_ms,
                merchant,
            } => match roll {
                0 => Req::Authorize {
                    id,
                    account,
                    amount: self.other_amount(&amount, exp),
                    expires_in_ms,
                    merchant,
                },
                1 if self.on("merchants") => Req::Authorize {
                    id,
                    account,
                    amount,
                    expires_in_ms,
                    merchant: self.other_merchant(merchant),
                },
                _ => Req::Authorize {
                    id,
                    account,
                    amount,
                    expires_in_ms: Some(match expires_in_ms.unwrap_or(DEFAULT_EXPIRY_MS) {
                        TIME_ARG_MAX => TIME_ARG_MAX - 1,
                        other => other + 1,
                    }),
                    merchant,
                },
            },
            Req::Increment {
                id,
                account,
                auth,
                amount,
                expires_in_ms,
            } => {
                let (mut auth, mut amount, mut expires_in_ms) = (auth, amount, expires_in_ms);
                match roll {
                    0 => amount = self.other_amount(&amount, exp),
                    1 => auth = auth.wrapping_add(1),
                    _ => {
                        expires_in_ms = if expires_in_ms.is_some() {
                            None
                        } else {
                            Some(1000)
                        }
                    }
                }
                Req::Increment {
                    id,
                    account,
                    auth,
                    amount,
                    expires_in_ms,
                }
            }
            Req::Capture {
                id,
                account,
                auth,
                amount,
                is_final,
            } => {
                let (mut auth_id, mut amount, mut is_final) = (auth, amount, is_final);
                match roll {
                    0 => {
                        amount = match amount {
                            None => Some(self.spell(1, exp)),
                            Some(_) if self.rng.percent(50) => None,
                            Some(a) => Some(self.other_amount(&a, exp)),
                        }
                    }
                    1 => {
                        is_final = if is_final == Some(false) {
                            None
                        } else {
                            Some(false)
                        }
                    }
                    2 => auth_id = auth_id.wrapping_add(1),
                    _ => return Req::Void { id, account, auth },
                }
                Req::Capture {
                    id,
                    account,
                    auth: auth_id,
                    amount,
                    is_final,
                }
            }
            Req::Void { id, account, auth } => match roll {
                0 | 1 => Req::Void {
                    id,
                    account,
                    auth: auth.wrapping_add(1),
                },
                _ if harmless_only => Req::Deposit {
                    id,
                    account,
                    amount: "1".to_string(),
                },
                _ => Req::Capture {
                    id,
                    account,
                    auth,
                    amount: None,
                    is_final: None,
                },
            },
            Req::Refund {
                id,
                account,
                of,
                amount,
            } => match roll {
                0 => Req::Refund {
                    id,
                    account,
                    of: of.wrapping_add(1),
                    amount,
                },
                1 if amount.is_some() => Req::Refund {
                    id,
                    account,
                    of,
                    amount: None,
                },
                _ => {
                    let amount = match amount {
                        Some(a) => Some(self.other_amount(&a, exp)),
                        None => Some(self.spell(1, exp)),
                    };
                    Req::Refund {
                        id,
                        account,
                        of,
                        amount,
                    }
                }
            },
            other => panic!("{} has no key", other.op()),
        }
    }

    /// A different amount: another value, or (for text that is not a
    /// number) other text.
    fn other_amount(&mut self, amount: &str, exp: u32) -> String {
        match crate::reference::amount_identity(amount).strip_prefix("number:") {
            Some(_) => match crate::reference::parse_amount(amount, exp, true) {
                Some(v) => {
                    let d = self.rng.money(1, 100);
                    self.spell(v + d, exp)
                }
                // A number, but not a valid amount here: still a number.
                None => format!("{amount}1"),
            },
            None => format!("{amount}x"),
        }
    }

    fn emit_replay(&mut self) {
        let account = self.pick_account();
        let keys: Vec<u64> = self
            .keys_of(account, 80)
            .into_iter()
            .filter(|(_, sure)| *sure)
            .map(|(id, _)| id)
            .collect();
        if keys.is_empty() {
            let req = self.gen_debit(account);
            return self.emit(req);
        }
        let id = self.rng.pick(&keys);
        let original = self.model.accounts[&account].keys[&id].req.clone();
        let req = if self.rng.percent(70) {
            self.equivalent(&original)
        } else {
            original
        };
        self.emit(req)
    }

    fn emit_conflict(&mut self) {
        let account = self.pick_account();
        let keys: Vec<u64> = self
            .keys_of(account, 80)
            .into_iter()
            .filter(|(_, sure)| *sure)
            .map(|(id, _)| id)
            .collect();
        if keys.is_empty() {
            let req = self.gen_authorize(account);
            return self.emit(req);
        }
        let id = self.rng.pick(&keys);
        let original = self.model.accounts[&account].keys[&id].req.clone();
        let req = self.conflicting(&original, false);
        self.emit(req)
    }

    /// A key that may already be forgotten, reused by a request that can
    /// neither create a hold nor a refundable original.
    fn emit_old_key(&mut self) {
        let account = self.pick_account();
        if exact_balance(account) {
            let req = self.gen_deposit(account);
            return self.emit(req);
        }
        let Some(acct) = self.model.accounts.get(&account) else {
            let req = self.gen_deposit(account);
            return self.emit(req);
        };
        let mut chosen = None;
        for _ in 0..12 {
            if acct.key_order.is_empty() {
                break;
            }
            let id = acct.key_order[self.rng.below(acct.key_order.len() as u64) as usize];
            let Some(key) = acct.keys.get(&id) else {
                continue;
            };
            let harmless = matches!(key.op, "deposit" | "void" | "refund" | "increment");
            if harmless && self.model.may_be_forgotten(key.first_ms) {
                chosen = Some(key.req.clone());
                break;
            }
        }
        let Some(original) = chosen else {
            let req = self.gen_deposit(account);
            return self.emit(req);
        };
        let req = if self.rng.percent(60) {
            self.equivalent(&original)
        } else {
            self.conflicting(&original, true)
        };
        self.emit(req)
    }

    /// The clock moves to one ms before the oldest surely-remembered key on
    /// an account leaves the dedup window; then that key is reused.
    fn emit_window_edge(&mut self) {
        let account = self.pick_account();
        let now = self.model.now_ms;
        let window = self.model.dedup_window_ms;
        let oldest = self.model.accounts.get(&account).and_then(|acct| {
            let i = acct
                .key_order
                .partition_point(|id| now - acct.keys[id].first_ms >= window);
            acct.key_order
                .get(i)
                .map(|id| (*id, acct.keys[id].first_ms))
        });
        let Some((id, first_ms)) = oldest else {
            let req = self.gen_deposit(account);
            return self.emit(req);
        };
        let target = first_ms + window - 1;
        if target < now || (target - now > 3_600_000 && !self.rng.percent(3)) {
            let req = self.gen_deposit(account);
            return self.emit(req);
        }
        self.emit(Req::AdvanceClock { ms: target - now });
        let original = self.model.accounts[&account].keys[&id].req.clone();
        let req = if self.rng.percent(70) {
            self.equivalent(&original)
        } else {
            self.conflicting(&original, false)
        };
        self.emit(req)
    }

    /// The clock moves onto (or one ms short of) the end of a velocity
    /// window of a recent debit; then a debit that velocity would count.
    fn emit_velocity_edge(&mut self) {
        let now = self.model.now_ms;
        let mut candidates: Vec<(u64, u64, i128)> = Vec::new();
        for (account, acct) in &self.model.accounts {
            if let Some(v) = &acct.limits.velocity {
                for (t, _) in acct.velocity_debits.iter().rev().take(4) {
                    if t + v.window_ms > now && t + v.window_ms - now <= 3_600_000 {
                        candidates.push((*account, t + v.window_ms, v.below));
                    }
                }
            }
        }
        candidates.sort_unstable();
        if candidates.is_empty() {
            let req = self.gen_advance();
            return self.emit(req);
        }
        let (account, edge, below) = self.rng.pick(&candidates);
        let target = if self.rng.percent(50) && edge > now {
            edge - 1
        } else {
            edge
        };
        self.emit(Req::AdvanceClock { ms: target - now });
        let id = self.fresh_id(account);
        let exp = self.exp_of(account);
        let value = self.rng.money(1, below);
        let amount = self.spell(value, exp);
        self.emit(Req::Debit {
            id,
            account,
            amount,
            merchant: None,
        });
    }

    /// Several requests on one account in a row: velocity counts, daily sums
    /// and holds interact.
    fn emit_burst(&mut self) {
        let account = self.pick_account();
        for _ in 0..self.rng.range(3, 10) {
            let req = match self.rng.below(10) {
                0..=4 => self.gen_debit(account),
                5..=6 => self.gen_authorize(account),
                7 => self.gen_capture(account),
                8 => Req::Balance { account },
                _ => Req::AdvanceClock {
                    ms: self.rng.range(0, 300),
                },
            };
            self.emit(req);
        }
    }

    // -----------------------------------------------------------------------
    // Rendering.
    // -----------------------------------------------------------------------

    fn fields_of(&mut self, req: &Req) -> Fields {
        let mut f: Fields = vec![("op".to_string(), js(req.op()))];
        let mut add = |k: &str, v: String| f.push((k.to_string(), v));
        let null_chance = 25;
        let opt = |g: &mut Generator,
                   f: &mut dyn FnMut(&str, String),
                   k: &str,
                   v: Option<String>| match v {
            Some(v) => f(k, v),
            None if g.rng.percent(null_chance) => f(k, "null".to_string()),
            None => {}
        };
        match req {
            Req::Malformed => panic!("malformed lines are rendered by emit_malformed"),
            Req::Open {
                account,
                currency,
                overdraft,
                history,
            } => {
                add("account", account.to_string());
                add("currency", js(currency));
                opt(self, &mut add, "overdraft", overdraft.as_deref().map(js));
                if self.on("history") {
                    opt(self, &mut add, "history", history.map(|b| b.to_string()));
                }
            }
            Req::Deposit {
                id,
                account,
                amount,
            } => {
                add("id", id.to_string());
                add("account", account.to_string());
                add("amount", js(amount));
            }
            Req::Debit {
                id,
                account,
                amount,
                merchant,
            }
            | Req::QueueDebit {
                id,
                account,
                amount,
                merchant,
            } => {
                add("id", id.to_string());
                add("account", account.to_string());
                add("amount", js(amount));
                if self.on("merchants") {
                    opt(self, &mut add, "merchant", merchant.map(|m| m.to_string()));
                }
            }
            Req::Authorize {
                id,
                account,
                amount,
                expires_in_ms,
                merchant,
            } => {
                add("id", id.to_string());
                add("account", account.to_string());
                add("amount", js(amount));
                opt(
                    self,
                    &mut add,
                    "expires_in_ms",
                    expires_in_ms.map(|v| v.to_string()),
                );
                if self.on("merchants") {
                    opt(self, &mut add, "merchant", merchant.map(|m| m.to_string()));
                }
            }
            Req::Increment {
                id,
                account,
                auth,
                amount,
                expires_in_ms,
            } => {
                add("id", id.to_string());
                add("account", account.to_string());
                add("auth", auth.to_string());
                add("amount", js(amount));
                opt(
                    self,
                    &mut add,
                    "expires_in_ms",
                    expires_in_ms.map(|v| v.to_string()),
                );
            }
            Req::Capture {
                id,
                account,
                auth,
                amount,
                is_final,
            } => {
                add("id", id.to_string());
                add("account", account.to_string());
                add("auth", auth.to_string());
                opt(self, &mut add, "amount", amount.as_deref().map(js));
                opt(self, &mut add, "final", is_final.map(|b| b.to_string()));
            }
            Req::Void { id, account, auth } => {
                add("id", id.to_string());
                add("account", account.to_string());
                add("auth", auth.to_string());
            }
            Req::Refund {
                id,
                account,
                of,
                amount,
            } => {
                add("id", id.to_string());
                add("account", account.to_string());
                add("of", of.to_string());
                opt(self, &mut add, "amount", amount.as_deref().map(js));
            }
            Req::SetLimits {
                account,
                per_txn,
                daily,
                review_above,
                velocity,
            } => {
                add("account", account.to_string());
                opt(self, &mut add, "per_txn", per_txn.as_deref().map(js));
                opt(self, &mut add, "daily", daily.as_deref().map(js));
                opt(
                    self,
                    &mut add,
                    "review_above",
                    review_above.as_deref().map(js),
                );
                opt(
                    self,
                    &mut add,
                    "velocity",
                    velocity.as_ref().map(velocity_json),
                );
            }
            Req::Freeze { account } | Req::Unfreeze { account } | Req::Balance { account } => {
                add("account", account.to_string());
            }
            Req::Status { account, id } => {
                add("account", account.to_string());
                add("id", id.to_string());
            }
            Req::AdvanceClock { ms } => add("ms", ms.to_string()),
            Req::OpenMerchant {
                merchant,
                currency,
                fee_bps,
            } => {
                add("merchant", merchant.to_string());
                add("currency", js(currency));
                opt(self, &mut add, "fee_bps", fee_bps.map(|v| v.to_string()));
            }
            Req::RunBatch => {}
            Req::Settle { id, merchant } => {
                add("id", id.to_string());
                add("merchant", merchant.to_string());
            }
            Req::Merchant { merchant } => add("merchant", merchant.to_string()),
            Req::Close { account } => add("account", account.to_string()),
            Req::History {
                account,
                limit,
                before,
            } => {
                add("account", account.to_string());
                opt(self, &mut add, "limit", limit.map(|v| v.to_string()));
                opt(self, &mut add, "before", before.map(|v| v.to_string()));
            }
        }
        f
    }

    /// Fields an op does not name, which the engine must ignore.
    fn add_ignored_field(&mut self, op: &str, fields: &mut Fields) {
        let (required, optional) = named_fields(op);
        let mut names: Vec<&str> = ALL_FIELDS
            .iter()
            .copied()
            .filter(|n| !required.contains(n) && !optional.contains(n))
            .collect();
        names.extend(["note", "memo", "trace", "Amount", "ID"]);
        let name = self.rng.pick(&names);
        let value = self
            .rng
            .pick(&[
                "5",
                "\"x\"",
                "null",
                "[1,{\"a\":[]}]",
                "{\"k\":\"v\",\"n\":{\"m\":[true,false]}}",
                "-3",
                "true",
                "1.5",
                "18446744073709551616",
                "\"\\u0000\"",
                "[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]",
            ])
            .to_string();
        let at = self.rng.below(fields.len() as u64 + 1) as usize;
        fields.insert(at, (name.to_string(), value));
    }

    /// JSON text of the fields, with the harmless variations JSON allows.
    fn render(&mut self, mut fields: Fields, vary: bool) -> String {
        if vary && self.rng.percent(8) {
            for i in (1..fields.len()).rev() {
                let j = self.rng.below(i as u64 + 1) as usize;
                fields.swap(i, j);
            }
        }
        if vary && self.rng.percent(2) {
            // A \u escape in a key or a string value: the same JSON string.
            let i = self.rng.below(fields.len() as u64) as usize;
            if self.rng.percent(50) {
                fields[i].0 = escape_first(&fields[i].0);
            } else if fields[i].1.starts_with('"') {
                let inner: String = serde_json::from_str(&fields[i].1).expect("rendered string");
                let mut chars = inner.chars();
                if let Some(c) = chars.next().filter(char::is_ascii_alphanumeric) {
                    fields[i].1 = format!("\"\\u{:04x}{}", c as u32, &js(chars.as_str())[1..]);
                }
            }
        }
        let spaced = vary && self.rng.percent(10);
        let (colon, comma) = if spaced { (": ", ", ") } else { (":", ",") };
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| {
                let key = if k.starts_with('"') { k.clone() } else { js(k) };
                format!("{key}{colon}{v}")
            })
            .collect();
        let mut text = format!("{{{}}}", body.join(comma));
        if vary && self.rng.percent(3) {
            text = format!(
                "{}{text}{}",
                self.rng.pick(&[" ", "\t", "  "]),
                self.rng.pick(&["", " ", "\t"])
            );
        }
        text
    }

    fn emit(&mut self, req: Req) {
        let mut fields = self.fields_of(&req);
        if self.rng.percent(5) {
            self.add_ignored_field(req.op(), &mut fields);
        }
        let text = self.render(fields, true);
        let account = req.account();
        self.push(text, req, account);
    }

    fn push(&mut self, text: String, req: Req, account: Option<u64>) {
        assert!(
            !text.contains('\n'),
            "a line must not contain a newline: {text:?}"
        );
        // A well-formed request must be in range, or the model would be
        // wrong about it rather than the engine.
        let time_ok = |ms: &Option<u64>| ms.is_none_or(|ms| (1..=TIME_ARG_MAX).contains(&ms));
        let in_range = match &req {
            Req::AdvanceClock { ms } => *ms <= TIME_ARG_MAX,
            Req::Authorize { expires_in_ms, .. } | Req::Increment { expires_in_ms, .. } => {
                time_ok(expires_in_ms)
            }
            Req::SetLimits {
                velocity: Some(v), ..
            } => (1..=1000).contains(&v.max) && (1..=TIME_ARG_MAX).contains(&v.window_ms),
            Req::OpenMerchant { fee_bps, .. } => fee_bps.is_none_or(|f| f <= 10_000),
            Req::History { limit, before, .. } => {
                limit.is_none_or(|l| (1..=1000).contains(&l)) && before.is_none_or(|b| b >= 1)
            }
            _ => true,
        };
        assert!(
            in_range,
            "generator bug: out-of-range well-formed request {req:?}"
        );
        if let (Some(id), Some(a)) = (req.key_id(), req.account()) {
            if self.model.accounts.contains_key(&a) {
                self.used.insert((a, id));
                if self.recent_ids.len() < 64 {
                    self.recent_ids.push(id);
                } else {
                    let i = self.rng.below(64) as usize;
                    self.recent_ids[i] = id;
                }
            } else {
                self.recyclable.push((a, id));
            }
        }
        let outcome = self.model.step(&req, None);
        // Accounts of the close pool are picked from `pool`, rarely.
        if let (Req::Open { account, .. }, "ok") = (&req, outcome.result.as_str()) {
            if *account < CLOSE_POOL {
                let at = self.open.partition_point(|a| a < account);
                self.open.insert(at, *account);
            }
        }
        self.lines.push(GenLine { text, req, account });
    }

    // -----------------------------------------------------------------------
    // Malformed lines.
    // -----------------------------------------------------------------------

    fn emit_malformed(&mut self) {
        let account = self.pick_account();
        let ops = [
            "open",
            "deposit",
            "debit",
            "authorize",
            "increment",
            "capture",
            "void",
            "refund",
            "set_limits",
            "freeze",
            "balance",
            "status",
            "advance",
        ];
        let mut ops = ops.to_vec();
        for (feature, op) in [
            ("merchants", "open_merchant"),
            ("merchants", "merchant"),
            ("settle", "settle"),
            ("batch", "queue_debit"),
            ("closing", "close_account"),
            ("history", "history"),
        ] {
            if self.on(feature) {
                ops.push(op);
            }
        }
        let base = match self.rng.pick(&ops) {
            "open" => {
                let mut req = self.gen_open(Some(account));
                if let Req::Open { history, .. } = &mut req {
                    if self.on("history") && self.rng.percent(30) {
                        *history = Some(true);
                    }
                }
                req
            }
            "advance" => self.gen_advance(),
            "open_merchant" => {
                let mut req = self.gen_open_merchant();
                if let Req::OpenMerchant { fee_bps, .. } = &mut req {
                    fee_bps.get_or_insert(250);
                }
                req
            }
            "merchant" => Req::Merchant {
                merchant: self.pick_merchant_any(),
            },
            "settle" => Req::Settle {
                id: self.fresh_settle_id(),
                merchant: self.pick_merchant_any(),
            },
            "history" => {
                let mut req = self.gen_history(account);
                if let Req::History { limit, before, .. } = &mut req {
                    limit.get_or_insert(5);
                    before.get_or_insert(3);
                }
                req
            }
            "set_limits" => {
                let mut req = self.gen_set_limits(account);
                if let Req::SetLimits { velocity, .. } = &mut req {
                    velocity.get_or_insert(VelocityArg {
                        max: 2,
                        window_ms: 1000,
                        below: "1".to_string(),
                    });
                }
                req
            }
            op => self.gen_op(op, account),
        };
        // The base's id stored nothing: it may come back as a fresh id.
        if let (Some(id), Some(a)) = (base.key_id(), base.account()) {
            self.recyclable.push((a, id));
        }
        let op = base.op();
        let (required, _) = named_fields(op);
        let mut fields = self.fields_of(&base);
        fields.retain(|(_, v)| v != "null");
        let text = match self.rng.below(9) {
            0 => self
                .rng
                .pick(&[
                    "not json",
                    "{",
                    "}",
                    "{\"op\":\"balance\",",
                    "{'op':'balance','account':1}",
                    "{\"op\":\"balance\",\"account\":1,}",
                    "{\"op\":\"balance\" \"account\":1}",
                    "{op:\"balance\",account:1}",
                    "{\"op\":\"balance\",\"account\":01}",
                    "{\"op\":\"balance\",\"account\":1}}",
                    "{\"op\":\"bal\\qance\",\"account\":1}",
                ])
                .to_string(),
            1 => self.rng.pick(&["", " ", "\t", "   \t "]).to_string(),
            2 => {
                let valid = self.render(fields, false);
                match self.rng.below(6) {
                    0 => format!("[{valid}]"),
                    1 => "[]".to_string(),
                    2 => "5".to_string(),
                    3 => "\"deposit\"".to_string(),
                    4 => "null".to_string(),
                    _ => "true".to_string(),
                }
            }
            3 => {
                // A key given twice.
                let i = self.rng.below(fields.len() as u64) as usize;
                let mut dup = fields[i].clone();
                if self.rng.percent(20) {
                    // The same key, spelled with an escape.
                    dup.0 = escape_first(&dup.0);
                }
                let at = self.rng.below(fields.len() as u64 + 1) as usize;
                fields.insert(at, dup);
                if self.rng.percent(10) {
                    fields.push(("note".to_string(), "1".to_string()));
                    fields.push(("note".to_string(), "2".to_string()));
                }
                self.render(fields, false)
            }
            4 => {
                let bad = self.rng.pick(&[
                    "\"withdraw\"",
                    "\"Deposit\"",
                    "\"DEBIT\"",
                    "\"deposit \"",
                    "\"\"",
                    "\"advance-clock\"",
                    "\"refund_all\"",
                    "5",
                    "null",
                    "[\"deposit\"]",
                ]);
                fields[0].1 = bad.to_string();
                self.render(fields, false)
            }
            5 => {
                // A required field (or the op) missing.
                let mut names: Vec<&str> = required.to_vec();
                names.push("op");
                let gone = self.rng.pick(&names);
                fields.retain(|(k, _)| k != gone);
                self.render(fields, false)
            }
            6 | 7 => {
                // A field of the wrong type or out of range.
                let i = self.rng.below(fields.len() as u64) as usize;
                let name = fields[i].0.clone();
                let required_field = name == "op" || required.contains(&name.as_str());
                fields[i].1 = self.wrong_value(&name, required_field);
                self.render(fields, false)
            }
            _ => {
                let valid = self.render(fields, false);
                match self.rng.below(4) {
                    0 => format!("{valid} x"),
                    1 => format!("{valid}{valid}"),
                    2 => format!("{valid},"),
                    _ => format!("{valid}\u{0}"),
                }
            }
        };
        self.push(text, Req::Malformed, Some(account));
    }

    /// A value the field cannot take: wrong type, out of range, or (for a
    /// required field) null.
    fn wrong_value(&mut self, name: &str, required: bool) -> String {
        let mut choices: Vec<&str> = match name {
            "account" | "id" | "auth" | "of" => vec![
                "\"7\"",
                "-1",
                "18446744073709551616",
                "1.5",
                "true",
                "[1]",
                "{}",
                "99999999999999999999999",
            ],
            "ms" => vec![
                "10000000000001",
                "-1",
                "\"5\"",
                "1.5",
                "99999999999999999999",
                "false",
            ],
            "expires_in_ms" => vec![
                "0",
                "10000000000001",
                "\"60000\"",
                "-1",
                "2.5",
                "false",
                "-0",
            ],
            "amount" | "overdraft" | "per_txn" | "daily" | "review_above" => {
                vec!["20", "20.5", "0", "true", "[\"1\"]", "{}"]
            }
            "currency" => vec!["840", "true", "[\"USD\"]", "{}"],
            "final" => vec!["\"false\"", "0", "1", "\"true\"", "[]"],
            "velocity" => vec![
                "\"fast\"",
                "[1]",
                "5",
                "true",
                "{\"max\":0,\"window_ms\":1000,\"below\":\"1\"}",
                "{\"max\":1001,\"window_ms\":1000,\"below\":\"1\"}",
                "{\"max\":2,\"window_ms\":0,\"below\":\"1\"}",
                "{\"max\":2,\"window_ms\":10000000000001,\"below\":\"1\"}",
                "{\"max\":2,\"window_ms\":1000,\"below\":1}",
                "{\"max\":2,\"window_ms\":1000}",
                "{\"window_ms\":1000,\"below\":\"1\"}",
                "{\"max\":2,\"below\":\"1\"}",
                "{\"max\":\"2\",\"window_ms\":1000,\"below\":\"1\"}",
                "{\"max\":2,\"window_ms\":1000,\"below\":null}",
                "{\"max\":-1,\"window_ms\":1000,\"below\":\"1\"}",
                "{\"max\":2,\"window_ms\":1000,\"below\":\"1\",\"max\":3}",
            ],
            "op" => vec!["5", "null", "\"withdraw\"", "true"],
            "merchant" => vec![
                "\"7\"",
                "-1",
                "18446744073709551616",
                "1.5",
                "true",
                "[1]",
                "{}",
                "1e2",
            ],
            "fee_bps" => vec![
                "10001",
                "-1",
                "\"5\"",
                "2.5",
                "true",
                "18446744073709551616",
                "1e2",
            ],
            "limit" => vec!["0", "1001", "-1", "\"5\"", "1.5", "true", "1e1"],
            "before" => vec!["0", "18446744073709551616", "-1", "\"3\"", "2.5", "false"],
            "history" => vec!["\"true\"", "1", "0", "[]", "{}", "\"yes\""],
            other => panic!("no wrong value for {other}"),
        };
        if required {
            choices.push("null");
        }
        self.rng.pick(&choices).to_string()
    }
}

/// `"abc"` (a JSON key, unquoted here) with its first character as `\u0061`.
fn escape_first(key: &str) -> String {
    let mut chars = key.chars();
    match chars.next() {
        Some(c) if c.is_ascii() => format!("\"\\u{:04x}{}\"", c as u32, chars.as_str()),
        _ => key.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Merchants and clearing, batch debits, closing accounts, history.
// ---------------------------------------------------------------------------

impl Generator {
    /// Whether the stream exercises `feature` (see `FEATURES`).
    pub fn on(&self, feature: &str) -> bool {
        self.features.contains(&feature)
    }

    /// Open merchants, sorted (the model's map has no useful order).
    fn open_merchants(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.model.merchants.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// A merchant that is not open (yet, or ever).
    fn unknown_merchant(&mut self) -> u64 {
        let mut unknown: Vec<u64> = MERCHANTS
            .iter()
            .map(|m| m.0)
            .filter(|m| !self.model.merchants.contains_key(m))
            .collect();
        unknown.extend(NEVER_MERCHANTS);
        self.rng.pick(&unknown)
    }

    /// Mostly an open merchant; sometimes an unknown one.
    fn pick_merchant_any(&mut self) -> u64 {
        let open = self.open_merchants();
        if open.is_empty() || self.rng.percent(8) {
            self.unknown_merchant()
        } else {
            self.rng.pick(&open)
        }
    }

    /// The `merchant` of a debit, authorize or queue_debit on `account`:
    /// often none; mostly one in the account's currency; sometimes one in
    /// another (`currency_mismatch`) or an unknown one.
    fn maybe_merchant(&mut self, account: u64) -> Option<u64> {
        if !self.on("merchants") || !self.rng.percent(45) {
            return None;
        }
        let currency = self.acct(account).map(|a| a.currency.clone());
        let open = self.open_merchants();
        let matching: Vec<u64> = open
            .iter()
            .copied()
            .filter(|m| Some(&self.model.merchants[m].currency) == currency.as_ref())
            .collect();
        let roll = self.rng.below(100);
        Some(if roll < 84 && !matching.is_empty() {
            self.rng.pick(&matching)
        } else if roll < 93 && !open.is_empty() {
            self.rng.pick(&open)
        } else {
            self.unknown_merchant()
        })
    }

    /// Another value of an optional `merchant` field (for conflicts).
    fn other_merchant(&mut self, merchant: Option<u64>) -> Option<u64> {
        match merchant {
            Some(_) if self.rng.percent(50) => None,
            Some(m) => Some(m.wrapping_add(1)),
            None => Some(self.rng.pick(&MERCHANTS).0),
        }
    }

    fn gen_open_merchant(&mut self) -> Req {
        let (merchant, currency, fee_bps) = self.rng.pick(&MERCHANTS);
        match self.rng.below(100) {
            // An existing one again, other fields: merchant_exists anyway.
            0..=39 => Req::OpenMerchant {
                merchant,
                currency: self.rng.pick(&CURRENCIES).to_string(),
                fee_bps: Some(self.rng.range(0, 10_000)),
            },
            40..=59 => Req::OpenMerchant {
                merchant: if self.rng.percent(50) {
                    merchant
                } else {
                    self.rng.range(900, 910)
                },
                currency: self.rng.pick(&UNSUPPORTED).to_string(),
                fee_bps: None,
            },
            _ => Req::OpenMerchant {
                merchant,
                currency: currency.to_string(),
                fee_bps: Some(fee_bps),
            },
        }
    }

    fn fresh_settle_id(&mut self) -> u64 {
        if self.rng.percent(2) {
            return self.rng.pick(&[0, u64::MAX]);
        }
        self.next_settle_id += self.rng.range(1, 3);
        self.next_settle_id
    }

    /// A settle id for `merchant`: now and then one it saw before (a
    /// replay, whatever was cleared since), else a new one.
    fn settle_id(&mut self, merchant: u64) -> u64 {
        let old: Vec<u64> = self.model.merchants.get(&merchant).map_or(Vec::new(), |m| {
            m.key_order.iter().rev().take(20).copied().collect()
        });
        if !old.is_empty() && self.rng.percent(25) {
            return self.rng.pick(&old);
        }
        self.fresh_settle_id()
    }

    /// A settle, mostly of a merchant with something in its batch; then,
    /// most times, the merchant's figures (a quiet moment).
    fn emit_settle(&mut self) {
        let open = self.open_merchants();
        let merchant = if open.is_empty() || self.rng.percent(6) {
            self.unknown_merchant()
        } else {
            let busy: Vec<u64> = open
                .iter()
                .copied()
                .filter(|m| {
                    let x = &self.model.merchants[m];
                    x.count > 0 || x.refunded > 0
                })
                .collect();
            if !busy.is_empty() && self.rng.percent(75) {
                self.rng.pick(&busy)
            } else {
                self.rng.pick(&open)
            }
        };
        let id = self.settle_id(merchant);
        self.emit(Req::Settle { id, merchant });
        if self.rng.percent(70) {
            self.emit(Req::Merchant { merchant });
        }
    }

    /// Settle a merchant, settle it again (nothing_to_settle), clear
    /// something to it, then send both settles again: replays with the
    /// original figures.
    fn emit_settle_replay_burst(&mut self) {
        let open = self.open_merchants();
        if open.is_empty() {
            return self.emit_settle();
        }
        let merchant = self.rng.pick(&open);
        let first = self.fresh_settle_id();
        let second = self.fresh_settle_id();
        self.emit(Req::Settle {
            id: first,
            merchant,
        });
        self.emit(Req::Settle {
            id: second,
            merchant,
        });
        // Something for the next batch, from an account in its currency.
        let currency = self.model.merchants[&merchant].currency.clone();
        let payers: Vec<u64> = self
            .open
            .iter()
            .copied()
            .filter(|a| self.acct(*a).is_some_and(|x| x.currency == currency))
            .collect();
        if !payers.is_empty() {
            let account = self.rng.pick(&payers);
            let id = self.fresh_id(account);
            let exp = self.exp_of(account);
            let m = self.small(exp, 5);
            let amount = self.spell(m, exp);
            self.emit(Req::Debit {
                id,
                account,
                amount,
                merchant: Some(merchant),
            });
        }
        let (a, b) = if self.rng.percent(50) {
            (first, second)
        } else {
            (second, first)
        };
        self.emit(Req::Settle { id: a, merchant });
        self.emit(Req::Settle { id: b, merchant });
        self.emit(Req::Merchant { merchant });
    }

    fn gen_queue_debit(&mut self, account: u64) -> Req {
        let id = self.fresh_id(account);
        let amount = self.take_amount(account, false);
        let merchant = self.maybe_merchant(account);
        Req::QueueDebit {
            id,
            account,
            amount,
            merchant,
        }
    }

    /// A run_batch, then a quiet moment: merchant figures and what became
    /// of some of the debits it applied.
    fn emit_run_batch(&mut self) {
        let queued: Vec<(u64, u64)> = self.model.queue.iter().map(|q| (q.account, q.id)).collect();
        self.emit(Req::RunBatch);
        if self.on("merchants") && self.rng.percent(70) {
            let merchant = self.pick_merchant_any();
            self.emit(Req::Merchant { merchant });
        }
        if queued.is_empty() {
            return;
        }
        for _ in 0..2 {
            if self.rng.percent(60) {
                let (account, id) = self.rng.pick(&queued);
                self.emit(Req::Status { account, id });
            }
        }
        if self.rng.percent(40) {
            let (account, _) = self.rng.pick(&queued);
            self.emit(Req::Balance { account });
        }
    }

    /// Debits queued on one account, which then meet a freeze, new limits or
    /// a debit that takes the funds before their batch runs.
    fn emit_batch_scenario(&mut self) {
        let account = self.pick_account();
        if self.rng.percent(30) {
            let req = self.gen_set_limits(account);
            self.emit(req);
        }
        for _ in 0..self.rng.range(1, 5) {
            let req = self.gen_queue_debit(account);
            self.emit(req);
        }
        if let Some(q) = self.model.queue.last() {
            if self.rng.percent(50) {
                let (account, id) = (q.account, q.id);
                self.emit(Req::Status { account, id });
            }
        }
        let freeze = self.rng.percent(30);
        if freeze {
            self.emit(Req::Freeze { account });
        }
        if self.rng.percent(20) {
            let req = self.gen_set_limits(account);
            self.emit(req);
        }
        if self.rng.percent(25) {
            let req = self.gen_debit(account);
            self.emit(req);
        }
        self.emit_run_batch();
        if freeze {
            self.emit(Req::Unfreeze { account });
        }
    }

    /// close_account on some account: mostly `account_not_empty` (or
    /// `account_closed`). An empty main account stays open (it carries the
    /// rest of the stream); `emit_close_scenario` closes its own accounts.
    fn emit_close(&mut self) {
        let account = self.pick_account();
        let empty_main = !self.pool.contains(&account)
            && self
                .acct(account)
                .is_some_and(|a| !a.closed && a.is_empty());
        if empty_main {
            return self.emit(Req::Balance { account });
        }
        self.emit(Req::Close { account });
    }

    /// Brings an account to zero: its batch run, unfrozen, no limits, no
    /// active hold, a zero balance.
    fn drain(&mut self, account: u64) {
        if self.acct(account).is_none_or(|a| a.closed) {
            return;
        }
        if self.acct(account).is_some_and(|a| a.waiting > 0) {
            self.emit_run_batch();
        }
        if self.acct(account).is_some_and(|a| a.frozen) {
            self.emit(Req::Unfreeze { account });
        }
        self.emit(Req::SetLimits {
            account,
            per_txn: None,
            daily: None,
            review_above: None,
            velocity: None,
        });
        let active: Vec<u64> = self
            .acct(account)
            .map_or(Vec::new(), |a| a.active_holds.iter().copied().collect());
        for auth in active {
            let id = self.fresh_id(account);
            if self.rng.percent(70) {
                self.emit(Req::Void { id, account, auth });
            } else {
                self.emit(Req::Capture {
                    id,
                    account,
                    auth,
                    amount: None,
                    is_final: None,
                });
            }
        }
        let (balance, exp) = self.acct(account).map_or((0, 2), |a| (a.balance, a.exp));
        let id = self.fresh_id(account);
        if balance > 0 {
            let amount = self.spell(balance, exp);
            let merchant = self.maybe_merchant(account);
            self.emit(Req::Debit {
                id,
                account,
                amount,
                merchant,
            });
        } else if balance < 0 {
            let amount = self.spell(-balance, exp);
            self.emit(Req::Deposit {
                id,
                account,
                amount,
            });
        }
    }

    /// A new account lives a little, meets close_account in every state
    /// (balance left, a hold active, a queued debit waiting, frozen), is
    /// closed, and then gets every op.
    fn emit_close_scenario(&mut self) {
        let account = CLOSE_POOL + self.pool.len() as u64;
        let currency = self.rng.pick(&["USD", "JPY", "KWD", "EUR"]).to_string();
        let exp = crate::reference::currency_exponent(&currency).expect("supported");
        let overdraft = if self.rng.percent(40) {
            let m = self.small(exp, 50);
            Some(self.spell(m, exp))
        } else {
            None
        };
        let history = (self.on("history") && self.rng.percent(60)).then_some(true);
        self.emit(Req::Open {
            account,
            currency,
            overdraft,
            history,
        });
        self.pool.push(account);
        if self.rng.percent(85) {
            let req = self.gen_deposit(account);
            self.emit(req);
        }
        let mut ops = vec![
            "deposit",
            "debit",
            "debit",
            "authorize",
            "capture",
            "refund",
        ];
        if self.on("batch") {
            ops.push("queue_debit");
        }
        for _ in 0..self.rng.range(1, 7) {
            let op = self.rng.pick(&ops);
            let req = self.gen_op(op, account);
            self.emit(req);
        }
        for _ in 0..self.rng.range(1, 3) {
            match self.rng.below(6) {
                0 => {}
                1 => {
                    let req = self.gen_authorize(account);
                    self.emit(req)
                }
                2 if self.on("batch") => {
                    let req = self.gen_queue_debit(account);
                    self.emit(req)
                }
                3 => self.emit(Req::Freeze { account }),
                _ => {
                    // Zero balance, then one thing that keeps it open.
                    self.drain(account);
                    let req = if self.on("batch") && self.rng.percent(50) {
                        self.gen_queue_debit(account)
                    } else {
                        self.gen_authorize(account)
                    };
                    self.emit(req)
                }
            }
            self.emit(Req::Close { account });
        }
        self.drain(account);
        if self.rng.percent(40) {
            self.emit(Req::Freeze { account });
        }
        self.emit(Req::Close { account });
        if self.acct(account).is_some_and(|a| !a.closed) {
            self.drain(account);
            self.emit(Req::Close { account });
        }
        self.closed_barrage(account);
    }

    /// Every kind of request on a (usually) closed account.
    fn closed_barrage(&mut self, account: u64) {
        for _ in 0..self.rng.range(6, 16) {
            let req = match self.rng.below(19) {
                0 => self.gen_deposit(account),
                1 => self.gen_debit(account),
                2 => self.gen_authorize(account),
                3 if self.on("batch") => self.gen_queue_debit(account),
                3 => self.gen_debit(account),
                4 => self.gen_increment(account),
                5 => self.gen_capture(account),
                6 => self.gen_void(account),
                7 => self.gen_refund(account),
                8 => Req::Freeze { account },
                9 => Req::Unfreeze { account },
                10 => self.gen_set_limits(account),
                11 => Req::Close { account },
                12 => Req::Balance { account },
                13 => self.gen_status(account),
                14 if self.on("history") => self.gen_history(account),
                14 => Req::Balance { account },
                15 => self.gen_open(Some(account)),
                roll => {
                    // An older key again: it still replays (or conflicts).
                    let keys: Vec<u64> = self
                        .keys_of(account, 40)
                        .into_iter()
                        .filter(|(_, sure)| *sure)
                        .map(|(id, _)| id)
                        .collect();
                    if keys.is_empty() {
                        self.gen_deposit(account)
                    } else {
                        let id = self.rng.pick(&keys);
                        let original = self.model.accounts[&account].keys[&id].req.clone();
                        if roll == 18 {
                            self.conflicting(&original, false)
                        } else {
                            self.equivalent(&original)
                        }
                    }
                }
            };
            self.emit(req);
        }
    }

    /// Accounts with a statement, sorted.
    fn history_accounts(&self) -> Vec<u64> {
        self.open
            .iter()
            .chain(self.pool.iter())
            .copied()
            .filter(|a| self.acct(*a).is_some_and(|x| x.history.is_some()))
            .collect()
    }

    fn history_len(&self, account: u64) -> u64 {
        self.acct(account)
            .and_then(|a| a.history.as_ref())
            .map_or(0, |h| h.len() as u64)
    }

    /// A statement page at the edges of `limit` (1, 20 by default, 1000)
    /// and `before` (1, the last seq, one past it, far beyond).
    fn gen_history(&mut self, account: u64) -> Req {
        let with = self.history_accounts();
        let account = if !with.is_empty() && self.rng.percent(80) {
            self.rng.pick(&with)
        } else {
            account
        };
        let len = self.history_len(account);
        let limit = match self.rng.below(100) {
            0..=39 => None,
            40..=54 => Some(1),
            55..=56 => Some(1000),
            57..=59 => Some(20),
            _ => Some(self.rng.range(2, 60)),
        };
        let before = match self.rng.below(100) {
            0..=39 => None,
            40..=47 => Some(1),
            48..=57 => Some(len.max(1)),
            58..=67 => Some(len + 1),
            68..=72 => Some(u64::MAX),
            73..=77 => Some(len + self.rng.range(2, 1000)),
            _ => Some(self.rng.range(1, len.max(1))),
        };
        Req::History {
            account,
            limit,
            before,
        }
    }

    /// Pages through a statement, each page's `before` the oldest seq of
    /// the one before, down to its first entry (or a dozen pages).
    fn emit_history_walk(&mut self) {
        let with = self.history_accounts();
        if with.is_empty() {
            let account = self.pick_account();
            let req = self.gen_history(account);
            return self.emit(req);
        }
        let account = self.rng.pick(&with);
        let limit = match self.rng.below(4) {
            0 => None,
            1 => Some(self.rng.range(1, 4)),
            2 => Some(self.rng.range(5, 30)),
            _ => Some(self.rng.range(30, 120)),
        };
        let len = self.history_len(account);
        let mut before = if self.rng.percent(40) {
            Some(self.rng.range(1, 60).min(len + 1))
        } else {
            None
        };
        for _ in 0..12 {
            self.emit(Req::History {
                account,
                limit,
                before,
            });
            let top = before.map_or(len, |b| (b - 1).min(len));
            let k = limit.unwrap_or(20);
            if top < k || top == 0 {
                // One more page past the first entry: empty.
                if top > 0 && self.rng.percent(50) {
                    self.emit(Req::History {
                        account,
                        limit,
                        before: Some(1),
                    });
                }
                break;
            }
            before = Some(top - k + 1);
        }
    }
}
