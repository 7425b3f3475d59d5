//! A connection's bounded outbound queue: many senders (the hub, channels), one receiver (the
//! connection's writer task). The bound is a byte budget, not an item count: frames range from
//! 30 bytes to a megabyte of history, so a count bounds nothing (issue 12: 1,024 frames of
//! 25 KB per never-reading socket let 20 sockets hold 466 MB). Every queued item costs its
//! [`Weigh::weight`] plus its slot; a shared frame counts fully in every queue holding it.
//!
//! Why not `tokio::sync::mpsc`: it allocates its channel and first 32-slot block up front,
//! about 1.5 KiB per connection, while an idle connection's queue is empty almost always.
//! This one is a `VecDeque` behind a mutex plus a `Notify`: about 150 bytes when empty, grown
//! only while frames wait, and shrunk again once drained (README "Performance").

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// What an item costs against the queue's budget, in bytes (the slot itself is added), and
/// whether a newer item makes a queued one moot.
pub trait Weigh {
    fn weight(&self) -> usize;

    /// Whether this item may take the place of an older queued one (see [`Weigh::replaces`]).
    fn may_replace(&self) -> bool {
        false
    }

    /// For an item that [`Weigh::may_replace`]: `Some(true)` when `queued` is an older state of
    /// the same thing that this item supersedes, `Some(false)` when `queued` is about the same
    /// thing but must stay (nothing older may then be replaced), `None` when it is unrelated.
    fn replaces(&self, _queued: &Self) -> Option<bool> {
        None
    }
}

/// Why `try_send` did not queue the item (the item is handed back).
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// Queuing it would exceed the byte budget: the receiver does not keep up.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

struct State<T> {
    items: VecDeque<T>,
    /// Bytes of the items waiting (weights plus slots).
    queued: usize,
    budget: usize,
    senders: usize,
    receiver_alive: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// One permit per wake-up; with a single receiver a send never goes unnoticed (a
    /// notification with nobody waiting is kept for the next wait).
    notify: Notify,
}

pub struct Sender<T>(Arc<Shared<T>>);
pub struct Receiver<T>(Arc<Shared<T>>);

/// Capacity beyond which a drained queue gives its memory back.
const KEEP_CAPACITY: usize = 16;

fn cost<T: Weigh>(item: &T) -> usize {
    item.weight() + std::mem::size_of::<T>()
}

/// A queue holding at most `budget_bytes` of items, except that an empty queue always takes
/// one item, however big: a single frame is bounded by the frame and history limits, and
/// refusing it would cut off a client that reads perfectly well.
pub fn channel<T: Weigh>(budget_bytes: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            queued: 0,
            budget: budget_bytes,
            senders: 1,
            receiver_alive: true,
        }),
        notify: Notify::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T: Weigh> Sender<T> {
    /// Queue `item`, or put it in the place of an unsent older state it supersedes (a chat
    /// whose members changed again before the client read the last change: the client only
    /// needs the newest, so a burst of changes costs one frame per reader, not one per change).
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let cost = cost(&item);
        {
            let mut st = self.0.state.lock();
            if !st.receiver_alive {
                return Err(TrySendError::Closed(item));
            }
            if item.may_replace() {
                if let Some(at) = superseded(&st.items, &item) {
                    let queued = st.queued - self::cost(&st.items[at]) + cost;
                    if st.items.len() > 1 && queued > st.budget {
                        return Err(TrySendError::Full(item));
                    }
                    st.queued = queued;
                    st.items[at] = item;
                    // The replaced item had not been taken, so the receiver has yet to look
                    // at the queue: no wake-up is owed.
                    return Ok(());
                }
            }
            if !st.items.is_empty() && st.queued.saturating_add(cost) > st.budget {
                return Err(TrySendError::Full(item));
            }
            st.queued += cost;
            st.items.push_back(item);
        }
        self.0.notify.notify_one();
        Ok(())
    }
}

/// The position of the newest queued item about the same thing as `item`, if `item` supersedes
/// it. Scans from the back; queues are short except for a reader that has stopped reading,
/// which the byte budget cuts off.
fn superseded<T: Weigh>(items: &VecDeque<T>, item: &T) -> Option<usize> {
    for (at, queued) in items.iter().enumerate().rev() {
        match item.replaces(queued) {
            Some(true) => return Some(at),
            Some(false) => return None,
            None => {}
        }
    }
    None
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.state.lock().senders += 1;
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let last = {
            let mut st = self.0.state.lock();
            st.senders -= 1;
            st.senders == 0
        };
        if last {
            self.0.notify.notify_one();
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("outbox::Sender")
    }
}

impl<T: Weigh> Receiver<T> {
    /// The next item; `None` once every sender is gone and the queue is empty.
    /// Cancel-safe: an item is only taken when this returns it.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            match self.try_recv() {
                Ok(item) => return Some(item),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            self.0.notify.notified().await;
        }
    }

    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut st = self.0.state.lock();
        match st.items.pop_front() {
            Some(item) => {
                st.queued -= cost(&item);
                if st.items.is_empty() && st.items.capacity() > KEEP_CAPACITY {
                    st.items.shrink_to(0);
                }
                Ok(item)
            }
            None if st.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    pub fn len(&self) -> usize {
        self.0.state.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes waiting, as counted against the budget.
    pub fn queued_bytes(&self) -> usize {
        self.0.state.lock().queued
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let items = {
            let mut st = self.0.state.lock();
            st.receiver_alive = false;
            st.queued = 0;
            std::mem::take(&mut st.items)
        };
        drop(items); // outside the lock
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum TryRecvError {
    Empty,
    Disconnected,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Numbers weigh nothing but their 8-byte slot.
    impl Weigh for u64 {
        fn weight(&self) -> usize {
            0
        }
    }

    impl Weigh for String {
        fn weight(&self) -> usize {
            self.len()
        }
    }

    /// A state of thing `.0`: `(thing, version, replaceable)`.
    #[derive(Debug, PartialEq, Eq)]
    struct State(u8, u8, bool);

    impl Weigh for State {
        fn weight(&self) -> usize {
            100
        }
        fn may_replace(&self) -> bool {
            self.2
        }
        fn replaces(&self, queued: &Self) -> Option<bool> {
            (queued.0 == self.0).then_some(queued.2)
        }
    }

    #[test]
    fn a_newer_state_takes_the_place_of_an_unsent_one_only_after_the_last_fixed_item() {
        let (tx, mut rx) = channel::<State>(10_000);
        for item in [State(1, 1, true), State(2, 1, true), State(1, 2, true)] {
            tx.try_send(item).unwrap();
        }
        // Thing 1 v2 replaced v1 in its place; thing 2 untouched.
        assert_eq!(rx.len(), 2);
        let one_item = rx.queued_bytes() / 2;
        // A fixed item about thing 1 (like `delete_chat`) stops replacement before it.
        tx.try_send(State(1, 3, false)).unwrap();
        tx.try_send(State(1, 4, true)).unwrap();
        tx.try_send(State(1, 5, true)).unwrap();
        assert_eq!(rx.queued_bytes(), 4 * one_item);
        let got: Vec<State> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(
            got,
            [
                State(1, 2, true),
                State(2, 1, true),
                State(1, 3, false),
                State(1, 5, true)
            ]
        );
        assert_eq!(rx.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn bounded_fifo_that_ends_with_its_senders() {
        let (tx, mut rx) = channel::<u64>(16);
        let tx2 = tx.clone();
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx2.try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(tx);
        assert_eq!(tx2.try_send(4), Ok(()));
        drop(tx2);
        assert_eq!(rx.recv().await, Some(4));
        assert_eq!(rx.recv().await, None);
    }

    #[test]
    fn the_budget_counts_bytes_and_frees_them_when_taken() {
        let slot = std::mem::size_of::<String>();
        let (tx, mut rx) = channel::<String>(1000);
        // Many small items fit where few big ones do.
        for _ in 0..10 {
            tx.try_send("x".repeat(50)).unwrap();
        }
        assert_eq!(rx.queued_bytes(), 10 * (50 + slot));
        assert!(matches!(
            tx.try_send("y".repeat(600)),
            Err(TrySendError::Full(_))
        ));
        while rx.try_recv().is_ok() {}
        assert_eq!(rx.queued_bytes(), 0);
        tx.try_send("y".repeat(600)).unwrap();
        assert!(matches!(
            tx.try_send("z".repeat(400)),
            Err(TrySendError::Full(_))
        ));
        tx.try_send("z".repeat(300)).unwrap();
    }

    #[test]
    fn an_empty_queue_takes_one_item_bigger_than_the_budget() {
        let (tx, mut rx) = channel::<String>(100);
        tx.try_send("h".repeat(5000)).unwrap();
        assert!(matches!(
            tx.try_send("x".into()),
            Err(TrySendError::Full(_))
        ));
        assert_eq!(rx.try_recv().map(|s| s.len()), Ok(5000));
        tx.try_send("x".into()).unwrap();
    }

    #[tokio::test]
    async fn a_send_wakes_a_waiting_receiver_and_a_gone_receiver_refuses() {
        let (tx, mut rx) = channel::<u64>(64);
        let waiter = tokio::spawn(async move {
            let got = rx.recv().await;
            (got, rx)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.try_send(7).unwrap();
        let (got, rx) = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(got, Some(7));
        drop(rx);
        assert_eq!(tx.try_send(8), Err(TrySendError::Closed(8)));
    }

    #[tokio::test]
    async fn a_drained_queue_gives_its_memory_back() {
        let (tx, mut rx) = channel::<u64>(1 << 20);
        for i in 0..500 {
            tx.try_send(i).unwrap();
        }
        while rx.try_recv().is_ok() {}
        assert!(rx.0.state.lock().items.capacity() <= KEEP_CAPACITY);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_senders_nothing_lost() {
        let (tx, mut rx) = channel::<u64>(1 << 20);
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..10_000u64 {
                    tx.try_send(t * 1_000_000 + i).unwrap();
                    if i % 100 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        drop(tx);
        let mut n = 0;
        let mut last = [None::<u64>; 4];
        while let Some(v) = rx.recv().await {
            let (t, i) = ((v / 1_000_000) as usize, v % 1_000_000);
            assert!(last[t].is_none_or(|l| l < i), "per-sender order");
            last[t] = Some(i);
            n += 1;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(n, 40_000);
    }
}
