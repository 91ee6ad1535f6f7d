//! Risk routing: the hybrid strategy, and the seam for an embedder's policy.
//!
//! A debit that passes its limits is routed: approved (debited now), held for
//! review (turned into a hold the gateway later captures or voids), or
//! rejected (`risk_rejected`). [`SpecRules`] is SPEC's built-in rule set
//! (`review_above` and `velocity`); an embedder may give each shard its own
//! [`RiskPolicy`] instead. The shard calls a policy only for debits, after the
//! limit checks and before the funds check, exactly where SPEC routes.

use crate::money::Currency;
use crate::request::AccountId;
use std::collections::VecDeque;

/// What a policy answers for one debit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RiskDecision {
    /// Debit now (funds permitting).
    Approve,
    /// Place a hold for review instead (funds permitting): `held_for_review`.
    Review,
    /// Refuse: `risk_rejected`, no effect.
    Reject,
}

/// An account's limits and risk rules in minor units, as `set_limits` left them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// The most one debit or authorize may be, and the most a hold may total
    /// after an increment; minor units.
    pub per_txn: Option<i64>,
    /// The most that may be taken in one UTC day of engine time; minor units.
    pub daily: Option<i64>,
    /// Debits of more than this are held for review; minor units.
    pub review_above: Option<i64>,
    /// The small-debit rate rule, if any.
    pub velocity: Option<Velocity>,
}

/// Review a small debit once `max` small debits happened within `window_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Velocity {
    /// Ok small debits allowed within the window before the next is
    /// reviewed: 1..=1000.
    pub max: u32,
    /// The window, engine time, ms: a debit at time t counts while
    /// now - t < window_ms. 1..=10^13.
    pub window_ms: u64,
    /// "Small" means at most this many minor units.
    pub below: i64,
}

/// What a policy sees of one debit and its account.
pub struct RiskContext<'a> {
    /// The account debited.
    pub account: AccountId,
    /// The account's currency (its exponent tells major from minor units).
    pub currency: Currency,
    /// The debit's amount in minor units.
    pub amount: i64,
    /// Engine time, ms, at which the debit is applied.
    pub now_ms: u64,
    /// Minor units debits, authorizes, increments and reviews took on the
    /// account so far in the current UTC day of engine time.
    pub daily_total: i64,
    /// The account's limits and risk rules; `None` if `set_limits` never
    /// set any.
    pub limits: Option<&'a Limits>,
    /// Engine times of the most recent ok debits of at most
    /// `velocity.below` since the last `set_limits`, oldest first; at most
    /// `velocity.max` of them. Empty when the account has no velocity rule.
    pub recent_small_debits: Option<&'a VecDeque<u64>>,
}

/// An embedder's risk policy; one instance per shard, called on that shard's
/// worker thread (so it needs no locking of its own).
pub trait RiskPolicy: Send {
    /// Approve, review or reject one debit that passed its limits. Runs on
    /// the shard's worker between requests: it should be quick and must not
    /// block, since every account of the shard waits for it.
    fn assess(&mut self, context: &RiskContext<'_>) -> RiskDecision;
}

/// SPEC's rules: review above `review_above`, and review small debits past
/// the `velocity` rate. Constant time per call.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpecRules;

impl SpecRules {
    /// SPEC's decision for one debit: review if the amount is above
    /// `review_above`, or if it is small (at most `velocity.below`) and `max`
    /// small debits already lie in the window; otherwise approve.
    pub fn decide(context: &RiskContext<'_>) -> RiskDecision {
        let Some(limits) = context.limits else {
            return RiskDecision::Approve;
        };
        if limits
            .review_above
            .is_some_and(|above| context.amount > above)
        {
            return RiskDecision::Review;
        }
        if let (Some(velocity), Some(recent)) = (limits.velocity, context.recent_small_debits) {
            if context.amount <= velocity.below
                && velocity_exceeded(&velocity, recent, context.now_ms)
            {
                return RiskDecision::Review;
            }
        }
        RiskDecision::Approve
    }
}

impl RiskPolicy for SpecRules {
    fn assess(&mut self, context: &RiskContext<'_>) -> RiskDecision {
        SpecRules::decide(context)
    }
}

/// Whether `max` or more small debits already lie within the window. Times
/// are non-decreasing and the ring keeps the newest `max`, so this holds
/// exactly when the ring is full and its oldest time is inside the window.
pub(crate) fn velocity_exceeded(velocity: &Velocity, recent: &VecDeque<u64>, now_ms: u64) -> bool {
    debug_assert!(recent.len() <= velocity.max as usize);
    recent.len() >= velocity.max as usize
        && recent
            .front()
            .is_some_and(|&oldest| now_ms - oldest < velocity.window_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context<'a>(
        amount: i64,
        now_ms: u64,
        limits: &'a Limits,
        recent: &'a VecDeque<u64>,
    ) -> RiskContext<'a> {
        RiskContext {
            account: 1,
            currency: Currency::EUR,
            amount,
            now_ms,
            daily_total: 0,
            limits: Some(limits),
            recent_small_debits: Some(recent),
        }
    }

    #[test]
    fn review_above_is_strict() {
        let limits = Limits {
            review_above: Some(100),
            ..Limits::default()
        };
        let recent = VecDeque::new();
        assert_eq!(
            SpecRules::decide(&context(100, 0, &limits, &recent)),
            RiskDecision::Approve
        );
        assert_eq!(
            SpecRules::decide(&context(101, 0, &limits, &recent)),
            RiskDecision::Review
        );
    }

    #[test]
    fn velocity_window_edges() {
        let limits = Limits {
            velocity: Some(Velocity {
                max: 2,
                window_ms: 1000,
                below: 500,
            }),
            ..Limits::default()
        };
        let recent: VecDeque<u64> = [10, 20].into();
        // Oldest at 10: inside the window while now - 10 < 1000.
        assert_eq!(
            SpecRules::decide(&context(500, 1009, &limits, &recent)),
            RiskDecision::Review
        );
        assert_eq!(
            SpecRules::decide(&context(500, 1010, &limits, &recent)),
            RiskDecision::Approve
        );
        assert_eq!(
            SpecRules::decide(&context(501, 20, &limits, &recent)),
            RiskDecision::Approve
        );
        let one: VecDeque<u64> = [20].into();
        assert_eq!(
            SpecRules::decide(&context(1, 20, &limits, &one)),
            RiskDecision::Approve
        );
    }
}
