//! JSON Lines codec: request lines in, outcome lines out (SPEC, "Requests and
//! outcomes").
//!
//! [`parse_line`] turns one input line into a typed [`Request`] or a reason
//! why the line is malformed; [`write_outcome`] and [`write_malformed`] append
//! one outcome line.
//!
//! Parsing goes through `serde_json`'s streaming deserializer into a fixed
//! table of the fields any op may name, without building a `Value` tree:
//! strings are borrowed from the line unless they hold escapes. Every object
//! at every depth is checked for repeated keys (compared after unescaping),
//! including the values of fields the op ignores. Only once the whole line is
//! read is `op` known, so only then are the fields it names type-checked;
//! the others are ignored whatever their types.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::limits::{ADVANCE_CLOCK_MS_MAX, EXPIRES_IN_MS_MAX, HISTORY_LIMIT_MAX, VELOCITY_MAX_MAX};
use crate::money::{format_minor_wide, write_minor, AmountArg, Currency};
use crate::outcome::{HistoryPage, Info, Outcome};
use crate::request::{LimitsArg, Request, VelocityArg};
use crate::shard::FEE_BPS_MAX;

/// Parses one input line (without its trailing '\n'; a trailing '\r' may be
/// present and is JSON whitespace).
///
/// `Err(text)` means the line is malformed; `text` is a short human-readable
/// reason (free-form). `manual_clock`: under the wall clock (`false`),
/// `advance_clock` is malformed.
pub fn parse_line(line: &[u8], manual_clock: bool) -> Result<Request, String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("not JSON: not UTF-8 ({e})"))?;
    let mut fields = Fields {
        slots: [const { None }; FIELDS.len()],
    };
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(RequestVisitor(&mut fields))
        .and_then(|()| de.end())
        .map_err(|e| match e.classify() {
            serde_json::error::Category::Data => e.to_string(),
            _ => format!("not JSON: {e}"),
        })?;
    fields.to_request(manual_clock)
}

/// Appends exactly one outcome line (no trailing newline) to `out`.
pub fn write_outcome(out: &mut String, line: u64, outcome: &Outcome) {
    out.push_str("{\"line\": ");
    push_u64(out, line);
    out.push_str(", \"result\": \"");
    out.push_str(outcome.code.name());
    out.push('"');
    if outcome.replayed {
        out.push_str(", \"replayed\": true");
    }
    match &outcome.info {
        Info::History(page) => write_entries(out, page),
        _ => for_each_field(outcome, |name, value| {
            out.push_str(", \"");
            out.push_str(name);
            out.push_str("\": ");
            match value {
                Field::Int(v) => push_u64(out, v),
                Field::Text(text) => {
                    out.push('"');
                    out.push_str(text);
                    out.push('"');
                }
            }
        }),
    }
    out.push('}');
}

/// One field an outcome carries beyond `result` and `replayed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field<'a> {
    /// A JSON integer.
    Int(u64),
    /// A JSON string (codes, currencies, amounts as decimal strings): no
    /// character in it needs escaping.
    Text(&'a str),
}

/// Calls `each` with the fields of `outcome`'s info, in the order the line
/// format writes them (a balance's `balance`, `held`, `available`; a
/// status's `op`, `status`; a merchant's figures; a settlement's; a batch
/// run's counts). A statement page's entries are not fields (see
/// `write_outcome`); the HTTP gateway writes these same fields.
pub fn for_each_field(outcome: &Outcome, mut each: impl FnMut(&str, Field<'_>)) {
    match &outcome.info {
        Info::None | Info::History(_) => {}
        Info::Balance { .. } => {
            if let Some([balance, held, available]) = outcome.balance_strings() {
                each("balance", Field::Text(&balance));
                each("held", Field::Text(&held));
                each("available", Field::Text(&available));
            }
        }
        Info::Status { op, status } => {
            each("op", Field::Text(op.name()));
            each("status", Field::Text(status.name()));
        }
        Info::Merchant(m) => {
            let e = m.currency.exponent();
            each("currency", Field::Text(m.currency.code()));
            each("fee_bps", Field::Int(u64::from(m.fee_bps)));
            each("batches", Field::Int(m.batches));
            for (name, value) in [
                ("pending", m.pending),
                ("settled_net", m.settled_net),
                ("fees", m.fees),
            ] {
                each(name, Field::Text(&format_minor_wide(value, e)));
            }
        }
        Info::Settlement(b) => {
            let e = b.currency.exponent();
            each("batch", Field::Int(b.batch));
            each("count", Field::Int(b.count));
            for (name, value) in [
                ("gross", b.gross),
                ("refunded", b.refunded),
                ("fee", b.fee),
                ("net", b.net),
            ] {
                each(name, Field::Text(&format_minor_wide(value, e)));
            }
        }
        Info::Batch(b) => {
            for (name, value) in [
                ("applied", b.applied),
                ("ok", b.ok),
                ("held", b.held),
                ("rejected", b.rejected),
            ] {
                each(name, Field::Int(value));
            }
        }
    }
}

/// `, "entries": [...]`: a statement page, each entry's fields in the
/// order `seq`, `id`, `op`, `result`, `time`, then `amount` and `balance`
/// (decimal strings) and `merchant` where the entry has them.
fn write_entries(out: &mut String, page: &HistoryPage) {
    let e = page.currency.exponent();
    // About 150 bytes an entry with amounts: one reservation, not many.
    out.reserve(16 + 160 * page.entries.len());
    out.push_str(", \"entries\": [");
    for (i, entry) in page.entries.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str("{\"seq\": ");
        push_u64(out, entry.seq);
        out.push_str(", \"id\": ");
        push_u64(out, entry.id);
        out.push_str(", \"op\": \"");
        out.push_str(entry.op.name());
        out.push_str("\", \"result\": \"");
        out.push_str(entry.result.name());
        out.push_str("\", \"time\": ");
        push_u64(out, entry.time);
        if let Some(moved) = entry.moved {
            out.push_str(", \"amount\": \"");
            write_minor(out, moved.amount, e);
            out.push_str("\", \"balance\": \"");
            write_minor(out, moved.balance, e);
            out.push('"');
        }
        if let Some(merchant) = entry.merchant {
            out.push_str(", \"merchant\": ");
            push_u64(out, merchant);
        }
        out.push('}');
    }
    out.push(']');
}

/// Appends `{"line": N, "result": "malformed", "error": "<escaped text>"}` to `out`.
pub fn write_malformed(out: &mut String, line: u64, error: &str) {
    out.push_str("{\"line\": ");
    push_u64(out, line);
    out.push_str(", \"result\": \"malformed\", \"error\": ");
    push_json_string(out, error);
    out.push('}');
}

// ---------------------------------------------------------------------------
// Output helpers

fn push_u64(out: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for &d in &digits[start..] {
        out.push(char::from(d));
    }
}

/// Appends `text` as a JSON string literal, quotes included.
fn push_json_string(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Every byte escaped here is ASCII, so `i` is a char boundary.
        out.push_str(&text[start..i]);
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

/// User text quoted for an error message, cut short so that a huge key or
/// op name cannot make a huge outcome line.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 40;
        if self.0.len() <= MAX {
            return write!(f, "{:?}", self.0);
        }
        let mut end = MAX;
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{:?}...", &self.0[..end])
    }
}

// ---------------------------------------------------------------------------
// The fields of a request line, as read

/// Every field any op names, in one table indexed by the `F_*` constants.
const FIELDS: [&str; 20] = [
    "op",
    "account",
    "id",
    "auth",
    "of",
    "amount",
    "currency",
    "overdraft",
    "expires_in_ms",
    "final",
    "per_txn",
    "daily",
    "review_above",
    "velocity",
    "ms",
    "merchant",
    "fee_bps",
    "history",
    "limit",
    "before",
];
const F_OP: usize = 0;
const F_ACCOUNT: usize = 1;
const F_ID: usize = 2;
const F_AUTH: usize = 3;
const F_OF: usize = 4;
const F_AMOUNT: usize = 5;
const F_CURRENCY: usize = 6;
const F_OVERDRAFT: usize = 7;
const F_EXPIRES_IN_MS: usize = 8;
const F_FINAL: usize = 9;
const F_PER_TXN: usize = 10;
const F_DAILY: usize = 11;
const F_REVIEW_ABOVE: usize = 12;
const F_VELOCITY: usize = 13;
const F_MS: usize = 14;
const F_MERCHANT: usize = 15;
const F_FEE_BPS: usize = 16;
const F_HISTORY: usize = 17;
const F_LIMIT: usize = 18;
const F_BEFORE: usize = 19;

/// The fields of `velocity`.
const VELOCITY_FIELDS: [&str; 3] = ["max", "window_ms", "below"];
const V_MAX: usize = 0;
const V_WINDOW_MS: usize = 1;
const V_BELOW: usize = 2;

/// One JSON value of a named field, reduced to what type checks need.
#[derive(Debug)]
enum Value<'a> {
    Null,
    Bool(bool),
    /// An integer 0..=u64::MAX written without fraction or exponent.
    Unsigned(u64),
    /// A negative integer.
    Negative,
    /// Any other number: fraction, exponent, `-0`, or beyond 64 bits.
    OtherNumber,
    Str(Cow<'a, str>),
    Array,
    /// An object; for `velocity`, with its own named fields.
    Object(Option<Box<[Option<Value<'a>>; 3]>>),
}

impl Value<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Unsigned(_) => "an integer",
            Value::Negative => "a negative integer",
            Value::OtherNumber => "a non-integer or too large number",
            Value::Str(_) => "a string",
            Value::Array => "an array",
            Value::Object(_) => "an object",
        }
    }
}

/// The named fields of a line: `None` where the key is absent.
struct Fields<'a> {
    slots: [Option<Value<'a>>; FIELDS.len()],
}

/// A key of an object: its index among the names that object knows, or the
/// key itself (unescaped) when it is not one of them.
enum Key<'a> {
    Known(usize),
    Other(Cow<'a, str>),
}

/// How an object knows its keys: `names` (for messages) and a matcher that
/// gives a key's index among them.
#[derive(Clone, Copy)]
struct Names {
    names: &'static [&'static str],
    index: fn(&str) -> Option<usize>,
}

/// The keys of a request line.
const REQUEST_NAMES: Names = Names {
    names: &FIELDS,
    index: |key| {
        Some(match key {
            "op" => F_OP,
            "account" => F_ACCOUNT,
            "id" => F_ID,
            "auth" => F_AUTH,
            "of" => F_OF,
            "amount" => F_AMOUNT,
            "currency" => F_CURRENCY,
            "overdraft" => F_OVERDRAFT,
            "expires_in_ms" => F_EXPIRES_IN_MS,
            "final" => F_FINAL,
            "per_txn" => F_PER_TXN,
            "daily" => F_DAILY,
            "review_above" => F_REVIEW_ABOVE,
            "velocity" => F_VELOCITY,
            "ms" => F_MS,
            "merchant" => F_MERCHANT,
            "fee_bps" => F_FEE_BPS,
            "history" => F_HISTORY,
            "limit" => F_LIMIT,
            "before" => F_BEFORE,
            _ => return None,
        })
    },
};

/// The keys of `velocity`.
const VELOCITY_NAMES: Names = Names {
    names: &VELOCITY_FIELDS,
    index: |key| {
        Some(match key {
            "max" => V_MAX,
            "window_ms" => V_WINDOW_MS,
            "below" => V_BELOW,
            _ => return None,
        })
    },
};

/// An object whose values nobody reads.
const NO_NAMES: Names = Names {
    names: &[],
    index: |_| None,
};

struct KeySeed(Names);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key<'de>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
        Ok(match (self.0.index)(key) {
            Some(i) => Key::Known(i),
            None => Key::Other(Cow::Borrowed(key)),
        })
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key<'de>, E> {
        Ok(match (self.0.index)(key) {
            Some(i) => Key::Known(i),
            None => Key::Other(Cow::Owned(key.to_owned())),
        })
    }
}

/// Keys of one object that are not among its known names, kept to find a
/// repeated one. Checked pairwise while few, sorted at the end when many,
/// so a line with thousands of keys costs O(n log n), not O(n^2).
#[derive(Default)]
struct OtherKeys<'a> {
    keys: Vec<Cow<'a, str>>,
}

impl<'a> OtherKeys<'a> {
    const PAIRWISE_MAX: usize = 16;

    fn insert<E: de::Error>(&mut self, key: Cow<'a, str>) -> Result<(), E> {
        if self.keys.len() < Self::PAIRWISE_MAX && self.keys.contains(&key) {
            return Err(duplicate(&key));
        }
        self.keys.push(key);
        Ok(())
    }

    fn finish<E: de::Error>(mut self) -> Result<(), E> {
        if self.keys.len() > Self::PAIRWISE_MAX {
            self.keys.sort_unstable();
            if let Some(pair) = self.keys.windows(2).find(|pair| pair[0] == pair[1]) {
                return Err(duplicate(&pair[0]));
            }
        }
        Ok(())
    }
}

fn duplicate<E: de::Error>(key: &str) -> E {
    E::custom(format_args!("key {} given twice", Quoted(key)))
}

/// Reads the rest of an object: the values of keys in `names` go to `slots`
/// (the one at `nested`, if any, with its own fields kept); every other
/// value is skipped; a key given twice is an error.
fn read_object<'de, A: MapAccess<'de>>(
    mut map: A,
    names: Names,
    slots: &mut [Option<Value<'de>>],
    nested: Option<usize>,
) -> Result<(), A::Error> {
    let mut seen: u32 = 0;
    let mut others = OtherKeys::default();
    while let Some(key) = map.next_key_seed(KeySeed(names))? {
        match key {
            Key::Known(i) => {
                if seen & (1 << i) != 0 {
                    return Err(duplicate(names.names[i]));
                }
                seen |= 1 << i;
                let seed = ValueSeed {
                    keep_fields: nested == Some(i),
                };
                slots[i] = Some(map.next_value_seed(seed)?);
            }
            Key::Other(key) => {
                others.insert(key)?;
                map.next_value::<Skip>()?;
            }
        }
    }
    others.finish()
}

/// The whole line: must be an object. Fills the caller's table in place.
struct RequestVisitor<'f, 'de>(&'f mut Fields<'de>);

impl<'de> Visitor<'de> for RequestVisitor<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object (one request per line)")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        read_object(map, REQUEST_NAMES, &mut self.0.slots, Some(F_VELOCITY))
    }
}

/// The value of a named field. `keep_fields`: the value is `velocity`, whose
/// own fields are kept if it is an object.
#[derive(Clone, Copy)]
struct ValueSeed {
    keep_fields: bool,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value<'de>, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value<'de>, E> {
        Ok(Value::Bool(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value<'de>, E> {
        Ok(Value::Unsigned(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value<'de>, E> {
        // serde_json reports non-negative integers through `visit_u64`.
        Ok(match u64::try_from(v) {
            Ok(v) => Value::Unsigned(v),
            Err(_) => Value::Negative,
        })
    }

    fn visit_f64<E>(self, _: f64) -> Result<Value<'de>, E> {
        Ok(Value::OtherNumber)
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Value<'de>, E> {
        Ok(Value::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value<'de>, E> {
        Ok(Value::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Value<'de>, E> {
        Ok(Value::Str(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'de>, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Value::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value<'de>, A::Error> {
        if self.keep_fields {
            let mut slots = Box::new([const { None }; VELOCITY_FIELDS.len()]);
            read_object(map, VELOCITY_NAMES, &mut slots[..], None)?;
            Ok(Value::Object(Some(slots)))
        } else {
            read_object(map, NO_NAMES, &mut [], None)?;
            Ok(Value::Object(None))
        }
    }
}

/// A value nobody reads; still checked for repeated keys at every depth.
struct Skip;

impl<'de> de::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Skip, D::Error> {
        deserializer.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Skip, A::Error> {
        read_object(map, NO_NAMES, &mut [], None)?;
        Ok(Skip)
    }
}

// ---------------------------------------------------------------------------
// Type checks, once the op is known

fn missing(name: &str) -> String {
    format!("missing field {name}")
}

/// A required unsigned integer in `min..=max`.
fn integer(value: Option<&Value>, name: &str, min: u64, max: u64) -> Result<u64, String> {
    match value {
        None => Err(missing(name)),
        Some(Value::Unsigned(v)) if (min..=max).contains(v) => Ok(*v),
        Some(Value::Unsigned(v)) => Err(format!(
            "{name} must be an integer from {min} to {max}, not {v}"
        )),
        Some(other) if (min, max) == (0, u64::MAX) => Err(format!(
            "{name} must be an unsigned 64-bit integer, not {}",
            other.kind()
        )),
        Some(other) => Err(format!(
            "{name} must be an integer from {min} to {max}, not {}",
            other.kind()
        )),
    }
}

/// An optional unsigned integer in `min..=max`; `null` is omitted.
fn opt_integer(
    value: Option<&Value>,
    name: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        some => integer(some, name, min, max).map(Some),
    }
}

/// A required `u64` id or account number.
fn id(value: Option<&Value>, name: &str) -> Result<u64, String> {
    integer(value, name, 0, u64::MAX)
}

/// A required string.
fn string<'v>(value: Option<&'v Value>, name: &str) -> Result<&'v str, String> {
    match value {
        None => Err(missing(name)),
        Some(Value::Str(s)) => Ok(s),
        Some(other) => Err(format!("{name} must be a string, not {}", other.kind())),
    }
}

/// A required amount: a string, of any content (`AmountArg::Invalid` when
/// it is not a number the engine can take).
fn amount(value: Option<&Value>, name: &str) -> Result<AmountArg, String> {
    string(value, name).map(AmountArg::parse)
}

/// An optional amount; `null` is omitted.
fn opt_amount(value: Option<&Value>, name: &str) -> Result<Option<AmountArg>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        some => amount(some, name).map(Some),
    }
}

/// An optional boolean; `null` is omitted.
fn opt_bool(value: Option<&Value>, name: &str) -> Result<Option<bool>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(format!("{name} must be a boolean, not {}", other.kind())),
    }
}

/// The optional `velocity` object; `null` is omitted.
fn opt_velocity(value: Option<&Value>) -> Result<Option<VelocityArg>, String> {
    let slots = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(Some(slots))) => slots,
        Some(other) => return Err(format!("velocity must be an object, not {}", other.kind())),
    };
    let field = |i: usize| slots[i].as_ref();
    let max = integer(field(V_MAX), "velocity.max", 1, u64::from(VELOCITY_MAX_MAX))?;
    let window_ms = integer(
        field(V_WINDOW_MS),
        "velocity.window_ms",
        1,
        EXPIRES_IN_MS_MAX,
    )?;
    let below = amount(field(V_BELOW), "velocity.below")?;
    Ok(Some(VelocityArg {
        max: u32::try_from(max).expect("velocity.max is at most VELOCITY_MAX_MAX"),
        window_ms,
        below,
    }))
}

impl Fields<'_> {
    fn get(&self, field: usize) -> Option<&Value<'_>> {
        self.slots[field].as_ref()
    }

    fn id(&self, field: usize) -> Result<u64, String> {
        id(self.get(field), FIELDS[field])
    }

    fn amount(&self, field: usize) -> Result<AmountArg, String> {
        amount(self.get(field), FIELDS[field])
    }

    fn opt_amount(&self, field: usize) -> Result<Option<AmountArg>, String> {
        opt_amount(self.get(field), FIELDS[field])
    }

    fn expires_in_ms(&self) -> Result<Option<u64>, String> {
        opt_integer(
            self.get(F_EXPIRES_IN_MS),
            FIELDS[F_EXPIRES_IN_MS],
            1,
            EXPIRES_IN_MS_MAX,
        )
    }

    /// The merchant a debit or authorize names, if any (`null` omits it).
    fn opt_merchant(&self) -> Result<Option<u64>, String> {
        opt_integer(self.get(F_MERCHANT), FIELDS[F_MERCHANT], 0, u64::MAX)
    }

    fn to_request(&self, manual_clock: bool) -> Result<Request, String> {
        let op = match self.get(F_OP) {
            None => return Err(missing("op")),
            Some(Value::Str(op)) => op,
            Some(other) => return Err(format!("op must be a string, not {}", other.kind())),
        };
        let request = match op.as_ref() {
            "open_account" => Request::OpenAccount {
                account: self.id(F_ACCOUNT)?,
                currency: Currency::parse(string(self.get(F_CURRENCY), "currency")?),
                overdraft: self.opt_amount(F_OVERDRAFT)?,
                history: opt_bool(self.get(F_HISTORY), "history")?.unwrap_or(false),
            },
            "deposit" => Request::Deposit {
                id: self.id(F_ID)?,
                account: self.id(F_ACCOUNT)?,
                amount: self.amount(F_AMOUNT)?,
            },
            "debit" => Request::Debit {
                id: self.id(F_ID)?,
                account: self.id(F_ACCOUNT)?,
                amount: self.amount(F_AMOUNT)?,
                merchant: self.opt_merchant()?,
            },
            "authorize" => Request::Authorize {
                id: self.id(F_ID)?,
                account: self.id(F_ACCOUNT)?,
                amount: self.amount(F_AMOUNT)?,
                expires_in_ms: self.expires_in_ms()?,
                merchant: self.opt_merchant()?,
            },
            "increment" => Request::Increment {
                id: self.id(F_ID)?,
                account: self.id(F_ACCOUNT)?,
                auth: self.id(F_AUTH)?,
                amount: self.amount(F_AMOUNT)?,
                expires_in_ms: self.expires_in_ms()?,
            },
            "capture" => Request::Capture {
                id: self.id(F_ID)?,
                account: self.id(F_ACCOUNT)?,
                auth: self.id(F_AUTH)?,
                amount: self.opt_amount(F_AMOUNT)?,
                is_final: opt_bool(self.get(F_FINAL), "final")?.unwrap_or(true),
            },
            "void" => Request::Void {
                id: self.id(F_ID)?,
                account: self.id(F_ACCOUNT)?,
                auth: self.id(F_AUTH)?,
            },
            "refund" => Request::Refund {
                id: self.id(F_ID)?,
                account: self.id(F_ACCOUNT)?,
                of: self.id(F_OF)?,
                amount: self.opt_amount(F_AMOUNT)?,
            },
            "set_limits" => Request::SetLimits {
                account: self.id(F_ACCOUNT)?,
                limits: Box::new(LimitsArg {
                    per_txn: self.opt_amount(F_PER_TXN)?,
                    daily: self.opt_amount(F_DAILY)?,
                    review_above: self.opt_amount(F_REVIEW_ABOVE)?,
                    velocity: opt_velocity(self.get(F_VELOCITY))?,
                }),
            },
            "freeze" => Request::Freeze {
                account: self.id(F_ACCOUNT)?,
            },
            "unfreeze" => Request::Unfreeze {
                account: self.id(F_ACCOUNT)?,
            },
            "balance" => Request::Balance {
                account: self.id(F_ACCOUNT)?,
            },
            "status" => Request::Status {
                account: self.id(F_ACCOUNT)?,
                id: self.id(F_ID)?,
            },
            "advance_clock" => {
                let ms = integer(self.get(F_MS), FIELDS[F_MS], 0, ADVANCE_CLOCK_MS_MAX)?;
                if !manual_clock {
                    return Err("advance_clock needs the manual clock (--clock manual)".into());
                }
                Request::AdvanceClock { ms }
            }
            "open_merchant" => Request::OpenMerchant {
                merchant: self.id(F_MERCHANT)?,
                currency: Currency::parse(string(self.get(F_CURRENCY), "currency")?),
                fee_bps: opt_integer(
                    self.get(F_FEE_BPS),
                    FIELDS[F_FEE_BPS],
                    0,
                    u64::from(FEE_BPS_MAX),
                )?
                .map(|bps| u16::try_from(bps).expect("at most FEE_BPS_MAX")),
            },
            "merchant" => Request::Merchant {
                merchant: self.id(F_MERCHANT)?,
            },
            "queue_debit" => Request::QueueDebit {
                id: self.id(F_ID)?,
                account: self.id(F_ACCOUNT)?,
                amount: self.amount(F_AMOUNT)?,
                merchant: self.opt_merchant()?,
            },
            "run_batch" => Request::RunBatch,
            "settle" => Request::Settle {
                id: self.id(F_ID)?,
                merchant: self.id(F_MERCHANT)?,
            },
            "close_account" => Request::CloseAccount {
                account: self.id(F_ACCOUNT)?,
            },
            "history" => Request::History {
                account: self.id(F_ACCOUNT)?,
                limit: opt_integer(
                    self.get(F_LIMIT),
                    FIELDS[F_LIMIT],
                    1,
                    u64::from(HISTORY_LIMIT_MAX),
                )?
                .map(|limit| u16::try_from(limit).expect("at most HISTORY_LIMIT_MAX")),
                before: opt_integer(self.get(F_BEFORE), FIELDS[F_BEFORE], 1, u64::MAX)?,
            },
            other => return Err(format!("unknown op {}", Quoted(other))),
        };
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Code;
    use crate::request::Op;

    const E13: u64 = 10_000_000_000_000;

    fn amt(text: &str) -> AmountArg {
        AmountArg::parse(text)
    }

    /// What a line must parse to: a request, or malformed with an error
    /// text containing the given fragment ("" accepts any text).
    enum Want {
        Req(Request),
        Bad(&'static str),
    }
    use Want::{Bad, Req};

    /// The one helper every parsing case goes through (manual clock).
    fn check(line: impl AsRef<[u8]>, want: Want) {
        let line = line.as_ref();
        let shown = String::from_utf8_lossy(line);
        let got = parse_line(line, true);
        match (got, want) {
            (Ok(got), Req(want)) => assert_eq!(got, want, "line {shown}"),
            (Err(error), Bad(fragment)) => {
                assert!(!error.is_empty(), "line {shown}: empty error");
                assert!(
                    error.contains(fragment),
                    "line {shown}: error {error:?} lacks {fragment:?}"
                );
            }
            (Ok(got), Bad(_)) => panic!("line {shown}: want malformed, got {got:?}"),
            (Err(error), Req(want)) => panic!("line {shown}: want {want:?}, got error {error:?}"),
        }
    }

    fn check_all(cases: Vec<(String, Want)>) {
        for (line, want) in cases {
            check(line, want);
        }
    }

    fn debit(id: u64, account: u64, amount: &str) -> Want {
        Req(Request::Debit {
            id,
            account,
            amount: amt(amount),
            merchant: None,
        })
    }

    #[test]
    fn every_op_parses() {
        let limits = LimitsArg {
            per_txn: Some(amt("200")),
            daily: Some(amt("400")),
            review_above: Some(amt("100")),
            velocity: Some(VelocityArg {
                max: 2,
                window_ms: 60000,
                below: amt("5"),
            }),
        };
        let cases: Vec<(&str, Want)> = vec![
            (
                r#"{"op":"open_account","account":7,"currency":"USD","overdraft":"10"}"#,
                Req(Request::OpenAccount {
                    account: 7,
                    currency: Some(Currency::USD),
                    overdraft: Some(amt("10")),
                    history: false,
                }),
            ),
            (
                r#"{"op":"open_account","account":8,"currency":"JPY"}"#,
                Req(Request::OpenAccount {
                    account: 8,
                    currency: Some(Currency::JPY),
                    overdraft: None,
                    history: false,
                }),
            ),
            (
                r#"{"op":"deposit","id":1,"account":7,"amount":"100.5"}"#,
                Req(Request::Deposit {
                    id: 1,
                    account: 7,
                    amount: amt("100.5"),
                }),
            ),
            (
                r#"{"op":"debit","id":2,"account":7,"amount":"20.25"}"#,
                debit(2, 7, "20.25"),
            ),
            (
                r#"{"op":"authorize","id":4,"account":7,"amount":"50","expires_in_ms":60000}"#,
                Req(Request::Authorize {
                    id: 4,
                    account: 7,
                    amount: amt("50"),
                    expires_in_ms: Some(60000),
                    merchant: None,
                }),
            ),
            (
                r#"{"op":"authorize","id":4,"account":7,"amount":"50"}"#,
                Req(Request::Authorize {
                    id: 4,
                    account: 7,
                    amount: amt("50"),
                    expires_in_ms: None,
                    merchant: None,
                }),
            ),
            (
                r#"{"op":"increment","id":3,"account":1,"auth":2,"amount":"50"}"#,
                Req(Request::Increment {
                    id: 3,
                    account: 1,
                    auth: 2,
                    amount: amt("50"),
                    expires_in_ms: None,
                }),
            ),
            (
                r#"{"op":"increment","id":3,"account":1,"auth":2,"amount":"50","expires_in_ms":5}"#,
                Req(Request::Increment {
                    id: 3,
                    account: 1,
                    auth: 2,
                    amount: amt("50"),
                    expires_in_ms: Some(5),
                }),
            ),
            (
                r#"{"op":"capture","id":4,"account":1,"auth":2,"amount":"60","final":false}"#,
                Req(Request::Capture {
                    id: 4,
                    account: 1,
                    auth: 2,
                    amount: Some(amt("60")),
                    is_final: false,
                }),
            ),
            (
                r#"{"op":"capture","id":4,"account":1,"auth":2,"final":true}"#,
                Req(Request::Capture {
                    id: 4,
                    account: 1,
                    auth: 2,
                    amount: None,
                    is_final: true,
                }),
            ),
            (
                r#"{"op":"capture","id":6,"account":7,"auth":4}"#,
                Req(Request::Capture {
                    id: 6,
                    account: 7,
                    auth: 4,
                    amount: None,
                    is_final: true,
                }),
            ),
            (
                r#"{"op":"void","id":11,"account":7,"auth":9}"#,
                Req(Request::Void {
                    id: 11,
                    account: 7,
                    auth: 9,
                }),
            ),
            (
                r#"{"op":"refund","id":8,"account":1,"of":4,"amount":"10"}"#,
                Req(Request::Refund {
                    id: 8,
                    account: 1,
                    of: 4,
                    amount: Some(amt("10")),
                }),
            ),
            (
                r#"{"op":"refund","id":9,"account":1,"of":4}"#,
                Req(Request::Refund {
                    id: 9,
                    account: 1,
                    of: 4,
                    amount: None,
                }),
            ),
            (
                r#"{"op":"set_limits","account":1,"per_txn":"200","daily":"400","review_above":"100","velocity":{"max":2,"window_ms":60000,"below":"5"}}"#,
                Req(Request::SetLimits {
                    account: 1,
                    limits: Box::new(limits),
                }),
            ),
            (
                r#"{"op":"set_limits","account":1}"#,
                Req(Request::SetLimits {
                    account: 1,
                    limits: Box::default(),
                }),
            ),
            (
                r#"{"op":"freeze","account":7}"#,
                Req(Request::Freeze { account: 7 }),
            ),
            (
                r#"{"op":"unfreeze","account":7}"#,
                Req(Request::Unfreeze { account: 7 }),
            ),
            (
                r#"{"op":"balance","account":7}"#,
                Req(Request::Balance { account: 7 }),
            ),
            (
                r#"{"op":"status","account":7,"id":2}"#,
                Req(Request::Status { account: 7, id: 2 }),
            ),
            (
                r#"{"op":"advance_clock","ms":1000}"#,
                Req(Request::AdvanceClock { ms: 1000 }),
            ),
            (
                r#"{"op":"queue_debit","id":3,"account":7,"amount":"2.5","merchant":9}"#,
                Req(Request::QueueDebit {
                    id: 3,
                    account: 7,
                    amount: amt("2.5"),
                    merchant: Some(9),
                }),
            ),
            (
                r#"{"op":"queue_debit","id":3,"account":7,"amount":"2.5","merchant":null}"#,
                Req(Request::QueueDebit {
                    id: 3,
                    account: 7,
                    amount: amt("2.5"),
                    merchant: None,
                }),
            ),
            (r#"{"op":"run_batch"}"#, Req(Request::RunBatch)),
            (
                r#"{"op":"settle","id":4,"merchant":0}"#,
                Req(Request::Settle { id: 4, merchant: 0 }),
            ),
            (r#"{"op":"settle","id":4}"#, Bad("merchant")),
            (r#"{"op":"settle","merchant":4}"#, Bad("id")),
            (r#"{"op":"settle","id":4,"merchant":"4"}"#, Bad("merchant")),
            (
                r#"{"op":"queue_debit","id":3,"account":7,"amount":2}"#,
                Bad("amount"),
            ),
            (
                r#"{"op":"queue_debit","id":3,"account":7,"amount":"2","merchant":-1}"#,
                Bad("merchant"),
            ),
        ];
        for (line, want) in cases {
            check(line, want);
        }
    }

    #[test]
    fn advance_clock_is_malformed_under_the_wall_clock() {
        let line = br#"{"op":"advance_clock","ms":1000}"#;
        assert_eq!(
            parse_line(line, true),
            Ok(Request::AdvanceClock { ms: 1000 })
        );
        let error = parse_line(line, false).unwrap_err();
        assert!(error.contains("manual"), "{error}");
        // Other ops do not care about the clock.
        assert_eq!(
            parse_line(br#"{"op":"balance","account":1}"#, false),
            Ok(Request::Balance { account: 1 })
        );
    }

    #[test]
    fn json_syntax_and_shape() {
        let cases: Vec<(&[u8], Want)> = vec![
            (b"", Bad("not JSON")),
            (b"   ", Bad("not JSON")),
            (b"\r", Bad("not JSON")),
            (b"not json", Bad("not JSON")),
            (b"{", Bad("not JSON")),
            (b"{\"op\":\"balance\",\"account\":1", Bad("not JSON")),
            (b"{\"op\":\"balance\",\"account\":1,}", Bad("not JSON")),
            (b"{\"op\":\"balance\",\"account\":1}x", Bad("not JSON")),
            (b"{\"op\":\"balance\",\"account\":1}{}", Bad("not JSON")),
            (b"{\"op\":\"balance\",\"account\":1} 1", Bad("not JSON")),
            (b"{'op':'balance','account':1}", Bad("not JSON")),
            (b"{\"op\":\"balance\",\"account\":01}", Bad("not JSON")),
            (b"{\"op\":\"balance\",\"account\":NaN}", Bad("not JSON")),
            (
                b"{\"op\":\"balance\",\"account\":1,\"x\":\"\\q\"}",
                Bad("not JSON"),
            ),
            (
                b"{\"op\":\"balance\",\"account\":1,\"x\":\"a\tb\"}",
                Bad("not JSON"),
            ),
            (
                b"{\"op\":\"balance\",\"account\":1}\n",
                Req(Request::Balance { account: 1 }),
            ),
            // Not an object.
            (b"[]", Bad("object")),
            (b"[{\"op\":\"balance\",\"account\":1}]", Bad("object")),
            (b"1", Bad("object")),
            (b"\"balance\"", Bad("object")),
            (b"null", Bad("object")),
            (b"true", Bad("object")),
            // Whitespace, including a trailing '\r', is fine.
            (
                b" {\"op\" : \"balance\" ,\t\"account\": 1 } \r",
                Req(Request::Balance { account: 1 }),
            ),
            (
                b"{\"op\":\"balance\",\"account\":1}\r",
                Req(Request::Balance { account: 1 }),
            ),
            // Non-UTF-8 bytes, inside or outside a string, in a named field
            // or an ignored one.
            (b"\xff", Bad("not JSON")),
            (
                b"{\"op\":\"balance\",\"account\":1,\"x\":\"\xff\"}",
                Bad("UTF-8"),
            ),
            (
                b"{\"op\":\"balance\",\"account\":1,\"x\xc3\":1}",
                Bad("UTF-8"),
            ),
            (
                b"{\"op\":\"debit\",\"id\":1,\"account\":1,\"amount\":\"1\xe9\"}",
                Bad("UTF-8"),
            ),
            (b"{\"op\":\"balance\",\"account\":1}\xff", Bad("UTF-8")),
            // Escapes are unescaped (op, keys, values); UTF-8 text is fine.
            (
                b"{\"\\u006fp\":\"bal\\u0061nce\",\"account\":1,\"x\":\"\xc3\xa9\\n\\\"\"}",
                Req(Request::Balance { account: 1 }),
            ),
            (
                b"{\"op\":\"debit\",\"id\":1,\"account\":2,\"amount\":\"1\\u002e5\"}",
                debit(1, 2, "1.5"),
            ),
        ];
        for (line, want) in cases {
            check(line, want);
        }
    }

    #[test]
    fn op_must_be_known_and_a_string() {
        let cases: Vec<(&str, Want)> = vec![
            (r#"{}"#, Bad("missing field op")),
            (r#"{"account":1}"#, Bad("missing field op")),
            (r#"{"op":null,"account":1}"#, Bad("op must be a string")),
            (r#"{"op":1,"account":1}"#, Bad("op must be a string")),
            (
                r#"{"op":["balance"],"account":1}"#,
                Bad("op must be a string"),
            ),
            (
                r#"{"op":{"balance":1},"account":1}"#,
                Bad("op must be a string"),
            ),
            (
                r#"{"op":"Balance","account":1}"#,
                Bad("unknown op \"Balance\""),
            ),
            (r#"{"op":"balance ","account":1}"#, Bad("unknown op")),
            (r#"{"op":"","account":1}"#, Bad("unknown op")),
            (r#"{"op":"transfer","account":1}"#, Bad("unknown op")),
            // op may come last.
            (
                r#"{"account":1,"op":"balance"}"#,
                Req(Request::Balance { account: 1 }),
            ),
        ];
        for (line, want) in cases {
            check(line, want);
        }
        // A huge unknown op does not make a huge error.
        let long = format!(r#"{{"op":"{}","account":1}}"#, "x".repeat(10_000));
        let error = parse_line(long.as_bytes(), true).unwrap_err();
        assert!(error.len() < 200, "{error}");
        // Cut on a char boundary.
        let long = format!(r#"{{"op":"{}","account":1}}"#, "é".repeat(100));
        let error = parse_line(long.as_bytes(), true).unwrap_err();
        assert!(error.contains("é\"...") && error.len() < 200, "{error}");
    }

    #[test]
    fn missing_required_fields() {
        let cases: Vec<(&str, &str)> = vec![
            (r#"{"op":"open_account","currency":"USD"}"#, "account"),
            (r#"{"op":"open_account","account":1}"#, "currency"),
            (r#"{"op":"deposit","account":1,"amount":"1"}"#, "id"),
            (r#"{"op":"deposit","id":1,"amount":"1"}"#, "account"),
            (r#"{"op":"deposit","id":1,"account":1}"#, "amount"),
            (r#"{"op":"debit","account":1,"amount":"1"}"#, "id"),
            (r#"{"op":"debit","id":1,"amount":"1"}"#, "account"),
            (r#"{"op":"debit","id":1,"account":1}"#, "amount"),
            (r#"{"op":"authorize","id":1,"account":1}"#, "amount"),
            (r#"{"op":"authorize","account":1,"amount":"1"}"#, "id"),
            (
                r#"{"op":"increment","id":1,"account":1,"amount":"1"}"#,
                "auth",
            ),
            (
                r#"{"op":"increment","id":1,"account":1,"auth":1}"#,
                "amount",
            ),
            (r#"{"op":"capture","id":1,"account":1}"#, "auth"),
            (r#"{"op":"capture","id":1,"auth":1}"#, "account"),
            (r#"{"op":"capture","account":1,"auth":1}"#, "id"),
            (r#"{"op":"void","id":1,"account":1}"#, "auth"),
            (r#"{"op":"void","account":1,"auth":1}"#, "id"),
            (r#"{"op":"refund","id":1,"account":1}"#, "of"),
            (r#"{"op":"refund","id":1,"of":1}"#, "account"),
            (r#"{"op":"set_limits","per_txn":"1"}"#, "account"),
            (r#"{"op":"freeze"}"#, "account"),
            (r#"{"op":"unfreeze"}"#, "account"),
            (r#"{"op":"balance"}"#, "account"),
            (r#"{"op":"status","account":1}"#, "id"),
            (r#"{"op":"status","id":1}"#, "account"),
            (r#"{"op":"advance_clock"}"#, "ms"),
            (r#"{"op":"advance_clock","ms":null}"#, "ms must be"),
            (
                r#"{"op":"set_limits","account":1,"velocity":{"window_ms":1,"below":"1"}}"#,
                "velocity.max",
            ),
            (
                r#"{"op":"set_limits","account":1,"velocity":{"max":1,"below":"1"}}"#,
                "velocity.window_ms",
            ),
            (
                r#"{"op":"set_limits","account":1,"velocity":{"max":1,"window_ms":1}}"#,
                "velocity.below",
            ),
            (
                r#"{"op":"set_limits","account":1,"velocity":{}}"#,
                "velocity.max",
            ),
        ];
        for (line, field) in cases {
            let error = parse_line(line.as_bytes(), true).unwrap_err();
            assert!(error.contains(field), "{line}: {error:?} lacks {field:?}");
            if !field.contains(' ') {
                assert!(error.starts_with("missing"), "{line}: {error:?}");
            }
        }
    }

    #[test]
    fn nulls() {
        let cases: Vec<(&str, Want)> = vec![
            // Optional fields given as null are omitted.
            (
                r#"{"op":"open_account","account":1,"currency":"EUR","overdraft":null}"#,
                Req(Request::OpenAccount {
                    account: 1,
                    currency: Some(Currency::EUR),
                    overdraft: None,
                    history: false,
                }),
            ),
            (
                r#"{"op":"authorize","id":1,"account":2,"amount":"3","expires_in_ms":null}"#,
                Req(Request::Authorize {
                    id: 1,
                    account: 2,
                    amount: amt("3"),
                    expires_in_ms: None,
                    merchant: None,
                }),
            ),
            (
                r#"{"op":"increment","id":1,"account":2,"auth":3,"amount":"4","expires_in_ms":null}"#,
                Req(Request::Increment {
                    id: 1,
                    account: 2,
                    auth: 3,
                    amount: amt("4"),
                    expires_in_ms: None,
                }),
            ),
            (
                r#"{"op":"capture","id":1,"account":2,"auth":3,"amount":null,"final":null}"#,
                Req(Request::Capture {
                    id: 1,
                    account: 2,
                    auth: 3,
                    amount: None,
                    is_final: true,
                }),
            ),
            (
                r#"{"op":"refund","id":1,"account":2,"of":3,"amount":null}"#,
                Req(Request::Refund {
                    id: 1,
                    account: 2,
                    of: 3,
                    amount: None,
                }),
            ),
            (
                r#"{"op":"set_limits","account":1,"per_txn":null,"daily":null,"review_above":null,"velocity":null}"#,
                Req(Request::SetLimits {
                    account: 1,
                    limits: Box::default(),
                }),
            ),
            // Required fields given as null are wrongly typed.
            (r#"{"op":"balance","account":null}"#, Bad("account must be")),
            (
                r#"{"op":"debit","id":null,"account":1,"amount":"1"}"#,
                Bad("id must be"),
            ),
            (
                r#"{"op":"debit","id":1,"account":1,"amount":null}"#,
                Bad("amount must be a string"),
            ),
            (
                r#"{"op":"open_account","account":1,"currency":null}"#,
                Bad("currency must be a string"),
            ),
            (
                r#"{"op":"void","id":1,"account":1,"auth":null}"#,
                Bad("auth must be"),
            ),
            (
                r#"{"op":"refund","id":1,"account":1,"of":null}"#,
                Bad("of must be"),
            ),
            (
                r#"{"op":"increment","id":1,"account":1,"auth":1,"amount":null}"#,
                Bad("amount must be"),
            ),
            (
                r#"{"op":"status","account":1,"id":null}"#,
                Bad("id must be"),
            ),
            (
                r#"{"op":"set_limits","account":1,"velocity":{"max":null,"window_ms":1,"below":"1"}}"#,
                Bad("velocity.max must be"),
            ),
            (
                r#"{"op":"set_limits","account":1,"velocity":{"max":1,"window_ms":null,"below":"1"}}"#,
                Bad("velocity.window_ms must be"),
            ),
            (
                r#"{"op":"set_limits","account":1,"velocity":{"max":1,"window_ms":1,"below":null}}"#,
                Bad("velocity.below must be"),
            ),
        ];
        for (line, want) in cases {
            check(line, want);
        }
    }

    #[test]
    fn wrongly_typed_fields() {
        let cases: Vec<(&str, Want)> = vec![
            // Amounts must be strings.
            (
                r#"{"op":"debit","id":15,"account":7,"amount":20}"#,
                Bad("amount must be a string"),
            ),
            (
                r#"{"op":"debit","id":1,"account":7,"amount":20.5}"#,
                Bad("amount must be a string"),
            ),
            (
                r#"{"op":"deposit","id":1,"account":7,"amount":1}"#,
                Bad("amount must be a string"),
            ),
            (
                r#"{"op":"authorize","id":1,"account":7,"amount":1}"#,
                Bad("amount must be a string"),
            ),
            (
                r#"{"op":"increment","id":1,"account":7,"auth":1,"amount":1}"#,
                Bad("amount must be a string"),
            ),
            (
                r#"{"op":"capture","id":1,"account":7,"auth":1,"amount":1}"#,
                Bad("amount must be a string"),
            ),
            (
                r#"{"op":"refund","id":1,"account":7,"of":1,"amount":1}"#,
                Bad("amount must be a string"),
            ),
            (
                r#"{"op":"open_account","account":1,"currency":"USD","overdraft":0}"#,
                Bad("overdraft must be a string"),
            ),
            (
                r#"{"op":"set_limits","account":1,"per_txn":1}"#,
                Bad("per_txn must be a string"),
            ),
            (
                r#"{"op":"set_limits","account":1,"daily":1}"#,
                Bad("daily must be a string"),
            ),
            (
                r#"{"op":"set_limits","account":1,"review_above":1}"#,
                Bad("review_above must be a string"),
            ),
            (
                r#"{"op":"set_limits","account":1,"velocity":{"max":1,"window_ms":1,"below":5}}"#,
                Bad("velocity.below must be a string"),
            ),
            (
                r#"{"op":"debit","id":1,"account":7,"amount":["1"]}"#,
                Bad("amount must be a string"),
            ),
            (
                r#"{"op":"debit","id":1,"account":7,"amount":true}"#,
                Bad("amount must be a string"),
            ),
            (
                r#"{"op":"debit","id":1,"account":7,"amount":{"v":"1"}}"#,
                Bad("amount must be a string"),
            ),
            // Integers must be JSON integers.
            (
                r#"{"op":"balance","account":"1"}"#,
                Bad("account must be an unsigned 64-bit integer"),
            ),
            (r#"{"op":"balance","account":true}"#, Bad("account must be")),
            (r#"{"op":"balance","account":[1]}"#, Bad("account must be")),
            (r#"{"op":"balance","account":{}}"#, Bad("account must be")),
            (
                r#"{"op":"debit","id":"1","account":1,"amount":"1"}"#,
                Bad("id must be"),
            ),
            (
                r#"{"op":"void","id":1,"account":1,"auth":"1"}"#,
                Bad("auth must be"),
            ),
            (
                r#"{"op":"refund","id":1,"account":1,"of":"4"}"#,
                Bad("of must be"),
            ),
            (r#"{"op":"advance_clock","ms":"1"}"#, Bad("ms must be")),
            (
                r#"{"op":"authorize","id":1,"account":1,"amount":"1","expires_in_ms":"5"}"#,
                Bad("expires_in_ms must be"),
            ),
            // Other types.
            (
                r#"{"op":"open_account","account":1,"currency":840}"#,
                Bad("currency must be a string"),
            ),
            (
                r#"{"op":"capture","id":1,"account":1,"auth":1,"final":"false"}"#,
                Bad("final must be a boolean"),
            ),
            (
                r#"{"op":"capture","id":1,"account":1,"auth":1,"final":0}"#,
                Bad("final must be a boolean"),
            ),
            (
                r#"{"op":"set_limits","account":1,"velocity":"fast"}"#,
                Bad("velocity must be an object"),
            ),
            (
                r#"{"op":"set_limits","account":1,"velocity":[2,60000,"5"]}"#,
                Bad("velocity must be an object"),
            ),
            (
                r#"{"op":"set_limits","account":1,"velocity":{"max":"2","window_ms":1,"below":"5"}}"#,
                Bad("velocity.max must be"),
            ),
            (
                r#"{"op":"set_limits","account":1,"velocity":{"max":2,"window_ms":1.5,"below":"5"}}"#,
                Bad("velocity.window_ms must be"),
            ),
        ];
        for (line, want) in cases {
            check(line, want);
        }
    }

    #[test]
    fn amount_and_currency_contents_are_not_malformed() {
        let cases: Vec<(&str, Want)> = vec![
            (
                r#"{"op":"debit","id":3,"account":7,"amount":"1.234"}"#,
                debit(3, 7, "1.234"),
            ),
            (
                r#"{"op":"debit","id":3,"account":7,"amount":"abc"}"#,
                debit(3, 7, "abc"),
            ),
            (
                r#"{"op":"debit","id":3,"account":7,"amount":""}"#,
                debit(3, 7, ""),
            ),
            (
                r#"{"op":"debit","id":3,"account":7,"amount":"-1"}"#,
                debit(3, 7, "-1"),
            ),
            (
                r#"{"op":"debit","id":3,"account":7,"amount":"0"}"#,
                debit(3, 7, "0"),
            ),
            (
                r#"{"op":"debit","id":3,"account":7,"amount":"1e3"}"#,
                debit(3, 7, "1e3"),
            ),
            (
                r#"{"op":"debit","id":3,"account":7,"amount":"99999999999999999999999"}"#,
                debit(3, 7, "99999999999999999999999"),
            ),
            (
                r#"{"op":"open_account","account":1,"currency":"usd","overdraft":"x"}"#,
                Req(Request::OpenAccount {
                    account: 1,
                    currency: None,
                    overdraft: Some(amt("x")),
                    history: false,
                }),
            ),
            (
                r#"{"op":"open_account","account":1,"currency":"CHF"}"#,
                Req(Request::OpenAccount {
                    account: 1,
                    currency: None,
                    overdraft: None,
                    history: false,
                }),
            ),
            (
                r#"{"op":"open_account","account":1,"currency":""}"#,
                Req(Request::OpenAccount {
                    account: 1,
                    currency: None,
                    overdraft: None,
                    history: false,
                }),
            ),
            (
                r#"{"op":"open_account","account":1,"currency":"KWD","overdraft":"0"}"#,
                Req(Request::OpenAccount {
                    account: 1,
                    currency: Some(Currency::KWD),
                    overdraft: Some(amt("0")),
                    history: false,
                }),
            ),
        ];
        for (line, want) in cases {
            check(line, want);
        }
        assert!(matches!(amt("abc"), AmountArg::Invalid { .. }));
    }

    /// Boundaries of every ranged integer.
    /// `close_account`, `history` with every edge of `limit` and `before`,
    /// and the `history` flag of `open_account` (a boolean or null).
    #[test]
    fn closing_and_history_lines() {
        let history = |limit, before| {
            Req(Request::History {
                account: 4,
                limit,
                before,
            })
        };
        let open = |history| {
            Req(Request::OpenAccount {
                account: 1,
                currency: Some(Currency::EUR),
                overdraft: None,
                history,
            })
        };
        let cases: Vec<(String, Want)> = vec![
            (
                r#"{"op":"close_account","account":4}"#.into(),
                Req(Request::CloseAccount { account: 4 }),
            ),
            (
                r#"{"op":"close_account"}"#.into(),
                Bad("missing field account"),
            ),
            (
                r#"{"op":"close_account","account":true}"#.into(),
                Bad("account"),
            ),
            (
                r#"{"op":"history","account":4}"#.into(),
                history(None, None),
            ),
            (
                r#"{"op":"history","account":4,"limit":null,"before":null}"#.into(),
                history(None, None),
            ),
            (
                r#"{"op":"history","account":4,"limit":1}"#.into(),
                history(Some(1), None),
            ),
            (
                r#"{"op":"history","account":4,"limit":1000}"#.into(),
                history(Some(1000), None),
            ),
            (
                r#"{"op":"history","account":4,"limit":0}"#.into(),
                Bad("limit"),
            ),
            (
                r#"{"op":"history","account":4,"limit":1001}"#.into(),
                Bad("limit"),
            ),
            (
                r#"{"op":"history","account":4,"limit":65537}"#.into(),
                Bad("limit"),
            ),
            (
                r#"{"op":"history","account":4,"limit":2.0}"#.into(),
                Bad("limit"),
            ),
            (
                r#"{"op":"history","account":4,"limit":"2"}"#.into(),
                Bad("limit"),
            ),
            (
                r#"{"op":"history","account":4,"before":1}"#.into(),
                history(None, Some(1)),
            ),
            (
                r#"{"op":"history","account":4,"before":18446744073709551615}"#.into(),
                history(None, Some(u64::MAX)),
            ),
            (
                r#"{"op":"history","account":4,"before":0}"#.into(),
                Bad("before"),
            ),
            (
                r#"{"op":"history","account":4,"before":18446744073709551616}"#.into(),
                Bad("before"),
            ),
            (
                r#"{"op":"history","account":4,"before":false}"#.into(),
                Bad("before"),
            ),
            (
                r#"{"op":"open_account","account":1,"currency":"EUR"}"#.into(),
                open(false),
            ),
            (
                r#"{"op":"open_account","account":1,"currency":"EUR","history":true}"#.into(),
                open(true),
            ),
            (
                r#"{"op":"open_account","account":1,"currency":"EUR","history":false}"#.into(),
                open(false),
            ),
            (
                r#"{"op":"open_account","account":1,"currency":"EUR","history":null}"#.into(),
                open(false),
            ),
            (
                r#"{"op":"open_account","account":1,"currency":"EUR","history":1}"#.into(),
                Bad("history must be a boolean"),
            ),
            (
                r#"{"op":"open_account","account":1,"currency":"EUR","history":"true"}"#.into(),
                Bad("history must be a boolean"),
            ),
            // Fields an op does not name are ignored, whatever their type.
            (
                r#"{"op":"deposit","id":1,"account":1,"amount":"1","history":7,"limit":0}"#.into(),
                Req(Request::Deposit {
                    id: 1,
                    account: 1,
                    amount: amt("1"),
                }),
            ),
        ];
        check_all(cases);
    }

    #[test]
    fn integer_ranges() {
        const MAX: &str = "18446744073709551615";
        const OVER: &str = "18446744073709551616";
        let mut cases: Vec<(String, Want)> = Vec::new();

        // account, id, auth, of: 0..=u64::MAX.
        type Make = fn(u64) -> Request;
        let id_lines: [(&str, Make); 4] = [
            (r#"{"op":"balance","account":N}"#, |n| Request::Balance {
                account: n,
            }),
            (r#"{"op":"status","account":1,"id":N}"#, |n| {
                Request::Status { account: 1, id: n }
            }),
            (r#"{"op":"void","id":1,"account":2,"auth":N}"#, |n| {
                Request::Void {
                    id: 1,
                    account: 2,
                    auth: n,
                }
            }),
            (r#"{"op":"refund","id":1,"account":2,"of":N}"#, |n| {
                Request::Refund {
                    id: 1,
                    account: 2,
                    of: n,
                    amount: None,
                }
            }),
        ];
        for (template, make) in id_lines {
            for (n, value) in [
                ("0", 0),
                ("1", 1),
                ("10000000000000", E13),
                ("10000000000001", E13 + 1),
                (MAX, u64::MAX),
            ] {
                cases.push((template.replace('N', n), Req(make(value))));
            }
            for n in [
                OVER,
                "-1",
                "-0",
                "1.0",
                "1e3",
                "0.5",
                "1E0",
                "-18446744073709551615",
                "1e400",
            ] {
                cases.push((template.replace('N', n), Bad("")));
            }
            for n in [OVER, "-1", "-0", "1.0", "1e3"] {
                cases.push((
                    template.replace('N', n),
                    Bad("must be an unsigned 64-bit integer"),
                ));
            }
        }

        // ms: 0..=10^13.
        let ms = r#"{"op":"advance_clock","ms":N}"#;
        for (n, value) in [("0", 0), ("1", 1), ("10000000000000", E13)] {
            cases.push((ms.replace('N', n), Req(Request::AdvanceClock { ms: value })));
        }
        for n in ["10000000000001", MAX, OVER, "-1", "1.0", "1e3"] {
            cases.push((
                ms.replace('N', n),
                Bad("ms must be an integer from 0 to 10000000000000"),
            ));
        }

        // expires_in_ms: 1..=10^13, in authorize and increment.
        let auth = r#"{"op":"authorize","id":1,"account":2,"amount":"3","expires_in_ms":N}"#;
        let inc =
            r#"{"op":"increment","id":1,"account":2,"auth":3,"amount":"4","expires_in_ms":N}"#;
        for (n, value) in [("1", 1), ("10000000000000", E13)] {
            cases.push((
                auth.replace('N', n),
                Req(Request::Authorize {
                    id: 1,
                    account: 2,
                    amount: amt("3"),
                    expires_in_ms: Some(value),
                    merchant: None,
                }),
            ));
            cases.push((
                inc.replace('N', n),
                Req(Request::Increment {
                    id: 1,
                    account: 2,
                    auth: 3,
                    amount: amt("4"),
                    expires_in_ms: Some(value),
                }),
            ));
        }
        for n in ["0", "10000000000001", MAX, OVER, "-1", "1.0", "6e4"] {
            for template in [auth, inc] {
                cases.push((
                    template.replace('N', n),
                    Bad("expires_in_ms must be an integer from 1 to 10000000000000"),
                ));
            }
        }

        // velocity.max: 1..=1000; velocity.window_ms: 1..=10^13.
        let vel = |max: &str, window: &str| {
            format!(
                r#"{{"op":"set_limits","account":1,"velocity":{{"max":{max},"window_ms":{window},"below":"5"}}}}"#
            )
        };
        let vel_req = |max: u32, window_ms: u64| {
            Req(Request::SetLimits {
                account: 1,
                limits: Box::new(LimitsArg {
                    velocity: Some(VelocityArg {
                        max,
                        window_ms,
                        below: amt("5"),
                    }),
                    ..LimitsArg::default()
                }),
            })
        };
        cases.push((vel("1", "1"), vel_req(1, 1)));
        cases.push((vel("1000", "10000000000000"), vel_req(1000, E13)));
        for n in ["0", "1001", "4294967297", MAX, OVER, "-1", "1.0"] {
            cases.push((
                vel(n, "1"),
                Bad("velocity.max must be an integer from 1 to 1000"),
            ));
        }
        for n in ["0", "10000000000001", MAX, OVER, "-1", "1.0"] {
            cases.push((
                vel("1", n),
                Bad("velocity.window_ms must be an integer from 1 to 10000000000000"),
            ));
        }
        check_all(cases);
    }

    #[test]
    fn fields_an_op_does_not_name_are_ignored() {
        let cases: Vec<(&str, Want)> = vec![
            (
                r#"{"op":"balance","account":1,"id":"x","amount":5,"ms":-1,"velocity":7,"final":"no","currency":1,"extra":{"a":[1,{"b":null}]}}"#,
                Req(Request::Balance { account: 1 }),
            ),
            (
                r#"{"op":"debit","id":1,"account":2,"amount":"3","auth":"x","of":[],"expires_in_ms":0,"per_txn":1,"velocity":{"max":0},"final":1}"#,
                debit(1, 2, "3"),
            ),
            (
                r#"{"op":"advance_clock","ms":5,"account":-1}"#,
                Req(Request::AdvanceClock { ms: 5 }),
            ),
            (
                r#"{"op":"debit","id":1,"account":2,"amount":"3","n":1e400}"#,
                // serde_json refuses numbers beyond f64 even when ignored.
                Bad("not JSON"),
            ),
            (
                r#"{"op":"debit","id":1,"account":2,"amount":"3","n":123456789012345678901234567890,"f":-1.5e-7,"s":"\ud83d\ude00"}"#,
                debit(1, 2, "3"),
            ),
            // Unknown fields inside velocity are ignored too.
            (
                r#"{"op":"set_limits","account":1,"velocity":{"max":3,"window_ms":4,"below":"5","note":[true]}}"#,
                Req(Request::SetLimits {
                    account: 1,
                    limits: Box::new(LimitsArg {
                        velocity: Some(VelocityArg {
                            max: 3,
                            window_ms: 4,
                            below: amt("5"),
                        }),
                        ..LimitsArg::default()
                    }),
                }),
            ),
        ];
        for (line, want) in cases {
            check(line, want);
        }
    }

    #[test]
    fn keys_given_twice() {
        let cases: Vec<(&str, Want)> = vec![
            (
                r#"{"op":"balance","op":"balance","account":1}"#,
                Bad("key \"op\" given twice"),
            ),
            (
                r#"{"op":"balance","account":1,"account":1}"#,
                Bad("key \"account\" given twice"),
            ),
            (
                r#"{"op":"debit","id":1,"account":1,"amount":"1","amount":"1"}"#,
                Bad("given twice"),
            ),
            // Keys compare after unescaping.
            (
                r#"{"op":"debit","id":1,"account":1,"amount":"1","\u0061mount":"1"}"#,
                Bad("key \"amount\" given twice"),
            ),
            (
                r#"{"op":"balance","account":1,"x":1,"\u0078":2}"#,
                Bad("key \"x\" given twice"),
            ),
            // Fields the op ignores, and unknown keys.
            (
                r#"{"op":"balance","account":1,"id":1,"id":2}"#,
                Bad("given twice"),
            ),
            (
                r#"{"op":"balance","account":1,"extra":1,"extra":1}"#,
                Bad("key \"extra\" given twice"),
            ),
            // Nested, at any depth.
            (
                r#"{"op":"set_limits","account":1,"velocity":{"max":2,"max":2,"window_ms":1,"below":"5"}}"#,
                Bad("key \"max\" given twice"),
            ),
            (
                r#"{"op":"set_limits","account":1,"velocity":{"max":2,"window_ms":1,"below":"5","x":0,"x":0}}"#,
                Bad("key \"x\" given twice"),
            ),
            (
                r#"{"op":"balance","account":1,"velocity":{"max":2,"max":3}}"#,
                Bad("given twice"),
            ),
            (
                r#"{"op":"balance","account":1,"extra":{"a":1,"b":{"c":[{"d":1,"d":1}]}}}"#,
                Bad("key \"d\" given twice"),
            ),
            (
                r#"{"op":"balance","account":1,"extra":[[{"a":1,"a":2}]]}"#,
                Bad("key \"a\" given twice"),
            ),
            (
                r#"{"op":"set_limits","account":1,"velocity":{"max":2,"window_ms":1,"below":"5","x":[{"a":1,"a":1}]}}"#,
                Bad("key \"a\" given twice"),
            ),
            (
                r#"{"op":"balance","account":{"a":1,"a":1}}"#,
                Bad("given twice"),
            ),
            // Same key in different objects is fine.
            (
                r#"{"op":"balance","account":1,"a":{"a":{"a":1}},"b":[{"a":1},{"a":1}]}"#,
                Req(Request::Balance { account: 1 }),
            ),
            // Case matters.
            (
                r#"{"op":"balance","account":1,"Account":2,"ACCOUNT":3}"#,
                Req(Request::Balance { account: 1 }),
            ),
        ];
        for (line, want) in cases {
            check(line, want);
        }
    }

    #[test]
    fn many_keys_are_checked_for_repeats() {
        let keys: Vec<String> = (0..2000).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let distinct = format!(r#"{{"op":"balance","account":1,{}}}"#, keys.join(","));
        check(&distinct, Req(Request::Balance { account: 1 }));
        let nested = format!(
            r#"{{"op":"balance","account":1,"x":{{{}}}}}"#,
            keys.join(",")
        );
        check(&nested, Req(Request::Balance { account: 1 }));
        // One repeat among many, early, late, and between the two.
        for (a, b) in [(0, 1), (0, 1999), (5, 17), (20, 1500), (1998, 1999)] {
            let mut keys = keys.clone();
            keys[b] = keys[a].clone();
            let line = format!(r#"{{"op":"balance","account":1,{}}}"#, keys.join(","));
            check(&line, Bad(format!("key \"k{a}\" given twice").leak()));
            let line = format!(
                r#"{{"op":"balance","account":1,"x":[{{{}}}]}}"#,
                keys.join(",")
            );
            check(&line, Bad("given twice"));
        }
    }

    #[test]
    fn deep_nesting_is_malformed_not_a_crash() {
        let deep = format!(
            r#"{{"op":"balance","account":1,"x":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        check(&deep, Bad("not JSON"));
        let fine = format!(
            r#"{{"op":"balance","account":1,"x":{}{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        check(&fine, Req(Request::Balance { account: 1 }));
    }

    /// serde_json stops at 128 levels; up to there parsing fits in a small
    /// thread stack even in a debug build.
    #[test]
    fn deepest_nesting_fits_a_small_stack() {
        // `velocity` is kept field by field, so the deepest walk goes through it.
        let nested = |depth: usize| {
            let open: String = (0..depth)
                .map(|i| if i % 2 == 0 { "{\"a\":" } else { "[" })
                .collect();
            let close: String = (0..depth)
                .rev()
                .map(|i| if i % 2 == 0 { "}" } else { "]" })
                .collect();
            format!(r#"{{"op":"balance","account":1,"velocity":{open}1{close}}}"#)
        };
        let (deepest, too_deep) = (nested(126), nested(127));
        let (deepest, too_deep) = std::thread::Builder::new()
            .stack_size(STACK_BYTES)
            .spawn(move || {
                (
                    parse_line(deepest.as_bytes(), true),
                    parse_line(too_deep.as_bytes(), true),
                )
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(deepest, Ok(Request::Balance { account: 1 }));
        assert!(too_deep.unwrap_err().contains("recursion limit"));
    }

    const STACK_BYTES: usize = 256 * 1024;

    /// Exact text of every outcome form.
    fn check_out(line: u64, outcome: Outcome, want: &str) {
        let mut out = String::from("previous\n");
        write_outcome(&mut out, line, &outcome);
        assert_eq!(out, format!("previous\n{want}"), "{outcome:?}");
    }

    #[test]
    fn outcome_lines() {
        check_out(1, Outcome::new(Code::Ok), r#"{"line": 1, "result": "ok"}"#);
        check_out(
            5,
            Outcome::replay(Code::Ok),
            r#"{"line": 5, "result": "ok", "replayed": true}"#,
        );
        check_out(
            u64::MAX,
            Outcome::new(Code::InsufficientFunds),
            r#"{"line": 18446744073709551615, "result": "insufficient_funds"}"#,
        );
        check_out(
            0,
            Outcome::new(Code::HeldForReview),
            r#"{"line": 0, "result": "held_for_review"}"#,
        );
        check_out(
            17,
            Outcome::replay(Code::HeldForReview),
            r#"{"line": 17, "result": "held_for_review", "replayed": true}"#,
        );
        for code in Code::ALL {
            check_out(
                10,
                Outcome::new(code),
                &format!(r#"{{"line": 10, "result": "{}"}}"#, code.name()),
            );
        }
        let balance = |currency, balance, held| Outcome {
            code: Code::Ok,
            replayed: false,
            info: Info::Balance {
                currency,
                balance,
                held,
            },
        };
        check_out(
            20,
            balance(Currency::USD, 5125, 0),
            r#"{"line": 20, "result": "ok", "balance": "51.25", "held": "0.00", "available": "51.25"}"#,
        );
        check_out(
            23,
            balance(Currency::EUR, 30300, 15000),
            r#"{"line": 23, "result": "ok", "balance": "303.00", "held": "150.00", "available": "153.00"}"#,
        );
        check_out(
            3,
            balance(Currency::JPY, -500, 500),
            r#"{"line": 3, "result": "ok", "balance": "-500", "held": "500", "available": "-1000"}"#,
        );
        check_out(
            4,
            balance(Currency::KWD, 1, 0),
            r#"{"line": 4, "result": "ok", "balance": "0.001", "held": "0.000", "available": "0.001"}"#,
        );
        let status = |op, status| Outcome {
            code: Code::Ok,
            replayed: false,
            info: Info::Status { op, status },
        };
        check_out(
            21,
            status(Op::Debit, Code::Ok),
            r#"{"line": 21, "result": "ok", "op": "debit", "status": "ok"}"#,
        );
        check_out(
            9,
            status(Op::Capture, Code::ExceedsAuthorized),
            r#"{"line": 9, "result": "ok", "op": "capture", "status": "exceeds_authorized"}"#,
        );
    }

    #[test]
    fn malformed_lines_escape_the_error() {
        let check_bad = |error: &str, want: &str| {
            let mut out = String::new();
            write_malformed(&mut out, 24, error);
            assert_eq!(
                out,
                format!(r#"{{"line": 24, "result": "malformed", "error": {want}}}"#)
            );
            // And it is JSON that reads back to the same text.
            let back: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(back["error"], error);
            assert_eq!(back["line"], 24);
        };
        check_bad("amount must be a string", r#""amount must be a string""#);
        check_bad("", r#""""#);
        check_bad(r#"key "a\b" given twice"#, r#""key \"a\\b\" given twice""#);
        check_bad("a\nb\rc\td\u{8}e\u{c}f", r#""a\nb\rc\td\be\ff""#);
        check_bad(
            "\u{0}\u{1}\u{1f} \u{7f}",
            "\"\\u0000\\u0001\\u001f \u{7f}\"",
        );
        check_bad("é → 😀", "\"é → 😀\"");
        check_bad("\\", r#""\\""#);
    }

    #[test]
    fn parse_errors_write_as_valid_json() {
        for line in [
            &b"not json"[..],
            b"",
            b"{\"op\":\"x\\\"\\\\\\n\"}",
            b"{\"op\":\"balance\",\"account\":1,\"a\\\"\\u0001\":1,\"a\\\"\\u0001\":1}",
            b"\xff\xfe",
            b"[1]",
        ] {
            let error = parse_line(line, true).unwrap_err();
            let mut out = String::new();
            write_malformed(&mut out, 7, &error);
            let back: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(back["error"], error.as_str());
            assert_eq!(back["result"], "malformed");
        }
    }

    /// The example streams (`tests/data/streams`): every request line parses or is malformed as
    /// its outcome says, and every other outcome line is written back byte
    /// for byte.
    #[test]
    fn example_streams() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/streams");
        let mut checked = 0;
        for name in ["core", "preauth"] {
            let read = |kind: &str| {
                std::fs::read_to_string(dir.join(format!("{name}.{kind}.jsonl"))).unwrap()
            };
            let requests = read("requests");
            let outcomes = read("outcomes");
            let requests: Vec<&str> = requests.split('\n').collect();
            let outcomes: Vec<&str> = outcomes.lines().collect();
            for (i, want) in outcomes.iter().enumerate() {
                let n = i as u64 + 1;
                let value: serde_json::Value = serde_json::from_str(want).unwrap();
                let parsed = parse_line(requests[i].as_bytes(), true);
                let mut out = String::new();
                if value["result"] == "malformed" {
                    let error = parsed.expect_err(requests[i]);
                    write_malformed(&mut out, n, &error);
                    let prefix = format!(r#"{{"line": {n}, "result": "malformed", "error": "#);
                    assert!(out.starts_with(&prefix), "{out}");
                } else {
                    let request = parsed.expect(requests[i]);
                    let code = Code::from_name(value["result"].as_str().unwrap()).unwrap();
                    let info = if let Some(balance) = value["balance"].as_str() {
                        let minor = |s: &str| s.replace('.', "").parse::<i64>().unwrap();
                        let currency = match balance.split_once('.').map(|(_, f)| f.len()) {
                            None => Currency::JPY,
                            Some(2) => Currency::USD,
                            _ => Currency::BHD,
                        };
                        Info::Balance {
                            currency,
                            balance: minor(balance),
                            held: minor(value["held"].as_str().unwrap()),
                        }
                    } else if let Some(op) = value["op"].as_str() {
                        Info::Status {
                            op: Op::from_name(op).unwrap(),
                            status: Code::from_name(value["status"].as_str().unwrap()).unwrap(),
                        }
                    } else {
                        Info::None
                    };
                    assert!(matches!(
                        (request.op(), &info),
                        (Op::Balance, Info::Balance { .. })
                            | (Op::Status, Info::Status { .. })
                            | (_, Info::None)
                    ));
                    let outcome = Outcome {
                        code,
                        replayed: value["replayed"] == true,
                        info,
                    };
                    write_outcome(&mut out, n, &outcome);
                    assert_eq!(&out, want);
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 26 + 23);
    }

    /// Rough throughput; run with
    /// `cargo test --release --lib codec::tests::throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput() {
        use std::time::Instant;
        const N: u64 = 2_000_000;
        let mut input = String::new();
        for i in 0..N {
            input.push_str(&format!(
                r#"{{"op":"debit","id":{},"account":{},"amount":"{}.{:02}"}}"#,
                i * 7 + 1_000_000,
                i % 100_003,
                i % 997,
                i % 100
            ));
            input.push('\n');
        }
        let lines: Vec<&[u8]> = input.as_bytes().split(|&b| b == b'\n').collect();
        let lines = &lines[..N as usize];
        let start = Instant::now();
        let mut sum = 0u64;
        for line in lines {
            match parse_line(line, true) {
                Ok(Request::Debit { id, .. }) => sum = sum.wrapping_add(id),
                other => panic!("{other:?}"),
            }
        }
        let parse = start.elapsed();
        // serde_json skipping the same lines, for scale on a busy machine.
        let start = Instant::now();
        for line in lines {
            let v: serde::de::IgnoredAny = serde_json::from_slice(line).unwrap();
            std::hint::black_box(v);
        }
        let skip = start.elapsed();
        let start = Instant::now();
        let mut out = String::with_capacity(64);
        let mut bytes = 0;
        for i in 0..N {
            out.clear();
            write_outcome(&mut out, i + 1, &Outcome::new(Code::Ok));
            bytes += out.len();
        }
        let write = start.elapsed();
        eprintln!(
            "parse_line: {:.0} lines/s ({:.1} MB/s); serde_json skipping them: {:.0} lines/s; \
             write_outcome: {:.0} lines/s ({sum} {bytes})",
            N as f64 / parse.as_secs_f64(),
            input.len() as f64 / parse.as_secs_f64() / 1e6,
            N as f64 / skip.as_secs_f64(),
            N as f64 / write.as_secs_f64(),
        );
    }
}
