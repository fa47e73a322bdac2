//! Failover across the centrals of `CLI_SERVER_ADDRESS` ([`Centrals`]) and the pauses between
//! attempts ([`Backoff`]).
//!
//! An agency stays on a central while it works. Any transient failure there (refused, broken,
//! timed out, `Busy`, `ShuttingDown`, `StorageFailed`, a `Storage` rejection: see
//! [`ClientError::is_transient`](super::ClientError::is_transient)) sends the next attempt to the
//! next address of the list, round robin, wrapping; it resumes from the `Welcome` it gets there,
//! as after any broken connection. With one address every attempt goes to it, as it always did.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::ServerAddresses;

use super::ClientError;

/// First step of the backoff; it doubles up to [`MAX_RETRY_DELAY`].
pub(super) const FIRST_RETRY_DELAY: Duration = Duration::from_millis(10);
pub(super) const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// Which central the agency talks to: the current address, and the order it moves in.
#[derive(Debug, Clone)]
pub(super) struct Centrals<'a> {
    addresses: &'a ServerAddresses,
    current: usize,
}

impl<'a> Centrals<'a> {
    /// Starts at the first address.
    pub(super) fn new(addresses: &'a ServerAddresses) -> Self {
        Self { addresses, current: 0 }
    }

    /// The address the next attempt goes to.
    pub(super) fn current(&self) -> &'a str {
        self.addresses.get(self.current)
    }

    /// The current address's place in the list, from 0.
    pub(super) fn index(&self) -> usize {
        self.current
    }

    /// How many addresses there are.
    pub(super) fn len(&self) -> usize {
        self.addresses.len()
    }

    /// The addresses, in the list's order.
    pub(super) fn addresses(&self) -> impl Iterator<Item = &'a str> {
        self.addresses.iter()
    }

    /// After a transient failure at the current address: the next attempt goes to the next one
    /// (after the last, the first). Returns the address left and the one moved to.
    pub(super) fn advance(&mut self) -> (&'a str, &'a str) {
        let left = self.current();
        self.current = (self.current + 1) % self.len().max(1);
        (left, self.current())
    }
}

/// The pauses between attempts: each is a random time between half and all of the current step
/// (equal jitter, see [`jittered`]); the step starts at [`FIRST_RETRY_DELAY`] and doubles up to
/// [`MAX_RETRY_DELAY`].
///
/// The step doubles only once a whole *round* of attempts has failed at it: one attempt per
/// central (`round` = the number of addresses). So a dead central costs the agency one pause at
/// the current step before it tries the next, never a doubled wait; only when every central
/// failed once does it slow down. With one address a round is one attempt: the step doubles
/// after every failure, as it did before failover existed.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    step: Duration,
    failures_at_step: usize,
    round: usize,
}

impl Backoff {
    /// A backoff at its first step that doubles after every `round` failures (at least 1).
    pub(super) fn new(round: usize) -> Self {
        Self { step: FIRST_RETRY_DELAY, failures_at_step: 0, round: round.max(1) }
    }

    /// The current step: the longest the next pause can be.
    pub(super) fn step(&self) -> Duration {
        self.step
    }

    /// The pause after one more failure; doubles the step when that failure ends a round.
    pub(super) fn next_pause(&mut self) -> Duration {
        let pause = jittered(self.step);
        self.failures_at_step += 1;
        if self.failures_at_step >= self.round {
            self.failures_at_step = 0;
            self.step = (self.step * 2).min(MAX_RETRY_DELAY);
        }
        pause
    }

    /// Back to the first step (after progress).
    pub(super) fn reset(&mut self) {
        self.step = FIRST_RETRY_DELAY;
        self.failures_at_step = 0;
    }
}

/// A pause of between half and all of `step` ("equal jitter"), so agencies that lost the central
/// together do not all come back in the same millisecond.
pub(super) fn jittered(step: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // A randomly keyed hasher is a random number source without another dependency.
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let half = step / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(random % nanos.saturating_add(1))
}

/// Sleeps for `delay`, or `Cancelled` if `token` is cancelled first.
pub(super) async fn pause(delay: Duration, token: &CancellationToken) -> Result<(), ClientError> {
    token.run_until_cancelled(tokio::time::sleep(delay)).await.ok_or(ClientError::Cancelled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(text: &str) -> ServerAddresses {
        ServerAddresses::parse(text).unwrap()
    }

    /// The steps of the next `n` attempts, in milliseconds.
    fn steps_ms(backoff: &mut Backoff, n: usize) -> Vec<u128> {
        (0..n)
            .map(|_| {
                let step = backoff.step();
                backoff.next_pause();
                step.as_millis()
            })
            .collect()
    }

    #[test]
    fn backoff_pauses_are_jittered_between_half_and_all_of_the_step() {
        for step in [FIRST_RETRY_DELAY, Duration::from_millis(640), MAX_RETRY_DELAY] {
            let pauses: Vec<Duration> = (0..200).map(|_| jittered(step)).collect();
            assert!(pauses.iter().all(|p| *p >= step / 2 && *p <= step), "{step:?}: {pauses:?}");
            let first = pauses[0];
            assert!(pauses.iter().any(|p| *p != first), "{step:?}: every pause the same");
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn centrals_move_round_robin_and_wrap() {
        let list = addresses("a:1, b:2,c:3");
        let mut centrals = Centrals::new(&list);
        assert_eq!(centrals.current(), "a:1");
        assert_eq!(centrals.advance(), ("a:1", "b:2"));
        assert_eq!(centrals.advance(), ("b:2", "c:3"));
        assert_eq!(centrals.advance(), ("c:3", "a:1"));
        assert_eq!((centrals.current(), centrals.index()), ("a:1", 0));

        let single = addresses("server:12345");
        let mut centrals = Centrals::new(&single);
        assert_eq!(centrals.advance(), ("server:12345", "server:12345"), "one address: stays");
    }

    #[test]
    fn one_address_doubles_the_step_after_every_failure() {
        let mut backoff = Backoff::new(1);
        let steps: Vec<Duration> = (0..10)
            .map(|_| {
                let step = backoff.step();
                let pause = backoff.next_pause();
                assert!(pause >= step / 2 && pause <= step, "{pause:?} at step {step:?}");
                step
            })
            .collect();
        let ms = |n| Duration::from_millis(n);
        let expected = [10, 20, 40, 80, 160, 320, 640, 1280, 2000, 2000].map(ms);
        assert_eq!(steps, expected);
        backoff.reset();
        assert_eq!(backoff.step(), FIRST_RETRY_DELAY);
    }

    #[test]
    fn several_addresses_try_each_once_at_a_step_before_doubling() {
        let mut backoff = Backoff::new(3);
        assert_eq!(steps_ms(&mut backoff, 9), [10, 10, 10, 20, 20, 20, 40, 40, 40]);
        // A reset mid-round starts a whole new round at the first step.
        backoff.next_pause();
        backoff.reset();
        assert_eq!(steps_ms(&mut backoff, 4), [10, 10, 10, 20]);
    }
}
