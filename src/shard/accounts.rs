//! The account record, its rare parts, and the account-level rules:
//! opening, freezing, the overdraft floor and the funds check.

use super::*;

/// A plain account: 48 bytes. What few accounts need (an overdraft, limits,
/// a velocity ring) lives in an [`AccountExt`] it points to.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(super) struct Account {
    /// Its id: the index confirms a lookup against it.
    pub(super) id: AccountId,
    pub(super) balance: i64,
    pub(super) held: i64,
    /// Minor units debits, authorizes, increments and reviews took on
    /// `day`; saturates at `MINOR_UNITS_MAX` (beyond any limit anyway).
    pub(super) day_total: i64,
    /// UTC day of engine time that `day_total` counts.
    pub(super) day: u64,
    /// `EXT_NONE` or an index into `Shard::exts`.
    pub(super) ext: u32,
    pub(super) currency: Currency,
    pub(super) frozen: bool,
    /// [`CLOSED`] | [`HISTORY`], in a byte that was padding: a plain
    /// account's is 0, so the keyed frame pays one byte test for both.
    pub(super) flags: u8,
}

const _: () = assert!(std::mem::size_of::<Account>() == 48);

/// `Account::flags`: the account was closed (`close_account`), for good.
pub(super) const CLOSED: u8 = 1;
/// `Account::flags`: the account keeps a statement (`"history": true`).
pub(super) const HISTORY: u8 = 2;

pub(super) const EXT_NONE: u32 = u32::MAX;

/// The rare parts of an account.
#[derive(Clone, Debug, Default)]
pub(super) struct AccountExt {
    pub(super) overdraft: i64,
    pub(super) limits: Option<Limits>,
    /// Times of ok small debits since the last `set_limits`, newest last,
    /// at most `velocity.max` of them; empty without a velocity rule.
    pub(super) recent_small_debits: VecDeque<u64>,
}

impl Shard {
    pub(super) fn open_account(
        &mut self,
        account: AccountId,
        currency: Option<Currency>,
        overdraft: Option<AmountArg>,
        history: bool,
    ) -> Code {
        if self.slot_of(account).is_some() {
            return Code::AccountExists;
        }
        let Some(currency) = currency else {
            return Code::UnsupportedCurrency;
        };
        let overdraft = match overdraft {
            None => 0,
            Some(arg) => match arg.to_minor(currency.exponent()) {
                Some(minor) => minor,
                None => return Code::InvalidAmount,
            },
        };
        let slot = u32::try_from(self.accounts.len()).expect("fewer than 2^32 accounts per shard");
        assert!(slot != u32::MAX, "account slots exhausted");
        debug_assert!(slot != crate::table::SLOT_EMPTY);
        let mut record = Account {
            id: account,
            balance: 0,
            held: 0,
            day_total: 0,
            day: self.now_ms / DAY_MS,
            ext: EXT_NONE,
            currency,
            frozen: false,
            flags: if history { HISTORY } else { 0 },
        };
        if overdraft > 0 {
            record.ext = self.new_ext(overdraft);
        }
        self.accounts.push(record);
        self.index.insert(account, slot);
        if history {
            self.histories.insert(slot, History::default());
        }
        Code::Ok
    }

    pub(super) fn new_ext(&mut self, overdraft: i64) -> u32 {
        self.exts.push(AccountExt {
            overdraft,
            ..AccountExt::default()
        });
        u32::try_from(self.exts.len() - 1).expect("fewer than 2^32 extended accounts")
    }

    /// `freeze` / `unfreeze`: `unknown_account`, then `account_closed`.
    pub(super) fn set_frozen(&mut self, account: AccountId, frozen: bool) -> Outcome {
        match self.slot_of(account) {
            Some(slot) if self.is_closed(slot) => Outcome::new(Code::AccountClosed),
            Some(slot) => {
                self.accounts[slot as usize].frozen = frozen;
                Outcome::new(Code::Ok)
            }
            None => Outcome::new(Code::UnknownAccount),
        }
    }

    pub(super) fn overdraft(&self, a: &Account) -> i64 {
        if a.ext == EXT_NONE {
            0
        } else {
            self.exts[a.ext as usize].overdraft
        }
    }

    /// Whether `amount` more can leave `available` without passing the floor.
    pub(super) fn funds_allow(&self, a: &Account, amount: i64) -> bool {
        let available = i128::from(a.balance) - i128::from(a.held);
        available - i128::from(amount) >= -i128::from(self.overdraft(a))
    }
}
