//! One producer thread: a gateway worker that owns a [`Client`] and sends
//! requests one at a time, taking outcomes back as they arrive.
//!
//! Each request carries a tag that indexes this producer's in-flight table,
//! where the request's intended send time and what the bookkeeping needs of
//! it wait for the outcome. Latency is outcome time minus intended send
//! time: in closed loop the intended time is the actual one; in open loop
//! (`--rate`) it is the time the schedule said the request should go, so a
//! producer held up by a slow engine still charges the delay to the engine
//! instead of quietly sending less (coordinated omission).
//!
//! The producer keeps its own book of the holds it created and the debits
//! it made, so captures, voids and increments name holds that exist and
//! refunds name debits that succeeded: the engine sees the lifecycle a
//! gateway would drive, not a stream of `auth_not_found`.

use crate::args::{Config, IdOrder};
use crate::report::{new_histogram, Counts, ProducerSlot, PUBLISH_INTERVAL_NS};
use crate::workload::{
    account_id, increment_amount_minor, purchase_amount_minor, IdGen, KeyChooser, Mix, OpKind, Rng,
};
use debitcore::hash::WordHasher;
use debitcore::{AmountArg, Client, Code, Outcome, Request, Submitter};
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Longest the final drain waits for outstanding outcomes before it counts
/// them as lost.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Holds one producer remembers at most; past it a random one is forgotten
/// (it stays in the engine until it expires).
const HOLDS_MAX: usize = 1 << 18;

/// Refundable debits one producer remembers at most; same policy.
const REFUNDABLE_MAX: usize = 1 << 18;

/// Random picks an increment makes for a hold with no capture yet before
/// it falls back to a new authorization.
const INCREMENT_PICKS_MAX: usize = 4;

/// In open loop, a partly filled client batch is flushed once its oldest
/// request has waited this long, or when the next send is at least this
/// far away: a gateway trades a little latency for batching the same way.
const FLUSH_DELAY_NS: u64 = 20_000;

/// Engine exponent of USD, the currency every account is opened in.
pub const USD_EXPONENT: u32 = 2;

/// What a producer tells the main thread when it is done.
#[derive(Clone, Debug, Default)]
pub struct ProducerResult {
    pub sent: u64,
    pub received: u64,
    pub drain_timed_out: bool,
    pub drain_s: f64,
}

/// What every producer of one run shares.
pub struct Run<'a> {
    pub config: &'a Config,
    /// The start of the measured part: time 0 of every latency tag.
    pub start: Instant,
    /// When producers stop sending, in ns since `start`.
    pub end_ns: u64,
    /// Producers that stopped sending and published their counts.
    pub stopped: AtomicUsize,
}

/// Runs one producer until `run.end_ns`, then drains.
pub fn run(index: usize, run: &Run, slot: &ProducerSlot, mut client: Client) -> ProducerResult {
    let config = run.config;
    let mut producer = Producer::new(index, config, run.start, slot);
    match config.rate {
        None => producer.closed_loop(&mut client, run.end_ns),
        Some(rate) => {
            let interval_ns = 1e9 * config.producers as f64 / rate;
            producer.open_loop(&mut client, run.end_ns, interval_ns);
        }
    }
    // Publish what the measured part did before draining, so that the
    // reporter's last line covers it fully.
    producer.publish();
    run.stopped.fetch_add(1, Ordering::Release);
    let drain_start = Instant::now();
    let mut outstanding = producer.in_flight_count();
    let drained = drain(
        &mut client,
        &mut outstanding,
        DRAIN_TIMEOUT,
        |tag, outcome| {
            let now = producer.now_ns();
            producer.complete(tag, outcome, now);
        },
    );
    producer.publish();
    if !drained {
        // Dropping a client waits for every outstanding outcome, which
        // would turn lost outcomes into a hang; leak it so they get counted.
        std::mem::forget(client);
    }
    ProducerResult {
        sent: producer.sent,
        received: producer.received,
        drain_timed_out: !drained,
        drain_s: drain_start.elapsed().as_secs_f64(),
    }
}

/// The async mode (`--async-tasks`): this producer thread runs a
/// current-thread tokio runtime with `tasks` tasks, each of which sends one
/// request with `Submitter::submit_async`, awaits its outcome, and sends
/// the next, as the handlers of an HTTP gateway do. Closed loop; the
/// tasks share the thread's book, counts and histogram (one thread, so no
/// lock). The wake-up of each task by a shard worker is part of the
/// measured latency, as it would be in a gateway.
pub fn run_async(
    index: usize,
    run: &Run<'static>,
    slot: &'static ProducerSlot,
    submitter: Submitter,
    tasks: usize,
) -> ProducerResult {
    let producer = Rc::new(RefCell::new(Producer::new(
        index, run.config, run.start, slot,
    )));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let local = tokio::task::LocalSet::new();
    let (start, end_ns) = (run.start, run.end_ns);
    local.block_on(&runtime, async {
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let producer = Rc::clone(&producer);
                let submitter = submitter.clone();
                tokio::task::spawn_local(async move {
                    loop {
                        let now = start.elapsed().as_nanos() as u64;
                        if now >= end_ns {
                            break;
                        }
                        let (request, pending) = producer.borrow_mut().next_sent(now);
                        let outcome = submitter.submit_async(request).await;
                        let now = start.elapsed().as_nanos() as u64;
                        producer
                            .borrow_mut()
                            .complete_pending(pending, outcome, now);
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("a load task panicked");
        }
    });
    let mut producer = producer.borrow_mut();
    // Every task awaited its last outcome: nothing is left to drain.
    producer.publish();
    run.stopped.fetch_add(1, Ordering::Release);
    ProducerResult {
        sent: producer.sent,
        received: producer.received,
        drain_timed_out: false,
        drain_s: 0.0,
    }
}

/// Flushes, then takes outcomes until `outstanding` reaches 0 or `timeout`
/// passes. Polls rather than `wait`s, so an engine that lost an outcome
/// shows up as a count instead of a hang. Returns whether all came back.
pub fn drain(
    client: &mut Client,
    outstanding: &mut u64,
    timeout: Duration,
    mut on_outcome: impl FnMut(u64, Outcome),
) -> bool {
    client.flush();
    let deadline = Instant::now() + timeout;
    while *outstanding > 0 {
        let got = client.poll(|tag, outcome| {
            on_outcome(tag, outcome);
        });
        *outstanding -= got as u64;
        if got == 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::yield_now();
        }
    }
    true
}

/// A request on its way: what the outcome handler needs to know of it.
#[derive(Clone, Copy, Debug)]
struct Pending {
    intended_ns: u64,
    kind: OpKind,
    account: u64,
    id: u64,
    /// The hold a capture, void or increment names.
    auth: u64,
    /// Minor units the request moves (0 when it names no amount).
    amount: u64,
}

/// The in-flight table: a slab whose index is the request's tag. Its
/// capacity is the producer's in-flight bound.
struct InFlight {
    slots: Vec<Pending>,
    free: Vec<u32>,
}

impl InFlight {
    fn new(capacity: usize) -> InFlight {
        let empty = Pending {
            intended_ns: 0,
            kind: OpKind::Debit,
            account: 0,
            id: 0,
            auth: 0,
            amount: 0,
        };
        InFlight {
            slots: vec![empty; capacity],
            free: (0..capacity as u32).rev().collect(),
        }
    }

    fn is_full(&self) -> bool {
        self.free.is_empty()
    }

    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn insert(&mut self, pending: Pending) -> u64 {
        let tag = self.free.pop().expect("caller checks is_full first");
        self.slots[tag as usize] = pending;
        u64::from(tag)
    }

    fn take(&mut self, tag: u64) -> Pending {
        let index = usize::try_from(tag).expect("tags are slab indices");
        assert!(
            index < self.slots.len(),
            "outcome with tag {tag} that was never sent"
        );
        debug_assert!(
            !self.free.contains(&(index as u32)),
            "outcome for tag {tag} twice"
        );
        self.free.push(index as u32);
        self.slots[index]
    }
}

/// A hold this producer created and believes active.
#[derive(Clone, Copy, Debug)]
struct Hold {
    account: u64,
    auth: u64,
    /// A lower bound of what is left: partial captures are subtracted when
    /// sent, increments added when confirmed.
    remaining: u64,
    /// A capture was sent, so an increment would get `capture_started`.
    captured: bool,
}

type IdMap = HashMap<u64, u32, BuildHasherDefault<WordHasher>>;

/// The producer's view of its holds and refundable debits.
#[derive(Default)]
struct Book {
    holds: Vec<Hold>,
    /// Hold `auth` id to its index in `holds` (ids are unique per producer).
    hold_index: IdMap,
    /// (account, debit id) of ok debits not yet refunded.
    refundable: Vec<(u64, u64)>,
}

impl Book {
    fn add_hold(&mut self, hold: Hold, rng: &mut Rng) {
        if self.holds.len() >= HOLDS_MAX {
            let victim = rng.below(self.holds.len() as u64) as usize;
            self.remove_hold(victim);
        }
        self.hold_index.insert(hold.auth, self.holds.len() as u32);
        self.holds.push(hold);
    }

    fn remove_hold(&mut self, index: usize) -> Hold {
        let hold = self.holds.swap_remove(index);
        self.hold_index.remove(&hold.auth);
        if let Some(moved) = self.holds.get(index) {
            self.hold_index.insert(moved.auth, index as u32);
        }
        hold
    }

    fn random_hold(&self, rng: &mut Rng) -> Option<usize> {
        (!self.holds.is_empty()).then(|| rng.below(self.holds.len() as u64) as usize)
    }

    fn hold_mut(&mut self, auth: u64) -> Option<&mut Hold> {
        let index = *self.hold_index.get(&auth)?;
        self.holds.get_mut(index as usize)
    }

    fn add_refundable(&mut self, account: u64, id: u64, rng: &mut Rng) {
        if self.refundable.len() >= REFUNDABLE_MAX {
            let victim = rng.below(self.refundable.len() as u64) as usize;
            self.refundable.swap_remove(victim);
        }
        self.refundable.push((account, id));
    }

    fn take_refundable(&mut self, rng: &mut Rng) -> Option<(u64, u64)> {
        if self.refundable.is_empty() {
            return None;
        }
        let index = rng.below(self.refundable.len() as u64) as usize;
        Some(self.refundable.swap_remove(index))
    }
}

struct Producer<'a> {
    rng: Rng,
    ids: IdGen,
    keys: KeyChooser,
    mix: &'a Mix,
    start: Instant,
    slot: &'a ProducerSlot,
    in_flight: InFlight,
    book: Book,
    /// Whether the mix sends refunds (and so needs `book.refundable`).
    refunds_in_mix: bool,
    /// Merchants to name (ids 1..=merchants); 0: none.
    merchants: u64,
    counts: Counts,
    latencies: Histogram<u64>,
    sent: u64,
    received: u64,
    next_publish_ns: u64,
}

impl<'a> Producer<'a> {
    fn new(
        index: usize,
        config: &'a Config,
        start: Instant,
        slot: &'a ProducerSlot,
    ) -> Producer<'a> {
        Producer {
            rng: Rng::for_stream(config.seed, index as u64 + 1),
            ids: match config.id_order {
                IdOrder::Random => IdGen::Random,
                IdOrder::Sequential => IdGen::sequential(index),
            },
            keys: KeyChooser::new(config.accounts, config.skew),
            mix: &config.mix,
            start,
            slot,
            in_flight: InFlight::new(config.in_flight),
            book: Book::default(),
            refunds_in_mix: config.mix.share(OpKind::Refund) > 0.0,
            merchants: config.merchants,
            counts: Counts::default(),
            latencies: new_histogram(),
            sent: 0,
            received: 0,
            next_publish_ns: PUBLISH_INTERVAL_NS,
        }
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn in_flight_count(&self) -> u64 {
        self.sent - self.received
    }

    /// As fast as the engine answers, at most `in_flight` outstanding.
    fn closed_loop(&mut self, client: &mut Client, end_ns: u64) {
        loop {
            let now = self.now_ns();
            if now >= end_ns {
                break;
            }
            self.maybe_publish(now);
            if self.in_flight.is_full() {
                self.wait(client);
                continue;
            }
            self.send_one(client, now);
            self.poll(client);
        }
    }

    /// Sends on a fixed schedule of one request every `interval_ns`.
    fn open_loop(&mut self, client: &mut Client, end_ns: u64, interval_ns: f64) {
        let mut k: u64 = 0;
        // Stagger producers across one interval, so their sends interleave.
        let phase = self.rng.next_f64() * interval_ns;
        let intended = |k: u64| (phase + k as f64 * interval_ns) as u64;
        let mut unflushed_since: Option<u64> = None;
        loop {
            let now = self.now_ns();
            if now >= end_ns {
                break;
            }
            self.maybe_publish(now);
            let next = intended(k);
            if now < next {
                self.poll(client);
                let gap = next - now;
                if let Some(since) = unflushed_since {
                    if now - since >= FLUSH_DELAY_NS || gap >= FLUSH_DELAY_NS {
                        client.flush();
                        unflushed_since = None;
                    }
                }
                // Never spin: shard workers and flushers need these cores.
                // Sleep until the next send (or the flush of a partly
                // filled batch) is due, but wake for any outcome that
                // arrives meanwhile, so its time is taken when it comes.
                let mut wake_ns = next;
                if let Some(since) = unflushed_since {
                    wake_ns = wake_ns.min(since + FLUSH_DELAY_NS);
                }
                self.poll_until(client, wake_ns);
                continue;
            }
            if self.in_flight.is_full() {
                self.wait(client);
                unflushed_since = None;
                continue;
            }
            self.send_one(client, next);
            unflushed_since.get_or_insert(now);
            k += 1;
            self.poll(client);
        }
    }

    fn maybe_publish(&mut self, now: u64) {
        if now >= self.next_publish_ns {
            self.publish();
            self.next_publish_ns = now + PUBLISH_INTERVAL_NS;
        }
    }

    fn publish(&mut self) {
        self.slot.publish(&self.counts, &mut self.latencies);
    }

    fn poll(&mut self, client: &mut Client) {
        let mut now = None;
        let got = client.poll(|tag, outcome| {
            let t = *now.get_or_insert_with(|| self.now_ns());
            self.complete(tag, outcome, t);
        });
        debug_assert!(got as u64 <= self.sent);
    }

    /// Takes outcomes as they arrive until `wake_ns`, sleeping meanwhile.
    fn poll_until(&mut self, client: &mut Client, wake_ns: u64) {
        let deadline = self.start + Duration::from_nanos(wake_ns);
        let mut now = None;
        client.poll_until(deadline, |tag, outcome| {
            let t = *now.get_or_insert_with(|| self.now_ns());
            self.complete(tag, outcome, t);
        });
    }

    fn wait(&mut self, client: &mut Client) {
        let mut now = None;
        let got = client.wait(|tag, outcome| {
            let t = *now.get_or_insert_with(|| self.now_ns());
            self.complete(tag, outcome, t);
        });
        assert!(
            got > 0 || self.in_flight.len() == 0,
            "client reports nothing in flight while {} requests await outcomes",
            self.in_flight.len()
        );
    }

    fn send_one(&mut self, client: &mut Client, intended_ns: u64) {
        let (request, pending) = self.next_sent(intended_ns);
        let tag = self.in_flight.insert(pending);
        client.send(tag, request);
    }

    /// The next request, counted as sent.
    fn next_sent(&mut self, intended_ns: u64) -> (Request, Pending) {
        self.maybe_publish(intended_ns);
        let (request, pending) = self.next_request(intended_ns);
        self.counts.sent[pending.kind.index()] += 1;
        self.sent += 1;
        (request, pending)
    }

    /// Picks the next op from the mix and builds it against the book. Ops
    /// that need a hold or a debit fall back to creating one when the book
    /// has none (capture, void, increment, partial capture to authorize;
    /// refund to debit), so the mix shapes the load without starving.
    fn next_request(&mut self, intended_ns: u64) -> (Request, Pending) {
        let kind = self.mix.sample(self.rng.next_u64());
        let id = self.ids.next(&mut self.rng);
        let mut pending = Pending {
            intended_ns,
            kind,
            account: 0,
            id,
            auth: 0,
            amount: 0,
        };
        match kind {
            OpKind::Debit => self.new_money_request(pending, OpKind::Debit),
            OpKind::QueueDebit => self.new_money_request(pending, OpKind::QueueDebit),
            OpKind::Authorize => self.new_money_request(pending, OpKind::Authorize),
            OpKind::Capture | OpKind::Void => {
                let Some(index) = self.book.random_hold(&mut self.rng) else {
                    return self.new_money_request(pending, OpKind::Authorize);
                };
                let hold = self.book.remove_hold(index);
                pending.account = hold.account;
                pending.auth = hold.auth;
                let account = account_id(hold.account);
                let request = if kind == OpKind::Capture {
                    Request::Capture {
                        id,
                        account,
                        auth: hold.auth,
                        amount: None,
                        is_final: true,
                    }
                } else {
                    Request::Void {
                        id,
                        account,
                        auth: hold.auth,
                    }
                };
                (request, pending)
            }
            OpKind::PartialCapture => {
                let Some(index) = self.book.random_hold(&mut self.rng) else {
                    return self.new_money_request(pending, OpKind::Authorize);
                };
                let hold = &mut self.book.holds[index];
                let amount = (hold.remaining / 2).max(1);
                hold.remaining = hold.remaining.saturating_sub(amount);
                hold.captured = true;
                let (account, auth, ended) = (hold.account, hold.auth, hold.remaining == 0);
                if ended {
                    // Taking all that is left ends the hold in the engine.
                    self.book.remove_hold(index);
                }
                pending.account = account;
                pending.auth = auth;
                pending.amount = amount;
                let request = Request::Capture {
                    id,
                    account: account_id(account),
                    auth,
                    amount: Some(AmountArg::from_minor(amount, USD_EXPONENT)),
                    is_final: false,
                };
                (request, pending)
            }
            OpKind::Increment => {
                let mut found = None;
                for _ in 0..INCREMENT_PICKS_MAX {
                    match self.book.random_hold(&mut self.rng) {
                        Some(i) if !self.book.holds[i].captured => {
                            found = Some(i);
                            break;
                        }
                        Some(_) => continue,
                        None => break,
                    }
                }
                let Some(index) = found else {
                    return self.new_money_request(pending, OpKind::Authorize);
                };
                let hold = self.book.holds[index];
                let amount = increment_amount_minor(&mut self.rng);
                pending.account = hold.account;
                pending.auth = hold.auth;
                pending.amount = amount;
                let request = Request::Increment {
                    id,
                    account: account_id(hold.account),
                    auth: hold.auth,
                    amount: AmountArg::from_minor(amount, USD_EXPONENT),
                    expires_in_ms: None,
                };
                (request, pending)
            }
            OpKind::Refund => {
                let Some((account, of)) = self.book.take_refundable(&mut self.rng) else {
                    return self.new_money_request(pending, OpKind::Debit);
                };
                pending.account = account;
                pending.auth = of;
                let request = Request::Refund {
                    id,
                    account: account_id(account),
                    of,
                    amount: None,
                };
                (request, pending)
            }
        }
    }

    /// A debit or authorize of a purchase amount on a chosen account.
    fn new_money_request(&mut self, mut pending: Pending, kind: OpKind) -> (Request, Pending) {
        let index = self.keys.choose(&mut self.rng);
        let amount_minor = purchase_amount_minor(&mut self.rng);
        let (id, account, amount) = (
            pending.id,
            account_id(index),
            AmountArg::from_minor(amount_minor, USD_EXPONENT),
        );
        pending.kind = kind;
        pending.account = index;
        pending.amount = amount_minor;
        let merchant = (self.merchants > 0).then(|| 1 + self.rng.below(self.merchants));
        let request = match kind {
            OpKind::Debit => Request::Debit {
                id,
                account,
                amount,
                merchant,
            },
            OpKind::QueueDebit => Request::QueueDebit {
                id,
                account,
                amount,
                merchant,
            },
            OpKind::Authorize => Request::Authorize {
                id,
                account,
                amount,
                expires_in_ms: None,
                merchant,
            },
            _ => unreachable!("only debit and authorize create money requests"),
        };
        (request, pending)
    }

    /// Takes one outcome: latency, counts, and what the book learns from it.
    fn complete(&mut self, tag: u64, outcome: Outcome, now_ns: u64) {
        let pending = self.in_flight.take(tag);
        self.complete_pending(pending, outcome, now_ns);
    }

    fn complete_pending(&mut self, pending: Pending, outcome: Outcome, now_ns: u64) {
        self.received += 1;
        let latency = now_ns.saturating_sub(pending.intended_ns).max(1);
        self.latencies.saturating_record(latency);
        self.counts.outcomes[pending.kind.index()][outcome.code as usize] += 1;
        self.counts.replayed += u64::from(outcome.replayed);
        match (pending.kind, outcome.code) {
            // Only a mix with refunds needs the book of refundable debits
            // (a random write into a large array per ok debit otherwise).
            (OpKind::Debit, Code::Ok) if self.refunds_in_mix => {
                self.book
                    .add_refundable(pending.account, pending.id, &mut self.rng);
            }
            // A debit routed to review is a hold under the debit's id,
            // which the gateway later captures (approve) or voids.
            (OpKind::Debit, Code::HeldForReview) | (OpKind::Authorize, Code::Ok) => {
                let hold = Hold {
                    account: pending.account,
                    auth: pending.id,
                    remaining: pending.amount,
                    captured: false,
                };
                self.book.add_hold(hold, &mut self.rng);
            }
            (OpKind::PartialCapture, code) if !code.is_effective() => {
                if let Some(hold) = self.book.hold_mut(pending.auth) {
                    hold.remaining += pending.amount;
                }
            }
            (OpKind::Increment, Code::Ok) => {
                if let Some(hold) = self.book.hold_mut(pending.auth) {
                    hold.remaining += pending.amount;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_table_reuses_tags() {
        let mut table = InFlight::new(2);
        let p = |id| Pending {
            intended_ns: id,
            kind: OpKind::Debit,
            account: 0,
            id,
            auth: 0,
            amount: 0,
        };
        let a = table.insert(p(1));
        let b = table.insert(p(2));
        assert!(table.is_full());
        assert_ne!(a, b);
        assert_eq!(table.take(b).id, 2);
        assert_eq!(table.len(), 1);
        let c = table.insert(p(3));
        assert_eq!(c, b, "a freed tag is reused");
        assert_eq!(table.take(a).id, 1);
        assert_eq!(table.take(c).id, 3);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn book_keeps_its_index_in_step() {
        let mut rng = Rng::new(1);
        let mut book = Book::default();
        for auth in 0..10 {
            let hold = Hold {
                account: auth,
                auth,
                remaining: 100,
                captured: false,
            };
            book.add_hold(hold, &mut rng);
        }
        let removed = book.remove_hold(3);
        assert_eq!(removed.auth, 3);
        assert!(book.hold_mut(3).is_none());
        for hold in book.holds.clone() {
            assert_eq!(book.hold_mut(hold.auth).unwrap().auth, hold.auth);
        }
        book.hold_mut(9).unwrap().remaining += 5;
        assert_eq!(book.hold_mut(9).unwrap().remaining, 105);
    }
}
