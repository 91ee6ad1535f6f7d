//! Request lines read back into `Req`, from SPEC.md's line format alone.
//!
//! The model test needs it twice: to feed SPEC's own example streams
//! (`tests/data/streams`) to the reference model, and to check that every
//! line the generator writes means what the generator thinks it means.
//! Anything SPEC calls malformed comes back as `Req::Malformed`.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::reference::{Req, VelocityArg, TIME_ARG_MAX};

/// A JSON value that refuses an object with a key given twice, at any depth
/// ("a key given twice" is malformed; plain `serde_json::Value` keeps the
/// last one).
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // Not an integer whatever its value ("numbers with a fraction or an
        // exponent ... are not integers"); NaN cannot come from JSON.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some((k, Strict(v))) = map.next_entry::<String, Strict>()? {
            if out.insert(k.clone(), v).is_some() {
                return Err(serde::de::Error::custom(format!("key {k:?} given twice")));
            }
        }
        Ok(Value::Object(out))
    }
}

/// The fields of one request object, with SPEC's typing rules.
struct Fields(serde_json::Map<String, Value>);

type Parsed<T> = Result<T, String>;

impl Fields {
    /// A field, `None` when omitted or `null` ("an optional field given as
    /// null counts as omitted").
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn u64_opt(&self, name: &str) -> Parsed<Option<u64>> {
        match self.get(name) {
            None => Ok(None),
            // `as_u64` is None for negatives and for anything read as a
            // float (a fraction or an exponent, or too big for u64).
            Some(v) => match v.as_u64() {
                Some(n) if v.is_u64() => Ok(Some(n)),
                _ => Err(format!("{name} is not an unsigned 64-bit integer")),
            },
        }
    }

    fn u64(&self, name: &str) -> Parsed<u64> {
        self.u64_opt(name)?.ok_or_else(|| format!("{name} missing"))
    }

    fn ranged_opt(&self, name: &str, lo: u64, hi: u64) -> Parsed<Option<u64>> {
        match self.u64_opt(name)? {
            Some(n) if n < lo || n > hi => Err(format!("{name} out of range")),
            other => Ok(other),
        }
    }

    fn string_opt(&self, name: &str) -> Parsed<Option<String>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{name} must be a string")),
        }
    }

    fn string(&self, name: &str) -> Parsed<String> {
        self.string_opt(name)?
            .ok_or_else(|| format!("{name} missing"))
    }

    fn bool_opt(&self, name: &str) -> Parsed<Option<bool>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(format!("{name} must be a boolean")),
        }
    }

    fn velocity_opt(&self) -> Parsed<Option<VelocityArg>> {
        let Some(v) = self.get("velocity") else {
            return Ok(None);
        };
        let Some(obj) = v.as_object() else {
            return Err("velocity must be an object".to_string());
        };
        let inner = Fields(obj.clone());
        let max = inner.ranged_opt("max", 1, 1000)?.ok_or("max missing")?;
        let window_ms = inner
            .ranged_opt("window_ms", 1, TIME_ARG_MAX)?
            .ok_or("window_ms missing")?;
        let below = inner.string("below")?;
        Ok(Some(VelocityArg {
            max,
            window_ms,
            below,
        }))
    }
}

/// One request line as SPEC reads it.
pub fn parse_request(text: &str) -> Req {
    try_parse(text).unwrap_or(Req::Malformed)
}

/// Why a line is malformed, or what it asks.
pub fn try_parse(text: &str) -> Parsed<Req> {
    let Strict(value) = serde_json::from_str::<Strict>(text).map_err(|e| e.to_string())?;
    let Value::Object(obj) = value else {
        return Err("not an object".to_string());
    };
    let f = Fields(obj);
    let op = match f.0.get("op") {
        Some(Value::String(op)) => op.clone(),
        _ => return Err("op missing or not a string".to_string()),
    };
    let time = |name: &str| f.ranged_opt(name, 1, TIME_ARG_MAX);
    Ok(match op.as_str() {
        "open_account" => Req::Open {
            account: f.u64("account")?,
            currency: f.string("currency")?,
            overdraft: f.string_opt("overdraft")?,
            history: f.bool_opt("history")?,
        },
        "deposit" => Req::Deposit {
            id: f.u64("id")?,
            account: f.u64("account")?,
            amount: f.string("amount")?,
        },
        "debit" => Req::Debit {
            id: f.u64("id")?,
            account: f.u64("account")?,
            amount: f.string("amount")?,
            merchant: f.u64_opt("merchant")?,
        },
        "authorize" => Req::Authorize {
            id: f.u64("id")?,
            account: f.u64("account")?,
            amount: f.string("amount")?,
            expires_in_ms: time("expires_in_ms")?,
            merchant: f.u64_opt("merchant")?,
        },
        "increment" => Req::Increment {
            id: f.u64("id")?,
            account: f.u64("account")?,
            auth: f.u64("auth")?,
            amount: f.string("amount")?,
            expires_in_ms: time("expires_in_ms")?,
        },
        "capture" => Req::Capture {
            id: f.u64("id")?,
            account: f.u64("account")?,
            auth: f.u64("auth")?,
            amount: f.string_opt("amount")?,
            is_final: f.bool_opt("final")?,
        },
        "void" => Req::Void {
            id: f.u64("id")?,
            account: f.u64("account")?,
            auth: f.u64("auth")?,
        },
        "refund" => Req::Refund {
            id: f.u64("id")?,
            account: f.u64("account")?,
            of: f.u64("of")?,
            amount: f.string_opt("amount")?,
        },
        "set_limits" => Req::SetLimits {
            account: f.u64("account")?,
            per_txn: f.string_opt("per_txn")?,
            daily: f.string_opt("daily")?,
            review_above: f.string_opt("review_above")?,
            velocity: f.velocity_opt()?,
        },
        "freeze" => Req::Freeze {
            account: f.u64("account")?,
        },
        "unfreeze" => Req::Unfreeze {
            account: f.u64("account")?,
        },
        "balance" => Req::Balance {
            account: f.u64("account")?,
        },
        "status" => Req::Status {
            account: f.u64("account")?,
            id: f.u64("id")?,
        },
        "advance_clock" => Req::AdvanceClock {
            ms: f.ranged_opt("ms", 0, TIME_ARG_MAX)?.ok_or("ms missing")?,
        },
        "open_merchant" => Req::OpenMerchant {
            merchant: f.u64("merchant")?,
            currency: f.string("currency")?,
            fee_bps: f.ranged_opt("fee_bps", 0, 10_000)?,
        },
        "queue_debit" => Req::QueueDebit {
            id: f.u64("id")?,
            account: f.u64("account")?,
            amount: f.string("amount")?,
            merchant: f.u64_opt("merchant")?,
        },
        "run_batch" => Req::RunBatch,
        "settle" => Req::Settle {
            id: f.u64("id")?,
            merchant: f.u64("merchant")?,
        },
        "merchant" => Req::Merchant {
            merchant: f.u64("merchant")?,
        },
        "close_account" => Req::Close {
            account: f.u64("account")?,
        },
        "history" => Req::History {
            account: f.u64("account")?,
            limit: f.ranged_opt("limit", 1, 1000)?,
            before: f.ranged_opt("before", 1, u64::MAX)?,
        },
        other => return Err(format!("unknown op {other:?}")),
    })
}
