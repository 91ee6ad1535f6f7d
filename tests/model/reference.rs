//! The reference model: SPEC.md written out as plainly as possible.
//!
//! Plain `HashMap`s, `i128` money, linear scans, no caching: this code has
//! to be obviously right, not fast. Each rule carries the SPEC sentence it
//! implements.
//!
//! SPEC leaves one thing open: a key, an ended hold or a refundable original
//! older than the dedup window *may* be forgotten. The model is exact about
//! everything inside the window. For a lookup that may hit something
//! forgotten, `step` is given the engine's actual outcome and asks one
//! question of it: is it the answer "forgotten" would give (a new request, an
//! `auth_not_found`, a `not_refundable`, an `unknown_id`)? If so, the model
//! forgets the thing too (for good) and goes on; otherwise it insists on the
//! remembered answer. Without an actual outcome (while generating) it
//! assumes everything is remembered.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// A hash map with a plain, fixed hash: the model is run hundreds of
/// thousands of times in a debug build, and a fixed hash also makes
/// iteration order (which the generator must not depend on anyway) repeat.
pub type Map<K, V> = HashMap<K, V, BuildHasherDefault<FixedHasher>>;

#[derive(Default)]
pub struct FixedHasher(u64);

impl Hasher for FixedHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01B3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
}

use crate::common::Outcome;

/// 2^63 - 1: no amount, balance, held total or hold may pass it.
pub const MINOR_MAX: i128 = i64::MAX as i128;
pub const DAY_MS: u64 = 86_400_000;
/// "A hold made with `expires_in_ms` (default 7 days)".
pub const DEFAULT_EXPIRY_MS: u64 = 7 * DAY_MS;
/// Bound on `ms`, `expires_in_ms` and `window_ms`.
pub const TIME_ARG_MAX: u64 = 10_000_000_000_000;

thread_local! {
    static HITS: RefCell<BTreeMap<&'static str, u64>> = const { RefCell::new(BTreeMap::new()) };
}

/// Counts that a corner of SPEC was reached (coverage, not behaviour).
pub fn hit(what: &'static str) {
    HITS.with(|h| *h.borrow_mut().entry(what).or_default() += 1);
}

/// The corners reached on this thread so far, and a fresh start.
pub fn take_hits() -> BTreeMap<&'static str, u64> {
    HITS.with(|h| std::mem::take(&mut *h.borrow_mut()))
}

/// `[0-9]+(\.[0-9]+)?` split into its integer and fraction digits.
fn amount_digits(text: &str) -> Option<(&str, &str)> {
    let (int, frac) = match text.split_once('.') {
        Some((int, frac)) => {
            if frac.is_empty() {
                return None;
            }
            (int, frac)
        }
        None => (text, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) {
        return None;
    }
    Some((int, frac))
}

/// Parses an amount in major units into minor units of a currency with
/// exponent `exp`. `None` is `invalid_amount`: wrong format, more fraction
/// digits than `exp` (even zeros), zero (unless `zero_ok`, for overdrafts),
/// or more than 2^63 - 1 minor units.
pub fn parse_amount(text: &str, exp: u32, zero_ok: bool) -> Option<i128> {
    let (int, frac) = amount_digits(text)?;
    if frac.len() > exp as usize {
        return None;
    }
    let mut value: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        value = value.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    for _ in frac.len()..exp as usize {
        value = value.checked_mul(10)?;
    }
    if value > MINOR_MAX || (value == 0 && !zero_ok) {
        return None;
    }
    Some(value)
}

/// How an amount field compares for replays: by value when it has the amount
/// format (whatever the currency), as text otherwise.
pub fn amount_identity(text: &str) -> String {
    match amount_digits(text) {
        Some((int, frac)) => {
            let int = int.trim_start_matches('0');
            let int = if int.is_empty() { "0" } else { int };
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                format!("number:{int}")
            } else {
                format!("number:{int}.{frac}")
            }
        }
        None => format!("text:{text}"),
    }
}

/// Minor units as a decimal string with exactly `exp` fraction digits.
pub fn format_minor(value: i128, exp: u32) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let magnitude = value.unsigned_abs();
    let scale = 10u128.pow(exp);
    if exp == 0 {
        format!("{sign}{magnitude}")
    } else {
        format!(
            "{sign}{}.{:0width$}",
            magnitude / scale,
            magnitude % scale,
            width = exp as usize
        )
    }
}

/// "Exactly these are supported, with their minor-unit exponents".
pub fn currency_exponent(code: &str) -> Option<u32> {
    match code {
        "CNY" | "USD" | "EUR" | "GBP" | "HKD" | "SGD" => Some(2),
        "JPY" | "KRW" => Some(0),
        "BHD" | "KWD" => Some(3),
        _ => None,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VelocityArg {
    pub max: u64,
    pub window_ms: u64,
    pub below: String,
}

/// One well-formed request line, or a malformed one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Req {
    Malformed,
    Open {
        account: u64,
        currency: String,
        overdraft: Option<String>,
    },
    Deposit {
        id: u64,
        account: u64,
        amount: String,
    },
    Debit {
        id: u64,
        account: u64,
        amount: String,
    },
    Authorize {
        id: u64,
        account: u64,
        amount: String,
        expires_in_ms: Option<u64>,
    },
    Increment {
        id: u64,
        account: u64,
        auth: u64,
        amount: String,
        expires_in_ms: Option<u64>,
    },
    Capture {
        id: u64,
        account: u64,
        auth: u64,
        amount: Option<String>,
        is_final: Option<bool>,
    },
    Void {
        id: u64,
        account: u64,
        auth: u64,
    },
    Refund {
        id: u64,
        account: u64,
        of: u64,
        amount: Option<String>,
    },
    SetLimits {
        account: u64,
        per_txn: Option<String>,
        daily: Option<String>,
        review_above: Option<String>,
        velocity: Option<VelocityArg>,
    },
    Freeze {
        account: u64,
    },
    Unfreeze {
        account: u64,
    },
    Balance {
        account: u64,
    },
    Status {
        account: u64,
        id: u64,
    },
    AdvanceClock {
        ms: u64,
    },
}

impl Req {
    pub fn op(&self) -> &'static str {
        match self {
            Req::Malformed => "<malformed>",
            Req::Open { .. } => "open_account",
            Req::Deposit { .. } => "deposit",
            Req::Debit { .. } => "debit",
            Req::Authorize { .. } => "authorize",
            Req::Increment { .. } => "increment",
            Req::Capture { .. } => "capture",
            Req::Void { .. } => "void",
            Req::Refund { .. } => "refund",
            Req::SetLimits { .. } => "set_limits",
            Req::Freeze { .. } => "freeze",
            Req::Unfreeze { .. } => "unfreeze",
            Req::Balance { .. } => "balance",
            Req::Status { .. } => "status",
            Req::AdvanceClock { .. } => "advance_clock",
        }
    }

    pub fn account(&self) -> Option<u64> {
        match self {
            Req::Malformed | Req::AdvanceClock { .. } => None,
            Req::Open { account, .. }
            | Req::Deposit { account, .. }
            | Req::Debit { account, .. }
            | Req::Authorize { account, .. }
            | Req::Increment { account, .. }
            | Req::Capture { account, .. }
            | Req::Void { account, .. }
            | Req::Refund { account, .. }
            | Req::SetLimits { account, .. }
            | Req::Freeze { account }
            | Req::Unfreeze { account }
            | Req::Balance { account }
            | Req::Status { account, .. } => Some(*account),
        }
    }

    /// The key id of a money request (status names an id but has no key).
    pub fn key_id(&self) -> Option<u64> {
        match self {
            Req::Deposit { id, .. }
            | Req::Debit { id, .. }
            | Req::Authorize { id, .. }
            | Req::Increment { id, .. }
            | Req::Capture { id, .. }
            | Req::Void { id, .. }
            | Req::Refund { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// What a replay must match: the op and every field but id and account,
    /// amounts by `amount_identity`, omitted optionals as their defaults.
    pub fn identity(&self) -> String {
        let amount =
            |a: &Option<String>| a.as_deref().map_or("omitted".to_string(), amount_identity);
        match self {
            Req::Deposit { amount: a, .. } => format!("deposit {}", amount_identity(a)),
            Req::Debit { amount: a, .. } => format!("debit {}", amount_identity(a)),
            Req::Authorize {
                amount: a,
                expires_in_ms,
                ..
            } => format!(
                "authorize {} expires {}",
                amount_identity(a),
                expires_in_ms.unwrap_or(DEFAULT_EXPIRY_MS)
            ),
            // An increment without expires_in_ms leaves the expiry alone:
            // there is no default value it could equal.
            Req::Increment {
                auth,
                amount: a,
                expires_in_ms,
                ..
            } => format!(
                "increment auth {auth} {} expires {expires_in_ms:?}",
                amount_identity(a)
            ),
            Req::Capture {
                auth,
                amount: a,
                is_final,
                ..
            } => format!(
                "capture auth {auth} {} final {}",
                amount(a),
                is_final.unwrap_or(true)
            ),
            Req::Void { auth, .. } => format!("void auth {auth}"),
            Req::Refund { of, amount: a, .. } => format!("refund of {of} {}", amount(a)),
            other => panic!("{} has no key", other.op()),
        }
    }
}

/// A remembered key: its request's identity and its original outcome.
#[derive(Clone, Debug)]
pub struct Key {
    pub identity: String,
    pub op: &'static str,
    pub result: &'static str,
    pub first_ms: u64,
    /// The request itself, for the generator's replays and conflicts.
    pub req: Req,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldState {
    Active,
    /// Ended by expiry (`auth_expired` from then on) or otherwise
    /// (`auth_not_active`), at engine time `at_ms`.
    Ended {
        expired: bool,
        at_ms: u64,
    },
}

#[derive(Clone, Debug)]
pub struct Hold {
    /// Authorized amount, increments included.
    pub amount: i128,
    pub captured: i128,
    pub expires_at_ms: u64,
    pub state: HoldState,
    pub review: bool,
}

impl Hold {
    pub fn left(&self) -> i128 {
        self.amount - self.captured
    }
}

#[derive(Clone, Debug)]
pub struct Refundable {
    pub amount: i128,
    pub refunded: i128,
    pub first_ms: u64,
}

#[derive(Clone, Debug)]
pub struct Velocity {
    pub max: u64,
    pub window_ms: u64,
    pub below: i128,
}

#[derive(Clone, Debug, Default)]
pub struct Limits {
    pub per_txn: Option<i128>,
    pub daily: Option<i128>,
    pub review_above: Option<i128>,
    pub velocity: Option<Velocity>,
}

#[derive(Clone, Debug)]
pub struct Account {
    pub currency: String,
    pub exp: u32,
    pub overdraft: i128,
    pub balance: i128,
    pub frozen: bool,
    pub keys: Map<u64, Key>,
    /// Key ids in the order they were stored (may repeat after forgetting).
    pub key_order: Vec<u64>,
    /// Every hold still remembered, active or ended.
    pub holds: Map<u64, Hold>,
    /// The ids of the active ones (kept by `new_hold` and `end_hold` only).
    pub active_holds: BTreeSet<u64>,
    pub hold_order: Vec<u64>,
    pub refundables: Map<u64, Refundable>,
    pub limits: Limits,
    /// (engine time, amount) of every ok debit since the last set_limits.
    pub velocity_debits: Vec<(u64, i128)>,
    pub day: u64,
    pub day_sum: i128,
}

impl Account {
    fn new(currency: &str, exp: u32, overdraft: i128, now_ms: u64) -> Account {
        Account {
            currency: currency.to_string(),
            exp,
            overdraft,
            balance: 0,
            frozen: false,
            keys: Map::default(),
            key_order: Vec::new(),
            holds: Map::default(),
            active_holds: BTreeSet::new(),
            hold_order: Vec::new(),
            refundables: Map::default(),
            limits: Limits::default(),
            velocity_debits: Vec::new(),
            day: now_ms / DAY_MS,
            day_sum: 0,
        }
    }

    /// "`held` (sum of the remaining amounts of active holds)".
    pub fn held(&self) -> i128 {
        self.active_holds
            .iter()
            .map(|id| self.holds[id].left())
            .sum()
    }

    /// "`available = balance - held`".
    pub fn available(&self) -> i128 {
        self.balance - self.held()
    }

    /// "No request may make `available` negative, except ... the floor is
    /// `-overdraft`."
    fn can_take(&self, amount: i128) -> bool {
        self.available() - amount >= -self.overdraft
    }

    /// The sum that debits, authorizes, increments and reviews took during
    /// the current UTC day of engine time.
    fn today_sum(&mut self, now_ms: u64) -> i128 {
        if self.day != now_ms / DAY_MS {
            if self.day_sum > 0 {
                hit("daily sum starts again on a new UTC day");
            }
            self.day = now_ms / DAY_MS;
            self.day_sum = 0;
        }
        self.day_sum
    }

    fn over_limits(&mut self, amount: i128, per_txn_total: i128, now_ms: u64) -> bool {
        let today = self.today_sum(now_ms);
        let over = self.limits.per_txn.is_some_and(|p| per_txn_total > p)
            || self.limits.daily.is_some_and(|d| today + amount > d);
        if !over && self.limits.per_txn == Some(per_txn_total) {
            hit("amount exactly per_txn");
        }
        if !over && self.limits.daily == Some(today + amount) {
            hit("daily sum reaches exactly daily");
        }
        over
    }

    fn new_hold(&mut self, id: u64, amount: i128, expires_at_ms: u64, review: bool) {
        let hold = Hold {
            amount,
            captured: 0,
            expires_at_ms,
            state: HoldState::Active,
            review,
        };
        assert!(
            self.holds.insert(id, hold).is_none(),
            "test generator bug: a second hold with id {id} on one account"
        );
        self.active_holds.insert(id);
        self.hold_order.push(id);
    }

    /// "A hold ends exactly once: by a final capture, by a void, or by
    /// expiry".
    fn end_hold(&mut self, id: u64, expired: bool, at_ms: u64) {
        let hold = self.holds.get_mut(&id).expect("ending a known hold");
        assert_eq!(hold.state, HoldState::Active, "hold {id} ends twice");
        hold.state = HoldState::Ended { expired, at_ms };
        assert!(self.active_holds.remove(&id));
    }

    pub fn summary(&self) -> String {
        let e = self.exp;
        let mut s = format!(
            "{} balance {} held {} available {} overdraft {}{}",
            self.currency,
            format_minor(self.balance, e),
            format_minor(self.held(), e),
            format_minor(self.available(), e),
            format_minor(self.overdraft, e),
            if self.frozen { " FROZEN" } else { "" }
        );
        let l = &self.limits;
        let show = |v: Option<i128>| v.map_or("-".to_string(), |v| format_minor(v, e));
        s += &format!(
            "; limits per_txn {} daily {} review_above {}",
            show(l.per_txn),
            show(l.daily),
            show(l.review_above)
        );
        if let Some(v) = &l.velocity {
            s += &format!(
                " velocity max {} window_ms {} below {}",
                v.max,
                v.window_ms,
                format_minor(v.below, e)
            );
        }
        s += &format!(
            "; day {} sum {}; velocity debits {:?}",
            self.day,
            format_minor(self.day_sum, e),
            self.velocity_debits
                .iter()
                .rev()
                .take(6)
                .map(|(t, a)| format!("{}@{t}", format_minor(*a, e)))
                .collect::<Vec<_>>()
        );
        let active: Vec<String> = self
            .active_holds
            .iter()
            .map(|id| (id, &self.holds[id]))
            .map(|(id, h)| {
                format!(
                    "#{id} amount {} captured {} expires_at {}{}",
                    format_minor(h.amount, e),
                    format_minor(h.captured, e),
                    h.expires_at_ms,
                    if h.review { " (review)" } else { "" }
                )
            })
            .collect();
        s += &format!("; active holds [{}]", active.join(", "));
        s
    }
}

pub struct Model {
    pub now_ms: u64,
    pub dedup_window_ms: u64,
    pub accounts: Map<u64, Account>,
}

/// What the engine answered, as far as the forgetting rules need it.
fn says(actual: Option<&Outcome>, result: &str) -> bool {
    actual.is_some_and(|a| a.result == result && !a.replayed)
}

impl Model {
    pub fn new(dedup_window_ms: u64) -> Model {
        Model {
            now_ms: 0,
            dedup_window_ms,
            accounts: Map::default(),
        }
    }

    /// Something first stored (or ended) at `since_ms` is guaranteed to be
    /// remembered while less than the window has passed since.
    pub fn may_be_forgotten(&self, since_ms: u64) -> bool {
        self.now_ms - since_ms >= self.dedup_window_ms
    }

    /// Applies one request and returns its outcome (`line` left 0).
    /// `actual` is the engine's outcome for this line, used only to resolve
    /// what SPEC leaves open about forgetting (see the module comment).
    pub fn step(&mut self, req: &Req, actual: Option<&Outcome>) -> Outcome {
        let now = self.now_ms;
        match req {
            Req::Malformed => Outcome::new(0, "malformed"),
            Req::AdvanceClock { ms } => {
                assert!(*ms <= TIME_ARG_MAX);
                self.now_ms += ms;
                self.expire_holds();
                Outcome::new(0, "ok")
            }
            Req::Open {
                account,
                currency,
                overdraft,
            } => {
                if self.accounts.contains_key(account) {
                    return Outcome::new(0, "account_exists");
                }
                let Some(exp) = currency_exponent(currency) else {
                    return Outcome::new(0, "unsupported_currency");
                };
                let overdraft = match overdraft {
                    None => 0,
                    Some(text) => match parse_amount(text, exp, true) {
                        Some(v) => v,
                        None => return Outcome::new(0, "invalid_amount"),
                    },
                };
                self.accounts
                    .insert(*account, Account::new(currency, exp, overdraft, now));
                Outcome::new(0, "ok")
            }
            Req::Freeze { account } | Req::Unfreeze { account } => {
                let Some(acct) = self.accounts.get_mut(account) else {
                    return Outcome::new(0, "unknown_account");
                };
                acct.frozen = matches!(req, Req::Freeze { .. });
                Outcome::new(0, "ok")
            }
            Req::Balance { account } => {
                let Some(acct) = self.accounts.get(account) else {
                    return Outcome::new(0, "unknown_account");
                };
                Outcome::new(0, "ok")
                    .with("balance", format_minor(acct.balance, acct.exp))
                    .with("held", format_minor(acct.held(), acct.exp))
                    .with("available", format_minor(acct.available(), acct.exp))
            }
            Req::Status { account, id } => {
                let window_ms = self.dedup_window_ms;
                let Some(acct) = self.accounts.get_mut(account) else {
                    return Outcome::new(0, "unknown_account");
                };
                let Some(key) = acct.keys.get(id) else {
                    return Outcome::new(0, "unknown_id");
                };
                // A key past the window may be gone; then it is gone for
                // replays too.
                if now - key.first_ms >= window_ms && says(actual, "unknown_id") {
                    hit("engine forgot a key (status) past the window");
                    acct.keys.remove(id);
                    return Outcome::new(0, "unknown_id");
                }
                Outcome::new(0, "ok")
                    .with("op", key.op.to_string())
                    .with("status", key.result.to_string())
            }
            Req::SetLimits {
                account,
                per_txn,
                daily,
                review_above,
                velocity,
            } => {
                let Some(acct) = self.accounts.get_mut(account) else {
                    return Outcome::new(0, "unknown_account");
                };
                let exp = acct.exp;
                // "an omitted field means none"; present ones must be amounts.
                let parse = |a: &Option<String>| match a {
                    None => Ok(None),
                    Some(text) => parse_amount(text, exp, false).map(Some).ok_or(()),
                };
                let (Ok(per_txn), Ok(daily), Ok(review_above)) =
                    (parse(per_txn), parse(daily), parse(review_above))
                else {
                    return Outcome::new(0, "invalid_amount");
                };
                let velocity = match velocity {
                    None => None,
                    Some(v) => match parse_amount(&v.below, exp, false) {
                        None => return Outcome::new(0, "invalid_amount"),
                        Some(below) => Some(Velocity {
                            max: v.max,
                            window_ms: v.window_ms,
                            below,
                        }),
                    },
                };
                acct.limits = Limits {
                    per_txn,
                    daily,
                    review_above,
                    velocity,
                };
                // "Only debits made since the account's last set_limits count
                // toward velocity."
                acct.velocity_debits.clear();
                Outcome::new(0, "ok")
            }
            _ => self.money(req, actual),
        }
    }

    /// "expiry releases it like a void", at the instant engine time reaches
    /// the hold's expiry.
    fn expire_holds(&mut self) {
        let now = self.now_ms;
        for acct in self.accounts.values_mut() {
            let due: Vec<(u64, u64)> = acct
                .active_holds
                .iter()
                .map(|id| (*id, acct.holds[id].expires_at_ms))
                .filter(|(_, expires_at_ms)| *expires_at_ms <= now)
                .collect();
            for (id, expires_at_ms) in due {
                if expires_at_ms == now {
                    hit("hold expires exactly as the clock reaches it");
                }
                acct.end_hold(id, true, expires_at_ms);
            }
        }
    }

    /// deposit, debit, authorize, increment, capture, void, refund: the ops
    /// with a key (account, id).
    fn money(&mut self, req: &Req, actual: Option<&Outcome>) -> Outcome {
        let account = req.account().expect("money request names an account");
        let id = req.key_id().expect("money request has an id");
        let identity = req.identity();
        let now = self.now_ms;
        let window_ms = self.dedup_window_ms;
        let window_passed = |since_ms: u64| now - since_ms >= window_ms;
        // "id_conflict" comes first, but with no account there is no key.
        let Some(acct) = self.accounts.get_mut(&account) else {
            return Outcome::new(0, "unknown_account");
        };
        if let Some(key) = acct.keys.get(&id) {
            // A key past the window may be gone: the engine then answers as
            // for a new request (never a replay, never id_conflict).
            let forgotten = window_passed(key.first_ms)
                && actual.is_some_and(|a| !a.replayed && a.result != "id_conflict");
            if forgotten {
                hit("engine forgot a key past the window");
            } else {
                if now - key.first_ms == window_ms - 1 {
                    hit("key reused one ms before the window ends");
                }
                if key.identity == identity && key.req != *req {
                    hit("replay spelled differently");
                }
                if key.identity == identity {
                    let mut outcome = Outcome::new(0, key.result);
                    outcome.replayed = true;
                    return outcome;
                }
                return Outcome::new(0, "id_conflict");
            }
            acct.keys.remove(&id);
        }
        let result = match req {
            Req::Deposit { amount, .. } => deposit(acct, amount),
            Req::Debit { amount, .. } => debit(acct, id, amount, now),
            Req::Authorize {
                amount,
                expires_in_ms,
                ..
            } => authorize(acct, id, amount, *expires_in_ms, now),
            Req::Increment {
                auth,
                amount,
                expires_in_ms,
                ..
            } => match find_hold(acct, *auth, actual, &window_passed) {
                Err(code) => code,
                Ok(()) => increment(acct, *auth, amount, *expires_in_ms, now),
            },
            Req::Capture {
                auth,
                amount,
                is_final,
                ..
            } => match find_hold(acct, *auth, actual, &window_passed) {
                Err(code) => code,
                Ok(()) => capture(
                    acct,
                    id,
                    *auth,
                    amount.as_deref(),
                    is_final.unwrap_or(true),
                    now,
                ),
            },
            Req::Void { auth, .. } => match find_hold(acct, *auth, actual, &window_passed) {
                Err(code) => code,
                Ok(()) => {
                    acct.end_hold(*auth, false, now);
                    "ok"
                }
            },
            Req::Refund { of, amount, .. } => {
                refund(acct, *of, amount.as_deref(), actual, &window_passed)
            }
            other => unreachable!("{} is not a money request", other.op()),
        };
        acct.keys.insert(
            id,
            Key {
                identity,
                op: req.op(),
                result,
                first_ms: now,
                req: req.clone(),
            },
        );
        acct.key_order.push(id);
        Outcome::new(0, result)
    }
}

/// `auth_not_found`, `auth_expired`, `auth_not_active`, or the hold is active.
fn find_hold(
    acct: &mut Account,
    auth: u64,
    actual: Option<&Outcome>,
    window_passed: &dyn Fn(u64) -> bool,
) -> Result<(), &'static str> {
    let Some(hold) = acct.holds.get(&auth) else {
        return Err("auth_not_found");
    };
    match hold.state {
        HoldState::Active => Ok(()),
        HoldState::Ended { expired, at_ms } => {
            // "a hold that ended is remembered for at least the window after
            // it ended ... a forgotten hold is auth_not_found".
            if window_passed(at_ms) && says(actual, "auth_not_found") {
                hit("engine forgot an ended hold past the window");
                acct.holds.remove(&auth);
                return Err("auth_not_found");
            }
            Err(if expired {
                "auth_expired"
            } else {
                "auth_not_active"
            })
        }
    }
}

fn deposit(acct: &mut Account, amount: &str) -> &'static str {
    let Some(amount) = parse_amount(amount, acct.exp, false) else {
        return "invalid_amount";
    };
    if acct.balance + amount > MINOR_MAX {
        hit("deposit would pass 2^63-1");
        return "invalid_amount";
    }
    if acct.balance + amount == MINOR_MAX {
        hit("deposit reaches exactly 2^63-1");
    }
    acct.balance += amount;
    "ok"
}

/// Check order: invalid_amount, account_frozen, limit_exceeded, risk routing,
/// insufficient_funds, then the 63-bit check.
fn debit(acct: &mut Account, id: u64, amount: &str, now: u64) -> &'static str {
    let Some(amount) = parse_amount(amount, acct.exp, false) else {
        return "invalid_amount";
    };
    if acct.frozen {
        return "account_frozen";
    }
    if acct.over_limits(amount, amount, now) {
        return "limit_exceeded";
    }
    let by_amount = acct.limits.review_above.is_some_and(|r| amount > r);
    let by_velocity = acct.limits.velocity.as_ref().is_some_and(|v| {
        let recent = acct
            .velocity_debits
            .iter()
            .filter(|(t, a)| *a <= v.below && now - t < v.window_ms)
            .count();
        if acct
            .velocity_debits
            .iter()
            .any(|(t, a)| *a <= v.below && now - t == v.window_ms)
        {
            hit("velocity debit exactly window_ms old (not counted)");
        }
        amount <= v.below && recent as u64 >= v.max
    });
    if by_amount {
        hit("review: amount above review_above");
    }
    if by_velocity {
        hit("review: velocity");
    }
    let review = by_amount || by_velocity;
    if !acct.can_take(amount) {
        return "insufficient_funds";
    }
    if review {
        if acct.held() + amount > MINOR_MAX {
            hit("review hold would pass 2^63-1");
            return "invalid_amount";
        }
        acct.new_hold(id, amount, now + DEFAULT_EXPIRY_MS, true);
        acct.day_sum += amount;
        return "held_for_review";
    }
    acct.balance -= amount;
    assert!(acct.balance >= -MINOR_MAX, "model: balance below -(2^63-1)");
    acct.day_sum += amount;
    acct.velocity_debits.push((now, amount));
    acct.refundables.insert(
        id,
        Refundable {
            amount,
            refunded: 0,
            first_ms: now,
        },
    );
    "ok"
}

fn authorize(
    acct: &mut Account,
    id: u64,
    amount: &str,
    expires_in_ms: Option<u64>,
    now: u64,
) -> &'static str {
    let Some(amount) = parse_amount(amount, acct.exp, false) else {
        return "invalid_amount";
    };
    if acct.frozen {
        return "account_frozen";
    }
    if acct.over_limits(amount, amount, now) {
        return "limit_exceeded";
    }
    if !acct.can_take(amount) {
        return "insufficient_funds";
    }
    if acct.held() + amount > MINOR_MAX {
        hit("authorize would pass 2^63-1 held");
        return "invalid_amount";
    }
    acct.new_hold(
        id,
        amount,
        now + expires_in_ms.unwrap_or(DEFAULT_EXPIRY_MS),
        false,
    );
    acct.day_sum += amount;
    "ok"
}

/// After the hold checks: invalid_amount, account_frozen, capture_started,
/// limit_exceeded, insufficient_funds, then the 63-bit check.
fn increment(
    acct: &mut Account,
    auth: u64,
    amount: &str,
    expires_in_ms: Option<u64>,
    now: u64,
) -> &'static str {
    let Some(amount) = parse_amount(amount, acct.exp, false) else {
        return "invalid_amount";
    };
    if acct.frozen {
        return "account_frozen";
    }
    let hold = &acct.holds[&auth];
    if hold.captured > 0 {
        return "capture_started";
    }
    // per_txn bounds "the new total of a hold after an increment".
    let new_total = hold.amount + amount;
    if acct.over_limits(amount, new_total, now) {
        return "limit_exceeded";
    }
    if !acct.can_take(amount) {
        return "insufficient_funds";
    }
    if new_total > MINOR_MAX || acct.held() + amount > MINOR_MAX {
        hit("increment would pass 2^63-1");
        return "invalid_amount";
    }
    let hold = acct.holds.get_mut(&auth).expect("found above");
    hold.amount = new_total;
    if let Some(ms) = expires_in_ms {
        hit("increment moves the expiry");
        hold.expires_at_ms = now + ms;
    }
    acct.day_sum += amount;
    "ok"
}

/// After the hold checks: invalid_amount, exceeds_authorized (against what is
/// left of the hold).
fn capture(
    acct: &mut Account,
    id: u64,
    auth: u64,
    amount: Option<&str>,
    is_final: bool,
    now: u64,
) -> &'static str {
    let left = acct.holds[&auth].left();
    let amount = match amount {
        None => left,
        Some(text) => match parse_amount(text, acct.exp, false) {
            Some(v) => v,
            None => return "invalid_amount",
        },
    };
    if amount > left {
        return "exceeds_authorized";
    }
    acct.balance -= amount;
    acct.holds.get_mut(&auth).expect("found above").captured += amount;
    // "A non-final capture that takes all that is left ends the hold."
    if is_final || amount == left {
        if !is_final {
            hit("non-final capture of all that is left");
        }
        acct.end_hold(auth, false, now);
    }
    acct.refundables.insert(
        id,
        Refundable {
            amount,
            refunded: 0,
            first_ms: now,
        },
    );
    "ok"
}

/// not_refundable, invalid_amount, exceeds_refundable, then the 63-bit check.
fn refund(
    acct: &mut Account,
    of: u64,
    amount: Option<&str>,
    actual: Option<&Outcome>,
    window_passed: &dyn Fn(u64) -> bool,
) -> &'static str {
    let Some(original) = acct.refundables.get(&of) else {
        return "not_refundable";
    };
    // "a forgotten original is not_refundable".
    if window_passed(original.first_ms) && says(actual, "not_refundable") {
        hit("engine forgot a refundable original past the window");
        acct.refundables.remove(&of);
        return "not_refundable";
    }
    let left = original.amount - original.refunded;
    let amount = match amount {
        None => left,
        Some(text) => match parse_amount(text, acct.exp, false) {
            Some(v) => v,
            None => return "invalid_amount",
        },
    };
    // "once nothing is left, a refund (with or without an amount) is
    // exceeds_refundable".
    if amount > left || left == 0 {
        if left == 0 {
            hit("refund once nothing is left");
        }
        return "exceeds_refundable";
    }
    if acct.balance + amount > MINOR_MAX {
        hit("refund would pass 2^63-1");
        return "invalid_amount";
    }
    acct.balance += amount;
    acct.refundables.get_mut(&of).expect("found above").refunded += amount;
    "ok"
}
