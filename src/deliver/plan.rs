//! What to send next, pure: a window of feed entries being delivered to one subscriber, and the retry
//! backoff.
//!
//! Order: one subject's entries (the same customer, chat, tag, …) are sent one after another in feed order,
//! each only once the previous one was delivered; entries of different subjects go in parallel, up to
//! `max_in_flight`. The subscriber's cursor moves to the end of the longest delivered prefix, so a restart
//! sends again at most what was in flight or delivered out of prefix order (at least once, never skipped).

use std::time::{Duration, Instant};

/// The delivery state of one window of entries.
#[derive(Debug, Clone)]
pub struct Window<K> {
    slots: Vec<Slot<K>>,
    /// The cursor once every entry is delivered (the page's next cursor: it covers entries filtered out).
    end: i64,
}

#[derive(Debug, Clone)]
struct Slot<K> {
    position: i64,
    subject: K,
    state: State,
    attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not sent yet, or to retry from this instant.
    Waiting(Option<Instant>),
    InFlight,
    Delivered,
}

impl<K: PartialEq> Window<K> {
    /// A window of `(position, subject)` in feed order, ending at `end`.
    pub fn new(entries: Vec<(i64, K)>, end: i64) -> Window<K> {
        Window {
            slots: entries
                .into_iter()
                .map(|(position, subject)| Slot {
                    position,
                    subject,
                    state: State::Waiting(None),
                    attempts: 0,
                })
                .collect(),
            end,
        }
    }

    /// The entries (indexes) to send now: waiting and due, with no earlier undelivered entry of the same
    /// subject, so that at most `max_in_flight` are in flight.
    pub fn ready(&self, now: Instant, max_in_flight: usize) -> Vec<usize> {
        let mut room = max_in_flight.saturating_sub(self.in_flight());
        let mut out = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            if room == 0 {
                break;
            }
            let due = match s.state {
                State::Waiting(None) => true,
                State::Waiting(Some(at)) => at <= now,
                _ => false,
            };
            let blocked = self.slots[..i]
                .iter()
                .any(|e| e.subject == s.subject && e.state != State::Delivered);
            if due && !blocked {
                out.push(i);
                room -= 1;
            }
        }
        out
    }

    /// Marks entry `i` in flight.
    pub fn start(&mut self, i: usize) {
        if let Some(s) = self.slots.get_mut(i) {
            s.state = State::InFlight;
            s.attempts += 1;
        }
    }

    /// Marks entry `i` delivered.
    pub fn delivered(&mut self, i: usize) {
        if let Some(s) = self.slots.get_mut(i) {
            s.state = State::Delivered;
        }
    }

    /// How many times entry `i` was sent.
    pub fn attempts(&self, i: usize) -> u32 {
        self.slots.get(i).map_or(0, |s| s.attempts)
    }

    /// Marks entry `i` failed, to retry at `retry_at`.
    pub fn failed(&mut self, i: usize, retry_at: Instant) {
        if let Some(s) = self.slots.get_mut(i) {
            s.state = State::Waiting(Some(retry_at));
        }
    }

    /// How many entries are in flight.
    pub fn in_flight(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state == State::InFlight)
            .count()
    }

    /// The earliest pending retry.
    pub fn next_retry(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| match s.state {
                State::Waiting(at) => at,
                _ => None,
            })
            .min()
    }

    /// The position up to which everything is delivered: the window's end once all are, else the last
    /// position of the delivered prefix (`None` when the first entry is not delivered yet).
    pub fn cursor(&self) -> Option<i64> {
        match self.slots.iter().position(|s| s.state != State::Delivered) {
            None => Some(self.end),
            Some(0) => None,
            Some(i) => Some(self.slots[i - 1].position),
        }
    }

    /// Whether every entry is delivered.
    pub fn complete(&self) -> bool {
        self.slots.iter().all(|s| s.state == State::Delivered)
    }
}

/// The pause before retry number `attempt` (1 for the first retry): `first` doubling per attempt up to
/// `max`, scaled by a jitter factor in [0.5, 1) from `jitter` (uniform in [0, 1)), so that many failing
/// deliveries do not retry in lockstep.
pub fn backoff(attempt: u32, first: Duration, max: Duration, jitter: f64) -> Duration {
    let doubled = first.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    doubled.min(max).mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_subject_waits_for_its_previous_entry() {
        let now = Instant::now();
        let mut w = Window::new(vec![(1, "a"), (2, "b"), (3, "a"), (4, "c")], 10);
        assert_eq!(w.ready(now, 8), vec![0, 1, 3]);
        assert_eq!(w.ready(now, 2), vec![0, 1]);
        for i in [0, 1, 3] {
            w.start(i);
        }
        assert!(w.ready(now, 8).is_empty());
        w.delivered(1);
        assert_eq!(w.cursor(), None);
        w.failed(0, now + Duration::from_secs(1));
        // Entry 3 ("a") still waits for entry 1's retry.
        assert!(w.ready(now, 8).is_empty());
        assert_eq!(w.ready(now + Duration::from_secs(1), 8), vec![0]);
        w.start(0);
        w.delivered(0);
        assert_eq!(w.cursor(), Some(2));
        assert_eq!(w.ready(now, 8), vec![2]);
        w.start(2);
        w.delivered(2);
        w.delivered(3);
        assert!(w.complete());
        assert_eq!(w.cursor(), Some(10));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter() {
        let (first, max) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(
            backoff(1, first, max, 0.999_999),
            first.mul_f64(0.999_999_5)
        );
        assert_eq!(backoff(3, first, max, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(30, first, max, 0.0), Duration::from_secs(30));
        assert!(backoff(30, first, max, 1.0) <= max);
    }
}
