//! Closing accounts: `close_account`, and what a closed account still
//! answers.
//!
//! A closed account keeps its slot, its record (balance and held 0, the
//! `CLOSED` flag) and its index entry for good, so its id is never used
//! again (`open_account` of it is `account_exists`), `balance`, `status`
//! and `history` still answer, and keys seen before still replay. Every
//! other request on it is `account_closed`, checked right after
//! `id_conflict` and `unknown_account`: for keyed requests in the keyed
//! frame's cold path (`Shard::keyed_flagged`, entered on the record's
//! flag byte, so a plain account pays one byte test), for `freeze`,
//! `unfreeze`, `set_limits` and `close_account` here and in their own
//! functions ([`Shard::is_closed`]).

use super::*;

impl Shard {
    /// Whether the account in `slot` was closed.
    #[inline]
    pub(super) fn is_closed(&self, slot: u32) -> bool {
        self.accounts[slot as usize].flags & CLOSED != 0
    }

    /// `close_account`: `unknown_account`, `account_closed`, then
    /// `account_not_empty` while the balance is not zero, a hold is active
    /// (an active hold always has something left, so `held` is not zero
    /// exactly then) or a queued debit waits. A frozen account can be
    /// closed.
    pub(super) fn close_account(&mut self, account: AccountId) -> Code {
        let Some(slot) = self.slot_of(account) else {
            return Code::UnknownAccount;
        };
        if self.is_closed(slot) {
            return Code::AccountClosed;
        }
        let a = &self.accounts[slot as usize];
        if a.balance != 0 || a.held != 0 || self.has_queued_debits(slot) {
            return Code::AccountNotEmpty;
        }
        self.accounts[slot as usize].flags |= CLOSED;
        Code::Ok
    }

    /// A closed account's record holds nothing: balance 0, held 0, and no
    /// active hold names it (checked over the whole shard).
    pub(super) fn check_closed(&self) -> Result<(), String> {
        for a in self.accounts.iter().skip(1) {
            if a.flags & CLOSED != 0 && (a.balance != 0 || a.held != 0) {
                return Err(format!(
                    "closed account {}: balance {} held {}",
                    a.id, a.balance, a.held
                ));
            }
        }
        for (&(slot, id), hold) in &self.holds {
            if hold.state == HoldState::Active && self.is_closed(slot) {
                return Err(format!("closed slot {slot}: hold {id} is active"));
            }
        }
        Ok(())
    }
}
