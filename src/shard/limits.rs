//! Limits (per transaction, daily) and risk routing (review, velocity, an
//! embedder's policy): what decides whether a debit is taken, held for
//! review, or refused.

use super::*;

impl Shard {
    pub(super) fn limits(&self, a: &Account) -> Option<&Limits> {
        if a.ext == EXT_NONE {
            None
        } else {
            self.exts[a.ext as usize].limits.as_ref()
        }
    }

    pub(super) fn day_total_now(&self, a: &Account) -> i64 {
        if a.day == self.today {
            a.day_total
        } else {
            0
        }
    }

    /// `limit_exceeded` checks for a debit, authorize (`hold_total` is the
    /// amount) or increment (`hold_total` is the hold's new total).
    pub(super) fn limits_allow(&self, a: &Account, amount: i64, hold_total: i64) -> bool {
        let Some(limits) = self.limits(a) else {
            return true;
        };
        if limits.per_txn.is_some_and(|per_txn| hold_total > per_txn) {
            return false;
        }
        let today = i128::from(self.day_total_now(a)) + i128::from(amount);
        limits.daily.is_none_or(|daily| today <= i128::from(daily))
    }

    pub(super) fn count_today(&mut self, slot: u32, amount: i64) {
        let day = self.today;
        let a = &mut self.accounts[slot as usize];
        if a.day != day {
            a.day = day;
            a.day_total = 0;
        }
        a.day_total = a.day_total.saturating_add(amount);
    }

    pub(super) fn route(&mut self, slot: u32, minor: i64) -> RiskDecision {
        let a = self.accounts[slot as usize];
        let ext = (a.ext != EXT_NONE).then(|| &self.exts[a.ext as usize]);
        let limits = ext.and_then(|e| e.limits.as_ref());
        let context = RiskContext {
            account: self.accounts[slot as usize].id,
            currency: a.currency,
            amount: minor,
            now_ms: self.now_ms,
            daily_total: self.day_total_now(&a),
            limits,
            recent_small_debits: ext
                .filter(|e| e.limits.is_some_and(|l| l.velocity.is_some()))
                .map(|e| &e.recent_small_debits),
        };
        match &mut self.policy {
            None => SpecRules::decide(&context),
            Some(policy) => policy.assess(&context),
        }
    }

    pub(super) fn set_limits(&mut self, slot: u32, arg: &LimitsArg) -> Code {
        let exponent = self.accounts[slot as usize].currency.exponent();
        let amount = |arg: Option<AmountArg>| -> Result<Option<i64>, Code> {
            match arg {
                None => Ok(None),
                Some(a) => a
                    .to_positive_minor(exponent)
                    .map(Some)
                    .ok_or(Code::InvalidAmount),
            }
        };
        let limits = (|| {
            Ok::<Limits, Code>(Limits {
                per_txn: amount(arg.per_txn)?,
                daily: amount(arg.daily)?,
                review_above: amount(arg.review_above)?,
                velocity: match arg.velocity {
                    None => None,
                    Some(v) => Some(Velocity {
                        max: v.max,
                        window_ms: v.window_ms,
                        below: amount(Some(v.below))?.expect("given"),
                    }),
                },
            })
        })();
        let limits = match limits {
            Ok(limits) => limits,
            Err(code) => return code,
        };
        debug_assert!(limits
            .velocity
            .is_none_or(|v| v.max >= 1 && v.window_ms >= 1));
        if self.accounts[slot as usize].ext == EXT_NONE {
            self.accounts[slot as usize].ext = self.new_ext(0);
        }
        let ext = &mut self.exts[self.accounts[slot as usize].ext as usize];
        ext.limits = Some(limits);
        ext.recent_small_debits.clear();
        Code::Ok
    }
}
