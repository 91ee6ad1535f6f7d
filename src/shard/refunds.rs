//! Refunds: what an original moved, and how much of it is still
//! refundable.

use super::*;

impl Shard {
    pub(super) fn refund(
        &mut self,
        slot: u32,
        of: TxnId,
        amount: Option<AmountArg>,
    ) -> (Code, i64) {
        let original = match self.keys.get(slot, of) {
            Some(r) if is_refundable_op(r.op()) && r.code == Code::Ok as u8 => *r,
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
        self.charge_back(&original, minor);
        (Code::Ok, 0)
    }

    /// What the ok debit or capture of `record` moved: the amount its
    /// record holds (a debit's), else the one kept beside it (a capture's).
    /// `None` would be a broken invariant (`check_invariants` looks).
    pub(super) fn moved_by(&self, record: &KeyRecord) -> Option<i64> {
        debug_assert_eq!(record.code, Code::Ok as u8);
        let moved = match record.payload() {
            Payload::Minor(minor) | Payload::Cleared { minor, .. } => Some(minor),
            Payload::Fingerprint(_) => self.capture_amounts.get(&(record.slot, record.id)).copied(),
        };
        moved.filter(|&m| m > 0)
    }

    /// Every kept capture amount belongs to the key of an ok capture (its
    /// record holds no amount), and every original's refunds add up to at
    /// most what it moved.
    pub(super) fn check_refundable(&self) -> Result<(), String> {
        for (&(slot, id), &amount) in &self.capture_amounts {
            // A capture's, or a merchant debit's.
            let is_capture = self.keys.get(slot, id).is_some_and(|r| {
                is_refundable_op(r.op())
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

/// The ops whose ok outcome moved money a refund may return: a debit, a
/// queued debit its batch applied with `ok`, a capture.
fn is_refundable_op(op: u8) -> bool {
    op == Op::Debit as u8 || op == Op::Capture as u8 || op == Op::QueueDebit as u8
}
