//! The gateway as a service is stopped and started: over one data
//! directory, every acknowledged payment survives a SIGTERM (graceful) and
//! a SIGKILL (none), and its retries still replay; a SIGTERM under load
//! answers what it accepted, and each request not answered either
//! happened or did not, whole.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{Gateway, TempDir};

/// One acknowledged debit: where, which key, how much (in cents), what
/// it answered.
#[derive(Clone, Debug)]
struct Acked {
    account: u64,
    key: u64,
    cents: u64,
    status: u16,
    text: String,
}

fn debit(gateway: &Gateway, account: u64, key: u64, cents: u64) -> Acked {
    let body = format!(r#"{{"amount":"{}.{:02}"}}"#, cents / 100, cents % 100);
    let reply = gateway.call(
        "POST",
        &format!("/accounts/{account}/debits"),
        Some(key),
        &body,
    );
    Acked {
        account,
        key,
        cents,
        status: reply.status,
        text: reply.text,
    }
}

fn cents(text: &str) -> i64 {
    let (major, minor) = text.split_once('.').expect("two decimals");
    major.parse::<i64>().unwrap() * 100 + minor.parse::<i64>().unwrap()
}

/// Every acknowledged debit replays its first answer, and every balance
/// is the deposits less the ok debits.
fn check_survived(gateway: &Gateway, acked: &[Acked], accounts: u64, deposit_cents: i64) {
    for a in acked {
        let body = format!(r#"{{"amount":"{}.{:02}"}}"#, a.cents / 100, a.cents % 100);
        let path = format!("/accounts/{}/debits", a.account);
        let reply = gateway.call("POST", &path, Some(a.key), &body);
        assert!(reply.replayed, "{a:?}: {reply:?}");
        assert_eq!((reply.status, &reply.text), (a.status, &a.text), "{a:?}");
    }
    for account in 1..=accounts {
        let spent: i64 = acked
            .iter()
            .filter(|a| a.account == account && a.status == 200)
            .map(|a| a.cents as i64)
            .sum();
        let [balance, held, _] = gateway.balance(account);
        assert_eq!(cents(&balance), deposit_cents - spent, "account {account}");
        assert_eq!(held, "0.00");
    }
}

/// Waits for a gateway sent SIGTERM: it exits 0 having shut the engine
/// down (its log says so).
fn assert_graceful_exit(gateway: &mut Gateway) {
    let status = gateway.wait();
    let log = gateway.log();
    assert!(status.success(), "exit after SIGTERM: {status:?}\n{log}");
    assert!(log.contains("engine stopped"), "{log}");
}

#[test]
fn acknowledged_payments_survive_sigterm_and_sigkill() {
    let dir = TempDir::new("restart");
    let args = ["--data-dir", dir.arg(), "--shards", "2"];
    const ACCOUNTS: u64 = 4;
    let mut gateway = Gateway::start(&args);
    for account in 1..=ACCOUNTS {
        gateway.funded(account, "USD", "100");
    }
    let mut acked = Vec::new();
    for key in 2..42u64 {
        // Some of these pass the balance: refusals must survive too.
        acked.push(debit(&gateway, key % ACCOUNTS + 1, key, 100 + key * 60));
    }
    assert!(acked.iter().any(|a| a.status == 200));
    assert!(acked.iter().any(|a| a.status == 402));
    gateway.signal("TERM");
    assert_graceful_exit(&mut gateway);
    drop(gateway);

    let gateway = Gateway::start(&args);
    check_survived(&gateway, &acked, ACCOUNTS, 10_000);
    for key in 42..62u64 {
        acked.push(debit(&gateway, key % ACCOUNTS + 1, key, 1 + key));
    }
    gateway.signal("KILL");
    drop(gateway);

    let gateway = Gateway::start(&args);
    check_survived(&gateway, &acked, ACCOUNTS, 10_000);
}

#[test]
fn sigterm_under_load_answers_what_it_accepted() {
    let dir = TempDir::new("drain");
    let args = ["--data-dir", dir.arg(), "--shards", "2"];
    const SENDERS: u64 = 4;
    let gateway = Gateway::start(&args);
    for account in 1..=SENDERS {
        gateway.funded(account, "USD", "1000000");
    }
    let gateway_ref = Arc::new(gateway);
    // Each sender debits its own account, 1 to 100 cents, until a request
    // fails (the gateway stopped) or a bound is reached.
    let senders: Vec<_> = (1..=SENDERS)
        .map(|account| {
            let gateway = Arc::clone(&gateway_ref);
            thread::spawn(move || {
                let mut acked = Vec::new();
                let mut unanswered = Vec::new();
                for key in 2..5_000u64 {
                    let cents = key % 100 + 1;
                    let body = format!(r#"{{"amount":"{}.{:02}"}}"#, cents / 100, cents % 100);
                    let headers = [("Idempotency-Key", key.to_string())];
                    let headers: Vec<(&str, &str)> =
                        headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                    let path = format!("/accounts/{account}/debits");
                    match gateway.send("POST", &path, &headers, body) {
                        Ok(reply) => acked.push(Acked {
                            account,
                            key,
                            cents,
                            status: reply.status,
                            text: reply.text,
                        }),
                        Err(_) => {
                            unanswered.push((key, cents));
                            break;
                        }
                    }
                }
                (acked, unanswered)
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    gateway_ref.signal("TERM");
    let mut acked = Vec::new();
    let mut unanswered = Vec::new();
    for (account, sender) in (1..=SENDERS).zip(senders) {
        let (a, u) = sender.join().expect("a sender");
        acked.extend(a);
        unanswered.extend(u.into_iter().map(|(key, cents)| (account, key, cents)));
    }
    let mut gateway = Arc::into_inner(gateway_ref).expect("senders are done");
    assert_graceful_exit(&mut gateway);
    assert!(
        acked.len() >= SENDERS as usize,
        "too few requests before the stop"
    );
    // Every answer given was a real outcome: ok, or a 503 from an engine
    // that was already stopping.
    for a in &acked {
        assert!(a.status == 200 || a.status == 503, "{a:?}");
    }
    drop(gateway);

    let gateway = Gateway::start(&args);
    let ok: Vec<Acked> = acked.iter().filter(|a| a.status == 200).cloned().collect();
    // A request that got no answer happened whole or not at all: its key
    // is ok (then it moved its money) or unknown (then nothing).
    let mut happened = Vec::new();
    for &(account, key, cents) in &unanswered {
        let reply = gateway.get(&format!("/accounts/{account}/transactions/{key}"));
        match reply.status {
            200 => {
                assert_eq!(reply.body["status"], "ok", "{}", reply.text);
                happened.push(Acked {
                    account,
                    key,
                    cents,
                    status: 200,
                    text: String::new(),
                });
            }
            404 => assert_eq!(reply.code(), "unknown_id", "{}", reply.text),
            other => panic!("status of {account}/{key}: {other} {}", reply.text),
        }
    }
    check_survived(&gateway, &ok, 0, 0);
    for account in 1..=SENDERS {
        let spent: i64 = ok
            .iter()
            .chain(&happened)
            .filter(|a| a.account == account)
            .map(|a| a.cents as i64)
            .sum();
        let [balance, _, _] = gateway.balance(account);
        assert_eq!(cents(&balance), 100_000_000 - spent, "account {account}");
    }
}
