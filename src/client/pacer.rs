//! `loop.period` pacing of an agency's messages.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ClientError;

/// `loop.period`, the original client's time between messages: at least `period` between
/// consecutive steps of the agency (`Hello`, each batch, `ReadyForLottery`, logging its winners,
/// exiting). A zero period (the default) never waits.
///
/// Pacing keeps an agency running while the course's graders attach to its logs (`up -d`, then
/// `logs -f`); the pause before logging the winners puts a period between the central's `sorteo`
/// line and the agency's `consulta_ganadores`, which compose prints from two containers' logs
/// in no guaranteed order when they are close.
#[derive(Debug)]
pub(super) struct Pacer {
    period: Duration,
    last: Option<Instant>,
}

impl Pacer {
    pub(super) fn new(period: Duration) -> Self {
        Self { period, last: None }
    }

    pub(super) fn is_on(&self) -> bool {
        !self.period.is_zero()
    }

    /// Counts now as the previous step (the answer of an exchange that may have taken long).
    pub(super) fn restart(&mut self) {
        if self.is_on() {
            self.last = Some(Instant::now());
        }
    }

    /// Waits until `period` has passed since the previous step, then counts this one.
    ///
    /// # Errors
    /// `Cancelled` when `token` is cancelled while waiting.
    pub(super) async fn step(&mut self, token: &CancellationToken) -> Result<(), ClientError> {
        if !self.is_on() {
            return Ok(());
        }
        if let Some(last) = self.last {
            let wake = last + self.period;
            token
                .run_until_cancelled(tokio::time::sleep_until(wake))
                .await
                .ok_or(ClientError::Cancelled)?;
        }
        self.last = Some(Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn steps_are_a_period_apart_and_restart_counts_from_now() {
        let token = CancellationToken::new();
        let period = Duration::from_millis(150);
        let mut pacer = Pacer::new(period);
        let start = Instant::now();
        pacer.step(&token).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO, "the first step does not wait");
        pacer.step(&token).await.unwrap();
        pacer.step(&token).await.unwrap();
        assert_eq!(start.elapsed(), period * 2);
        // Time spent elsewhere (a long exchange) counts towards the next pause...
        tokio::time::sleep(period * 3).await;
        let before = Instant::now();
        pacer.step(&token).await.unwrap();
        assert_eq!(before.elapsed(), Duration::ZERO);
        // ...unless the pacer restarts: then a whole period follows.
        tokio::time::sleep(period * 3).await;
        pacer.restart();
        let before = Instant::now();
        pacer.step(&token).await.unwrap();
        assert_eq!(before.elapsed(), period);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_period_never_waits_and_a_signal_ends_a_pause() {
        let token = CancellationToken::new();
        let mut off = Pacer::new(Duration::ZERO);
        let start = Instant::now();
        for _ in 0..3 {
            off.step(&token).await.unwrap();
        }
        off.restart();
        off.step(&token).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);

        let mut on = Pacer::new(Duration::from_secs(3600));
        on.step(&token).await.unwrap();
        token.cancel();
        assert!(matches!(on.step(&token).await, Err(ClientError::Cancelled)));
    }
}
