//! When to try a failed delivery again, and when to stop: per-action policy, exponential backoff
//! with jitter, `Retry-After`, and a circuit breaker per action so one dead endpoint does not
//! hold up the others.

use std::time::Duration;

use rand::Rng;
use serde::Deserialize;

use crate::config::units;

/// An action's delivery policy: the `retry-*`, `max-concurrency` and `circuit-breaker-*` keys
/// every action block accepts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeliveryPolicy {
    #[serde(default = "default_max_attempts")]
    pub retry_max_attempts: u32,
    #[serde(default = "default_initial_backoff", deserialize_with = "duration")]
    pub retry_initial_backoff: Duration,
    #[serde(default = "default_max_backoff", deserialize_with = "duration")]
    pub retry_max_backoff: Duration,
    #[serde(default = "default_max_age", deserialize_with = "duration")]
    pub retry_max_age: Duration,
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    #[serde(default = "default_breaker_threshold")]
    pub circuit_breaker_threshold: u32,
    #[serde(default = "default_breaker_cooldown", deserialize_with = "duration")]
    pub circuit_breaker_cooldown: Duration,
}

/// The keys [`DeliveryPolicy`] reads, so action settings do not warn about them.
pub const POLICY_KEYS: &[&str] = &[
    "retry-max-attempts",
    "retry-initial-backoff",
    "retry-max-backoff",
    "retry-max-age",
    "max-concurrency",
    "circuit-breaker-threshold",
    "circuit-breaker-cooldown",
];

fn duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    units::de_duration(deserializer)?
        .ok_or_else(|| serde::de::Error::custom("a duration is required"))
}
fn default_max_attempts() -> u32 {
    12
}
fn default_initial_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}
fn default_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}
/// `max-concurrency` of the `log` action unless set: a local append, batched by one writer
/// thread, has no endpoint to protect, and at the remote default (8) its round trip would cap
/// the whole agent (about 8,000 events/s with two matching routes, measured).
pub const LOCAL_CONCURRENCY: usize = 256;

fn default_concurrency() -> usize {
    8
}
fn default_breaker_threshold() -> u32 {
    5
}
fn default_breaker_cooldown() -> Duration {
    Duration::from_secs(30)
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            retry_max_attempts: default_max_attempts(),
            retry_initial_backoff: default_initial_backoff(),
            retry_max_backoff: default_max_backoff(),
            retry_max_age: default_max_age(),
            max_concurrency: default_concurrency(),
            circuit_breaker_threshold: default_breaker_threshold(),
            circuit_breaker_cooldown: default_breaker_cooldown(),
        }
    }
}

impl DeliveryPolicy {
    /// Delay before attempt `attempt + 1`: initial × 2^(attempt-1), capped, with ±20 % jitter,
    /// and never sooner than the server's `Retry-After`.
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let base = self
            .retry_initial_backoff
            .saturating_mul(1u32 << exponent.min(20))
            .min(self.retry_max_backoff);
        let jitter = rand::rng().random_range(0.8..1.2);
        let delay = base.mul_f64(jitter).min(self.retry_max_backoff);
        retry_after.map_or(delay, |at_least| delay.max(at_least))
    }
}

/// Consecutive failures open the breaker; after the cooldown one trial is let through
/// (half-open); a success closes it, a failed trial reopens it for twice the cooldown (up to ten
/// minutes). Deliveries that were already running when the breaker opened still finish, and
/// their failures say nothing new about the endpoint: they neither extend the cooldown nor end
/// the trial (after a restart with a backlog, every one of them used to double it).
#[derive(Debug, Default)]
pub struct Breaker {
    failures: u32,
    open_until_ms: Option<u64>,
    cooldown: Option<Duration>,
    /// The delivery let through as the half-open trial, while it runs.
    trial: Option<u64>,
    /// Whether the closed state has been published (the `hooker_circuit_open` gauge).
    published: bool,
}

/// What a failure did to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tripped {
    /// Nothing to report: below the threshold, or the breaker was open already.
    No,
    /// The breaker opened for this long.
    Opened(Duration),
    /// The half-open trial failed: the breaker opened again, for this long.
    Reopened(Duration),
}

impl Breaker {
    /// `Ok(())` when delivery `id` may start now; `Err(at_ms)` when it must wait. Past the
    /// cooldown, the first delivery asking becomes the trial.
    pub fn admit(&mut self, id: u64, now_ms: u64) -> Result<(), u64> {
        match self.open_until_ms {
            None => Ok(()),
            Some(until) if now_ms < until => Err(until),
            Some(until) => {
                if self.trial.is_some_and(|trial| trial != id) {
                    return Err(until.max(now_ms) + 1000);
                }
                self.trial = Some(id);
                Ok(())
            }
        }
    }

    pub fn is_open(&self) -> bool {
        self.open_until_ms.is_some()
    }

    /// The cooldown in force (the policy's, or longer after failed trials), while open.
    pub fn cooldown(&self) -> Option<Duration> {
        self.open_until_ms.and(self.cooldown)
    }

    /// Records a success; returns true when the closed state is news (the breaker had failures,
    /// or its state was never published), so that the gauge is set only then.
    pub fn success(&mut self) -> bool {
        let news = !self.published || self.failures > 0 || self.open_until_ms.is_some();
        *self = Breaker {
            published: true,
            ..Breaker::default()
        };
        news
    }

    /// Records a retryable failure of delivery `id`. Only a failure while closed counts towards
    /// opening, and only the trial's failure reopens an open breaker.
    pub fn failure(&mut self, id: u64, now_ms: u64, policy: &DeliveryPolicy) -> Tripped {
        if self.open_until_ms.is_some() {
            if self.trial != Some(id) {
                return Tripped::No;
            }
            self.trial = None;
            let cooldown = self
                .cooldown
                .unwrap_or(policy.circuit_breaker_cooldown)
                .saturating_mul(2)
                .min(MAX_COOLDOWN)
                .max(policy.circuit_breaker_cooldown);
            self.open(now_ms, cooldown);
            return Tripped::Reopened(cooldown);
        }
        self.failures += 1;
        if self.failures < policy.circuit_breaker_threshold.max(1) {
            return Tripped::No;
        }
        let cooldown = policy.circuit_breaker_cooldown;
        self.open(now_ms, cooldown);
        Tripped::Opened(cooldown)
    }

    /// A delivery ended without an answer from the endpoint (it was dropped or dead-lettered
    /// before sending): if it was the trial, the next delivery may try instead.
    pub fn forget(&mut self, id: u64) {
        if self.trial == Some(id) {
            self.trial = None;
        }
    }

    fn open(&mut self, now_ms: u64, cooldown: Duration) {
        self.cooldown = Some(cooldown);
        self.open_until_ms = Some(now_ms.saturating_add(cooldown.as_millis() as u64));
    }
}

/// The longest a failed trial may extend the cooldown to.
const MAX_COOLDOWN: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_respects_retry_after() {
        let policy = DeliveryPolicy::default();
        let first = policy.backoff(1, None);
        assert!(
            first >= Duration::from_millis(800) && first <= Duration::from_millis(1200),
            "{first:?}"
        );
        let tenth = policy.backoff(10, None);
        assert!(tenth <= policy.retry_max_backoff);
        assert!(tenth >= Duration::from_secs(240), "{tenth:?}");
        assert_eq!(
            policy.backoff(1, Some(Duration::from_secs(60))),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn breaker_opens_after_threshold_and_half_opens_after_cooldown() {
        let policy = DeliveryPolicy {
            circuit_breaker_threshold: 2,
            ..DeliveryPolicy::default()
        };
        let mut breaker = Breaker::default();
        assert_eq!(breaker.failure(1, 0, &policy), Tripped::No);
        assert_eq!(
            breaker.failure(2, 0, &policy),
            Tripped::Opened(Duration::from_secs(30)),
            "second failure opens"
        );
        assert_eq!(breaker.admit(3, 1000), Err(30_000));
        assert_eq!(
            breaker.admit(3, 30_000),
            Ok(()),
            "one trial after the cooldown"
        );
        assert!(
            breaker.admit(4, 30_001).is_err(),
            "only one trial at a time"
        );
        breaker.success();
        assert_eq!(breaker.admit(4, 30_002), Ok(()));
    }

    #[test]
    fn only_a_failed_trial_extends_the_cooldown() {
        let policy = DeliveryPolicy {
            circuit_breaker_threshold: 1,
            circuit_breaker_cooldown: Duration::from_secs(2),
            ..DeliveryPolicy::default()
        };
        let mut breaker = Breaker::default();
        // A backlog: 100 deliveries were running when the first failure opened the breaker.
        assert_eq!(
            breaker.failure(0, 0, &policy),
            Tripped::Opened(Duration::from_secs(2))
        );
        for id in 1..100 {
            assert_eq!(breaker.failure(id, 10, &policy), Tripped::No);
        }
        assert_eq!(breaker.cooldown(), Some(Duration::from_secs(2)));
        assert_eq!(
            breaker.admit(100, 1_000),
            Err(2_000),
            "still the first cooldown"
        );
        // The trial fails: twice the cooldown, from then.
        assert_eq!(breaker.admit(100, 2_000), Ok(()));
        assert_eq!(
            breaker.failure(7, 2_100, &policy),
            Tripped::No,
            "not the trial"
        );
        assert!(breaker.admit(101, 2_200).is_err(), "the trial still runs");
        assert_eq!(
            breaker.failure(100, 2_500, &policy),
            Tripped::Reopened(Duration::from_secs(4))
        );
        assert_eq!(breaker.admit(101, 3_000), Err(6_500));
        // The next trial succeeds: closed.
        assert_eq!(breaker.admit(101, 6_500), Ok(()));
        assert!(breaker.success());
        assert!(!breaker.is_open());
        assert_eq!(breaker.admit(102, 6_501), Ok(()));
    }

    #[test]
    fn a_failed_trial_never_extends_past_ten_minutes() {
        let policy = DeliveryPolicy {
            circuit_breaker_threshold: 1,
            circuit_breaker_cooldown: Duration::from_secs(400),
            ..DeliveryPolicy::default()
        };
        let mut breaker = Breaker::default();
        breaker.failure(0, 0, &policy);
        assert_eq!(breaker.admit(1, 400_000), Ok(()));
        assert_eq!(
            breaker.failure(1, 400_000, &policy),
            Tripped::Reopened(MAX_COOLDOWN)
        );
    }

    #[test]
    fn a_trial_that_never_reached_the_endpoint_hands_over() {
        let policy = DeliveryPolicy {
            circuit_breaker_threshold: 1,
            ..DeliveryPolicy::default()
        };
        let mut breaker = Breaker::default();
        breaker.failure(0, 0, &policy);
        assert_eq!(breaker.admit(1, 30_000), Ok(()));
        assert!(breaker.admit(2, 30_000).is_err());
        breaker.forget(1);
        assert_eq!(breaker.admit(2, 30_000), Ok(()));
    }
}
