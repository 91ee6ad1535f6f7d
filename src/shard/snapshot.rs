//! Snapshots of a shard's tables, and reading them back.

use super::*;
use crate::outcome::Settlement;

/// The format of [`Shard::encode_snapshot`]'s bytes, their first word.
/// 1: the first format, whose bodies had no version word (`wal::snapshot`
/// hands a `DCSNAP01` file's body back behind a 1): 40-byte keys with an
/// amount and a fingerprint each. 2: 24-byte keys (`KeyRecord::to_words`),
/// and ok captures' amounts in a table of their own. 3: holds carry their
/// merchant; then merchants and where clearings went; and, last, the
/// number of requests every shard sees (`Shard::broadcasts`) applied.
/// 4: then merchants' cuts waiting for their settle's close, settle keys,
/// and the queued debits; then, last, the flags of closed accounts and of
/// those with history (slot, flags, for every account with any), and the
/// statements (slot, first seq, entries). All four are read.
pub(crate) const SNAPSHOT_VERSION: u64 = 4;

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
            w.u64(u64::from(h.merchant.is_some()));
            w.u64(h.merchant.unwrap_or(0));
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
        w.u64(self.merchants.len() as u64);
        // In index order: a merchant debit's key names its merchant by it.
        for m in &self.merchants {
            w.u64(m.id);
            w.u64(m.currency as u64);
            w.u64(u64::from(m.fee_bps));
            w.u64(m.part.count);
            for v in [m.part.gross, m.part.refunded, m.settled_net, m.fees] {
                w.0.extend_from_slice(&v.to_le_bytes());
            }
            w.u64(m.batches);
        }
        w.u64(self.cleared_to.len() as u64);
        for (&(slot, id), &merchant) in &self.cleared_to {
            w.u64(u64::from(slot));
            w.u64(id);
            w.u64(merchant);
        }
        w.u64(self.broadcasts);
        let cuts: Vec<_> = self
            .merchants
            .iter()
            .filter_map(|merchant| merchant.cut.as_deref().map(|&cut| (merchant.id, cut)))
            .collect();
        w.u64(cuts.len() as u64);
        for (merchant, (id, part)) in cuts {
            w.u64(merchant);
            w.u64(id);
            w.u64(part.count);
            w.i128(part.gross);
            w.i128(part.refunded);
        }
        w.u64(self.settles.len() as u64);
        for (&(merchant, id), key) in &self.settles {
            let f = &key.figures;
            w.u64(merchant);
            w.u64(id);
            w.u64(key.code as u64);
            w.u64(key.generation);
            w.u64(f.currency as u64);
            w.u64(u64::from(f.fee_bps));
            w.u64(f.batch);
            w.u64(f.count);
            for v in [f.gross, f.refunded, f.fee, f.net] {
                w.i128(v);
            }
        }
        w.u64(self.queued.len() as u64);
        for q in &self.queued {
            w.u64(q.id);
            w.i64(q.minor);
            w.u64(q.merchant);
            w.u64(u64::from(q.slot));
            w.u64(u64::from(q.has_merchant));
        }
        let flagged: Vec<(usize, u8)> = self
            .accounts
            .iter()
            .enumerate()
            .filter(|(_, a)| a.flags != 0)
            .map(|(slot, a)| (slot, a.flags))
            .collect();
        w.u64(flagged.len() as u64);
        for (slot, flags) in flagged {
            w.u64(slot as u64);
            w.u64(u64::from(flags));
        }
        let mut slots: Vec<u32> = self.histories.keys().copied().collect();
        slots.sort_unstable();
        w.u64(slots.len() as u64);
        for slot in slots {
            let h = &self.histories[&slot];
            w.u64(u64::from(slot));
            w.u64(h.first_seq);
            w.u64(h.entries.len() as u64);
            for e in &h.entries {
                w.u64(e.id);
                w.u64(e.time);
                w.i64(e.amount);
                w.i64(e.balance);
                w.u64(e.merchant);
                w.u64(
                    u64::from(e.op as u8)
                        | u64::from(e.result as u8) << 8
                        | u64::from(e.flags) << 16,
                );
            }
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
        if !(1..=SNAPSHOT_VERSION).contains(&version) {
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
                flags: 0,
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
        let holds = r.len(if version >= 3 { 72 } else { 56 })?;
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
                merchant: None,
            };
            let hold = if version >= 3 {
                let (named, merchant) = (r.u64()?, r.u64()?);
                Hold {
                    merchant: match named {
                        0 => None,
                        1 => Some(merchant),
                        _ => return None,
                    },
                    ..hold
                }
            } else {
                hold
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
        // Before version 3 there were no merchants, and nothing counted
        // broadcasts (and no data directory had a broadcast log to
        // complete them from).
        if version >= 3 {
            for _ in 0..r.len(104)? {
                let id = r.u64()?;
                let currency = *Currency::ALL.get(usize::try_from(r.u64()?).ok()?)?;
                let fee_bps = u16::try_from(r.u64()?).ok().filter(|&f| f <= FEE_BPS_MAX)?;
                let count = r.u64()?;
                let [gross, refunded, settled_net, fees] =
                    [r.i128()?, r.i128()?, r.i128()?, r.i128()?];
                let merchant = Merchant {
                    id,
                    currency,
                    fee_bps,
                    part: merchants::Part {
                        count,
                        gross,
                        refunded,
                    },
                    batches: r.u64()?,
                    settled_net,
                    fees,
                    cut: None,
                };
                let index = u32::try_from(shard.merchants.len()).ok()?;
                if shard.merchant_slot(id).is_some() {
                    return None;
                }
                shard.merchant_index.insert(id, index);
                shard.merchants.push(merchant);
            }
            for _ in 0..r.len(24)? {
                let key = (u32::try_from(r.u64()?).ok()?, r.u64()?);
                if shard.cleared_to.insert(key, r.u64()?).is_some() {
                    return None;
                }
            }
            shard.broadcasts = r.u64()?;
        }
        if version >= 4 {
            for _ in 0..r.len(56)? {
                let (merchant, id) = (r.u64()?, r.u64()?);
                let part = merchants::Part {
                    count: r.u64()?,
                    gross: r.i128()?,
                    refunded: r.i128()?,
                };
                let m = shard.merchant_mut(merchant)?;
                if m.cut.replace(Box::new((id, part))).is_some() {
                    return None;
                }
            }
            for _ in 0..r.len(128)? {
                let key = (r.u64()?, r.u64()?);
                let code = *Code::ALL.get(usize::try_from(r.u64()?).ok()?)?;
                let generation = r.u64()?;
                let figures = Settlement {
                    currency: *Currency::ALL.get(usize::try_from(r.u64()?).ok()?)?,
                    fee_bps: u16::try_from(r.u64()?).ok()?,
                    batch: r.u64()?,
                    count: r.u64()?,
                    gross: r.i128()?,
                    refunded: r.i128()?,
                    fee: r.i128()?,
                    net: r.i128()?,
                };
                let settled = SettleKey {
                    code,
                    figures,
                    generation,
                };
                if shard.settles.insert(key, settled).is_some() {
                    return None;
                }
            }
            for _ in 0..r.len(40)? {
                let q = QueuedDebit {
                    id: r.u64()?,
                    minor: r.i64()?,
                    merchant: r.u64()?,
                    slot: u32::try_from(r.u64()?).ok()?,
                    has_merchant: match r.u64()? {
                        0 => false,
                        1 => true,
                        _ => return None,
                    },
                };
                let waiting = shard
                    .keys
                    .get(q.slot, q.id)
                    .is_some_and(|k| k.code == Code::Queued as u8);
                if q.minor <= 0 || !waiting {
                    return None;
                }
                *shard.queued_per_slot.entry(q.slot).or_insert(0) += 1;
                shard.queued.push(q);
            }
        }
        // Before version 4 no account was closed or kept a statement.
        if version >= 4 {
            for _ in 0..r.len(16)? {
                let slot = usize::try_from(r.u64()?).ok()?;
                let flags = u8::try_from(r.u64()?).ok()?;
                if slot == 0 || flags == 0 || flags & !(CLOSED | HISTORY) != 0 {
                    return None;
                }
                let account = shard.accounts.get_mut(slot)?;
                if account.flags != 0 {
                    return None;
                }
                account.flags = flags;
            }
            for _ in 0..r.len(24)? {
                let slot = u32::try_from(r.u64()?).ok()?;
                let first_seq = r.u64()?;
                let kept = r.len(48)?;
                let mut entries = VecDeque::with_capacity(kept);
                for _ in 0..kept {
                    let (id, time, amount, balance, merchant) =
                        (r.u64()?, r.u64()?, r.i64()?, r.i64()?, r.u64()?);
                    let packed = r.u64()?;
                    if packed >> 24 != 0 {
                        return None;
                    }
                    let flags = (packed >> 16) as u8;
                    if flags & !(history::HAS_AMOUNT | history::HAS_MERCHANT) != 0 {
                        return None;
                    }
                    entries.push_back(history::Entry {
                        id,
                        time,
                        amount,
                        balance,
                        merchant,
                        op: *Op::ALL.get(usize::from(packed as u8))?,
                        result: *Code::ALL.get(usize::from((packed >> 8) as u8))?,
                        flags,
                    });
                }
                shard.history_entries += entries.len();
                shard.history_capacity += entries.capacity();
                let history = History { first_seq, entries };
                if shard.histories.insert(slot, history).is_some() {
                    return None;
                }
            }
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
        let merchants = shard.merchants.len();
        let keys_ok = shard.keys.records().all(|k| {
            if let Payload::Cleared { merchant, .. } = k.payload() {
                let debit = k.op() == Op::Debit as u8 || k.op() == Op::QueueDebit as u8;
                return debit && (merchant as usize) < merchants;
            }
            let by_amount = k.op() == Op::Deposit as u8
                || k.op() == Op::Debit as u8
                || k.op() == Op::QueueDebit as u8;
            let refundable = k.op() == Op::Debit as u8
                || k.op() == Op::Capture as u8
                || k.op() == Op::QueueDebit as u8;
            (by_amount || matches!(k.payload(), Payload::Fingerprint(_)))
                && (k.code != Code::Ok as u8 || !refundable || shard.moved_by(k).is_some())
        });
        (ext_ok && keys_ok && shard.check_invariants().is_ok()).then_some(shard)
    }
}

pub(super) struct Writer<'a>(pub(super) &'a mut Vec<u8>);

impl Writer<'_> {
    pub(super) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn i128(&mut self, v: i128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn opt_i64(&mut self, v: Option<i64>) {
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
    fn i128(&mut self) -> Option<i128> {
        Some(i128::from_le_bytes(self.take(16)?.try_into().ok()?))
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
