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
use crate::outcome::{Code, Settlement};
use crate::request::{Internal, LimitsArg, Op, Request, Step, VelocityArg};

/// Bytes of a record's header (see `docs/wal-format.md`).
pub const HEADER_BYTES: usize = 17;
/// Largest encoded record, padded: a settle's close is 122 bytes (a
/// `set_limits` with every field 84).
pub const RECORD_BYTES_MAX: usize = 128;
/// Every record starts at a multiple of this many bytes.
pub const ALIGN: usize = 8;

/// The kind of a record, its byte in the header.
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
    /// A [`Kind::Request`] record.
    Request {
        /// The request as it was applied.
        request: Request,
        /// The result it got; replay must give it again.
        code: Code,
    },
    /// A [`Kind::Tick`] record.
    Tick {
        /// The new engine time, ms.
        now_ms: u64,
    },
    /// A [`Kind::Group`] record.
    Group {
        /// The highest LSN on stable storage when the group began.
        durable_lsn: u64,
    },
}

/// `len` rounded up to a multiple of [`ALIGN`]: the room a record takes.
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

/// The room one record may take where it is written: what the writer
/// reserves per record ([`RECORD_BYTES_MAX`] bytes).
pub type Room = [u8; RECORD_BYTES_MAX];

/// Encodes one record at the start of `room` (the mapped segment, where
/// the writer appends); returns its padded size. Writes that many bytes and
/// no others: the fields with fixed-size stores, the zero padding, then the
/// CRC, computed once over the bytes written. Nothing grows and nothing is
/// copied afterwards.
pub fn encode_into(room: &mut Room, lsn: u64, record: &Record) -> usize {
    match record {
        Record::Request { request, code } => encode_request_into(room, lsn, request, *code),
        Record::Tick { now_ms } => {
            let mut put = Put::frame(room, lsn, Kind::Tick);
            put.u64(*now_ms);
            put.finish()
        }
        Record::Group { durable_lsn } => {
            let mut put = Put::frame(room, lsn, Kind::Group);
            put.u64(*durable_lsn);
            put.finish()
        }
    }
}

/// Encodes the `Request` record of `request` answered `code`: what
/// [`encode_into`] writes for a `Record::Request`, with no `Record` to
/// build (the worker's requests are not cloned into one to be logged).
pub fn encode_request_into(room: &mut Room, lsn: u64, request: &Request, code: Code) -> usize {
    let mut put = Put::frame(room, lsn, Kind::Request);
    put.u8(code as u8);
    put.request(request);
    put.finish()
}

/// Encodes one record into `out` (cleared first); returns its padded size.
/// The same bytes as [`encode_into`], for callers that want them on their
/// own (the log itself encodes in place).
pub fn encode(out: &mut Vec<u8>, lsn: u64, record: &Record) -> usize {
    let mut room = [0; RECORD_BYTES_MAX];
    let size = encode_into(&mut room, lsn, record);
    out.clear();
    out.extend_from_slice(&room[..size]);
    size
}

/// The `crc` field of a record: CRC-32C of its bytes `[4, len)`.
fn checksum(record: &[u8]) -> u32 {
    crc32c_short(&record[4..])
}

/// CRC-32C (Castagnoli, initial value 0: what `crc32c::crc32c` returns)
/// of a few bytes, as a record has. The crate's function is made for long
/// buffers (aligned head and tail a byte at a time, three interleaved
/// streams): about 180 instructions for a 42-byte debit. Here, with SSE
/// 4.2, one `crc32` instruction per 8 bytes, then 4, 2, 1: 6 for a debit.
/// Without it, the crate's.
fn crc32c_short(bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        #[allow(unsafe_code)]
        // SAFETY: calling a `#[target_feature]` function is sound when the
        // CPU running it has the features it enables. `crc32c_sse42`
        // enables only `sse4.2`, which the line above detected on this CPU
        // (at run time, the detection the crc32c crate also relies on).
        // The function itself has no other precondition: it reads `bytes`
        // through safe slice operations only.
        return unsafe { crc32c_sse42(bytes) };
    }
    crc32c::crc32c(bytes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc32c_sse42(bytes: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};
    // The instruction computes the reflected CRC without the final
    // inversion; starting from !0 and inverting at the end gives CRC-32C
    // with initial value 0, as the crate does.
    let crc = |bytes: &[u8]| {
        let mut words = bytes.chunks_exact(8);
        let mut crc = u64::from(u32::MAX);
        for word in &mut words {
            crc = _mm_crc32_u64(crc, u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        let mut crc = crc as u32;
        let mut rest = words.remainder();
        if let Some((four, tail)) = rest.split_first_chunk::<4>() {
            crc = _mm_crc32_u32(crc, u32::from_le_bytes(*four));
            rest = tail;
        }
        if let Some((two, tail)) = rest.split_first_chunk::<2>() {
            crc = _mm_crc32_u16(crc, u16::from_le_bytes(*two));
            rest = tail;
        }
        if let Some(&one) = rest.first() {
            crc = _mm_crc32_u8(crc, one);
        }
        !crc
    };
    // The records written most, with their length known here: the loop
    // and the tail's tests unroll to straight `crc32` instructions.
    const GROUP_TICK: usize = 25 - 4;
    const DEBIT: usize = 46 - 4; // and deposit, both with a decimal amount
    match bytes.len() {
        DEBIT => crc(&bytes[..DEBIT]),
        GROUP_TICK => crc(&bytes[..GROUP_TICK]),
        _ => crc(bytes),
    }
}

/// What is at one offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole, checksummed record, and its padded size.
    Valid {
        /// The record's log sequence number.
        lsn: u64,
        /// What it says.
        record: Record,
        /// Bytes it takes, padding included: the next record starts there.
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

/// Writes fields one after the other into a record's room. Every write is
/// a fixed-size store at an offset that, inlined into one arm of
/// [`encode_into`], is a constant: no length, capacity or growth checks
/// per field.
struct Put<'a> {
    room: &'a mut Room,
    at: usize,
}

impl<'a> Put<'a> {
    /// Starts a record: its LSN and kind (`crc` and `len` come last).
    #[inline(always)]
    fn frame(room: &'a mut Room, lsn: u64, kind: Kind) -> Put<'a> {
        let mut put = Put { room, at: 8 };
        put.u64(lsn);
        put.u8(kind as u8);
        put
    }

    /// Ends the record where the fields end: zero padding, `len`, then
    /// the `crc` over the bytes as written. Returns the padded size.
    #[inline(always)]
    fn finish(self) -> usize {
        let Put { room, at: len } = self;
        debug_assert!((HEADER_BYTES..=RECORD_BYTES_MAX).contains(&len));
        let size = padded(len);
        // Padding: what follows `len` in the record's last 8-byte word
        // becomes zeros (one masked word, whatever the room held there).
        let last = size - ALIGN;
        let word = u64::from_le_bytes(room[last..size].try_into().expect("8 bytes"));
        let kept_bits = (len - last) * 8; // 8..=64: `len` is in the last word
        let word = word & (u64::MAX >> (64 - kept_bits));
        room[last..size].copy_from_slice(&word.to_le_bytes());
        room[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        let crc = checksum(&room[..len]);
        room[0..4].copy_from_slice(&crc.to_le_bytes());
        size
    }

    #[inline(always)]
    fn u8(&mut self, v: u8) {
        self.room[self.at] = v;
        self.at += 1;
    }

    #[inline(always)]
    fn u32(&mut self, v: u32) {
        self.room[self.at..self.at + 4].copy_from_slice(&v.to_le_bytes());
        self.at += 4;
    }

    #[inline(always)]
    fn u64(&mut self, v: u64) {
        self.room[self.at..self.at + 8].copy_from_slice(&v.to_le_bytes());
        self.at += 8;
    }

    #[inline(always)]
    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
        }
    }

    #[inline(always)]
    fn amount(&mut self, amount: Option<AmountArg>) {
        match amount {
            None => self.u8(0),
            Some(AmountArg::Decimal {
                mantissa,
                scale,
                digits,
            }) => {
                self.u8(1);
                self.u64(mantissa);
                self.u8(scale as u8);
                self.u8(digits);
            }
            Some(AmountArg::Invalid { fingerprint }) => {
                self.u8(2);
                self.u64(fingerprint);
            }
        }
    }

    /// The binary form of a request: its op, then its fields in
    /// declaration order.
    #[inline(always)]
    fn request(&mut self, request: &Request) {
        let op_at = self.at;
        self.u8(request.op() as u8);
        match *request {
            Request::OpenAccount {
                account,
                currency,
                overdraft,
                history,
            } => {
                self.u64(account);
                self.u8(currency.map_or(u8::MAX, |c| c as u8));
                self.amount(overdraft);
                if history {
                    self.room[op_at] |= HISTORY_FLAG;
                }
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
                merchant: None,
            } => {
                self.u64(id);
                self.u64(account);
                self.amount(Some(amount));
            }
            Request::Debit {
                id,
                account,
                amount,
                merchant: Some(merchant),
            } => {
                self.u64(id);
                self.u64(account);
                self.amount(Some(amount));
                self.merchant(op_at, merchant);
            }
            Request::Authorize {
                id,
                account,
                amount,
                expires_in_ms,
                merchant,
            } => {
                self.u64(id);
                self.u64(account);
                self.amount(Some(amount));
                self.opt_u64(expires_in_ms);
                if let Some(merchant) = merchant {
                    self.merchant(op_at, merchant);
                }
            }
            Request::Increment {
                id,
                account,
                auth,
                amount,
                expires_in_ms,
            } => {
                self.u64(id);
                self.u64(account);
                self.u64(auth);
                self.amount(Some(amount));
                self.opt_u64(expires_in_ms);
            }
            Request::Capture {
                id,
                account,
                auth,
                amount,
                is_final,
            } => {
                self.u64(id);
                self.u64(account);
                self.u64(auth);
                self.amount(amount);
                self.u8(u8::from(is_final));
            }
            Request::Void { id, account, auth } => {
                self.u64(id);
                self.u64(account);
                self.u64(auth);
            }
            Request::Refund {
                id,
                account,
                of,
                amount,
            } => {
                self.u64(id);
                self.u64(account);
                self.u64(of);
                self.amount(amount);
            }
            Request::SetLimits {
                account,
                ref limits,
            } => {
                self.u64(account);
                self.amount(limits.per_txn);
                self.amount(limits.daily);
                self.amount(limits.review_above);
                match limits.velocity {
                    None => self.u8(0),
                    Some(v) => {
                        self.u8(1);
                        self.u32(v.max);
                        self.u64(v.window_ms);
                        self.amount(Some(v.below));
                    }
                }
            }
            Request::Freeze { account }
            | Request::Unfreeze { account }
            | Request::Balance { account } => self.u64(account),
            Request::Status { account, id } => {
                self.u64(account);
                self.u64(id);
            }
            Request::AdvanceClock { ms } => self.u64(ms),
            Request::OpenMerchant {
                merchant,
                currency,
                fee_bps,
            } => {
                self.u64(merchant);
                self.u8(currency.map_or(u8::MAX, |c| c as u8));
                self.opt_u64(fee_bps.map(u64::from));
            }
            Request::Merchant { merchant } => self.u64(merchant),
            Request::QueueDebit {
                id,
                account,
                amount,
                merchant,
            } => {
                self.u64(id);
                self.u64(account);
                self.amount(Some(amount));
                if let Some(merchant) = merchant {
                    self.merchant(op_at, merchant);
                }
            }
            Request::RunBatch => self.opt_u64(None),
            Request::Settle { id, merchant } => {
                self.u8(SETTLE_CUT);
                self.u64(id);
                self.u64(merchant);
            }
            Request::Internal(Internal(ref step)) => match **step {
                Step::RunBatchAt { at_ms } => self.opt_u64(Some(at_ms)),
                Step::SettleClose {
                    merchant,
                    id,
                    code,
                    ref figures,
                } => {
                    self.u8(SETTLE_CLOSE);
                    self.u64(id);
                    self.u64(merchant);
                    self.u8(code as u8);
                    self.u8(figures.currency as u8);
                    self.u32(u32::from(figures.fee_bps));
                    self.u64(figures.batch);
                    self.u64(figures.count);
                    for v in [figures.gross, figures.refunded, figures.fee, figures.net] {
                        self.i128(v);
                    }
                }
            },
            Request::CloseAccount { account } => self.u64(account),
            Request::History {
                account,
                limit,
                before,
            } => {
                self.u64(account);
                self.opt_u64(limit.map(u64::from));
                self.opt_u64(before);
            }
        }
    }

    fn i128(&mut self, v: i128) {
        self.u64(v as u64);
        self.u64((v >> 64) as u64);
    }

    /// The merchant a debit or authorize names, after its other fields,
    /// flagged in its op byte at `op_at`.
    #[inline(always)]
    fn merchant(&mut self, op_at: usize, merchant: u64) {
        self.room[op_at] |= MERCHANT_FOLLOWS;
        self.u64(merchant);
    }
}

/// Bit 7 of a request's op byte: the merchant id it names follows its
/// fields (debit, authorize, queue_debit; a log from before merchants never
/// sets it).
const MERCHANT_FOLLOWS: u8 = 0x80;

/// The first byte of a `settle` record's fields: its first step (the cut,
/// as the user sent it) or the engine's second (the close).
const SETTLE_CUT: u8 = 0;
const SETTLE_CLOSE: u8 = 1;
/// Bit 6 of an `open_account`'s op byte: the account keeps a statement
/// (`"history": true`). No other op sets it; a log from before statements
/// never does.
const HISTORY_FLAG: u8 = 0x40;

/// The merchant a debit or authorize names (the reference encoder's).
#[cfg(test)]
fn request_merchant(request: &Request) -> Option<u64> {
    match *request {
        Request::Debit { merchant, .. }
        | Request::Authorize { merchant, .. }
        | Request::QueueDebit { merchant, .. } => merchant,
        _ => None,
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
    fn i128(&mut self) -> Option<i128> {
        let low = self.u64()?;
        let high = self.u64()?;
        Some(i128::from(low) | (i128::from(high as i64) << 64))
    }
}

/// Reads back a request's binary form (a `Request` record's payload after
/// its result byte).
pub fn decode_request_bytes(bytes: &[u8]) -> Option<Request> {
    let mut r = Reader { bytes };
    let request = decode_request(&mut r)?;
    r.bytes.is_empty().then_some(request)
}

fn decode_request(r: &mut Reader<'_>) -> Option<Request> {
    let byte = r.u8()?;
    let op = *Op::ALL.get(usize::from(byte & !(MERCHANT_FOLLOWS | HISTORY_FLAG)))?;
    let mut request = decode_fields(op, r)?;
    if byte & HISTORY_FLAG != 0 {
        match &mut request {
            Request::OpenAccount { history, .. } => *history = true,
            _ => return None,
        }
    }
    if byte & MERCHANT_FOLLOWS != 0 {
        let named = r.u64()?;
        match &mut request {
            Request::Debit { merchant, .. }
            | Request::Authorize { merchant, .. }
            | Request::QueueDebit { merchant, .. } => {
                *merchant = Some(named);
            }
            _ => return None,
        }
    }
    Some(request)
}

fn decode_fields(op: Op, r: &mut Reader<'_>) -> Option<Request> {
    Some(match op {
        Op::OpenAccount => Request::OpenAccount {
            account: r.u64()?,
            currency: match r.u8()? {
                u8::MAX => None,
                c => Some(*Currency::ALL.get(usize::from(c))?),
            },
            overdraft: r.amount()?,
            history: false,
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
            merchant: None,
        },
        Op::Authorize => Request::Authorize {
            id: r.u64()?,
            account: r.u64()?,
            amount: r.required_amount()?,
            expires_in_ms: r.opt_u64()?,
            merchant: None,
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
        Op::OpenMerchant => Request::OpenMerchant {
            merchant: r.u64()?,
            currency: match r.u8()? {
                u8::MAX => None,
                c => Some(*Currency::ALL.get(usize::from(c))?),
            },
            fee_bps: match r.opt_u64()? {
                None => None,
                Some(bps) => Some(u16::try_from(bps).ok()?),
            },
        },
        Op::Merchant => Request::Merchant { merchant: r.u64()? },
        Op::QueueDebit => Request::QueueDebit {
            id: r.u64()?,
            account: r.u64()?,
            amount: r.required_amount()?,
            merchant: None,
        },
        Op::RunBatch => match r.opt_u64()? {
            None => Request::RunBatch,
            Some(at_ms) => Request::run_batch_at(at_ms),
        },
        Op::Settle => match r.u8()? {
            SETTLE_CUT => Request::Settle {
                id: r.u64()?,
                merchant: r.u64()?,
            },
            SETTLE_CLOSE => {
                let id = r.u64()?;
                let merchant = r.u64()?;
                let code = *Code::ALL.get(usize::from(r.u8()?))?;
                let currency = *Currency::ALL.get(usize::from(r.u8()?))?;
                let fee_bps = u16::try_from(r.u32()?).ok()?;
                let figures = Settlement {
                    currency,
                    fee_bps,
                    batch: r.u64()?,
                    count: r.u64()?,
                    gross: r.i128()?,
                    refunded: r.i128()?,
                    fee: r.i128()?,
                    net: r.i128()?,
                };
                Request::settle_close(merchant, id, code, figures)
            }
            _ => return None,
        },
        Op::CloseAccount => Request::CloseAccount { account: r.u64()? },
        Op::History => Request::History {
            account: r.u64()?,
            limit: match r.opt_u64()? {
                None => None,
                Some(limit) => Some(u16::try_from(limit).ok()?),
            },
            before: r.opt_u64()?,
        },
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
                history: false,
            },
            Request::OpenAccount {
                account: 0,
                currency: None,
                overdraft: None,
                history: false,
            },
            Request::OpenAccount {
                account: 9,
                currency: Some(Currency::EUR),
                overdraft: Some(a),
                history: true,
            },
            Request::CloseAccount { account: u64::MAX },
            Request::History {
                account: 3,
                limit: None,
                before: None,
            },
            Request::History {
                account: 3,
                limit: Some(1000),
                before: Some(u64::MAX),
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
                merchant: None,
            },
            Request::Authorize {
                id: 5,
                account: 6,
                amount: a,
                expires_in_ms: Some(10),
                merchant: None,
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
            Request::RunBatch,
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
                    merchant: None,
                },
                code: Code::Ok,
            },
        );
        assert_eq!(size, 48);
    }

    /// The encoder as it was before records were encoded in place (a
    /// `Vec` grown field by field, then the CRC), kept verbatim as the
    /// reference the in-place encoder must match byte for byte.
    mod before {
        use super::super::*;

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
            out[4..8].copy_from_slice(&(len as u32).to_le_bytes());
            let crc = crc32c::crc32c(&out[4..]);
            out[0..4].copy_from_slice(&crc.to_le_bytes());
            out.resize(padded(len), 0);
            out.len()
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

        fn encode_request(out: &mut Vec<u8>, request: &Request) {
            let merchant = request_merchant(request);
            out.push(
                request.op() as u8
                    | if merchant.is_some() {
                        MERCHANT_FOLLOWS
                    } else {
                        0
                    },
            );
            let op_at = out.len() - 1;
            match *request {
                Request::OpenAccount {
                    account,
                    currency,
                    overdraft,
                    history,
                } => {
                    if history {
                        out[op_at] |= HISTORY_FLAG;
                    }
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
                    ..
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
                    ..
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
                Request::OpenMerchant {
                    merchant,
                    currency,
                    fee_bps,
                } => {
                    put_u64(out, merchant);
                    out.push(currency.map_or(u8::MAX, |c| c as u8));
                    put_opt_u64(out, fee_bps.map(u64::from));
                }
                Request::Merchant { merchant } => put_u64(out, merchant),
                Request::QueueDebit {
                    id,
                    account,
                    amount,
                    ..
                } => {
                    put_u64(out, id);
                    put_u64(out, account);
                    put_amount(out, Some(amount));
                }
                Request::RunBatch => put_opt_u64(out, None),
                Request::Settle { id, merchant } => {
                    out.push(0);
                    put_u64(out, id);
                    put_u64(out, merchant);
                }
                Request::Internal(Internal(ref step)) => match **step {
                    Step::RunBatchAt { at_ms } => put_opt_u64(out, Some(at_ms)),
                    Step::SettleClose {
                        merchant,
                        id,
                        code,
                        ref figures,
                    } => {
                        out.push(1);
                        put_u64(out, id);
                        put_u64(out, merchant);
                        out.push(code as u8);
                        out.push(figures.currency as u8);
                        out.extend_from_slice(&u32::from(figures.fee_bps).to_le_bytes());
                        put_u64(out, figures.batch);
                        put_u64(out, figures.count);
                        for v in [figures.gross, figures.refunded, figures.fee, figures.net] {
                            out.extend_from_slice(&v.to_le_bytes());
                        }
                    }
                },
                Request::CloseAccount { account } => put_u64(out, account),
                Request::History {
                    account,
                    limit,
                    before,
                } => {
                    put_u64(out, account);
                    put_opt_u64(out, limit.map(u64::from));
                    put_opt_u64(out, before);
                }
            }
            if let Some(merchant) = merchant {
                put_u64(out, merchant);
            }
        }
    }

    /// Every record kind, every request variant, and every form of each
    /// field: amounts omitted, decimal (zero, short, the largest) and
    /// invalid; optional numbers omitted and present; both flags; limits
    /// empty and full; an unsupported currency; extreme ids.
    fn every_record() -> Vec<Record> {
        let amounts = [
            AmountArg::parse("1.00"),
            AmountArg::parse("0"),
            AmountArg::parse("12.345"),
            AmountArg::parse("9999999999999999999"),
            AmountArg::parse("x"),
        ];
        let options = || std::iter::once(None).chain(amounts.iter().copied().map(Some));
        let mut requests = samples();
        for (i, &amount) in amounts.iter().enumerate() {
            let (id, account, auth) = (u64::MAX - i as u64, 1 << (8 * i), 0x0102_0304_0506_0708);
            let expiry = [None, Some(0), Some(10_000_000_000_000)][i % 3];
            requests.extend([
                Request::Deposit {
                    id,
                    account,
                    amount,
                },
                Request::Debit {
                    id,
                    account,
                    amount,
                    merchant: None,
                },
                Request::Debit {
                    id,
                    account,
                    amount,
                    merchant: Some(u64::MAX - id),
                },
                Request::Authorize {
                    id,
                    account,
                    amount,
                    expires_in_ms: expiry,
                    merchant: None,
                },
                Request::Authorize {
                    id,
                    account,
                    amount,
                    expires_in_ms: expiry,
                    merchant: Some(i as u64),
                },
                Request::OpenMerchant {
                    merchant: id,
                    currency: [None, Some(Currency::JPY)][i % 2],
                    fee_bps: [None, Some(0), Some(10_000)][i % 3],
                },
                Request::Merchant { merchant: id },
                Request::QueueDebit {
                    id,
                    account,
                    amount,
                    merchant: [None, Some(id)][i % 2],
                },
                Request::Settle {
                    id,
                    merchant: account,
                },
                Request::run_batch_at(id),
                Request::settle_close(
                    account,
                    id,
                    [Code::Ok, Code::NothingToSettle][i % 2],
                    Settlement {
                        currency: Currency::ALL[i % Currency::ALL.len()],
                        fee_bps: [0, 1, 10_000][i % 3],
                        batch: id,
                        count: account,
                        gross: i128::MAX - i as i128,
                        refunded: 1 << (10 * i),
                        fee: i128::from(id),
                        net: i128::MIN + i as i128,
                    },
                ),
                Request::Increment {
                    id,
                    account,
                    auth,
                    amount,
                    expires_in_ms: expiry,
                },
                Request::SetLimits {
                    account,
                    limits: Box::new(LimitsArg {
                        per_txn: None,
                        daily: Some(amount),
                        review_above: None,
                        velocity: Some(VelocityArg {
                            max: u32::MAX - i as u32,
                            window_ms: u64::MAX,
                            below: amount,
                        }),
                    }),
                },
            ]);
        }
        for (i, amount) in options().enumerate() {
            let (id, account, auth) = (i as u64, u64::MAX - i as u64, 77);
            requests.extend([
                Request::OpenAccount {
                    account,
                    currency: Currency::ALL.get(i).copied(),
                    overdraft: amount,
                    history: false,
                },
                Request::Capture {
                    id,
                    account,
                    auth,
                    amount,
                    is_final: i % 2 == 0,
                },
                Request::Refund {
                    id,
                    account,
                    of: auth,
                    amount,
                },
                Request::SetLimits {
                    account,
                    limits: Box::new(LimitsArg {
                        per_txn: amount,
                        daily: amount,
                        review_above: amount,
                        velocity: None,
                    }),
                },
            ]);
        }
        let full = |per_txn| LimitsArg {
            per_txn,
            daily: Some(amounts[2]),
            review_above: Some(amounts[0]),
            velocity: Some(VelocityArg {
                max: 1000,
                window_ms: 10_000_000_000_000,
                below: amounts[0],
            }),
        };
        requests.extend([
            // The largest record (84 bytes), and one of the few lengths
            // that are 2 more than a multiple of 8 (74).
            Request::SetLimits {
                account: 3,
                limits: Box::new(full(Some(amounts[1]))),
            },
            Request::SetLimits {
                account: 3,
                limits: Box::new(full(None)),
            },
            Request::Capture {
                id: 1,
                account: 2,
                auth: 3,
                amount: Some(amounts[0]),
                is_final: true,
            },
            Request::Balance { account: 5 },
            Request::Status {
                account: 5,
                id: u64::MAX,
            },
            Request::AdvanceClock { ms: u64::MAX },
        ]);
        for currency in Currency::ALL {
            requests.push(Request::OpenAccount {
                account: 9,
                currency: Some(currency),
                overdraft: None,
                history: false,
            });
        }
        let mut records: Vec<Record> = requests
            .into_iter()
            .zip(Code::ALL.iter().cycle())
            .map(|(request, &code)| Record::Request { request, code })
            .collect();
        for v in [0, 1, 0x8000_0000_0000_0001, u64::MAX] {
            records.push(Record::Tick { now_ms: v });
            records.push(Record::Group { durable_lsn: v });
        }
        records
    }

    #[test]
    fn in_place_encoding_writes_the_bytes_the_old_encoder_wrote() {
        let records = every_record();
        let mut lengths = std::collections::BTreeSet::new();
        for (i, record) in records.iter().enumerate() {
            for lsn in [1, i as u64 + 2, 0x0102_0304_0506_0708, u64::MAX] {
                let mut expected = Vec::new();
                let size = before::encode(&mut expected, lsn, record);
                lengths.insert(u32::from_le_bytes(expected[4..8].try_into().unwrap()));
                // In place, over a room holding garbage: only the record's
                // padded bytes change, and they are the old bytes.
                let mut room = [0xa5; RECORD_BYTES_MAX];
                assert_eq!(encode_into(&mut room, lsn, record), size, "{record:?}");
                assert_eq!(room[..size], expected[..], "{record:?} at LSN {lsn}");
                assert!(room[size..].iter().all(|&b| b == 0xa5), "{record:?}");
                let mut out = vec![1, 2, 3];
                assert_eq!(encode(&mut out, lsn, record), size);
                assert_eq!(out, expected, "{record:?} at LSN {lsn}");
                if let Record::Request { request, code } = record {
                    let mut room = [0x5a; RECORD_BYTES_MAX];
                    assert_eq!(encode_request_into(&mut room, lsn, request, *code), size);
                    assert_eq!(room[..size], expected[..], "{record:?} at LSN {lsn}");
                    assert!(room[size..].iter().all(|&b| b == 0x5a), "{record:?}");
                }
            }
        }
        // Every padding (0 to 7 bytes) and the largest record were seen.
        let pads: std::collections::BTreeSet<u32> = lengths.iter().map(|l| l % 8).collect();
        assert_eq!(pads.len(), 8, "lengths seen: {lengths:?}");
        assert_eq!(lengths.last(), Some(&122));
    }

    /// `docs/wal-format.md`'s example, byte for byte (and a group and a
    /// tick record): written down here, not computed by either encoder.
    #[test]
    fn the_documented_debit_record_is_written_as_documented() {
        let debit = Record::Request {
            request: Request::Debit {
                id: 1,
                account: 2,
                amount: AmountArg::parse("1.00"),
                merchant: None,
            },
            code: Code::Ok,
        };
        #[rustfmt::skip]
        let expected: [u8; 48] = [
            0x26, 0xcb, 0x38, 0xd0,                         // crc
            0x2e, 0x00, 0x00, 0x00,                         // len 46
            0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // lsn 7
            0x01,                                           // kind Request
            0x00,                                           // result ok
            0x02,                                           // op debit
            0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // id 1
            0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // account 2
            0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, // 1.00
            0x00, 0x00,                                     // padding
        ];
        #[rustfmt::skip]
        let group: [u8; 32] = [
            0x00, 0x00, 0x00, 0x00, 0x19, 0x00, 0x00, 0x00, // crc, len 25
            0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // lsn 8
            0x03,                                           // kind Group
            0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // durable_lsn 6
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,       // padding
        ];
        #[rustfmt::skip]
        let tick: [u8; 32] = [
            0x00, 0x00, 0x00, 0x00, 0x19, 0x00, 0x00, 0x00, // crc, len 25
            0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // lsn 9
            0x02,                                           // kind Tick
            0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // now_ms 1_700_000_000_000
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,       // padding
        ];
        let mut room = [0xff; RECORD_BYTES_MAX];
        assert_eq!(encode_into(&mut room, 7, &debit), 48);
        assert_eq!(room[..48], expected);
        // The CRC above is the crc32c crate's, initial value 0.
        assert_eq!(
            crc32c::crc32c(&expected[4..46]).to_le_bytes(),
            expected[..4]
        );
        for (lsn, record, bytes) in [
            (8, Record::Group { durable_lsn: 6 }, group),
            (
                9,
                Record::Tick {
                    now_ms: 1_700_000_000_000,
                },
                tick,
            ),
        ] {
            assert_eq!(encode_into(&mut room, lsn, &record), 32);
            assert_eq!(room[4..32], bytes[4..], "{record:?}");
            assert_eq!(room[..4], crc32c::crc32c(&bytes[4..25]).to_le_bytes());
        }
    }

    /// The short-input CRC agrees with the crc32c crate at every length a
    /// record has (and more), at every alignment.
    #[test]
    fn the_short_crc_is_the_crates_crc32c() {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let bytes: Vec<u8> = (0..RECORD_BYTES_MAX + 16)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for start in 0..8 {
            for len in 0..=RECORD_BYTES_MAX + 8 {
                let part = &bytes[start..start + len];
                assert_eq!(crc32c_short(part), crc32c::crc32c(part), "{start}+{len}");
            }
        }
        assert_eq!(crc32c_short(b"123456789"), 0xe306_9283, "the check value");
    }
}
