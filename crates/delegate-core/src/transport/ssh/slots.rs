//! How many session channels one connection may have open at once.
//!
//! sshd refuses a session channel past its `MaxSessions` (10 by default) per connection.
//! A fan-out runs many execs on one pooled connection, so a refused open is not a failure
//! while other channels of ours are open: nothing was sent on it, so the exec waits for one
//! of them to close and opens again. The connection remembers how many were open when the
//! server refused (the limit), so later opens queue instead of being refused again.

use std::sync::{Arc, Mutex};

#[derive(Default)]
pub(crate) struct ChannelSlots {
    state: Mutex<State>,
    freed: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// Channels of ours open or being opened.
    in_flight: usize,
    /// The most the server allowed at once, once it has refused one.
    limit: Option<usize>,
}

/// One channel's place, held from before its open until it is closed. Owns its share of the
/// count, so a channel kept open for the connection's life (the resident shell, see
/// `ssh::resident`) can hold one.
pub(crate) struct Slot(Arc<ChannelSlots>);

impl ChannelSlots {
    /// A place for one more channel, waiting while the learned limit is reached.
    pub(crate) async fn take(self: &Arc<Self>) -> Slot {
        loop {
            // Registered before looking, so a slot freed in between still wakes us.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut s = self.state.lock().expect("channel slots");
                if s.limit.is_none_or(|limit| s.in_flight < limit) {
                    s.in_flight += 1;
                    return Slot(self.clone());
                }
            }
            freed.await;
        }
    }

    /// A place for one more channel if the learned limit allows it now, without waiting.
    pub(crate) fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let mut s = self.state.lock().expect("channel slots");
        if s.limit.is_none_or(|limit| s.in_flight < limit) {
            s.in_flight += 1;
            return Some(Slot(self.clone()));
        }
        None
    }

    /// Fires when a place is freed; register it (`enable`) before looking for one, so a
    /// place freed in between still wakes the waiter.
    pub(crate) fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    /// The learned limit, if the server has refused a channel.
    #[cfg(test)]
    pub(crate) fn limit(&self) -> Option<usize> {
        self.state.lock().expect("channel slots").limit
    }
}

impl Slot {
    /// Other channels of ours open or opening on this connection.
    pub(crate) fn others(&self) -> usize {
        self.0.state.lock().expect("channel slots").in_flight - 1
    }

    /// The server refused this slot's channel with `others` open: that is its limit (never
    /// raised: the server's limit does not grow while we are connected). Gives the slot up.
    pub(crate) fn refused(self) {
        let mut s = self.0.state.lock().expect("channel slots");
        let others = s.in_flight - 1;
        s.limit = Some(s.limit.map_or(others, |limit| limit.min(others)));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.state.lock().expect("channel slots").in_flight -= 1;
        self.0.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_refusal_sets_the_limit_and_later_takes_wait_for_a_free_slot() {
        let slots = Arc::new(ChannelSlots::default());
        let (a, b, c) = (slots.take().await, slots.take().await, slots.take().await);
        assert_eq!((c.others(), slots.limit()), (2, None));
        c.refused();
        assert_eq!(slots.limit(), Some(2), "refused with two others open");
        let waiting = tokio::time::timeout(Duration::from_millis(50), slots.take()).await;
        assert!(waiting.is_err(), "a third channel waits while two are open");
        drop(a);
        let d = tokio::time::timeout(Duration::from_secs(5), slots.take()).await.expect("a freed slot is taken");
        assert_eq!(d.others(), 1);
        // A later refusal with fewer open lowers the limit.
        d.refused();
        assert_eq!(slots.limit(), Some(1));
        let waiting = tokio::time::timeout(Duration::from_millis(50), slots.take()).await;
        assert!(waiting.is_err(), "b holds the only slot");
        assert!(slots.try_take().is_none(), "try_take does not pass the limit either");
        drop(b);
        let e = tokio::time::timeout(Duration::from_secs(5), slots.take()).await.expect("b's slot is taken");
        assert_eq!(e.others(), 0);
    }
}
