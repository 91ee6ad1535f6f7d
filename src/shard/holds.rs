//! Holds (pre-authorizations): placing, capturing, incrementing, voiding
//! and expiring them.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum HoldState {
    Active,
    /// Ended by engine time reaching its expiry.
    Expired,
    /// Ended by a final capture, a capture of all that was left, or a void.
    Closed,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Hold {
    /// Authorized so far, increments included.
    pub(super) amount: i64,
    pub(super) captured: i64,
    pub(super) expires_at_ms: u64,
    pub(super) state: HoldState,
    /// Dedup-window generation in which the hold ended (while not active).
    pub(super) ended_generation: u64,
    /// The merchant its `authorize` (or reviewed debit) named: every
    /// capture of it clears to that merchant.
    pub(super) merchant: Option<MerchantId>,
}

impl Hold {
    pub(super) fn left(&self) -> i64 {
        self.amount - self.captured
    }
}

impl Shard {
    pub(super) fn authorize(
        &mut self,
        slot: u32,
        id: TxnId,
        amount: AmountArg,
        expires_in_ms: u64,
        merchant: Option<MerchantId>,
    ) -> (Code, i64) {
        let a = self.accounts[slot as usize];
        let Some(minor) = amount.to_positive_minor(a.currency.exponent()) else {
            return (Code::InvalidAmount, 0);
        };
        if a.frozen {
            return (Code::AccountFrozen, 0);
        }
        if !self.limits_allow(&a, minor, minor) {
            return (Code::LimitExceeded, 0);
        }
        (self.place_hold(slot, id, minor, expires_in_ms, merchant), 0)
    }

    /// A new active hold `id` of `minor`, funds and bounds permitting.
    pub(super) fn place_hold(
        &mut self,
        slot: u32,
        id: TxnId,
        minor: i64,
        expires_in_ms: u64,
        merchant: Option<MerchantId>,
    ) -> Code {
        let a = self.accounts[slot as usize];
        if !self.funds_allow(&a, minor) {
            return Code::InsufficientFunds;
        }
        let Some(held) = a.held.checked_add(minor) else {
            return Code::InvalidAmount;
        };
        self.accounts[slot as usize].held = held;
        self.count_today(slot, minor);
        let expires_at_ms = self.now_ms.saturating_add(expires_in_ms);
        let previous = self.holds.insert(
            (slot, id),
            Hold {
                amount: minor,
                captured: 0,
                expires_at_ms,
                state: HoldState::Active,
                ended_generation: 0,
                merchant,
            },
        );
        debug_assert!(previous.is_none(), "a hold outlives the key that made it");
        self.timers.push(Reverse((expires_at_ms, slot, id)));
        Code::Ok
    }

    /// The active hold `auth` on `slot`, or the rejection that names why not.
    pub(super) fn active_hold(&mut self, slot: u32, auth: TxnId) -> Result<Hold, Code> {
        let now_ms = self.now_ms;
        let Some(hold) = self.holds.get(&(slot, auth)).copied() else {
            return Err(Code::AuthNotFound);
        };
        if hold.state == HoldState::Active && hold.expires_at_ms <= now_ms {
            // Time reached the expiry: the hold ended then, whether or not
            // its timer has come up yet.
            self.end_hold(slot, auth, HoldState::Expired);
            return Err(Code::AuthExpired);
        }
        match hold.state {
            HoldState::Active => Ok(hold),
            HoldState::Expired => Err(Code::AuthExpired),
            HoldState::Closed => Err(Code::AuthNotActive),
        }
    }

    /// Ends an active hold, releasing what is left of it.
    pub(super) fn end_hold(&mut self, slot: u32, auth: TxnId, state: HoldState) {
        debug_assert!(state != HoldState::Active);
        let generation = self.generation();
        let hold = self
            .holds
            .get_mut(&(slot, auth))
            .expect("ending a hold that exists");
        debug_assert_eq!(hold.state, HoldState::Active);
        let left = hold.left();
        hold.state = state;
        hold.ended_generation = generation;
        let a = &mut self.accounts[slot as usize];
        a.held -= left;
        debug_assert!(a.held >= 0);
    }

    pub(super) fn capture(
        &mut self,
        slot: u32,
        id: TxnId,
        auth: TxnId,
        amount: Option<AmountArg>,
        is_final: bool,
    ) -> (Code, i64) {
        let hold = match self.active_hold(slot, auth) {
            Ok(hold) => hold,
            Err(code) => return (code, 0),
        };
        let left = hold.left();
        debug_assert!(left > 0, "an active hold has something left");
        let minor = match amount {
            None => left,
            Some(arg) => {
                let exponent = self.accounts[slot as usize].currency.exponent();
                match arg.to_positive_minor(exponent) {
                    Some(minor) => minor,
                    None => return (Code::InvalidAmount, 0),
                }
            }
        };
        if minor > left {
            return (Code::ExceedsAuthorized, 0);
        }
        // The captured part leaves `held` and `balance` together; a final
        // capture (or one that takes all that is left) then ends the hold,
        // which releases the rest.
        let a = &mut self.accounts[slot as usize];
        a.balance -= minor;
        a.held -= minor;
        self.ledger.captures += i128::from(minor);
        self.holds.get_mut(&(slot, auth)).expect("active").captured += minor;
        if is_final || minor == left {
            self.end_hold(slot, auth, HoldState::Closed);
        }
        if let Some(merchant) = hold.merchant {
            // A capture's key holds a fingerprint: where it cleared is
            // kept beside it.
            let index = self.merchant_at(merchant);
            self.clear(slot, id, index, minor, true);
        }
        (Code::Ok, minor)
    }

    pub(super) fn void(&mut self, slot: u32, auth: TxnId) -> (Code, i64) {
        if let Err(code) = self.active_hold(slot, auth) {
            return (code, 0);
        }
        self.end_hold(slot, auth, HoldState::Closed);
        (Code::Ok, 0)
    }

    pub(super) fn increment(
        &mut self,
        slot: u32,
        auth: TxnId,
        amount: AmountArg,
        expires_in_ms: Option<u64>,
    ) -> (Code, i64) {
        let hold = match self.active_hold(slot, auth) {
            Ok(hold) => hold,
            Err(code) => return (code, 0),
        };
        let a = self.accounts[slot as usize];
        let Some(minor) = amount.to_positive_minor(a.currency.exponent()) else {
            return (Code::InvalidAmount, 0);
        };
        if a.frozen {
            return (Code::AccountFrozen, 0);
        }
        if hold.captured > 0 {
            return (Code::CaptureStarted, 0);
        }
        let total = i128::from(hold.amount) + i128::from(minor);
        let total_capped = i64::try_from(total).unwrap_or(MINOR_UNITS_MAX);
        if !self.limits_allow(&a, minor, total_capped) {
            return (Code::LimitExceeded, 0);
        }
        if !self.funds_allow(&a, minor) {
            return (Code::InsufficientFunds, 0);
        }
        let (Ok(total), Some(held)) = (i64::try_from(total), a.held.checked_add(minor)) else {
            return (Code::InvalidAmount, 0);
        };
        self.accounts[slot as usize].held = held;
        self.count_today(slot, minor);
        let now_ms = self.now_ms;
        let hold = self.holds.get_mut(&(slot, auth)).expect("active");
        hold.amount = total;
        if let Some(expires_in_ms) = expires_in_ms {
            hold.expires_at_ms = now_ms.saturating_add(expires_in_ms);
            self.timers.push(Reverse((hold.expires_at_ms, slot, auth)));
        }
        (Code::Ok, 0)
    }

    pub(super) fn expire_due_holds(&mut self) {
        while let Some(&Reverse((at_ms, slot, id))) = self.timers.peek() {
            if at_ms > self.now_ms {
                break;
            }
            self.timers.pop();
            let due = self
                .holds
                .get(&(slot, id))
                .is_some_and(|h| h.state == HoldState::Active && h.expires_at_ms == at_ms);
            if due {
                self.end_hold(slot, id, HoldState::Expired);
            }
        }
    }
}
