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
//! assumes everything is remembered. The same holds for settle keys (a
//! settle past the window that the engine does not replay is a new one) and
//! for statement entries (an entry past the window that a `history` page
//! leaves out is gone for good; one inside the window must be there). A
//! queued debit's key and entry are never forgotten before its batch.
//!
//! Outcome fields that are not strings (`batch`, `count`, `fee_bps`,
//! `applied`, ..., and `entries`) are held in `Outcome::fields` as
//! `json:` and their JSON text (`JSON_PREFIX`), so a string "1" never
//! passes for the integer 1.

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
        history: Option<bool>,
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
        merchant: Option<u64>,
    },
    Authorize {
        id: u64,
        account: u64,
        amount: String,
        expires_in_ms: Option<u64>,
        merchant: Option<u64>,
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
    OpenMerchant {
        merchant: u64,
        currency: String,
        fee_bps: Option<u64>,
    },
    QueueDebit {
        id: u64,
        account: u64,
        amount: String,
        merchant: Option<u64>,
    },
    RunBatch,
    Settle {
        id: u64,
        merchant: u64,
    },
    Merchant {
        merchant: u64,
    },
    Close {
        account: u64,
    },
    History {
        account: u64,
        limit: Option<u64>,
        before: Option<u64>,
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
            Req::OpenMerchant { .. } => "open_merchant",
            Req::QueueDebit { .. } => "queue_debit",
            Req::RunBatch => "run_batch",
            Req::Settle { .. } => "settle",
            Req::Merchant { .. } => "merchant",
            Req::Close { .. } => "close_account",
            Req::History { .. } => "history",
        }
    }

    pub fn account(&self) -> Option<u64> {
        match self {
            Req::Malformed
            | Req::AdvanceClock { .. }
            | Req::OpenMerchant { .. }
            | Req::RunBatch
            | Req::Settle { .. }
            | Req::Merchant { .. } => None,
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
            | Req::Status { account, .. }
            | Req::QueueDebit { account, .. }
            | Req::Close { account }
            | Req::History { account, .. } => Some(*account),
        }
    }

    /// The key id of a request keyed by (account, id) (status names an id
    /// but has no key; settle's key is (merchant, id)).
    pub fn key_id(&self) -> Option<u64> {
        match self {
            Req::Deposit { id, .. }
            | Req::Debit { id, .. }
            | Req::Authorize { id, .. }
            | Req::Increment { id, .. }
            | Req::Capture { id, .. }
            | Req::Void { id, .. }
            | Req::Refund { id, .. }
            | Req::QueueDebit { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// The merchant a debit, authorize or queue_debit names ("Only debit,
    /// authorize and queue_debit take it; other ops ignore it").
    pub fn merchant(&self) -> Option<u64> {
        match self {
            Req::Debit { merchant, .. }
            | Req::Authorize { merchant, .. }
            | Req::QueueDebit { merchant, .. } => *merchant,
            _ => None,
        }
    }

    /// What a replay must match: the op and every field but id and account,
    /// amounts by `amount_identity`, omitted optionals as their defaults
    /// ("The merchant field takes part in replays like any field (omitted
    /// differs from given)").
    pub fn identity(&self) -> String {
        let amount =
            |a: &Option<String>| a.as_deref().map_or("omitted".to_string(), amount_identity);
        match self {
            Req::Deposit { amount: a, .. } => format!("deposit {}", amount_identity(a)),
            Req::Debit {
                amount: a,
                merchant,
                ..
            } => format!("debit {} merchant {merchant:?}", amount_identity(a)),
            Req::QueueDebit {
                amount: a,
                merchant,
                ..
            } => format!("queue_debit {} merchant {merchant:?}", amount_identity(a)),
            Req::Authorize {
                amount: a,
                expires_in_ms,
                merchant,
                ..
            } => format!(
                "authorize {} expires {} merchant {merchant:?}",
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
    /// The original result, which replays return (`queued` for a queued
    /// debit, whatever its batch did).
    pub result: &'static str,
    /// When the key was processed; for a queued debit its batch applied,
    /// the batch's time ("remembered ... for the dedup window after that").
    pub first_ms: u64,
    /// A queued debit its batch has not applied yet: never forgotten.
    pub waiting: bool,
    /// What its batch gave a queued debit (what `status` reports after).
    pub applied: Option<&'static str>,
    /// The request itself, for the generator's replays and conflicts.
    pub req: Req,
}

impl Key {
    /// What `status` reports: "`queued` until its batch applies it, then
    /// the result it got there".
    pub fn status(&self) -> &'static str {
        self.applied.unwrap_or(self.result)
    }
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
    /// "an authorize naming one passes it to its hold" (and a review hold
    /// carries its debit's).
    pub merchant: Option<u64>,
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
    /// The merchant it cleared to: its refunds are charged back there.
    pub merchant: Option<u64>,
    /// How many batches that merchant had settled when it cleared.
    pub batch: usize,
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

/// One statement entry of an account with history.
#[derive(Clone, Debug)]
pub struct Entry {
    pub seq: u64,
    pub id: u64,
    pub op: &'static str,
    pub result: &'static str,
    pub time: u64,
    /// With `balance`: only for `ok` / `held_for_review` that moved or held
    /// money.
    pub amount: Option<i128>,
    pub balance: Option<i128>,
    pub merchant: Option<u64>,
    /// Kept at least for the window after this (its key's time; a queued
    /// debit's batch time), and always while `waiting`.
    pub since_ms: u64,
    pub waiting: bool,
    /// The engine showed it had dropped it (allowed past the window).
    pub gone: bool,
}

/// The fields an entry may carry, in the order the canonical text uses.
pub const ENTRY_FIELDS: [&str; 8] = [
    "seq", "id", "op", "result", "time", "amount", "balance", "merchant",
];

/// Outcome fields that are not strings (or hold JSON) are kept in
/// `Outcome::fields` as this prefix and their compact JSON text.
pub const JSON_PREFIX: &str = "json:";

/// An integer outcome field as `Outcome::fields` holds it.
pub fn json_int(n: impl std::fmt::Display) -> String {
    format!("{JSON_PREFIX}{n}")
}

/// `entries` as `Outcome::fields` holds it: each entry with only the fields
/// SPEC names, in `ENTRY_FIELDS` order (an engine may add others).
pub fn canonical_entries(value: &serde_json::Value) -> String {
    let Some(list) = value.as_array() else {
        return format!("{JSON_PREFIX}{value}");
    };
    let items: Vec<String> = list
        .iter()
        .map(|e| match e.as_object() {
            None => e.to_string(),
            Some(obj) => {
                let parts: Vec<String> = ENTRY_FIELDS
                    .iter()
                    .filter_map(|name| obj.get(*name).map(|v| format!("{}:{v}", js_str(name))))
                    .collect();
                format!("{{{}}}", parts.join(","))
            }
        })
        .collect();
    format!("{JSON_PREFIX}[{}]", items.join(","))
}

fn js_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

impl Entry {
    fn to_json(&self, exp: u32) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("seq".into(), self.seq.into());
        m.insert("id".into(), self.id.into());
        m.insert("op".into(), self.op.into());
        m.insert("result".into(), self.result.into());
        m.insert("time".into(), self.time.into());
        if let Some(a) = self.amount {
            m.insert("amount".into(), format_minor(a, exp).into());
        }
        if let Some(b) = self.balance {
            m.insert("balance".into(), format_minor(b, exp).into());
        }
        if let Some(merchant) = self.merchant {
            m.insert("merchant".into(), merchant.into());
        }
        serde_json::Value::Object(m)
    }
}

#[derive(Clone, Debug)]
pub struct Account {
    pub currency: String,
    pub exp: u32,
    pub overdraft: i128,
    pub balance: i128,
    pub frozen: bool,
    /// "closed for good".
    pub closed: bool,
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
    /// Queued debits waiting for a batch.
    pub waiting: usize,
    /// The statement, for an account opened with `"history": true`.
    pub history: Option<Vec<Entry>>,
}

impl Account {
    fn new(currency: &str, exp: u32, overdraft: i128, now_ms: u64, history: bool) -> Account {
        Account {
            currency: currency.to_string(),
            exp,
            overdraft,
            balance: 0,
            frozen: false,
            closed: false,
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
            waiting: 0,
            history: history.then(Vec::new),
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

    fn new_hold(
        &mut self,
        id: u64,
        amount: i128,
        expires_at_ms: u64,
        review: bool,
        merchant: Option<u64>,
    ) {
        let hold = Hold {
            amount,
            captured: 0,
            expires_at_ms,
            state: HoldState::Active,
            review,
            merchant,
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

    /// `account_not_empty`: "while the balance is not zero, a hold is
    /// active, or a queued debit waits".
    pub fn is_empty(&self) -> bool {
        self.balance == 0 && self.active_holds.is_empty() && self.waiting == 0
    }

    pub fn summary(&self) -> String {
        let e = self.exp;
        let mut s = format!(
            "{} balance {} held {} available {} overdraft {}{}{}",
            self.currency,
            format_minor(self.balance, e),
            format_minor(self.held(), e),
            format_minor(self.available(), e),
            format_minor(self.overdraft, e),
            if self.frozen { " FROZEN" } else { "" },
            if self.closed { " CLOSED" } else { "" }
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
                    "#{id} amount {} captured {} expires_at {}{}{}",
                    format_minor(h.amount, e),
                    format_minor(h.captured, e),
                    h.expires_at_ms,
                    if h.review { " (review)" } else { "" },
                    h.merchant
                        .map_or(String::new(), |m| format!(" merchant {m}"))
                )
            })
            .collect();
        s += &format!("; active holds [{}]", active.join(", "));
        if self.waiting > 0 {
            s += &format!("; {} queued debit(s) waiting", self.waiting);
        }
        if let Some(h) = &self.history {
            s += &format!("; history with {} entries", h.len());
        }
        s
    }
}

/// One settled batch of a merchant.
#[derive(Clone, Debug)]
pub struct Batch {
    pub count: u64,
    pub gross: i128,
    pub refunded: i128,
    pub fee: i128,
    pub net: i128,
}

#[derive(Clone, Debug)]
pub struct Merchant {
    pub currency: String,
    pub exp: u32,
    pub fee_bps: u64,
    /// The current batch: clearings (count, sum) and charge-backs (sum).
    pub count: u64,
    pub gross: i128,
    pub refunded: i128,
    pub batches: Vec<Batch>,
    /// Everything ever cleared and charged back (the conservation check).
    pub cleared_total: i128,
    pub charged_back_total: i128,
    /// Settle keys (merchant, id): the original outcome and when.
    pub keys: Map<u64, (Outcome, u64)>,
    pub key_order: Vec<u64>,
}

impl Merchant {
    /// `pending` = clearings minus charge-backs of the current batch.
    pub fn pending(&self) -> i128 {
        self.gross - self.refunded
    }

    fn clear(&mut self, amount: i128) {
        self.count += 1;
        self.gross += amount;
        self.cleared_total += amount;
    }

    fn charge_back(&mut self, amount: i128) {
        self.refunded += amount;
        self.charged_back_total += amount;
    }

    /// SPEC: "the sum of its clearings minus the sum of its charge-backs
    /// equals `pending` plus the sum over its batches of `gross -
    /// refunded`, and every batch has `gross - refunded = fee + net`" (the
    /// model's own bookkeeping; the test checks the engine's answers).
    fn check_conserved(&self) {
        let settled: i128 = self.batches.iter().map(|b| b.gross - b.refunded).sum();
        assert_eq!(
            self.cleared_total - self.charged_back_total,
            self.pending() + settled,
            "model: merchant money not conserved"
        );
        for b in &self.batches {
            assert_eq!(b.gross - b.refunded, b.fee + b.net, "model: batch figures");
        }
    }

    pub fn summary(&self) -> String {
        let e = self.exp;
        format!(
            "{} fee_bps {}; current batch: {} clearing(s) gross {} charged back {}; {} batch(es) settled, net {} fees {}",
            self.currency,
            self.fee_bps,
            self.count,
            format_minor(self.gross, e),
            format_minor(self.refunded, e),
            self.batches.len(),
            format_minor(self.batches.iter().map(|b| b.net).sum(), e),
            format_minor(self.batches.iter().map(|b| b.fee).sum(), e),
        )
    }
}

/// A debit waiting for `run_batch`.
#[derive(Clone, Debug)]
pub struct Queued {
    pub account: u64,
    pub id: u64,
    pub amount: i128,
    pub merchant: Option<u64>,
    /// Its history entry's seq, on an account with history.
    pub seq: Option<u64>,
}

pub struct Model {
    pub now_ms: u64,
    pub dedup_window_ms: u64,
    pub accounts: Map<u64, Account>,
    pub merchants: Map<u64, Merchant>,
    /// Every queued debit not yet applied, in line order.
    pub queue: Vec<Queued>,
}

/// What the engine answered, as far as the forgetting rules need it.
fn says(actual: Option<&Outcome>, result: &str) -> bool {
    actual.is_some_and(|a| a.result == result && !a.replayed)
}

/// The result of a keyed request and, when it moved or held money, the
/// amount it moved or held (for the statement).
struct Done {
    result: &'static str,
    amount: Option<i128>,
}

fn no(result: &'static str) -> Done {
    Done {
        result,
        amount: None,
    }
}

fn moved(result: &'static str, amount: i128) -> Done {
    Done {
        result,
        amount: Some(amount),
    }
}

fn settled_batches(merchants: &Map<u64, Merchant>, merchant: Option<u64>) -> usize {
    merchant.map_or(0, |m| merchants[&m].batches.len())
}

/// "A request that names a merchant needs it to exist (`unknown_merchant`)
/// and to have the account's currency (`currency_mismatch`)."
fn merchant_problem(
    merchants: &Map<u64, Merchant>,
    merchant: u64,
    currency: &str,
) -> Option<&'static str> {
    match merchants.get(&merchant) {
        None => Some("unknown_merchant"),
        Some(m) if m.currency != currency => Some("currency_mismatch"),
        Some(_) => None,
    }
}

impl Model {
    pub fn new(dedup_window_ms: u64) -> Model {
        Model {
            now_ms: 0,
            dedup_window_ms,
            accounts: Map::default(),
            merchants: Map::default(),
            queue: Vec::new(),
        }
    }

    /// Something first stored (or ended) at `since_ms` is guaranteed to be
    /// remembered while less than the window has passed since.
    pub fn may_be_forgotten(&self, since_ms: u64) -> bool {
        self.now_ms - since_ms >= self.dedup_window_ms
    }

    /// A key that the engine must still remember.
    pub fn key_sure(&self, key: &Key) -> bool {
        key.waiting || !self.may_be_forgotten(key.first_ms)
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
                history,
            } => {
                // "Its id is never reused: open_account with it is
                // account_exists."
                if let Some(acct) = self.accounts.get(account) {
                    if acct.closed {
                        hit("open_account of a closed account");
                    }
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
                self.accounts.insert(
                    *account,
                    Account::new(currency, exp, overdraft, now, history.unwrap_or(false)),
                );
                Outcome::new(0, "ok")
            }
            Req::Freeze { account } | Req::Unfreeze { account } => {
                let Some(acct) = self.accounts.get_mut(account) else {
                    return Outcome::new(0, "unknown_account");
                };
                if acct.closed {
                    return Outcome::new(0, "account_closed");
                }
                acct.frozen = matches!(req, Req::Freeze { .. });
                Outcome::new(0, "ok")
            }
            Req::Balance { account } => {
                let Some(acct) = self.accounts.get(account) else {
                    return Outcome::new(0, "unknown_account");
                };
                if acct.closed {
                    hit("balance of a closed account");
                }
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
                if !key.waiting && now - key.first_ms >= window_ms && says(actual, "unknown_id") {
                    hit("engine forgot a key (status) past the window");
                    acct.keys.remove(id);
                    return Outcome::new(0, "unknown_id");
                }
                if key.op == "queue_debit" {
                    hit(if key.waiting {
                        "status of a queued debit still waiting"
                    } else {
                        "status of a queued debit its batch applied"
                    });
                }
                Outcome::new(0, "ok")
                    .with("op", key.op.to_string())
                    .with("status", key.status().to_string())
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
                if acct.closed {
                    return Outcome::new(0, "account_closed");
                }
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
            Req::OpenMerchant {
                merchant,
                currency,
                fee_bps,
            } => {
                // "a second open_merchant with the same id is
                // merchant_exists, whatever its fields".
                if self.merchants.contains_key(merchant) {
                    return Outcome::new(0, "merchant_exists");
                }
                let Some(exp) = currency_exponent(currency) else {
                    return Outcome::new(0, "unsupported_currency");
                };
                let fee_bps = fee_bps.unwrap_or(0);
                assert!(fee_bps <= 10_000, "generator bug: fee_bps {fee_bps}");
                self.merchants.insert(
                    *merchant,
                    Merchant {
                        currency: currency.clone(),
                        exp,
                        fee_bps,
                        count: 0,
                        gross: 0,
                        refunded: 0,
                        batches: Vec::new(),
                        cleared_total: 0,
                        charged_back_total: 0,
                        keys: Map::default(),
                        key_order: Vec::new(),
                    },
                );
                Outcome::new(0, "ok")
            }
            Req::Merchant { merchant } => {
                let Some(m) = self.merchants.get(merchant) else {
                    return Outcome::new(0, "unknown_merchant");
                };
                m.check_conserved();
                if m.pending() < 0 {
                    hit("merchant pending is negative");
                }
                let e = m.exp;
                Outcome::new(0, "ok")
                    .with("currency", m.currency.clone())
                    .with("fee_bps", json_int(m.fee_bps))
                    .with("batches", json_int(m.batches.len()))
                    .with("pending", format_minor(m.pending(), e))
                    .with(
                        "settled_net",
                        format_minor(m.batches.iter().map(|b| b.net).sum(), e),
                    )
                    .with(
                        "fees",
                        format_minor(m.batches.iter().map(|b| b.fee).sum(), e),
                    )
            }
            Req::Settle { id, merchant } => self.settle(*id, *merchant, actual),
            Req::RunBatch => self.run_batch(),
            Req::Close { account } => {
                let Some(acct) = self.accounts.get_mut(account) else {
                    return Outcome::new(0, "unknown_account");
                };
                if acct.closed {
                    return Outcome::new(0, "account_closed");
                }
                if acct.balance != 0 {
                    hit("close with balance left");
                }
                if !acct.active_holds.is_empty() {
                    hit("close with a hold active");
                }
                if acct.waiting > 0 {
                    hit("close with a queued debit waiting");
                }
                match (
                    acct.balance == 0,
                    acct.active_holds.is_empty(),
                    acct.waiting == 0,
                ) {
                    (true, false, true) => hit("close with only a hold active"),
                    (true, true, false) => hit("close with only a queued debit waiting"),
                    _ => {}
                }
                if !acct.is_empty() {
                    return Outcome::new(0, "account_not_empty");
                }
                if acct.frozen {
                    hit("close of a frozen account");
                }
                if acct.history.is_some() {
                    hit("close of an account with history");
                }
                acct.closed = true;
                Outcome::new(0, "ok")
            }
            Req::History {
                account,
                limit,
                before,
            } => self.history(*account, *limit, *before, actual),
            _ => self.money(req, actual),
        }
    }

    /// "`settle` closes the merchant's current batch".
    fn settle(&mut self, id: u64, merchant: u64, actual: Option<&Outcome>) -> Outcome {
        let now = self.now_ms;
        let window_ms = self.dedup_window_ms;
        // "A settle's unknown_merchant is not remembered."
        let Some(m) = self.merchants.get_mut(&merchant) else {
            return Outcome::new(0, "unknown_merchant");
        };
        if let Some((original, first_ms)) = m.keys.get(&id) {
            // "Its key is remembered, replayed and forgotten like any other
            // key": past the window the engine may answer as for a new one.
            let forgotten = now - first_ms >= window_ms && actual.is_some_and(|a| !a.replayed);
            if forgotten {
                hit("engine forgot a settle key past the window");
                m.keys.remove(&id);
            } else {
                // "a key seen before always replays (never id_conflict)".
                hit(if original.result == "ok" {
                    "settle replayed (ok)"
                } else {
                    "settle replayed (nothing_to_settle)"
                });
                let mut outcome = original.clone();
                outcome.replayed = true;
                return outcome;
            }
        }
        // "A batch with no clearing and no charge-back is nothing_to_settle,
        // and starts nothing".
        let outcome = if m.count == 0 && m.refunded == 0 {
            Outcome::new(0, "nothing_to_settle")
        } else {
            // "fee = gross x fee_bps / 10,000 in minor units, rounded down;
            // net = gross - refunded - fee".
            let product = m.gross * i128::from(m.fee_bps);
            let fee = product / 10_000;
            if product % 10_000 != 0 {
                hit("settle fee rounds down");
            }
            let net = m.gross - m.refunded - fee;
            if net < 0 {
                hit("settle net is negative");
            }
            if m.count == 0 {
                hit("settle of charge-backs only");
            }
            if m.count > 0 && m.gross == m.refunded {
                hit("settle where clearings and charge-backs cancel");
            }
            match m.fee_bps {
                0 => hit("settle with fee_bps 0"),
                10_000 => hit("settle with fee_bps 10000"),
                _ => {}
            }
            let batch = Batch {
                count: m.count,
                gross: m.gross,
                refunded: m.refunded,
                fee,
                net,
            };
            m.batches.push(batch);
            m.count = 0;
            m.gross = 0;
            m.refunded = 0;
            let e = m.exp;
            Outcome::new(0, "ok")
                .with("batch", json_int(m.batches.len()))
                .with("count", json_int(m.batches.last().map_or(0, |b| b.count)))
                .with(
                    "gross",
                    format_minor(m.batches.last().map_or(0, |b| b.gross), e),
                )
                .with(
                    "refunded",
                    format_minor(m.batches.last().map_or(0, |b| b.refunded), e),
                )
                .with("fee", format_minor(fee, e))
                .with("net", format_minor(net, e))
        };
        m.check_conserved();
        m.keys.insert(id, (outcome.clone(), now));
        m.key_order.push(id);
        outcome
    }

    /// "every queued debit is applied now ... each as if a `debit` with the
    /// same id, account, amount and merchant arrived at that moment".
    fn run_batch(&mut self) -> Outcome {
        let now = self.now_ms;
        let queue = std::mem::take(&mut self.queue);
        let (mut ok, mut held, mut rejected) = (0u64, 0u64, 0u64);
        for q in &queue {
            let acct = self
                .accounts
                .get_mut(&q.account)
                .expect("a queued debit's account exists");
            if acct.frozen {
                hit("queued debit meets a frozen account");
            }
            let done = apply_debit(acct, &mut self.merchants, q.id, q.amount, q.merchant, now);
            match done.result {
                "ok" => ok += 1,
                "held_for_review" => {
                    hit("queued debit held for review");
                    held += 1
                }
                other => {
                    match other {
                        "limit_exceeded" => hit("queued debit over a limit"),
                        "insufficient_funds" => hit("queued debit short of funds"),
                        _ => {}
                    }
                    rejected += 1
                }
            }
            acct.waiting -= 1;
            let key = acct
                .keys
                .get_mut(&q.id)
                .expect("a waiting key is never forgotten");
            assert!(key.waiting, "model: queued key {} not waiting", q.id);
            key.waiting = false;
            key.applied = Some(done.result);
            key.first_ms = now;
            let balance = acct.balance;
            if let (Some(seq), Some(entries)) = (q.seq, acct.history.as_mut()) {
                let e = &mut entries[(seq - 1) as usize];
                e.result = done.result;
                e.amount = done.amount;
                e.balance = done.amount.map(|_| balance);
                e.since_ms = now;
                e.waiting = false;
            }
        }
        if queue.is_empty() {
            hit("run_batch with nothing queued");
        }
        if ok > 0 {
            hit("run_batch with ok > 0");
        }
        if held > 0 {
            hit("run_batch with held > 0");
        }
        if rejected > 0 {
            hit("run_batch with rejected > 0");
        }
        Outcome::new(0, "ok")
            .with("applied", json_int(queue.len()))
            .with("ok", json_int(ok))
            .with("held", json_int(held))
            .with("rejected", json_int(rejected))
    }

    /// "`history` returns `entries`, newest first: at most `limit` ... of
    /// the entries with `seq` < `before`". Entries past the window may be
    /// missing: the engine's answer says which (see the module comment).
    fn history(
        &mut self,
        account: u64,
        limit: Option<u64>,
        before: Option<u64>,
        actual: Option<&Outcome>,
    ) -> Outcome {
        let now = self.now_ms;
        let window_ms = self.dedup_window_ms;
        let Some(acct) = self.accounts.get_mut(&account) else {
            return Outcome::new(0, "unknown_account");
        };
        let exp = acct.exp;
        let Some(entries) = acct.history.as_mut() else {
            return Outcome::new(0, "no_history");
        };
        let limit = limit.unwrap_or(20) as usize;
        let len = entries.len() as u64;
        let top = before.map_or(len, |b| (b - 1).min(len));
        match before {
            Some(1) => hit("history before 1 (nothing before it)"),
            Some(b) if b == len && len > 0 => hit("history before = last seq"),
            Some(b) if b == len + 1 => hit("history before = last seq + 1"),
            Some(b) if b > len + 1 => hit("history before beyond the end"),
            _ => {}
        }
        // The seqs the engine showed, to learn which old entries it dropped.
        let shown: Option<BTreeSet<u64>> = actual
            .and_then(|a| a.fields.get("entries"))
            .and_then(|t| t.strip_prefix(JSON_PREFIX))
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            .and_then(|v| {
                v.as_array().map(|list| {
                    list.iter()
                        .filter_map(|e| e.get("seq").and_then(|s| s.as_u64()))
                        .collect()
                })
            });
        let mut page = Vec::new();
        let mut seq = top;
        while seq >= 1 && page.len() < limit {
            let e = &mut entries[(seq - 1) as usize];
            seq -= 1;
            if e.gone {
                continue;
            }
            let may_go = !e.waiting && now - e.since_ms >= window_ms;
            if may_go && shown.as_ref().is_some_and(|s| !s.contains(&e.seq)) {
                hit("engine dropped a history entry past the window");
                e.gone = true;
                continue;
            }
            page.push(e.to_json(exp));
        }
        if page.len() == limit && seq >= 1 {
            hit(match limit {
                1 => "history page cut at limit 1",
                20 => "history page cut at the default limit 20",
                1000 => "history page cut at limit 1000",
                _ => "history page cut at another limit",
            });
        }
        if page.len() > 20 {
            hit("history page of more than 20 entries");
        }
        if !page.is_empty() {
            hit("history page with entries");
        }
        Outcome::new(0, "ok").with(
            "entries",
            canonical_entries(&serde_json::Value::Array(page)),
        )
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

    /// deposit, debit, authorize, queue_debit, increment, capture, void,
    /// refund: the ops with a key (account, id).
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
            let forgotten = !key.waiting
                && window_passed(key.first_ms)
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
                if acct.closed {
                    hit("key replayed or conflicting on a closed account");
                }
                if key.identity == identity {
                    if key.op == "queue_debit" && key.result == "queued" && !key.waiting {
                        hit("queued debit replayed after its batch");
                    }
                    let mut outcome = Outcome::new(0, key.result);
                    outcome.replayed = true;
                    return outcome;
                }
                return Outcome::new(0, "id_conflict");
            }
            acct.keys.remove(&id);
        }
        let merchants = &mut self.merchants;
        let named = req.merchant();
        let done = if acct.closed {
            // "On a closed account every request except balance, status and
            // history is account_closed: it comes right after id_conflict
            // and unknown_account".
            hit(match req {
                Req::Refund { .. } => "refund to a closed account",
                _ => "keyed request on a closed account",
            });
            no("account_closed")
        } else if let Some(problem) =
            named.and_then(|m| merchant_problem(merchants, m, &acct.currency))
        {
            no(problem)
        } else {
            match req {
                Req::Deposit { amount, .. } => deposit(acct, amount),
                Req::Debit { amount, .. } => debit(acct, merchants, id, amount, named, now),
                Req::Authorize {
                    amount,
                    expires_in_ms,
                    ..
                } => authorize(acct, id, amount, *expires_in_ms, named, now),
                Req::QueueDebit { amount, .. } => match parse_amount(amount, acct.exp, false) {
                    // "It checks neither account_frozen, limits, risk
                    // routing nor funds".
                    None => no("invalid_amount"),
                    Some(value) => {
                        if acct.frozen {
                            hit("debit queued on a frozen account");
                        }
                        let seq = acct.history.as_ref().map(|h| h.len() as u64 + 1);
                        self.queue.push(Queued {
                            account,
                            id,
                            amount: value,
                            merchant: named,
                            seq,
                        });
                        acct.waiting += 1;
                        no("queued")
                    }
                },
                Req::Increment {
                    auth,
                    amount,
                    expires_in_ms,
                    ..
                } => match find_hold(acct, *auth, actual, &window_passed) {
                    Err(code) => no(code),
                    Ok(()) => increment(acct, *auth, amount, *expires_in_ms, now),
                },
                Req::Capture {
                    auth,
                    amount,
                    is_final,
                    ..
                } => match find_hold(acct, *auth, actual, &window_passed) {
                    Err(code) => no(code),
                    Ok(()) => capture(
                        acct,
                        merchants,
                        id,
                        *auth,
                        amount.as_deref(),
                        is_final.unwrap_or(true),
                        now,
                    ),
                },
                Req::Void { auth, .. } => match find_hold(acct, *auth, actual, &window_passed) {
                    Err(code) => no(code),
                    Ok(()) => {
                        acct.end_hold(*auth, false, now);
                        no("ok")
                    }
                },
                Req::Refund { of, amount, .. } => refund(
                    acct,
                    merchants,
                    *of,
                    amount.as_deref(),
                    actual,
                    &window_passed,
                ),
                other => unreachable!("{} is not a money request", other.op()),
            }
        };
        let result = done.result;
        let waiting = result == "queued";
        acct.keys.insert(
            id,
            Key {
                identity,
                op: req.op(),
                result,
                first_ms: now,
                waiting,
                applied: None,
                req: req.clone(),
            },
        );
        acct.key_order.push(id);
        // "Every keyed request that gets a remembered outcome on such an
        // account (not replays, not id_conflict) adds an entry."
        let balance = acct.balance;
        if let Some(entries) = acct.history.as_mut() {
            entries.push(Entry {
                seq: entries.len() as u64 + 1,
                id,
                op: req.op(),
                result,
                time: now,
                amount: done.amount,
                balance: done.amount.map(|_| balance),
                merchant: named,
                since_ms: now,
                waiting,
                gone: false,
            });
        }
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

fn deposit(acct: &mut Account, amount: &str) -> Done {
    let Some(amount) = parse_amount(amount, acct.exp, false) else {
        return no("invalid_amount");
    };
    if acct.balance + amount > MINOR_MAX {
        hit("deposit would pass 2^63-1");
        return no("invalid_amount");
    }
    if acct.balance + amount == MINOR_MAX {
        hit("deposit reaches exactly 2^63-1");
    }
    acct.balance += amount;
    moved("ok", amount)
}

fn debit(
    acct: &mut Account,
    merchants: &mut Map<u64, Merchant>,
    id: u64,
    amount: &str,
    merchant: Option<u64>,
    now: u64,
) -> Done {
    let Some(amount) = parse_amount(amount, acct.exp, false) else {
        return no("invalid_amount");
    };
    apply_debit(acct, merchants, id, amount, merchant, now)
}

/// A debit's checks from account_frozen on: limit_exceeded, risk routing,
/// insufficient_funds, then the 63-bit check; its effects (clearing, daily
/// sums, velocity, a review hold). Also what `run_batch` does to each
/// queued debit.
fn apply_debit(
    acct: &mut Account,
    merchants: &mut Map<u64, Merchant>,
    id: u64,
    amount: i128,
    merchant: Option<u64>,
    now: u64,
) -> Done {
    if acct.frozen {
        return no("account_frozen");
    }
    if acct.over_limits(amount, amount, now) {
        return no("limit_exceeded");
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
        return no("insufficient_funds");
    }
    if review {
        if acct.held() + amount > MINOR_MAX {
            hit("review hold would pass 2^63-1");
            return no("invalid_amount");
        }
        if merchant.is_some() {
            hit("review hold carries a merchant");
        }
        acct.new_hold(id, amount, now + DEFAULT_EXPIRY_MS, true, merchant);
        acct.day_sum += amount;
        return moved("held_for_review", amount);
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
            merchant,
            batch: settled_batches(merchants, merchant),
        },
    );
    // "an ok debit naming a merchant clears its amount".
    if let Some(m) = merchant {
        merchants.get_mut(&m).expect("checked").clear(amount);
    }
    moved("ok", amount)
}

fn authorize(
    acct: &mut Account,
    id: u64,
    amount: &str,
    expires_in_ms: Option<u64>,
    merchant: Option<u64>,
    now: u64,
) -> Done {
    let Some(amount) = parse_amount(amount, acct.exp, false) else {
        return no("invalid_amount");
    };
    if acct.frozen {
        return no("account_frozen");
    }
    if acct.over_limits(amount, amount, now) {
        return no("limit_exceeded");
    }
    if !acct.can_take(amount) {
        return no("insufficient_funds");
    }
    if acct.held() + amount > MINOR_MAX {
        hit("authorize would pass 2^63-1 held");
        return no("invalid_amount");
    }
    acct.new_hold(
        id,
        amount,
        now + expires_in_ms.unwrap_or(DEFAULT_EXPIRY_MS),
        false,
        merchant,
    );
    acct.day_sum += amount;
    moved("ok", amount)
}

/// After the hold checks: invalid_amount, account_frozen, capture_started,
/// limit_exceeded, insufficient_funds, then the 63-bit check.
fn increment(
    acct: &mut Account,
    auth: u64,
    amount: &str,
    expires_in_ms: Option<u64>,
    now: u64,
) -> Done {
    let Some(amount) = parse_amount(amount, acct.exp, false) else {
        return no("invalid_amount");
    };
    if acct.frozen {
        return no("account_frozen");
    }
    let hold = &acct.holds[&auth];
    if hold.captured > 0 {
        return no("capture_started");
    }
    // per_txn bounds "the new total of a hold after an increment".
    let new_total = hold.amount + amount;
    if acct.over_limits(amount, new_total, now) {
        return no("limit_exceeded");
    }
    if !acct.can_take(amount) {
        return no("insufficient_funds");
    }
    if new_total > MINOR_MAX || acct.held() + amount > MINOR_MAX {
        hit("increment would pass 2^63-1");
        return no("invalid_amount");
    }
    let hold = acct.holds.get_mut(&auth).expect("found above");
    hold.amount = new_total;
    if let Some(ms) = expires_in_ms {
        hit("increment moves the expiry");
        hold.expires_at_ms = now + ms;
    }
    acct.day_sum += amount;
    moved("ok", amount)
}

/// After the hold checks: invalid_amount, exceeds_authorized (against what is
/// left of the hold).
fn capture(
    acct: &mut Account,
    merchants: &mut Map<u64, Merchant>,
    id: u64,
    auth: u64,
    amount: Option<&str>,
    is_final: bool,
    now: u64,
) -> Done {
    let left = acct.holds[&auth].left();
    let amount = match amount {
        None => left,
        Some(text) => match parse_amount(text, acct.exp, false) {
            Some(v) => v,
            None => return no("invalid_amount"),
        },
    };
    if amount > left {
        return no("exceeds_authorized");
    }
    acct.balance -= amount;
    let hold = acct.holds.get_mut(&auth).expect("found above");
    hold.captured += amount;
    let merchant = hold.merchant;
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
            merchant,
            batch: settled_batches(merchants, merchant),
        },
    );
    // "an ok capture of a hold whose authorize named a merchant clears the
    // amount it captured".
    if let Some(m) = merchant {
        if !is_final && amount < left {
            hit("partial capture clears to a merchant");
        }
        merchants
            .get_mut(&m)
            .expect("a hold's merchant exists")
            .clear(amount);
    }
    moved("ok", amount)
}

/// not_refundable, invalid_amount, exceeds_refundable, then the 63-bit check.
fn refund(
    acct: &mut Account,
    merchants: &mut Map<u64, Merchant>,
    of: u64,
    amount: Option<&str>,
    actual: Option<&Outcome>,
    window_passed: &dyn Fn(u64) -> bool,
) -> Done {
    let Some(original) = acct.refundables.get(&of) else {
        return no("not_refundable");
    };
    // "a forgotten original is not_refundable".
    if window_passed(original.first_ms) && says(actual, "not_refundable") {
        hit("engine forgot a refundable original past the window");
        acct.refundables.remove(&of);
        return no("not_refundable");
    }
    let left = original.amount - original.refunded;
    let amount = match amount {
        None => left,
        Some(text) => match parse_amount(text, acct.exp, false) {
            Some(v) => v,
            None => return no("invalid_amount"),
        },
    };
    // "once nothing is left, a refund (with or without an amount) is
    // exceeds_refundable".
    if amount > left || left == 0 {
        if left == 0 {
            hit("refund once nothing is left");
        }
        return no("exceeds_refundable");
    }
    if acct.balance + amount > MINOR_MAX {
        hit("refund would pass 2^63-1");
        return no("invalid_amount");
    }
    acct.balance += amount;
    let original = acct.refundables.get_mut(&of).expect("found above");
    original.refunded += amount;
    // "An ok refund of an original that cleared to a merchant is charged
    // back to that merchant: it counts against the merchant's current
    // batch, whichever batch the original was in."
    if let Some(m) = original.merchant {
        let m = merchants
            .get_mut(&m)
            .expect("an original's merchant exists");
        hit("refund charged back to a merchant");
        if m.batches.len() > original.batch {
            hit("charge-back of an original cleared in an earlier batch");
        }
        m.charge_back(amount);
    }
    moved("ok", amount)
}
