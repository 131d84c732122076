//! A connection's outbound queue: the callback API and channel publications put messages and
//! close requests in, the connection task takes them out, in order. Bounded in messages
//! (`--send-queue`) and in payload bytes (`--send-queue-bytes`; one message larger than that
//! still fits an empty queue). A publisher that finds the queue full can evict the connection:
//! the eviction overtakes whatever waits, and wakes the task even in the middle of a write.
//!
//! Why not a tokio `mpsc` channel: a bounded channel allocates its first block of slots up
//! front, 1.7 KiB per connection (measured with massif), whether or not a message ever
//! comes; this queue allocates only while messages wait, and lives in the one allocation the
//! registry keeps per connection. The lock is a plain mutex, held for a push or a pop, never
//! across `.await`.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::registry::Outbound;

/// Why an item could not be queued; the item comes back.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The queue holds its capacity.
    Full(Outbound),
    /// The connection has ended.
    Closed,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Outbound>,
    /// Payload bytes of the messages in `queue`.
    bytes: usize,
    closed: bool,
    /// Set by [`Mailbox::evict`]: the close code and reason to end with, before anything else.
    evicted: Option<(u16, &'static str)>,
}

/// Payload bytes an item counts against the byte bound.
fn weight(item: &Outbound) -> usize {
    match item {
        Outbound::Message(payload) => payload.len(),
        _ => 0,
    }
}

/// A bounded FIFO of [`Outbound`] items with one consumer.
#[derive(Debug)]
pub(crate) struct Mailbox {
    inner: Mutex<Inner>,
    /// Wakes the consumer: an item arrived, or the mailbox closed.
    arrived: Notify,
    /// Wakes producers waiting for room.
    room: Notify,
    /// Wakes the consumer in the middle of a write: it was evicted.
    eviction: Notify,
    capacity: usize,
    byte_capacity: usize,
}

impl Mailbox {
    /// A mailbox for at most `capacity` messages and `byte_capacity` payload bytes.
    pub(crate) fn new(capacity: usize, byte_capacity: usize) -> Self {
        Mailbox {
            inner: Mutex::default(),
            arrived: Notify::new(),
            room: Notify::new(),
            eviction: Notify::new(),
            capacity,
            byte_capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A queue holds no invariant a panicking holder could break halfway.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Most items that may wait.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Most payload bytes that may wait.
    pub(crate) fn byte_capacity(&self) -> usize {
        self.byte_capacity
    }

    /// Whether a message would fit now (in count, and in bytes unless the queue is empty).
    pub(crate) fn has_room(&self) -> bool {
        let inner = self.lock();
        inner.queue.len() < self.capacity && (inner.bytes == 0 || inner.bytes < self.byte_capacity)
    }

    /// Queues `item` if there is room.
    pub(crate) fn try_send(&self, item: Outbound) -> Result<(), Refused> {
        let mut inner = self.lock();
        if inner.closed || inner.evicted.is_some() {
            return Err(Refused::Closed);
        }
        let weight = weight(&item);
        let over_bytes = inner.bytes > 0 && inner.bytes + weight > self.byte_capacity;
        if inner.queue.len() >= self.capacity || over_bytes {
            return Err(Refused::Full(item));
        }
        inner.bytes += weight;
        inner.queue.push_back(item);
        drop(inner);
        self.arrived.notify_one();
        Ok(())
    }

    /// Ends the connection ahead of whatever waits, with this close code and reason (a
    /// publisher found the queue full). Returns whether this call evicted it.
    pub(crate) fn evict(&self, code: u16, reason: &'static str) -> bool {
        let mut inner = self.lock();
        if inner.closed || inner.evicted.is_some() {
            return false;
        }
        inner.evicted = Some((code, reason));
        drop(inner);
        self.arrived.notify_one();
        self.eviction.notify_waiters();
        true
    }

    /// Resolves once the connection is evicted (to cut short a write the client does not
    /// read).
    pub(crate) async fn evicted(&self) {
        loop {
            let eviction = self.eviction.notified();
            if self.lock().evicted.is_some() {
                return;
            }
            eviction.await;
        }
    }

    /// Queues `item`, waiting at most `within` for room.
    pub(crate) async fn send_within(
        &self,
        mut item: Outbound,
        within: Duration,
    ) -> Result<(), Refused> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let room = self.room.notified();
            match self.try_send(item) {
                Err(Refused::Full(back)) => item = back,
                other => return other,
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return self.try_send(item);
            }
        }
    }

    /// The next item, waiting for one; `None` once the mailbox is closed and empty.
    pub(crate) async fn recv(&self) -> Option<Outbound> {
        loop {
            let arrived = self.arrived.notified();
            {
                let mut inner = self.lock();
                if let Some((code, reason)) = inner.evicted {
                    return Some(Outbound::Evict { code, reason });
                }
                if let Some(item) = inner.queue.pop_front() {
                    inner.bytes -= weight(&item);
                    drop(inner);
                    self.room.notify_waiters();
                    return Some(item);
                }
                if inner.closed {
                    return None;
                }
            }
            arrived.await;
        }
    }

    /// The next item, if one waits.
    pub(crate) fn try_recv(&self) -> Option<Outbound> {
        let mut inner = self.lock();
        if let Some((code, reason)) = inner.evicted {
            return Some(Outbound::Evict { code, reason });
        }
        let item = inner.queue.pop_front();
        if let Some(item) = &item {
            inner.bytes -= weight(item);
            drop(inner);
            self.room.notify_waiters();
        }
        item
    }

    /// Refuses further items; what waits can still be taken. Returns what waited.
    pub(crate) fn close(&self) -> Vec<Outbound> {
        let mut inner = self.lock();
        inner.closed = true;
        inner.bytes = 0;
        let left = std::mem::take(&mut inner.queue).into();
        drop(inner);
        self.arrived.notify_one();
        self.room.notify_waiters();
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Payload;

    fn message(n: u8) -> Outbound {
        Outbound::Message(Payload::Binary(bytes::Bytes::from(vec![n])))
    }

    fn number(item: Option<Outbound>) -> Option<u8> {
        match item {
            Some(Outbound::Message(p)) => p.bytes().first().copied(),
            _ => None,
        }
    }

    #[tokio::test]
    async fn items_come_out_in_order_within_the_capacity() {
        let mailbox = Mailbox::new(2, 1024);
        assert!(mailbox.try_send(message(1)).is_ok());
        assert!(mailbox.try_send(message(2)).is_ok());
        assert!(!mailbox.has_room());
        assert!(matches!(
            mailbox.try_send(message(3)),
            Err(Refused::Full(_))
        ));
        assert_eq!(number(mailbox.recv().await), Some(1));
        assert_eq!(number(mailbox.try_recv()), Some(2));
        assert!(mailbox.try_recv().is_none());
        let left = mailbox.close();
        assert!(left.is_empty());
        assert!(matches!(mailbox.try_send(message(4)), Err(Refused::Closed)));
        assert!(mailbox.recv().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_waits_for_room_until_its_deadline() {
        let mailbox = std::sync::Arc::new(Mailbox::new(1, 1024));
        assert!(mailbox.try_send(message(1)).is_ok());
        let waiting = tokio::spawn({
            let mailbox = std::sync::Arc::clone(&mailbox);
            async move {
                mailbox
                    .send_within(message(2), Duration::from_secs(5))
                    .await
                    .is_ok()
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(number(mailbox.recv().await), Some(1));
        assert!(
            waiting.await.unwrap_or(false),
            "room made within the deadline"
        );
        let late = mailbox
            .send_within(message(3), Duration::from_secs(5))
            .await;
        assert!(
            matches!(late, Err(Refused::Full(_))),
            "no room within the deadline"
        );
    }

    #[tokio::test]
    async fn bytes_are_bounded_but_one_large_message_fits_an_empty_queue() {
        let big = |n: usize| Outbound::Message(Payload::Binary(bytes::Bytes::from(vec![0u8; n])));
        let mailbox = Mailbox::new(10, 100);
        assert!(mailbox.try_send(big(500)).is_ok(), "alone, it fits");
        assert!(matches!(mailbox.try_send(big(1)), Err(Refused::Full(_))));
        assert!(mailbox.try_recv().is_some());
        assert!(mailbox.try_send(big(60)).is_ok());
        assert!(matches!(mailbox.try_send(big(60)), Err(Refused::Full(_))));
        assert!(mailbox.try_send(big(40)).is_ok());
    }

    #[tokio::test]
    async fn an_eviction_overtakes_what_waits() {
        let mailbox = Mailbox::new(10, 1024);
        assert!(mailbox.try_send(message(1)).is_ok());
        assert!(mailbox.evict(1013, "slow consumer"));
        assert!(!mailbox.evict(1013, "again"));
        assert!(matches!(
            mailbox.recv().await,
            Some(Outbound::Evict { code: 1013, .. })
        ));
        assert!(matches!(mailbox.try_send(message(2)), Err(Refused::Closed)));
        mailbox.evicted().await;
    }

    #[tokio::test]
    async fn the_consumer_wakes_for_an_item_sent_while_it_waits() {
        let mailbox = std::sync::Arc::new(Mailbox::new(4, 1024));
        let consumer = tokio::spawn({
            let mailbox = std::sync::Arc::clone(&mailbox);
            async move { number(mailbox.recv().await) }
        });
        tokio::task::yield_now().await;
        assert!(mailbox.try_send(message(7)).is_ok());
        assert_eq!(consumer.await.ok().flatten(), Some(7));
    }
}
