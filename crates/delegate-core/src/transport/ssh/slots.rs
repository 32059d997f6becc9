//! How many session channels one connection may have open at once.
//!
//! sshd refuses a session channel past its `MaxSessions` (10 by default) per connection.
//! A fan-out runs many execs on one pooled connection, so a refused open is not a failure
//! while other channels of ours are open: nothing was sent on it, so the exec waits for one
//! of them to close and opens again. The connection remembers how many were open when the
//! server refused (the limit), so later opens queue instead of being refused again.

use std::sync::Mutex;

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

/// One channel's place, held from before its open until it is closed.
pub(crate) struct Slot<'a>(&'a ChannelSlots);

impl ChannelSlots {
    /// A place for one more channel, waiting while the learned limit is reached.
    pub(crate) async fn take(&self) -> Slot<'_> {
        loop {
            // Registered before looking, so a slot freed in between still wakes us.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut s = self.state.lock().expect("channel slots");
                if s.limit.is_none_or(|limit| s.in_flight < limit) {
                    s.in_flight += 1;
                    return Slot(self);
                }
            }
            freed.await;
        }
    }

    /// The learned limit, if the server has refused a channel.
    #[cfg(test)]
    pub(crate) fn limit(&self) -> Option<usize> {
        self.state.lock().expect("channel slots").limit
    }
}

impl Slot<'_> {
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

impl Drop for Slot<'_> {
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
        let slots = ChannelSlots::default();
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
        drop(b);
        let e = tokio::time::timeout(Duration::from_secs(5), slots.take()).await.expect("b's slot is taken");
        assert_eq!(e.others(), 0);
    }
}
