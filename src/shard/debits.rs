//! Deposits and debits: the money a real-time request moves.

use super::*;

impl Shard {
    pub(super) fn deposit(&mut self, slot: u32, amount: AmountArg) -> (Code, i64) {
        let a = &mut self.accounts[slot as usize];
        let Some(minor) = amount.to_positive_minor(a.currency.exponent()) else {
            return (Code::InvalidAmount, 0);
        };
        let Some(balance) = a.balance.checked_add(minor) else {
            return (Code::InvalidAmount, 0);
        };
        a.balance = balance;
        self.ledger.deposits += i128::from(minor);
        (Code::Ok, 0)
    }

    /// A debit, for the merchant at index `merchant` if any (its checks
    /// made).
    #[inline(always)]
    pub(super) fn debit(
        &mut self,
        slot: u32,
        id: TxnId,
        amount: AmountArg,
        merchant: Option<u32>,
    ) -> (Code, i64) {
        let a = self.accounts[slot as usize];
        let Some(minor) = amount.to_positive_minor(a.currency.exponent()) else {
            return (Code::InvalidAmount, 0);
        };
        if a.frozen {
            return (Code::AccountFrozen, 0);
        }
        if a.ext == EXT_NONE && self.policy.is_none() {
            // The plain path, spelled out so it inlines: no overdraft, no
            // limits, no rules, no velocity ring; only the day's sum, which
            // SPEC keeps for every account (a bound set at noon counts the
            // morning), and the clearing of a merchant debit (known not to
            // be one where the caller passes `None`). `debit_now` is the
            // same for the general case.
            if i128::from(a.balance) - i128::from(a.held) < i128::from(minor) {
                return (Code::InsufficientFunds, 0);
            }
            let today = self.today;
            let account = &mut self.accounts[slot as usize];
            account.balance -= minor;
            if account.day != today {
                account.day = today;
                account.day_total = 0;
            }
            account.day_total = account.day_total.saturating_add(minor);
            self.ledger.debits += i128::from(minor);
            if let Some(merchant) = merchant {
                // Where it cleared is in its key, or (past what a key
                // holds) kept beside it by the keyed frame.
                self.clear(slot, id, merchant, minor, false);
            }
            return (Code::Ok, minor);
        }
        self.debit_checked(slot, id, minor, merchant)
    }

    /// A debit of an account with limits, rules or an overdraft, under a
    /// custom policy, or for a merchant: out of line, so that the plain
    /// path above stays small where it is inlined.
    #[inline(never)]
    pub(super) fn debit_checked(
        &mut self,
        slot: u32,
        id: TxnId,
        minor: i64,
        merchant: Option<u32>,
    ) -> (Code, i64) {
        let a = self.accounts[slot as usize];
        if !self.limits_allow(&a, minor, minor) {
            return (Code::LimitExceeded, 0);
        }
        match self.route(slot, minor) {
            RiskDecision::Approve => {
                let (code, moved) = self.debit_now(slot, minor);
                if let (Code::Ok, Some(merchant)) = (code, merchant) {
                    self.clear(slot, id, merchant, moved, false);
                }
                (code, moved)
            }
            RiskDecision::Reject => (Code::RiskRejected, 0),
            RiskDecision::Review => {
                // The review hold carries the merchant: the capture that
                // approves it clears.
                let merchant = merchant.map(|index| self.merchants[index as usize].id);
                let code = self.place_hold(slot, id, minor, HOLD_EXPIRES_IN_MS_DEFAULT, merchant);
                if code == Code::Ok {
                    (Code::HeldForReview, 0)
                } else {
                    (code, 0)
                }
            }
        }
    }

    pub(super) fn debit_now(&mut self, slot: u32, minor: i64) -> (Code, i64) {
        let a = self.accounts[slot as usize];
        if !self.funds_allow(&a, minor) {
            return (Code::InsufficientFunds, 0);
        }
        self.accounts[slot as usize].balance = a.balance - minor;
        self.ledger.debits += i128::from(minor);
        self.count_today(slot, minor);
        if a.ext != EXT_NONE {
            let now_ms = self.now_ms;
            let ext = &mut self.exts[a.ext as usize];
            if let Some(Velocity { max, below, .. }) = ext.limits.and_then(|l| l.velocity) {
                if minor <= below {
                    let ring = &mut ext.recent_small_debits;
                    if ring.len() == max as usize {
                        ring.pop_front();
                    }
                    ring.push_back(now_ms);
                }
            }
        }
        (Code::Ok, minor)
    }
}
