use super::snapshot::Writer;
use super::*;

fn amount(text: &str) -> AmountArg {
    AmountArg::parse(text)
}

fn shard() -> Shard {
    shard_with_window(10_000)
}

/// Account 1 (USD) with 100 in it, at time 0.
fn shard_with_window(dedup_window_ms: u64) -> Shard {
    let mut s = Shard::new(0, dedup_window_ms, None);
    s.apply(&Request::OpenAccount {
        account: 1,
        currency: Some(Currency::USD),
        overdraft: None,
        history: false,
    });
    s.apply(&Request::Deposit {
        id: 1,
        account: 1,
        amount: amount("100"),
    });
    s
}

fn code(s: &mut Shard, r: Request) -> Code {
    let outcome = s.apply(&r);
    s.check_invariants().unwrap();
    outcome.code
}

#[test]
fn forgets_keys_after_the_window_but_not_before() {
    let mut s = shard();
    let debit = Request::Debit {
        id: 2,
        account: 1,
        amount: amount("1"),
        merchant: None,
    };
    assert_eq!(code(&mut s, debit.clone()), Code::Ok);
    s.advance_to(9_999);
    assert!(s.apply(&debit).replayed);
    s.advance_to(19_999);
    assert!(
        s.apply(&debit).replayed,
        "within the window of first processing"
    );
    s.advance_to(20_000);
    let again = s.apply(&debit);
    assert!(
        !again.replayed,
        "two generations later the key is new again"
    );
    assert_eq!(again.code, Code::Ok);
}

/// A snapshot written under one dedup window and opened under another:
/// every key is kept at least one (new) window after it happened, and
/// forgotten in time, whichever way the window changed. Read in the
/// old unit, the generations made the first sweep forget every key
/// (or underflowed).
#[test]
fn a_changed_window_keeps_keys_for_the_new_window() {
    let debit = |id| Request::Debit {
        id,
        account: 1,
        amount: amount("1"),
        merchant: None,
    };
    let mut s = shard_with_window(1_000);
    s.advance_to(5_500);
    assert_eq!(code(&mut s, debit(10)), Code::Ok);
    s.advance_to(6_200);
    assert_eq!(code(&mut s, debit(11)), Code::Ok);
    let mut bytes = Vec::new();
    s.encode_snapshot(&mut bytes);
    let reopen = |window| Shard::decode_snapshot(&bytes, window, None).expect("decodes");

    // Ten times longer: both keys live until at least 10 s after them.
    let mut longer = reopen(10_000);
    longer.advance_to(15_000);
    assert!(longer.apply(&debit(10)).replayed, "5.5 s + 10 s > 15 s");
    assert!(longer.apply(&debit(11)).replayed);
    longer.advance_to(40_000);
    let again = longer.apply(&debit(10));
    assert!(!again.replayed, "forgotten two new windows on");
    assert_eq!(again.code, Code::Ok);
    longer.check_invariants().unwrap();

    // Ten times shorter: 10 (at 5.5 s) goes at the first sweep; 11 (at
    // 6.2 s, in the snapshot's last window: taken as of the snapshot's
    // time) lives one new window after the snapshot, and goes at the
    // sweep after that.
    let mut shorter = reopen(100);
    shorter.advance_to(6_300);
    assert!(!shorter.apply(&debit(10)).replayed, "5.5 s + 0.1 s < 6.3 s");
    assert!(shorter.apply(&debit(11)).replayed, "6.2 s + 0.1 s >= 6.3 s");
    shorter.advance_to(6_400);
    assert!(!shorter.apply(&debit(11)).replayed);
    shorter.check_invariants().unwrap();
}

/// A large key table is swept a few cells per keyed request, not in
/// one pause: right after the generation change old keys are still
/// there; after enough requests they are gone, while the keys of the
/// requests that came meanwhile (even after a jump of several windows,
/// which makes every older key old) are kept.
#[test]
fn a_large_key_table_forgets_a_few_cells_per_request() {
    let mut s = shard_with_window(1_000);
    s.reserve(0, 100_000);
    assert!(!s.keys.small(), "the table is swept in steps");
    let debit = |id| Request::Debit {
        id,
        account: 1,
        amount: amount("0.01"),
        merchant: None,
    };
    let status = |s: &mut Shard, id| s.apply(&Request::Status { account: 1, id }).code;
    for id in 100..1_100 {
        assert_eq!(code(&mut s, debit(id)), Code::Ok);
    }
    // Five windows on: every key so far is old.
    s.advance_to(5_000);
    assert!(s.keys.sweeping());
    let mut new_ids = Vec::new();
    let mut id = 1_000_000;
    while s.keys.sweeping() {
        assert_eq!(code(&mut s, debit(id)), Code::Ok);
        new_ids.push(id);
        id += 1;
    }
    let cells = (100_000usize * 16).div_ceil(13);
    assert!(
        new_ids.len() >= cells / SWEEP_CELLS_PER_STEP / 2,
        "{} requests for {cells} cells: not a few cells each",
        new_ids.len()
    );
    for old in 100..1_100 {
        assert_eq!(status(&mut s, old), Code::UnknownId, "old key {old}");
    }
    for &new in &new_ids {
        assert_eq!(
            status(&mut s, new),
            Code::Ok,
            "key {new} of the sweep's time"
        );
    }
    s.check_invariants().unwrap();
}

#[test]
fn a_hold_keeps_its_key_while_active() {
    let mut s = shard();
    let auth = Request::Authorize {
        id: 5,
        account: 1,
        amount: amount("10"),
        expires_in_ms: Some(1_000_000),
        merchant: None,
    };
    assert_eq!(code(&mut s, auth.clone()), Code::Ok);
    s.advance_to(50_000);
    assert!(s.apply(&auth).replayed);
    let capture = Request::Capture {
        id: 6,
        account: 1,
        auth: 5,
        amount: None,
        is_final: true,
    };
    assert_eq!(code(&mut s, capture), Code::Ok);
}

#[test]
fn snapshots_round_trip_every_table() {
    let mut s = shard();
    let reqs = [
        Request::Authorize {
            id: 2,
            account: 1,
            amount: amount("10"),
            expires_in_ms: Some(500),
            merchant: None,
        },
        Request::Debit {
            id: 3,
            account: 1,
            amount: amount("5"),
            merchant: None,
        },
        Request::Refund {
            id: 4,
            account: 1,
            of: 3,
            amount: Some(amount("1")),
        },
        Request::SetLimits {
            account: 1,
            limits: Box::new(LimitsArg {
                daily: Some(amount("90")),
                velocity: Some(crate::request::VelocityArg {
                    max: 2,
                    window_ms: 100,
                    below: amount("1"),
                }),
                ..LimitsArg::default()
            }),
        },
        Request::Debit {
            id: 5,
            account: 1,
            amount: amount("0.5"),
            merchant: None,
        },
        Request::OpenAccount {
            account: 9,
            currency: Some(Currency::JPY),
            overdraft: Some(amount("7")),
            history: false,
        },
        Request::Freeze { account: 9 },
        Request::Capture {
            id: 6,
            account: 1,
            auth: 2,
            amount: Some(amount("4")),
            is_final: false,
        },
        Request::Capture {
            id: 7,
            account: 1,
            auth: 2,
            amount: None,
            is_final: true,
        },
        Request::Refund {
            id: 8,
            account: 1,
            of: 7,
            amount: Some(amount("2")),
        },
        // Merchants, a cleared debit, a hold for a merchant and its
        // capture, a charge-back.
        Request::OpenMerchant {
            merchant: 70,
            currency: Some(Currency::USD),
            fee_bps: Some(125),
        },
        Request::Debit {
            id: 20,
            account: 1,
            amount: amount("3"),
            merchant: Some(70),
        },
        Request::Authorize {
            id: 21,
            account: 1,
            amount: amount("6"),
            expires_in_ms: None,
            merchant: Some(70),
        },
        Request::Capture {
            id: 22,
            account: 1,
            auth: 21,
            amount: Some(amount("2")),
            is_final: false,
        },
        Request::Refund {
            id: 23,
            account: 1,
            of: 20,
            amount: Some(amount("1")),
        },
        // A settled batch, a batch applied, a cut waiting for its close,
        // debits waiting for the next batch.
        Request::QueueDebit {
            id: 30,
            account: 1,
            amount: amount("1.5"),
            merchant: Some(70),
        },
        Request::RunBatch,
        Request::Settle {
            id: 1,
            merchant: 70,
        },
        Request::settle_close(
            70,
            1,
            Code::Ok,
            crate::Settlement {
                currency: Currency::USD,
                fee_bps: 125,
                batch: 1,
                count: 3,
                gross: 650,
                refunded: 100,
                fee: 8,
                net: 542,
            },
        ),
        Request::Debit {
            id: 31,
            account: 1,
            amount: amount("1"),
            merchant: Some(70),
        },
        Request::Settle {
            id: 2,
            merchant: 70,
        },
        Request::QueueDebit {
            id: 32,
            account: 1,
            amount: amount("2"),
            merchant: Some(70),
        },
        Request::QueueDebit {
            id: 33,
            account: 9,
            amount: amount("3"),
            merchant: None,
        },
    ];
    for r in &reqs {
        let outcome = s.apply(r);
        assert!(
            outcome.code.is_effective() || outcome.code == Code::Queued,
            "{r:?}: {outcome:?}"
        );
    }
    assert_eq!(s.queued.len(), 2);
    assert!(s.merchant_mut(70).unwrap().cut.is_some());
    assert_eq!(s.settles.len(), 1);
    // Merchant debits keep amount and merchant in their keys.
    assert_eq!(s.capture_amounts.len(), 3, "three captures");
    assert_eq!(s.cleared_to.len(), 1, "one capture for a merchant");
    let mut bytes = Vec::new();
    s.encode_snapshot(&mut bytes);
    let mut copy = Shard::decode_snapshot(&bytes, 10_000, None).expect("decodes");
    let mut again = Vec::new();
    copy.encode_snapshot(&mut again);
    assert_eq!(bytes.len(), again.len());
    assert_eq!(copy.capture_amounts, s.capture_amounts);
    assert_eq!(copy.cleared_to, s.cleared_to);
    assert_eq!(copy.queued, s.queued);
    assert_eq!(copy.queued_per_slot, s.queued_per_slot);
    assert_eq!(copy.settles, s.settles);
    assert_eq!(
        copy.merchant_mut(70).unwrap().cut,
        s.merchant_mut(70).unwrap().cut
    );
    // Both go on identically: replays, and refunds of what is left.
    let refund = |id, of| refund(id, of, None);
    // (A settle's close comes once: the engine sends it after its cut.)
    let again = reqs.iter().filter(|r| !matches!(r, Request::Internal(_)));
    for r in again.chain(
        [
            Request::Balance { account: 1 },
            Request::Status { account: 1, id: 3 },
            refund(10, 3),
            refund(11, 6),
            refund(12, 7),
            refund(13, 7),
            Request::Balance { account: 1 },
            Request::Merchant { merchant: 70 },
            refund(24, 20),
            refund(25, 22),
            Request::Capture {
                id: 26,
                account: 1,
                auth: 21,
                amount: None,
                is_final: true,
            },
            Request::Merchant { merchant: 70 },
            Request::Settle {
                id: 1,
                merchant: 70,
            },
            Request::Status { account: 1, id: 32 },
            Request::RunBatch,
            Request::Status { account: 9, id: 33 },
            Request::Status { account: 1, id: 32 },
            refund(34, 30),
            refund(35, 32),
            Request::Merchant { merchant: 70 },
        ]
        .iter(),
    ) {
        assert_eq!(s.apply(r), copy.apply(r));
    }
    assert_eq!(copy.apply(&refund(12, 7)).code, Code::Ok);
    copy.check_invariants().unwrap();
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            Shard::decode_snapshot(&bytes[..cut], 10_000, None).is_none(),
            "cut at {cut}"
        );
    }
}

#[test]
fn refund_progress_and_limits() {
    let mut s = shard();
    let debit = Request::Debit {
        id: 2,
        account: 1,
        amount: amount("30"),
        merchant: None,
    };
    assert_eq!(code(&mut s, debit), Code::Ok);
    let refund = |id, a: Option<&str>| Request::Refund {
        id,
        account: 1,
        of: 2,
        amount: a.map(amount),
    };
    assert_eq!(code(&mut s, refund(3, Some("10"))), Code::Ok);
    assert_eq!(
        code(&mut s, refund(4, Some("20.01"))),
        Code::ExceedsRefundable
    );
    assert_eq!(code(&mut s, refund(5, None)), Code::Ok);
    assert_eq!(code(&mut s, refund(6, None)), Code::ExceedsRefundable);
    assert_eq!(code(&mut s, refund(7, Some("0"))), Code::InvalidAmount);
}

/// Two accounts whose index hashes collide: the prefetch stage's
/// unconfirmed slot for the second is the first's, and `apply` must
/// confirm the hint against the record before using it.
#[test]
fn apply_each_confirms_the_prefetched_slot() {
    let mut first_with: std::collections::HashMap<u32, AccountId> = Default::default();
    let (a, b) = (1u64..)
        .find_map(|id| {
            let h = crate::index::hash32(id);
            first_with.get(&h).map(|&other| (other, id)).or_else(|| {
                first_with.insert(h, id);
                None
            })
        })
        .expect("a 32-bit collision among a few 100k ids");
    let mut s = Shard::new(0, 10_000, None);
    for (account, money) in [(a, "100"), (b, "5")] {
        s.apply(&Request::OpenAccount {
            account,
            currency: Some(Currency::USD),
            overdraft: None,
            history: false,
        });
        s.apply(&Request::Deposit {
            id: 1,
            account,
            amount: amount(money),
        });
    }
    let requests: Vec<Request> = (0..40)
        .map(|i| Request::Debit {
            id: 10 + i,
            account: if i % 2 == 0 { b } else { a },
            amount: amount("1"),
            merchant: None,
        })
        .collect();
    let mut codes = Vec::new();
    s.apply_each(&requests, |r| r, |_, outcome| codes.push(outcome.code));
    // b had 5: five debits pass, fifteen are refused; a's all pass.
    let on_b = codes.iter().step_by(2);
    assert_eq!(on_b.filter(|&&c| c == Code::Ok).count(), 5);
    assert!(codes.iter().skip(1).step_by(2).all(|&c| c == Code::Ok));
    let balance = |s: &mut Shard, account| match s.apply(&Request::Balance { account }).info {
        Info::Balance { balance, .. } => balance,
        other => panic!("{other:?}"),
    };
    assert_eq!(balance(&mut s, a), 10_000 - 2_000);
    assert_eq!(balance(&mut s, b), 0);
    s.check_invariants().unwrap();
}

fn debit(id: TxnId, text: &str) -> Request {
    Request::Debit {
        id,
        account: 1,
        amount: amount(text),
        merchant: None,
    }
}

fn authorize(id: TxnId, text: &str) -> Request {
    Request::Authorize {
        id,
        account: 1,
        amount: amount(text),
        expires_in_ms: None,
        merchant: None,
    }
}

fn capture(id: TxnId, auth: TxnId, text: Option<&str>, is_final: bool) -> Request {
    Request::Capture {
        id,
        account: 1,
        auth,
        amount: text.map(amount),
        is_final,
    }
}

fn refund(id: TxnId, of: TxnId, text: Option<&str>) -> Request {
    Request::Refund {
        id,
        account: 1,
        of,
        amount: text.map(amount),
    }
}

fn balance(s: &mut Shard) -> i64 {
    match s.apply(&Request::Balance { account: 1 }).info {
        Info::Balance { balance, .. } => balance,
        other => panic!("{other:?}"),
    }
}

fn replayed(s: &mut Shard, r: &Request) -> Option<Code> {
    let outcome = s.apply(r);
    s.check_invariants().unwrap();
    outcome.replayed.then_some(outcome.code)
}

/// Deposit and debit keys hold the amount (as minor units, where it has
/// them) and compare it as a number, as SPEC does: "12.3" is "12.30";
/// "1.230" (invalid in USD) is still "1.23"; an amount with no minor
/// units in the currency, or no number at all, by its fingerprint.
#[test]
fn deposit_and_debit_replays_compare_amounts_as_numbers() {
    type Make = fn(TxnId, &str) -> Request;
    let deposit: Make = |id, text| Request::Deposit {
        id,
        account: 1,
        amount: amount(text),
    };
    for make in [debit as Make, deposit] {
        let mut s = shard();
        let start = balance(&mut s);
        let sign = if matches!(make(0, "1"), Request::Debit { .. }) {
            -1
        } else {
            1
        };
        assert_eq!(code(&mut s, make(10, "12.3")), Code::Ok);
        let slot = s.slot_of(1).unwrap();
        let record = *s.keys.get(slot, 10).unwrap();
        assert_eq!(record.payload(), Payload::Minor(1230), "no hashing");
        for same in ["12.3", "12.30", "0012.3"] {
            assert_eq!(replayed(&mut s, &make(10, same)), Some(Code::Ok), "{same}");
        }
        // Not a whole number of cents, so never the same number.
        for other in ["12.31", "12.301", "123", "1.23", "x"] {
            assert_eq!(code(&mut s, make(10, other)), Code::IdConflict, "{other}");
        }
        assert_eq!(replayed(&mut s, &make(10, "12.300")), Some(Code::Ok));
        assert_eq!(balance(&mut s), start + sign * 1230, "moved once");

        // Too many digits for USD: invalid, remembered by fingerprint.
        assert_eq!(code(&mut s, make(11, "12.345")), Code::InvalidAmount);
        let record = *s.keys.get(slot, 11).unwrap();
        assert!(matches!(record.payload(), Payload::Fingerprint(_)));
        for same in ["12.345", "12.3450", "012.345"] {
            let again = replayed(&mut s, &make(11, same));
            assert_eq!(again, Some(Code::InvalidAmount), "{same}");
        }
        for other in ["12.34", "12.35", "12.346", "abc"] {
            assert_eq!(code(&mut s, make(11, other)), Code::IdConflict, "{other}");
        }

        // A number of cents written with one digit too many: invalid,
        // yet the same number as the valid spelling, either way round.
        assert_eq!(code(&mut s, make(12, "1.230")), Code::InvalidAmount);
        let again = replayed(&mut s, &make(12, "1.23"));
        assert_eq!(again, Some(Code::InvalidAmount));
        assert_eq!(code(&mut s, make(12, "1.24")), Code::IdConflict);
        assert_eq!(code(&mut s, make(13, "1.23")), Code::Ok);
        assert_eq!(replayed(&mut s, &make(13, "1.230")), Some(Code::Ok));
        assert_eq!(code(&mut s, make(13, "1.2300001")), Code::IdConflict);

        // Not a number: by its text.
        assert_eq!(code(&mut s, make(14, "12,30")), Code::InvalidAmount);
        let again = replayed(&mut s, &make(14, "12,30"));
        assert_eq!(again, Some(Code::InvalidAmount));
        assert_eq!(code(&mut s, make(14, "12.30")), Code::IdConflict);
        // Zero has minor units (0) and is invalid.
        assert_eq!(code(&mut s, make(15, "0.00")), Code::InvalidAmount);
        assert_eq!(replayed(&mut s, &make(15, "0")), Some(Code::InvalidAmount));
        assert_eq!(code(&mut s, make(15, "0.01")), Code::IdConflict);

        // The same amount under another op is another request.
        let other_op = if sign < 0 {
            deposit(10, "12.3")
        } else {
            debit(10, "12.3")
        };
        assert_eq!(code(&mut s, other_op), Code::IdConflict);
        assert_eq!(balance(&mut s), start + sign * (1230 + 123));
    }
}

/// In a currency of exponent 0 or 3 the same rules hold at its scale.
#[test]
fn amounts_compare_at_the_accounts_exponent() {
    let mut s = Shard::new(0, 10_000, None);
    for (account, currency) in [(1, Currency::JPY), (2, Currency::KWD)] {
        s.apply(&Request::OpenAccount {
            account,
            currency: Some(currency),
            overdraft: None,
            history: false,
        });
    }
    let deposit = |account, text| Request::Deposit {
        id: 1,
        account,
        amount: amount(text),
    };
    assert_eq!(code(&mut s, deposit(1, "500")), Code::Ok);
    // Invalid in JPY, but the same number.
    assert_eq!(replayed(&mut s, &deposit(1, "500.0")), Some(Code::Ok));
    assert_eq!(replayed(&mut s, &deposit(1, "0500")), Some(Code::Ok));
    assert_eq!(s.apply(&deposit(1, "500.5")).code, Code::IdConflict);
    assert_eq!(code(&mut s, deposit(2, "1.5")), Code::Ok);
    assert_eq!(replayed(&mut s, &deposit(2, "1.500")), Some(Code::Ok));
    assert_eq!(s.apply(&deposit(2, "1.5001")).code, Code::IdConflict);
}

/// A rejected debit is remembered with its amount too, and its replay
/// stays the rejection, whatever the funds are now.
#[test]
fn an_insufficient_funds_debit_replays_as_such() {
    let mut s = shard();
    assert_eq!(code(&mut s, debit(2, "150")), Code::InsufficientFunds);
    let topup = Request::Deposit {
        id: 3,
        account: 1,
        amount: amount("100"),
    };
    assert_eq!(code(&mut s, topup), Code::Ok);
    let again = replayed(&mut s, &debit(2, "150.00"));
    assert_eq!(again, Some(Code::InsufficientFunds));
    assert_eq!(code(&mut s, debit(2, "149")), Code::IdConflict);
    assert_eq!(balance(&mut s), 20_000, "nothing debited");
    assert_eq!(code(&mut s, refund(4, 2, None)), Code::NotRefundable);
}

/// Refunds of a debit read its amount from its key; of a capture, from
/// the amount kept beside its key (a capture's fields may not name it).
#[test]
fn refunds_return_what_a_debit_or_a_capture_moved() {
    let mut s = shard();
    assert_eq!(code(&mut s, debit(2, "30.5")), Code::Ok);
    assert_eq!(
        code(&mut s, refund(3, 2, Some("30.51"))),
        Code::ExceedsRefundable
    );
    assert_eq!(code(&mut s, refund(4, 2, Some("0.5"))), Code::Ok);
    assert_eq!(code(&mut s, refund(5, 2, None)), Code::Ok);
    assert_eq!(code(&mut s, refund(6, 2, None)), Code::ExceedsRefundable);
    assert_eq!(balance(&mut s), 10_000);

    assert_eq!(code(&mut s, authorize(7, "50")), Code::Ok);
    assert_eq!(code(&mut s, capture(8, 7, Some("20"), false)), Code::Ok);
    // All that is left, named by no amount field: 30.
    assert_eq!(code(&mut s, capture(9, 7, None, true)), Code::Ok);
    assert_eq!(balance(&mut s), 5_000);
    let slot = s.slot_of(1).unwrap();
    assert_eq!(s.capture_amounts.get(&(slot, 9)), Some(&3_000));
    assert_eq!(
        code(&mut s, refund(10, 8, Some("20.01"))),
        Code::ExceedsRefundable
    );
    assert_eq!(code(&mut s, refund(11, 8, Some("15"))), Code::Ok);
    assert_eq!(code(&mut s, refund(12, 8, None)), Code::Ok);
    assert_eq!(code(&mut s, refund(13, 8, None)), Code::ExceedsRefundable);
    assert_eq!(
        code(&mut s, refund(14, 9, Some("30.01"))),
        Code::ExceedsRefundable
    );
    assert_eq!(code(&mut s, refund(15, 9, None)), Code::Ok);
    assert_eq!(
        code(&mut s, refund(16, 9, Some("0.01"))),
        Code::ExceedsRefundable
    );
    assert_eq!(
        code(&mut s, refund(17, 7, None)),
        Code::NotRefundable,
        "a hold"
    );
    assert_eq!(balance(&mut s), 10_000, "every cent back once");
    // Replays of refunds move nothing.
    assert_eq!(replayed(&mut s, &refund(15, 9, None)), Some(Code::Ok));
    assert_eq!(balance(&mut s), 10_000);
}

#[test]
fn capture_replays_and_conflicts_by_all_its_fields() {
    let mut s = shard();
    assert_eq!(code(&mut s, authorize(2, "50")), Code::Ok);
    assert_eq!(code(&mut s, authorize(3, "50")), Code::Ok);
    let id_5 = |auth, a, is_final| capture(5, auth, a, is_final);
    assert_eq!(code(&mut s, id_5(2, Some("10"), false)), Code::Ok);
    let again = replayed(&mut s, &id_5(2, Some("10.00"), false));
    assert_eq!(again, Some(Code::Ok));
    for other in [
        id_5(2, Some("10.01"), false),
        id_5(2, None, false),
        id_5(2, Some("10"), true),
        id_5(3, Some("10"), false),
        debit(5, "10"),
    ] {
        assert_eq!(code(&mut s, other.clone()), Code::IdConflict, "{other:?}");
    }
    assert_eq!(balance(&mut s), 9_000, "captured once");
    // A rejected capture is remembered too, and moved nothing.
    let over = capture(6, 2, Some("41"), true);
    assert_eq!(code(&mut s, over.clone()), Code::ExceedsAuthorized);
    assert_eq!(replayed(&mut s, &over), Some(Code::ExceedsAuthorized));
    let slot = s.slot_of(1).unwrap();
    assert!(!s.capture_amounts.contains_key(&(slot, 6)));
}

/// A capture's kept amount goes with its key: once the key is forgotten
/// the capture is `not_refundable`, and nothing is left behind.
#[test]
fn a_forgotten_capture_is_not_refundable() {
    let mut s = shard();
    assert_eq!(code(&mut s, authorize(2, "50")), Code::Ok);
    assert_eq!(code(&mut s, capture(3, 2, None, true)), Code::Ok);
    assert_eq!(code(&mut s, refund(4, 3, Some("1"))), Code::Ok);
    s.advance_to(19_999);
    let again = code(&mut s, refund(5, 3, Some("1")));
    assert_eq!(again, Code::Ok, "still remembered");
    s.advance_to(20_000);
    assert_eq!(code(&mut s, refund(6, 3, Some("1"))), Code::NotRefundable);
    assert!(s.capture_amounts.is_empty());
    assert!(s.refunded.is_empty());
    assert_eq!(balance(&mut s), 10_000 - 5_000 + 100 + 100);
}

/// A version 1 snapshot body (it had no version word), built by hand
/// from that format's description (docs/wal-format.md before version 2).
fn v1_body(keys: &[(u64, Op, Code, i64, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = Writer(&mut out);
    w.u64(5_000); // now_ms
    w.u64(0); // swept generation
              // Ledger: deposits, debits, captures, refunds.
    for v in [10_000i128, 500, 300, 100] {
        w.0.extend_from_slice(&v.to_le_bytes());
    }
    w.u64(1); // one account: id, balance, held, day_total, day, ext, currency, frozen
    let usd = Currency::ALL
        .iter()
        .position(|&c| c == Currency::USD)
        .unwrap();
    for v in [1, 9_300, 0, 1_000, 0, u64::from(EXT_NONE), usd as u64, 0] {
        w.u64(v);
    }
    w.u64(0); // no extensions
    w.u64(keys.len() as u64);
    for &(id, op, code, amount, fingerprint) in keys {
        w.u64(id);
        w.u64(1);
        w.u64(op as u64 | (code as u64) << 8);
        w.i64(amount);
        w.u64(fingerprint);
    }
    w.u64(1); // the hold of authorize 4: amount, captured, expiry, closed, ended
    for v in [1, 4, 500, 300, 1_000_000, 2, 0] {
        w.u64(v);
    }
    w.u64(1); // refunded: 1.00 of debit 2
    for v in [1, 2, 100] {
        w.u64(v);
    }
    w.u64(0); // no timers
    out
}

/// `body` framed as a first-format snapshot file (magic `DCSNAP01`),
/// written to disk and read back as recovery reads it.
fn through_a_v1_file(body: &[u8]) -> Vec<u8> {
    let mut file = b"DCSNAP01".to_vec();
    for word in [0, 42, body.len() as u64] {
        file.extend_from_slice(&word.to_le_bytes());
    }
    file.extend_from_slice(body);
    let crc = crc32c::crc32c(&file);
    file.extend_from_slice(&crc.to_le_bytes());
    let dir = std::env::temp_dir().join(format!("debitcore-v1-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(crate::wal::snapshot::snapshot_name(42));
    std::fs::write(&path, &file).unwrap();
    let read = crate::wal::snapshot::read(&path, 0).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let (lsn, body) = read.expect("a valid first-format snapshot");
    assert_eq!(lsn, 42);
    body
}

/// A snapshot of the first format converts without loss: an ok debit's
/// amount into its record, an ok capture's beside it, fingerprints of
/// everything else as they were; and it answers as the shard it was.
#[test]
fn a_version_1_snapshot_reads_into_the_new_records() {
    let fp = |text| amount(text).fingerprint();
    let keys = [
        (
            1,
            Op::Deposit,
            Code::Ok,
            0,
            fingerprint(Op::Deposit, &[fp("100")]),
        ),
        (
            2,
            Op::Debit,
            Code::Ok,
            500,
            fingerprint(Op::Debit, &[fp("5")]),
        ),
        (
            3,
            Op::Debit,
            Code::InsufficientFunds,
            0,
            fingerprint(Op::Debit, &[fp("1000")]),
        ),
        (
            4,
            Op::Authorize,
            Code::Ok,
            0,
            fingerprint(Op::Authorize, &[fp("5"), 1_000_000]),
        ),
        (
            5,
            Op::Capture,
            Code::Ok,
            300,
            fingerprint(
                Op::Capture,
                &[4, optional_fingerprint(Some(amount("3"))), 0],
            ),
        ),
        (
            6,
            Op::Refund,
            Code::Ok,
            0,
            fingerprint(Op::Refund, &[2, optional_fingerprint(Some(amount("1")))]),
        ),
    ];
    let body = through_a_v1_file(&v1_body(&keys));
    let mut s = Shard::decode_snapshot(&body, 10_000, None).expect("decodes");
    assert_eq!(s.keys.get(1, 2).unwrap().payload(), Payload::Minor(500));
    assert_eq!(
        s.keys.get(1, 3).unwrap().payload(),
        Payload::Fingerprint(keys[2].4)
    );
    assert_eq!(s.capture_amounts.get(&(1, 5)), Some(&300));

    // Re-encoded in the current format, it answers the same.
    let mut now = Vec::new();
    s.encode_snapshot(&mut now);
    let mut t = Shard::decode_snapshot(&now, 10_000, None).expect("decodes");
    let id_5 = |a, is_final| capture(5, 4, Some(a), is_final);
    for shard in [&mut s, &mut t] {
        assert_eq!(replayed(shard, &debit(2, "5.00")), Some(Code::Ok));
        assert_eq!(code(shard, debit(2, "5.01")), Code::IdConflict);
        let again = replayed(shard, &debit(3, "1000"));
        assert_eq!(again, Some(Code::InsufficientFunds));
        assert_eq!(code(shard, debit(3, "999")), Code::IdConflict);
        assert_eq!(replayed(shard, &id_5("3.0", false)), Some(Code::Ok));
        assert_eq!(code(shard, id_5("3", true)), Code::IdConflict);
        let again = replayed(shard, &refund(6, 2, Some("1")));
        assert_eq!(again, Some(Code::Ok));
        assert_eq!(
            code(shard, refund(7, 2, Some("4.01"))),
            Code::ExceedsRefundable
        );
        assert_eq!(code(shard, refund(8, 2, None)), Code::Ok);
        assert_eq!(
            code(shard, refund(9, 5, Some("3.01"))),
            Code::ExceedsRefundable
        );
        assert_eq!(code(shard, refund(10, 5, None)), Code::Ok);
        assert_eq!(balance(shard), 10_000);
    }

    // What the first format never held is refused.
    let decodes = |keys: &[(u64, Op, Code, i64, u64)]| {
        let mut body = 1u64.to_le_bytes().to_vec();
        body.extend_from_slice(&v1_body(keys));
        Shard::decode_snapshot(&body, 10_000, None).is_some()
    };
    assert!(decodes(&keys));
    let mut bad = keys;
    bad[1].3 = 0; // an ok debit that moved nothing
    assert!(!decodes(&bad));
    let mut bad = keys;
    bad[0].3 = 7; // a deposit with an amount moved
    assert!(!decodes(&bad));
    let mut unknown = body.clone();
    unknown[0] = 3;
    assert!(Shard::decode_snapshot(&unknown, 10_000, None).is_none());
}

/// An ok capture whose amount is missing (or an amount without its
/// capture) is a snapshot that does not describe a shard.
#[test]
fn a_snapshot_without_a_captures_amount_is_refused() {
    let mut s = shard();
    assert_eq!(code(&mut s, authorize(2, "50")), Code::Ok);
    assert_eq!(code(&mut s, capture(3, 2, None, true)), Code::Ok);
    let encode = |s: &Shard| {
        let mut bytes = Vec::new();
        s.encode_snapshot(&mut bytes);
        bytes
    };
    assert!(Shard::decode_snapshot(&encode(&s), 10_000, None).is_some());
    let amounts = std::mem::take(&mut s.capture_amounts);
    assert!(Shard::decode_snapshot(&encode(&s), 10_000, None).is_none());
    s.capture_amounts = amounts;
    s.capture_amounts.insert((1, 2), 5);
    assert!(Shard::decode_snapshot(&encode(&s), 10_000, None).is_none());
}

/// `reserve` sizes the key table for the keys it is told of: they all
/// fit without growth, at PERF.md's budget of at most 32 bytes a key.
#[test]
fn reserved_keys_fit_within_the_memory_budget() {
    let keys = 20_000;
    let mut s = shard();
    s.reserve(0, keys);
    let sized = s.stats().key_bytes;
    assert!(sized <= 32 * (keys + 1), "{sized} bytes for {keys} keys");
    for id in 2..=keys as u64 {
        let deposit = Request::Deposit {
            id,
            account: 1,
            amount: amount("0.01"),
        };
        assert_eq!(s.apply(&deposit).code, Code::Ok);
    }
    assert_eq!(s.stats().keys, keys);
    assert_eq!(s.stats().key_bytes, sized, "no growth, no spare");
}

/// A merchant debit keeps its amount and merchant in its key
/// (`Payload::Cleared`) up to 2^47 - 1 minor units; past that it keeps a
/// fingerprint with the amount and merchant beside it. Both replay, refund
/// and charge back alike.
#[test]
fn merchant_debits_past_what_a_key_holds_keep_them_beside_it() {
    let mut s = Shard::new(0, 10_000, None);
    let open = |account| Request::OpenAccount {
        account,
        currency: Some(Currency::JPY),
        overdraft: None,
        history: false,
    };
    for r in [
        open(1),
        Request::OpenMerchant {
            merchant: 9,
            currency: Some(Currency::JPY),
            fee_bps: None,
        },
        Request::Deposit {
            id: 1,
            account: 1,
            amount: amount("999999999999999"),
        },
    ] {
        assert_eq!(code(&mut s, r), Code::Ok);
    }
    let big = (1u64 << 47).to_string();
    let small = ((1u64 << 47) - 1).to_string();
    let debit = |id, text: &str| Request::Debit {
        id,
        account: 1,
        amount: amount(text),
        merchant: Some(9),
    };
    assert_eq!(code(&mut s, debit(2, &small)), Code::Ok);
    assert_eq!(code(&mut s, debit(3, &big)), Code::Ok);
    assert!(matches!(
        s.keys.get(1, 2).unwrap().payload(),
        Payload::Cleared { .. }
    ));
    assert!(matches!(
        s.keys.get(1, 3).unwrap().payload(),
        Payload::Fingerprint(_)
    ));
    assert_eq!(s.capture_amounts.len(), 1);
    assert_eq!(s.cleared_to.len(), 1);
    // Replays and conflicts compare amount and merchant either way.
    for (id, text) in [(2, small.as_str()), (3, big.as_str())] {
        assert!(s.apply(&debit(id, text)).replayed);
        let other_merchant = Request::Debit {
            id,
            account: 1,
            amount: amount(text),
            merchant: Some(8),
        };
        assert_eq!(code(&mut s, other_merchant), Code::IdConflict);
        let no_merchant = Request::Debit {
            id,
            account: 1,
            amount: amount(text),
            merchant: None,
        };
        assert_eq!(code(&mut s, no_merchant), Code::IdConflict);
        assert_eq!(code(&mut s, debit(id, "1")), Code::IdConflict);
    }
    // Refunds of both are charged back to merchant 9.
    let refund = |id, of| Request::Refund {
        id,
        account: 1,
        of,
        amount: Some(amount("5")),
    };
    assert_eq!(code(&mut s, refund(4, 2)), Code::Ok);
    assert_eq!(code(&mut s, refund(5, 3)), Code::Ok);
    let figures = s.apply(&Request::Merchant { merchant: 9 });
    let Info::Merchant(m) = figures.info else {
        panic!("{figures:?}")
    };
    assert_eq!(m.pending, (1i128 << 48) - 1 - 10);
}

// ---------------------------------------------------------------------------
// Closing accounts and statements.

/// Account 2 (USD, with history) with 100 in it, beside `shard()`'s account 1.
fn shard_with_history(dedup_window_ms: u64) -> Shard {
    let mut s = shard_with_window(dedup_window_ms);
    s.apply(&Request::OpenAccount {
        account: 2,
        currency: Some(Currency::USD),
        overdraft: None,
        history: true,
    });
    assert_eq!(
        code(
            &mut s,
            Request::Deposit {
                id: 1,
                account: 2,
                amount: amount("100"),
            }
        ),
        Code::Ok
    );
    s
}

fn page(
    s: &Shard,
    account: AccountId,
    limit: Option<u16>,
    before: Option<u64>,
) -> Vec<HistoryEntry> {
    match s.history(account, limit, before).info {
        Info::History(page) => page.entries,
        other => panic!("history answered {other:?}"),
    }
}

use crate::outcome::{HistoryEntry, Moved};

#[test]
fn entries_are_forgotten_with_their_keys_and_seq_goes_on() {
    let mut s = shard_with_history(10_000);
    s.advance_to(10_000);
    let debit2 = Request::Debit {
        id: 2,
        account: 2,
        amount: amount("1"),
        merchant: None,
    };
    assert_eq!(code(&mut s, debit2.clone()), Code::Ok);
    assert_eq!(page(&s, 2, None, None).len(), 2);
    // Generation 2: the deposit's key (generation 0) goes, and its entry.
    s.advance_to(20_000);
    s.check_invariants().unwrap();
    let kept = page(&s, 2, None, None);
    assert_eq!(kept.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
    assert!(s.apply(&debit2).replayed, "the debit's key is still kept");
    // A new entry numbers on from the last one, whatever was forgotten.
    assert_eq!(code(&mut s, debit(3, "1")), Code::Ok, "account 1's");
    let debit3 = Request::Debit {
        id: 3,
        account: 2,
        amount: amount("1"),
        merchant: None,
    };
    assert_eq!(code(&mut s, debit3), Code::Ok);
    let seqs: Vec<u64> = page(&s, 2, None, None).iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [3, 2]);
    assert_eq!(page(&s, 2, Some(5), Some(3)).len(), 1);
    assert_eq!(page(&s, 2, Some(5), Some(2)).len(), 0, "seq 1 is forgotten");
    s.advance_to(40_000);
    assert!(page(&s, 2, None, None).is_empty());
    assert_eq!(s.stats().history_entries, 0);
    s.check_invariants().unwrap();
}

#[test]
fn the_batch_hook_gives_a_queued_entry_its_result() {
    let mut s = shard_with_history(10_000);
    let slot = s.slot_of(2).unwrap();
    // What the keyed frame adds for a queue_debit naming merchant 7.
    s.history_add(slot, 5, Op::QueueDebit, Code::Queued, None, Some(7));
    s.history_add(slot, 6, Op::QueueDebit, Code::Queued, None, None);
    s.history_update_queued(slot, 5, Code::Ok, 3000);
    s.history_update_queued(slot, 6, Code::InsufficientFunds, 0);
    s.history_update_queued(slot, 99, Code::Ok, 1);
    let entries = page(&s, 2, None, None);
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].result, Code::InsufficientFunds);
    assert_eq!(entries[0].moved, None);
    assert_eq!(
        (entries[1].op, entries[1].result),
        (Op::QueueDebit, Code::Ok)
    );
    assert_eq!(
        entries[1].moved,
        Some(Moved {
            amount: 3000,
            balance: 10_000
        })
    );
    assert_eq!(entries[1].merchant, Some(7));
}

#[test]
fn closing_and_statements_survive_a_snapshot() {
    let mut s = shard_with_history(10_000);
    let reqs = [
        Request::Debit {
            id: 2,
            account: 2,
            amount: amount("40"),
            merchant: None,
        },
        Request::Authorize {
            id: 3,
            account: 2,
            amount: amount("10"),
            expires_in_ms: None,
            merchant: None,
        },
        Request::Capture {
            id: 4,
            account: 2,
            auth: 3,
            amount: None,
            is_final: true,
        },
        Request::Debit {
            id: 5,
            account: 2,
            amount: amount("50"),
            merchant: None,
        },
        Request::CloseAccount { account: 2 },
        Request::Deposit {
            id: 6,
            account: 2,
            amount: amount("1"),
        },
        Request::Debit {
            id: 2,
            account: 1,
            amount: amount("100"),
            merchant: None,
        },
        Request::CloseAccount { account: 1 },
    ];
    for r in &reqs {
        s.apply(r);
    }
    s.check_invariants().unwrap();
    assert!(s.is_closed(1) && s.is_closed(2));
    let mut bytes = Vec::new();
    s.encode_snapshot(&mut bytes);
    let mut copy = Shard::decode_snapshot(&bytes, 10_000, None).expect("decodes");
    copy.check_invariants().unwrap();
    assert_eq!(page(&copy, 2, None, None), page(&s, 2, None, None));
    assert_eq!(page(&copy, 2, None, None).len(), 6);
    assert_eq!(copy.stats().history_entries, 6);
    let mut again = Vec::new();
    copy.encode_snapshot(&mut again);
    assert_eq!(bytes, again);
    for r in reqs.iter().chain(&[
        Request::History {
            account: 2,
            limit: Some(2),
            before: Some(5),
        },
        Request::Balance { account: 2 },
        Request::Freeze { account: 1 },
        Request::OpenAccount {
            account: 2,
            currency: Some(Currency::USD),
            overdraft: None,
            history: false,
        },
        Request::Deposit {
            id: 7,
            account: 2,
            amount: amount("1"),
        },
        Request::History {
            account: 2,
            limit: None,
            before: None,
        },
        Request::History {
            account: 1,
            limit: None,
            before: None,
        },
    ]) {
        assert_eq!(s.apply(r), copy.apply(r), "{r:?}");
    }
    for cut in [0, bytes.len() - 8, bytes.len() - 1] {
        assert!(Shard::decode_snapshot(&bytes[..cut], 10_000, None).is_none());
    }
}

#[test]
fn a_version_3_snapshot_still_reads() {
    // A shard with no cut, settle key or queued debit, nothing closed and
    // no statement writes, after the version 3 body, five empty tables:
    // without them (and with the old version word) it is a version 3 body.
    let s = shard();
    let mut bytes = Vec::new();
    s.encode_snapshot(&mut bytes);
    assert_eq!(bytes[bytes.len() - 40..], [0; 40]);
    bytes.truncate(bytes.len() - 40);
    bytes[..8].copy_from_slice(&3u64.to_le_bytes());
    let mut old = Shard::decode_snapshot(&bytes, 10_000, None).expect("a v3 body reads");
    assert_eq!(
        old.apply(&Request::Balance { account: 1 }),
        s.clone_balance()
    );
    assert_eq!(
        old.apply(&Request::History {
            account: 1,
            limit: None,
            before: None
        })
        .code,
        Code::NoHistory
    );
}

impl Shard {
    fn clone_balance(&self) -> Outcome {
        let a = &self.accounts[1];
        Outcome {
            code: Code::Ok,
            replayed: false,
            info: Info::Balance {
                currency: a.currency,
                balance: a.balance,
                held: a.held,
            },
        }
    }
}

#[test]
fn a_plain_account_pays_nothing_for_statements() {
    assert_eq!(std::mem::size_of::<Account>(), 48);
    let s = shard();
    assert_eq!(s.stats().history_accounts, 0);
    assert_eq!(s.stats().history_bytes, 0);
    assert_eq!(s.accounts[1].flags, 0);
}

/// A random stream of every keyed op (and freeze, limits, closing, time)
/// on one account, applied twice: to an account opened without history
/// and to one opened with it. Every outcome must be the same (the flag
/// takes part in nothing else), and the statement must be exactly the
/// keyed requests that got a remembered outcome, in order, each entry's
/// balance the balance right after it and its amount what the balance (or
/// held) moved.
#[test]
fn a_statement_changes_no_outcome_and_records_each_keyed_request() {
    let mut seed = 0x0DDC_0FFE_E5EE_D001u64;
    let mut next = move |n: u64| {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        crate::hash::fold(seed) % n
    };
    let (mut closed, mut forgotten, mut closed_rejections) = (0, 0, 0);
    for round in 0..20 {
        let mut plain = Shard::new(0, 5_000, None);
        let mut kept = Shard::new(0, 5_000, None);
        for (s, history) in [(&mut plain, false), (&mut kept, true)] {
            let open = Request::OpenAccount {
                account: 1,
                currency: Some(Currency::USD),
                overdraft: Some(amount("5")),
                history,
            };
            assert_eq!(s.apply(&open).code, Code::Ok);
        }
        let mut expected: Vec<(TxnId, Op, Code, i64, i64)> = Vec::new();
        let figures = |s: &mut Shard| match s.apply(&Request::Balance { account: 1 }).info {
            Info::Balance { balance, held, .. } => (balance, held),
            other => panic!("{other:?}"),
        };
        for step in 0..400u64 {
            let id = next(60); // ids repeat: replays and conflicts
            let auth = next(60);
            let text = ["1", "2.50", "7", "0.01", "30", "x", "1.001"][next(7) as usize];
            let a = amount(text);
            let request = match next(14) {
                0 | 1 => Request::Deposit {
                    id,
                    account: 1,
                    amount: a,
                },
                2 | 3 => Request::Debit {
                    id,
                    account: 1,
                    amount: a,
                    merchant: None,
                },
                4 => Request::Authorize {
                    id,
                    account: 1,
                    amount: a,
                    expires_in_ms: Some(1 + next(3_000)),
                    merchant: None,
                },
                5 => Request::Increment {
                    id,
                    account: 1,
                    auth,
                    amount: a,
                    expires_in_ms: None,
                },
                6 => Request::Capture {
                    id,
                    account: 1,
                    auth,
                    amount: (next(2) == 0).then_some(a),
                    is_final: next(2) == 0,
                },
                7 => Request::Void {
                    id,
                    account: 1,
                    auth,
                },
                8 => Request::Refund {
                    id,
                    account: 1,
                    of: auth,
                    amount: (next(2) == 0).then_some(a),
                },
                9 => Request::SetLimits {
                    account: 1,
                    limits: Box::new(LimitsArg {
                        review_above: (next(2) == 0).then(|| amount("20")),
                        ..LimitsArg::default()
                    }),
                },
                10 => [
                    Request::Freeze { account: 1 },
                    Request::Unfreeze { account: 1 },
                ][next(2) as usize]
                    .clone(),
                // Late in the stream, so that most of it runs open (the
                // account starts empty: a close would succeed at once).
                11 if step >= 350 => Request::CloseAccount { account: 1 },
                12 => Request::AdvanceClock { ms: next(2_000) },
                _ => Request::Status { account: 1, id },
            };
            let mut requests = vec![request];
            if step == 370 {
                // Empty the account so that the closes after this can
                // succeed: no rule to review the debit, every hold
                // expired, then the balance taken to 0 (unfrozen).
                let (balance, _) = figures(&mut kept);
                let money = amount(&crate::money::format_minor(balance.abs(), 2));
                requests = vec![
                    Request::SetLimits {
                        account: 1,
                        limits: Box::default(),
                    },
                    Request::Unfreeze { account: 1 },
                    Request::AdvanceClock { ms: 4_000 },
                    if balance > 0 {
                        Request::Debit {
                            id: 999,
                            account: 1,
                            amount: money,
                            merchant: None,
                        }
                    } else {
                        Request::Deposit {
                            id: 999,
                            account: 1,
                            amount: money,
                        }
                    },
                    Request::CloseAccount { account: 1 },
                ];
            }
            for request in requests {
                let (b0, h0) = figures(&mut kept);
                let want = plain.apply(&request);
                let got = kept.apply(&request);
                assert_eq!(got, want, "round {round} step {step}: {request:?}");
                closed += usize::from(request.op() == Op::CloseAccount && got.code == Code::Ok);
                closed_rejections += usize::from(got.code == Code::AccountClosed && !got.replayed);
                plain.check_invariants().unwrap();
                kept.check_invariants().unwrap();
                let keyed = matches!(
                    request.op(),
                    Op::Deposit
                        | Op::Debit
                        | Op::Authorize
                        | Op::Increment
                        | Op::Capture
                        | Op::Void
                        | Op::Refund
                );
                if keyed && !got.replayed && got.code != Code::IdConflict {
                    let (balance, held) = figures(&mut kept);
                    let moved = if balance != b0 {
                        (balance - b0).abs()
                    } else {
                        held - h0
                    };
                    let id = match request {
                        Request::Deposit { id, .. }
                        | Request::Debit { id, .. }
                        | Request::Authorize { id, .. }
                        | Request::Increment { id, .. }
                        | Request::Capture { id, .. }
                        | Request::Void { id, .. }
                        | Request::Refund { id, .. } => id,
                        _ => unreachable!("keyed"),
                    };
                    expected.push((id, request.op(), got.code, balance, moved));
                }
            }
        }
        // Entries forgotten with their keys are the oldest ones; what is
        // kept is the newest part of what was expected, in order.
        let entries = page(&kept, 1, Some(1000), None);
        let entries: Vec<HistoryEntry> = entries.into_iter().rev().collect();
        assert!(entries.len() <= expected.len());
        let skipped = expected.len() - entries.len();
        forgotten += skipped;
        assert_eq!(
            entries.first().map_or(skipped as u64 + 1, |e| e.seq),
            skipped as u64 + 1
        );
        let mut effective = 0;
        for (entry, &(id, op, code, balance, amount)) in entries.iter().zip(&expected[skipped..]) {
            assert_eq!(
                (entry.id, entry.op, entry.result),
                (id, op, code),
                "{entry:?}"
            );
            if let Some(moved) = entry.moved {
                assert!(code.is_effective() && op != Op::Void, "{entry:?}");
                assert_eq!(
                    (moved.amount, moved.balance),
                    (amount, balance),
                    "{entry:?}"
                );
                assert!(amount > 0);
                effective += 1;
            } else {
                assert!(!code.is_effective() || op == Op::Void, "{entry:?}");
            }
        }
        assert!(
            effective > 0 || entries.is_empty(),
            "round {round}: no entry moved money"
        );
    }
    // The stream reaches what it is for.
    assert!(closed > 0 && closed_rejections > 0, "{closed} closes");
    assert!(forgotten > 0, "no entry was ever forgotten");
}

/// What a merchant costs a shard (PERF.md "Fifth session" reports it
/// measured through loadgen): its record, in a vector.
#[test]
fn a_merchant_record_stays_small() {
    let size = std::mem::size_of::<Merchant>();
    println!("Merchant: {size} bytes");
    assert_eq!(size, 128, "a power of two: found with a shift");
}
