//! From an HTTP request to an engine [`Request`], through the line format.
//!
//! The gateway does not have a parser of its own: it writes the request as
//! one line of the JSON Lines format (`op` from the route, `account`,
//! `auth` and `id` from the path, `id` of a keyed op from the
//! `Idempotency-Key` header, the other fields from the body) and hands it
//! to [`debitcore::codec::parse_line`]. So a field has the same name, type,
//! range and error text over HTTP as in a request line, and a field the
//! engine learns later (issue 12's `merchant`) needs no gateway change.
//!
//! The body's members are spliced in as text after the gateway's fields.
//! The body is first checked to be one JSON object on its own, so the
//! splice cannot close the object early or add a second one; a body that
//! names a field the route gives (`account`, `id`, ...) makes the line
//! name it twice, which the codec refuses (SPEC: a key given twice).

use debitcore::{Op, Request};
use serde::de::IgnoredAny;

use crate::status::GatewayError;

/// What is wrong with a request, for a 4xx body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadInput {
    pub error: GatewayError,
    pub message: String,
}

impl BadInput {
    pub fn new(error: GatewayError, message: impl Into<String>) -> BadInput {
        BadInput {
            error,
            message: message.into(),
        }
    }
}

/// The fields a body may not give because the route or the header does.
const ROUTE_FIELDS: &str = "op, account, auth and id come from the route and the \
                            Idempotency-Key header, not from the body";

/// The longest decimal text taken for a u64 (leading zeros included):
/// a bound on the work for hostile input.
const U64_TEXT_BYTES_MAX: usize = 64;

/// An unsigned 64-bit integer written in decimal digits only (no sign,
/// space or fraction; leading zeros are allowed, as JSON's are not).
pub fn parse_u64(text: &str) -> Option<u64> {
    let digits = text.as_bytes();
    if digits.is_empty() || digits.len() > U64_TEXT_BYTES_MAX {
        return None;
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.parse().ok()
}

/// The `Idempotency-Key` header's value as a request id: a decimal u64,
/// bare or as a quoted string (`"42"`, the IETF draft's sf-string form).
pub fn parse_key(value: &[u8]) -> Result<u64, BadInput> {
    let bad = || {
        BadInput::new(
            GatewayError::InvalidIdempotencyKey,
            "Idempotency-Key must be an unsigned 64-bit integer in decimal \
             (0 to 18446744073709551615), bare or in double quotes",
        )
    };
    let text = std::str::from_utf8(value).map_err(|_| bad())?.trim();
    let text = match text.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').ok_or_else(bad)?,
        None => text,
    };
    parse_u64(text).ok_or_else(bad)
}

fn is_json_space(byte: &u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

fn trim_json_space(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !is_json_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_json_space(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// The members of a body that must be one JSON object (or empty, which is
/// `{}`): the text between its braces, without them.
fn body_members(body: &[u8]) -> Result<&str, BadInput> {
    let body = trim_json_space(body);
    if body.is_empty() {
        return Ok("");
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| BadInput::new(GatewayError::InvalidJson, format!("not UTF-8: {e}")))?;
    serde_json::from_str::<IgnoredAny>(text)
        .map_err(|e| BadInput::new(GatewayError::InvalidJson, format!("not JSON: {e}")))?;
    // Valid JSON whose first byte is '{' is one object, ending in '}'.
    match text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        Some(members) => Ok(members),
        None => Err(BadInput::new(
            GatewayError::InvalidJson,
            "the body must be a JSON object",
        )),
    }
}

/// The integer fields a route takes from its query string (`history`'s
/// `limit` and `before`): each parameter named in `names`, given once, as
/// decimal digits; a name given with an empty value (`?limit=`) counts as
/// omitted. Other parameters are ignored, as fields an op does not name
/// are. The ranges are the codec's (`limit=0` is 400 `malformed` there).
pub fn query_fields<'n>(
    query: &str,
    names: &[&'n str],
    fields: &mut Vec<(&'n str, u64)>,
) -> Result<(), BadInput> {
    if names.is_empty() {
        return Ok(());
    }
    let mut seen: Vec<&str> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(&name) = names.iter().find(|&&n| n == key) else {
            continue;
        };
        if seen.contains(&name) {
            return Err(BadInput::new(
                GatewayError::Malformed,
                format!("{name} given twice in the query string"),
            ));
        }
        seen.push(name);
        if value.is_empty() {
            continue;
        }
        let value = parse_u64(value).ok_or_else(|| {
            BadInput::new(
                GatewayError::Malformed,
                format!("{name} in the query string must be an unsigned 64-bit integer"),
            )
        })?;
        fields.push((name, value));
    }
    Ok(())
}

/// Writes the request line for `op` and parses it with the engine's codec.
///
/// `fields` are the route's integer fields (`account`, `auth`, `id`),
/// already parsed, with the key's `id` among them for a keyed op; `body`
/// gives the rest (ignored when `None`: a GET).
pub fn to_request(
    op: Op,
    fields: &[(&str, u64)],
    body: Option<&[u8]>,
) -> Result<Request, BadInput> {
    let members = match body {
        Some(body) => body_members(body)?,
        None => "",
    };
    let mut line = String::with_capacity(64 + members.len());
    line.push_str("{\"op\":\"");
    line.push_str(op.name());
    line.push('"');
    for (name, value) in fields {
        line.push_str(",\"");
        line.push_str(name);
        line.push_str("\":");
        line.push_str(&value.to_string());
    }
    if !trim_json_space(members.as_bytes()).is_empty() {
        line.push(',');
        line.push_str(members);
    }
    line.push('}');
    // advance_clock parses under the manual clock always: under the wall
    // clock the engine answers it `clock_not_manual` (409), a status of
    // its own rather than a 400 for a well-formed request.
    debitcore::codec::parse_line(line.as_bytes(), true).map_err(|message| {
        let message = if message.contains("given twice") {
            format!("{message} ({ROUTE_FIELDS})")
        } else {
            message
        };
        BadInput::new(GatewayError::Malformed, message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use debitcore::AmountArg;

    /// What a request must become: a request, or a bad input whose
    /// message holds the fragment.
    enum Want {
        Req(Request),
        Bad(GatewayError, &'static str),
    }

    fn check(op: Op, fields: &[(&str, u64)], body: &str, want: Want) {
        let got = to_request(op, fields, Some(body.as_bytes()));
        match (got, want) {
            (Ok(got), Want::Req(want)) => assert_eq!(got, want, "body {body:?}"),
            (Err(bad), Want::Bad(error, fragment)) => {
                assert_eq!(bad.error, error, "body {body:?}: {}", bad.message);
                assert!(
                    bad.message.contains(fragment),
                    "body {body:?}: {:?} lacks {fragment:?}",
                    bad.message
                );
            }
            (got, _) => panic!("body {body:?}: unexpected {got:?}"),
        }
    }

    fn debit(amount: &str) -> Want {
        Want::Req(Request::Debit {
            id: 7,
            account: 42,
            amount: AmountArg::parse(amount),
            merchant: None,
        })
    }

    const DEBIT: &[(&str, u64)] = &[("account", 42), ("id", 7)];

    #[test]
    fn bodies() {
        use GatewayError::{InvalidJson, Malformed};
        let cases: Vec<(&str, Want)> = vec![
            (r#"{"amount":"1.50"}"#, debit("1.50")),
            (" \r\n{ \"amount\" : \"2\" }\n", debit("2")),
            // Fields the op does not name are ignored, as in a line.
            (r#"{"amount":"3","note":{"a":[1,2]}}"#, debit("3")),
            (r#"{"amount":"abc"}"#, debit("abc")),
            ("", Want::Bad(Malformed, "missing field amount")),
            ("{}", Want::Bad(Malformed, "missing field amount")),
            ("{ }", Want::Bad(Malformed, "missing field amount")),
            (
                r#"{"amount":1.5}"#,
                Want::Bad(Malformed, "amount must be a string"),
            ),
            (
                r#"{"amount":"1","account":43}"#,
                Want::Bad(Malformed, "from the route"),
            ),
            (
                r#"{"amount":"1","id":8}"#,
                Want::Bad(Malformed, "given twice"),
            ),
            (
                r#"{"amount":"1","op":"deposit"}"#,
                Want::Bad(Malformed, "given twice"),
            ),
            (
                r#"{"amount":"1","amount":"2"}"#,
                Want::Bad(Malformed, "given twice"),
            ),
            (r#"{"amount":"1""#, Want::Bad(InvalidJson, "not JSON")),
            (
                r#"{"amount":"1"} {"x":1}"#,
                Want::Bad(InvalidJson, "not JSON"),
            ),
            (
                r#"{"amount":"1"},{"x":1}"#,
                Want::Bad(InvalidJson, "not JSON"),
            ),
            (r#"[{"amount":"1"}]"#, Want::Bad(InvalidJson, "JSON object")),
            (r#""amount""#, Want::Bad(InvalidJson, "JSON object")),
            ("null", Want::Bad(InvalidJson, "JSON object")),
            (r#"{"amount":"1",}"#, Want::Bad(InvalidJson, "not JSON")),
            ("\u{feff}{}", Want::Bad(InvalidJson, "not JSON")),
        ];
        for (body, want) in cases {
            check(Op::Debit, DEBIT, body, want);
        }
        let bad_utf8 = to_request(Op::Debit, DEBIT, Some(b"{\"amount\":\"\xff\"}"));
        assert_eq!(bad_utf8.unwrap_err().error, InvalidJson);
    }

    #[test]
    fn gets_ignore_the_body() {
        let got = to_request(Op::Balance, &[("account", 9)], None);
        assert_eq!(got, Ok(Request::Balance { account: 9 }));
    }

    #[test]
    fn keys() {
        assert_eq!(parse_key(b"0"), Ok(0));
        assert_eq!(parse_key(b"007"), Ok(7));
        assert_eq!(parse_key(b" 42 "), Ok(42));
        assert_eq!(parse_key(b"\"42\""), Ok(42));
        assert_eq!(parse_key(b"18446744073709551615"), Ok(u64::MAX));
        for bad in [
            &b""[..],
            b"\"\"",
            b"\"42",
            b"-1",
            b"+1",
            b"1.0",
            b"1e3",
            b"0x10",
            b"18446744073709551616",
            b"4 2",
            b"abc",
            b"\xff",
        ] {
            let got = parse_key(bad);
            assert_eq!(
                got.map_err(|b| b.error),
                Err(GatewayError::InvalidIdempotencyKey),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
