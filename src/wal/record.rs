//! Log records: framing, checksums, and the binary form of requests.
//!
//! A record is 8-byte aligned, little-endian (see `docs/wal-format.md`):
//!
//! ```text
//! 0   u32  crc      CRC-32C over bytes [4,len): one pass, length included
//! 4   u32  len      bytes from offset 0 to the end of the payload (unpadded)
//! 8   u64  lsn      shard sequence number, 1, 2, 3, ... without gaps
//! 16  u8   kind     Request | Tick | Group
//! 17  ...  payload
//! ```
//!
//! The log is logical: a `Request` record is the request itself plus the
//! result code it had (checked again on replay: the pair of assertions that
//! proves replay reproduces what was answered). A debit needs nothing else:
//! balances, held totals and key records are recomputed by replay.

use crate::money::{AmountArg, Currency};
use crate::outcome::Code;
use crate::request::{LimitsArg, Op, Request, VelocityArg};

pub const HEADER_BYTES: usize = 17;
/// Largest encoded record (a `set_limits` with every field), padded.
pub const RECORD_BYTES_MAX: usize = 128;
pub const ALIGN: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A request that changed state, with its result code.
    Request = 1,
    /// Engine time moved to the given ms (wall clock; expiry and forgetting
    /// happen on it).
    Tick = 2,
    /// Starts a group: carries the highest LSN the writer knew durable.
    /// Recovery uses it to tell a torn tail from damage in the middle.
    Group = 3,
}

impl Kind {
    fn from_u8(byte: u8) -> Option<Kind> {
        match byte {
            1 => Some(Kind::Request),
            2 => Some(Kind::Tick),
            3 => Some(Kind::Group),
            _ => None,
        }
    }
}

/// A record read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Request { request: Request, code: Code },
    Tick { now_ms: u64 },
    Group { durable_lsn: u64 },
}

pub fn padded(len: usize) -> usize {
    len.next_multiple_of(ALIGN)
}

/// The first offset at or after `from` (a multiple of [`ALIGN`]) whose
/// 8-byte word is not all zeros, or `bytes.len()`. A record never starts
/// with a zero word (its length is not 0), so scans for records may skip
/// zero words; whole zero pages are skipped with one slice comparison (a
/// `memcmp`), which keeps scanning the preallocated, empty rest of a
/// segment cheap even in unoptimised builds.
pub fn next_nonzero(bytes: &[u8], from: usize) -> usize {
    const PAGE: usize = 4096;
    const ZEROS: [u8; PAGE] = [0; PAGE];
    debug_assert!(from.is_multiple_of(ALIGN));
    let mut at = from;
    while at < bytes.len() {
        let end = bytes.len().min((at / PAGE + 1) * PAGE);
        if bytes[at..end] == ZEROS[..end - at] {
            at = end;
            continue;
        }
        while at + ALIGN <= end && bytes[at..at + ALIGN] == [0; ALIGN] {
            at += ALIGN;
        }
        debug_assert!(bytes[at..end.min(at + ALIGN)].iter().any(|&b| b != 0));
        return at;
    }
    bytes.len()
}

/// Encodes one record into `out` (cleared first); returns its padded size.
pub fn encode(out: &mut Vec<u8>, lsn: u64, record: &Record) -> usize {
    out.clear();
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&lsn.to_le_bytes());
    match record {
        Record::Request { request, code } => {
            out.push(Kind::Request as u8);
            out.push(*code as u8);
            encode_request(out, request);
        }
        Record::Tick { now_ms } => {
            out.push(Kind::Tick as u8);
            out.extend_from_slice(&now_ms.to_le_bytes());
        }
        Record::Group { durable_lsn } => {
            out.push(Kind::Group as u8);
            out.extend_from_slice(&durable_lsn.to_le_bytes());
        }
    }
    let len = out.len();
    debug_assert!(len <= RECORD_BYTES_MAX);
    out[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    let crc = checksum(out);
    out[0..4].copy_from_slice(&crc.to_le_bytes());
    out.resize(padded(len), 0);
    out.len()
}

fn checksum(record: &[u8]) -> u32 {
    crc32c::crc32c(&record[4..])
}

/// What is at one offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole, checksummed record, and its padded size.
    Valid {
        lsn: u64,
        record: Record,
        size: usize,
    },
    /// Zeros: nothing was ever written here.
    Empty,
    /// Something that is not a valid record.
    Damaged(&'static str),
}

/// Reads the frame at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Frame {
    if bytes.len() < 8 {
        return Frame::Empty;
    }
    let len = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    if len == 0 {
        return if bytes[0..4] == [0; 4] {
            Frame::Empty
        } else {
            Frame::Damaged("checksum without a length")
        };
    }
    if !(HEADER_BYTES..=RECORD_BYTES_MAX).contains(&len) || len > bytes.len() {
        return Frame::Damaged("length out of range");
    }
    let crc = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    if checksum(&bytes[..len]) != crc {
        return Frame::Damaged("checksum mismatch");
    }
    let lsn = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let mut r = Reader {
        bytes: &bytes[17..len],
    };
    let record = match Kind::from_u8(bytes[16]) {
        Some(Kind::Request) => {
            let code = r.u8().and_then(|c| Code::ALL.get(usize::from(c)).copied());
            match (code, decode_request(&mut r)) {
                (Some(code), Some(request)) => Record::Request { request, code },
                _ => return Frame::Damaged("request does not decode"),
            }
        }
        Some(Kind::Tick) => match r.u64() {
            Some(now_ms) => Record::Tick { now_ms },
            None => return Frame::Damaged("short tick"),
        },
        Some(Kind::Group) => match r.u64() {
            Some(durable_lsn) => Record::Group { durable_lsn },
            None => return Frame::Damaged("short group"),
        },
        None => return Frame::Damaged("unknown record kind"),
    };
    if !r.bytes.is_empty() {
        return Frame::Damaged("trailing bytes in record");
    }
    Frame::Valid {
        lsn,
        record,
        size: padded(len),
    }
}

/// The first `Group` record at or after `from` (8-byte boundaries) that
/// claims `durable_lsn >= unread`: its offset and claim. This is the rule
/// that tells a torn tail (no such claim) from damage in the middle (one
/// exists); recovery and `inspect` both ask it.
pub fn durable_claim(bytes: &[u8], from: usize, unread: u64) -> Option<(usize, u64)> {
    let mut at = from;
    loop {
        at = next_nonzero(bytes, at);
        if at + HEADER_BYTES > bytes.len() {
            return None;
        }
        if let Frame::Valid {
            record: Record::Group { durable_lsn },
            ..
        } = decode(&bytes[at..])
        {
            if durable_lsn >= unread {
                return Some((at, durable_lsn));
            }
        }
        at += ALIGN;
    }
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_amount(out: &mut Vec<u8>, amount: Option<AmountArg>) {
    match amount {
        None => out.push(0),
        Some(AmountArg::Decimal {
            mantissa,
            scale,
            digits,
        }) => {
            out.push(1);
            put_u64(out, mantissa);
            out.push(scale as u8);
            out.push(digits);
        }
        Some(AmountArg::Invalid { fingerprint }) => {
            out.push(2);
            put_u64(out, fingerprint);
        }
    }
}

fn put_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put_u64(out, v);
        }
    }
}

/// The binary form of a request: its op, then its fields in declaration order.
pub fn encode_request(out: &mut Vec<u8>, request: &Request) {
    out.push(request.op() as u8);
    match *request {
        Request::OpenAccount {
            account,
            currency,
            overdraft,
        } => {
            put_u64(out, account);
            out.push(currency.map_or(u8::MAX, |c| c as u8));
            put_amount(out, overdraft);
        }
        Request::Deposit {
            id,
            account,
            amount,
        }
        | Request::Debit {
            id,
            account,
            amount,
        } => {
            put_u64(out, id);
            put_u64(out, account);
            put_amount(out, Some(amount));
        }
        Request::Authorize {
            id,
            account,
            amount,
            expires_in_ms,
        } => {
            put_u64(out, id);
            put_u64(out, account);
            put_amount(out, Some(amount));
            put_opt_u64(out, expires_in_ms);
        }
        Request::Increment {
            id,
            account,
            auth,
            amount,
            expires_in_ms,
        } => {
            put_u64(out, id);
            put_u64(out, account);
            put_u64(out, auth);
            put_amount(out, Some(amount));
            put_opt_u64(out, expires_in_ms);
        }
        Request::Capture {
            id,
            account,
            auth,
            amount,
            is_final,
        } => {
            put_u64(out, id);
            put_u64(out, account);
            put_u64(out, auth);
            put_amount(out, amount);
            out.push(u8::from(is_final));
        }
        Request::Void { id, account, auth } => {
            put_u64(out, id);
            put_u64(out, account);
            put_u64(out, auth);
        }
        Request::Refund {
            id,
            account,
            of,
            amount,
        } => {
            put_u64(out, id);
            put_u64(out, account);
            put_u64(out, of);
            put_amount(out, amount);
        }
        Request::SetLimits {
            account,
            ref limits,
        } => {
            put_u64(out, account);
            put_amount(out, limits.per_txn);
            put_amount(out, limits.daily);
            put_amount(out, limits.review_above);
            match limits.velocity {
                None => out.push(0),
                Some(v) => {
                    out.push(1);
                    out.extend_from_slice(&v.max.to_le_bytes());
                    put_u64(out, v.window_ms);
                    put_amount(out, Some(v.below));
                }
            }
        }
        Request::Freeze { account }
        | Request::Unfreeze { account }
        | Request::Balance { account } => put_u64(out, account),
        Request::Status { account, id } => {
            put_u64(out, account);
            put_u64(out, id);
        }
        Request::AdvanceClock { ms } => put_u64(out, ms),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8")))
    }
    fn opt_u64(&mut self) -> Option<Option<u64>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.u64()?)),
            _ => None,
        }
    }
    fn amount(&mut self) -> Option<Option<AmountArg>> {
        match self.u8()? {
            0 => Some(None),
            1 => {
                let mantissa = self.u64()?;
                let scale = u32::from(self.u8()?);
                let digits = self.u8()?;
                Some(Some(AmountArg::Decimal {
                    mantissa,
                    scale,
                    digits,
                }))
            }
            2 => Some(Some(AmountArg::Invalid {
                fingerprint: self.u64()?,
            })),
            _ => None,
        }
    }
    fn required_amount(&mut self) -> Option<AmountArg> {
        self.amount()?
    }
}

/// Reads back what [`encode_request`] wrote.
pub fn decode_request_bytes(bytes: &[u8]) -> Option<Request> {
    let mut r = Reader { bytes };
    let request = decode_request(&mut r)?;
    r.bytes.is_empty().then_some(request)
}

fn decode_request(r: &mut Reader<'_>) -> Option<Request> {
    let op = *Op::ALL.get(usize::from(r.u8()?))?;
    Some(match op {
        Op::OpenAccount => Request::OpenAccount {
            account: r.u64()?,
            currency: match r.u8()? {
                u8::MAX => None,
                c => Some(*Currency::ALL.get(usize::from(c))?),
            },
            overdraft: r.amount()?,
        },
        Op::Deposit => Request::Deposit {
            id: r.u64()?,
            account: r.u64()?,
            amount: r.required_amount()?,
        },
        Op::Debit => Request::Debit {
            id: r.u64()?,
            account: r.u64()?,
            amount: r.required_amount()?,
        },
        Op::Authorize => Request::Authorize {
            id: r.u64()?,
            account: r.u64()?,
            amount: r.required_amount()?,
            expires_in_ms: r.opt_u64()?,
        },
        Op::Increment => Request::Increment {
            id: r.u64()?,
            account: r.u64()?,
            auth: r.u64()?,
            amount: r.required_amount()?,
            expires_in_ms: r.opt_u64()?,
        },
        Op::Capture => Request::Capture {
            id: r.u64()?,
            account: r.u64()?,
            auth: r.u64()?,
            amount: r.amount()?,
            is_final: match r.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            },
        },
        Op::Void => Request::Void {
            id: r.u64()?,
            account: r.u64()?,
            auth: r.u64()?,
        },
        Op::Refund => Request::Refund {
            id: r.u64()?,
            account: r.u64()?,
            of: r.u64()?,
            amount: r.amount()?,
        },
        Op::SetLimits => {
            let account = r.u64()?;
            let per_txn = r.amount()?;
            let daily = r.amount()?;
            let review_above = r.amount()?;
            let velocity = match r.u8()? {
                0 => None,
                1 => Some(VelocityArg {
                    max: r.u32()?,
                    window_ms: r.u64()?,
                    below: r.required_amount()?,
                }),
                _ => return None,
            };
            Request::SetLimits {
                account,
                limits: Box::new(LimitsArg {
                    per_txn,
                    daily,
                    review_above,
                    velocity,
                }),
            }
        }
        Op::Freeze => Request::Freeze { account: r.u64()? },
        Op::Unfreeze => Request::Unfreeze { account: r.u64()? },
        Op::Balance => Request::Balance { account: r.u64()? },
        Op::Status => Request::Status {
            account: r.u64()?,
            id: r.u64()?,
        },
        Op::AdvanceClock => Request::AdvanceClock { ms: r.u64()? },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Request> {
        let a = AmountArg::parse("12.34");
        let bad = AmountArg::parse("x");
        vec![
            Request::OpenAccount {
                account: u64::MAX,
                currency: Some(Currency::KWD),
                overdraft: Some(a),
            },
            Request::OpenAccount {
                account: 0,
                currency: None,
                overdraft: None,
            },
            Request::Deposit {
                id: 1,
                account: 2,
                amount: bad,
            },
            Request::Debit {
                id: 3,
                account: 4,
                amount: a,
            },
            Request::Authorize {
                id: 5,
                account: 6,
                amount: a,
                expires_in_ms: Some(10),
            },
            Request::Increment {
                id: 7,
                account: 8,
                auth: 5,
                amount: a,
                expires_in_ms: None,
            },
            Request::Capture {
                id: 9,
                account: 8,
                auth: 5,
                amount: None,
                is_final: false,
            },
            Request::Void {
                id: 10,
                account: 8,
                auth: 5,
            },
            Request::Refund {
                id: 11,
                account: 8,
                of: 9,
                amount: Some(a),
            },
            Request::SetLimits {
                account: 8,
                limits: Box::new(LimitsArg {
                    per_txn: Some(a),
                    daily: None,
                    review_above: Some(bad),
                    velocity: Some(VelocityArg {
                        max: 1000,
                        window_ms: 10_000_000_000_000,
                        below: a,
                    }),
                }),
            },
            Request::Freeze { account: 1 },
            Request::Unfreeze { account: 1 },
            Request::AdvanceClock { ms: 0 },
        ]
    }

    #[test]
    fn every_request_round_trips_through_a_record() {
        let mut out = Vec::new();
        for (i, request) in samples().into_iter().enumerate() {
            let record = Record::Request {
                request,
                code: Code::InsufficientFunds,
            };
            let size = encode(&mut out, i as u64 + 1, &record);
            assert_eq!(size % ALIGN, 0);
            assert!(size <= RECORD_BYTES_MAX);
            assert_eq!(
                decode(&out),
                Frame::Valid {
                    lsn: i as u64 + 1,
                    record,
                    size
                }
            );
        }
    }

    #[test]
    fn any_flipped_bit_is_caught() {
        let mut out = Vec::new();
        let size = encode(
            &mut out,
            7,
            &Record::Request {
                request: samples().remove(3),
                code: Code::Ok,
            },
        );
        let len = u32::from_le_bytes(out[4..8].try_into().unwrap()) as usize;
        for byte in 0..len {
            for bit in 0..8 {
                let mut damaged = out.clone();
                damaged[byte] ^= 1 << bit;
                assert!(
                    !matches!(decode(&damaged), Frame::Valid { .. }),
                    "flip of bit {bit} in byte {byte} went unnoticed (size {size})"
                );
            }
        }
    }

    #[test]
    fn zeros_are_empty_and_ticks_round_trip() {
        assert_eq!(decode(&[0; 64]), Frame::Empty);
        let mut out = Vec::new();
        let size = encode(&mut out, 1, &Record::Tick { now_ms: 99 });
        assert_eq!(size, 32);
        assert!(matches!(
            decode(&out),
            Frame::Valid {
                record: Record::Tick { now_ms: 99 },
                ..
            }
        ));
    }

    #[test]
    fn next_nonzero_finds_the_first_nonzero_word() {
        let mut bytes = vec![0u8; 3 * 4096 + 24];
        assert_eq!(next_nonzero(&bytes, 0), bytes.len());
        assert_eq!(next_nonzero(&bytes, 64), bytes.len());
        for at in [0, 8, 4088, 4096, 8200, 3 * 4096 + 16] {
            for byte in [0, 7] {
                bytes[at + byte] = 1;
                assert_eq!(next_nonzero(&bytes, 0), at, "byte {byte} of word {at}");
                assert_eq!(next_nonzero(&bytes, at), at);
                assert_eq!(next_nonzero(&bytes, at + 8), bytes.len());
                bytes[at + byte] = 0;
            }
        }
    }

    #[test]
    fn a_debit_costs_48_bytes_of_log() {
        let mut out = Vec::new();
        let size = encode(
            &mut out,
            1,
            &Record::Request {
                request: Request::Debit {
                    id: 1,
                    account: 2,
                    amount: AmountArg::parse("1.00"),
                },
                code: Code::Ok,
            },
        );
        assert_eq!(size, 48);
    }
}
