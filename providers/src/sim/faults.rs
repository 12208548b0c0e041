//! Fault injection: what the simulated API does wrong, set at start and changed at run time
//! (`PUT /_sim/faults` or [`super::SimHandle::set_faults`]). The same faults serve every
//! simulated cloud; each field's documentation says what it does on each:
//! * Exoscale: on the whole API v2 (the metadata stub is never affected).
//! * OpenStack: on Keystone and Neutron alike (not the metadata stub); `op_delay` is the extra
//!   latency of Neutron mutations (which apply when it is over), `clock_skew_secs` shifts
//!   Keystone's token times, and the operation faults (`op_immediate`, `op_stuck`,
//!   `op_failure`, `noop_failure`) do nothing: Neutron's writes are synchronous (see
//!   [`super::openstack`]).
//! * Azure: on ARM only (the Entra ID token endpoint and IMDS are never affected); a mutation
//!   is any ARM request but GET and HEAD; the operation faults act on the long-running
//!   operation of a NIC or public IP PUT (`Azure-AsyncOperation`); `clock_skew_secs` and
//!   `noop_failure` do nothing (see [`super::azure`]).
//!
//! JSON form (every field optional; durations are humantime strings such as `"250ms"`):
//!
//! ```json
//! {"latency": "50ms", "jitter": "20ms",
//!  "unavailable": {"count": 2},
//!  "rate_limit": {"probability": 0.1}, "retry_after_secs": 2,
//!  "drop_connection": {"count": 1, "mutations_only": true},
//!  "api_down": false,
//!  "op_delay": "200ms", "op_immediate": false,
//!  "op_stuck": {"count": 0}, "op_failure": {"count": 1}, "op_failure_reason": "unavailable",
//!  "response_lost": {"count": 1},
//!  "clock_skew_secs": 0,
//!  "noop_failure": null}
//! ```

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The `reason` values of the API's `operation` schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    Busy,
    Conflict,
    Fault,
    Forbidden,
    Incorrect,
    Interrupted,
    NotFound,
    Partial,
    Unavailable,
    Unknown,
    Unsupported,
}

/// When a fault fires: first on the next `count` eligible requests, then on each one with
/// `probability`. With `mutations_only`, only mutations are eligible (and count): Exoscale
/// attach/detach and elastic IP updates, OpenStack Neutron writes (not token requests), Azure
/// ARM writes (PUT, PATCH, POST, DELETE; not token requests, which never see faults).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Trigger {
    pub count: u32,
    pub probability: f64,
    pub mutations_only: bool,
}

impl Trigger {
    /// Fires on the next `n` eligible requests.
    pub fn count(n: u32) -> Self {
        Trigger {
            count: n,
            ..Trigger::default()
        }
    }

    /// Fires on each eligible request with probability `p` (0..=1).
    pub fn probability(p: f64) -> Self {
        Trigger {
            probability: p,
            ..Trigger::default()
        }
    }

    /// Restricts the trigger to mutations (writes).
    pub fn mutations_only(mut self) -> Self {
        self.mutations_only = true;
        self
    }

    pub(crate) fn fire(&mut self, rng: &mut impl Rng, is_mutation: bool) -> bool {
        if self.mutations_only && !is_mutation {
            return false;
        }
        if self.count > 0 {
            self.count -= 1;
            return true;
        }
        self.probability > 0.0 && rng.gen_bool(self.probability.min(1.0))
    }

    fn validate(&self, name: &str) -> Result<(), String> {
        if (0.0..=1.0).contains(&self.probability) {
            Ok(())
        } else {
            Err(format!(
                "{name}.probability must be within 0..=1, not {}",
                self.probability
            ))
        }
    }
}

/// Every fault the simulated API can inject. `Faults::default()` is a healthy cloud.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every API answer (not to the control API's). OpenStack: Keystone's and
    /// Neutron's; Azure: ARM's only.
    #[serde(with = "humantime_str")]
    pub latency: Duration,
    /// A uniformly random extra delay in `0..=jitter` on top of `latency`.
    #[serde(with = "humantime_str")]
    pub jitter: Duration,
    /// Answer 503 without doing anything: Exoscale `{"message":…}`; OpenStack Keystone's or
    /// Neutron's error body (`HTTPServiceUnavailable`); Azure ARM's `ServiceUnavailable`.
    pub unavailable: Trigger,
    /// Answer 429 with `Retry-After: retry_after_secs` without doing anything (OpenStack:
    /// `HTTPTooManyRequests`; Azure: `SubscriptionRequestsThrottled`).
    pub rate_limit: Trigger,
    pub retry_after_secs: u64,
    /// Close the connection without answering, without doing anything (Azure: ARM requests
    /// only).
    pub drop_connection: Trigger,
    /// Every API request gets its connection closed without an answer (the control API on the
    /// same listener keeps working, so the cloud can be brought back). OpenStack: Keystone and
    /// Neutron; Azure: ARM only, tokens are still issued.
    pub api_down: bool,
    /// How long an operation stays `pending` before its change applies. Zero applies the change
    /// before the answer is sent (the answer still says `pending`). OpenStack: how long a
    /// Neutron mutation takes before it applies and answers. Azure: how long the long-running
    /// operation of a NIC or public IP PUT stays `InProgress` (the resource `Updating`) before
    /// its change applies; zero applies it before the answer is sent, which still says
    /// `Updating`.
    #[serde(with = "humantime_str")]
    pub op_delay: Duration,
    /// Mutations answer with the operation already terminal (`success`), as some real calls do.
    /// OpenStack: no effect. Azure: the PUT answers with the change applied and
    /// `provisioningState` `Succeeded`; its operation is already `Succeeded`.
    pub op_immediate: bool,
    /// The operation stays `pending` forever and its change never applies. OpenStack: no
    /// effect. Azure: the operation stays `InProgress` and the resource `Updating`, refusing
    /// other writes as busy.
    pub op_stuck: Trigger,
    /// The operation ends in `failure` with `op_failure_reason`; its change never applies.
    /// OpenStack: no effect. Azure: the operation ends `Failed` (`Canceled` for
    /// `interrupted`) with an ARM error code matching the reason (`conflict`: `Conflict`,
    /// `busy`: `RetryableErrorDueToAnotherOperation`, `forbidden`: `AuthorizationFailed`, …);
    /// the resource keeps its previous state (and shows `Failed` unless canceled).
    pub op_failure: Trigger,
    pub op_failure_reason: Reason,
    /// The mutation is accepted (and applied with a zero `op_delay`), then the connection is
    /// closed instead of answering: the client cannot know it worked. OpenStack: a successful
    /// Neutron write. Azure: a NIC or public IP PUT, whose operation runs on as if answered.
    pub response_lost: Trigger,
    /// Added to the simulator's clock when checking signature expiry (positive: the cloud's
    /// clock is ahead, so signatures expire early). OpenStack: Keystone's clock, for the
    /// `issued_at`/`expires_at` of new tokens and their expiry. Azure: no effect.
    pub clock_skew_secs: i64,
    /// `None`: re-attaching a holder or detaching a non-holder succeeds as a no-op. `Some(r)`:
    /// such an operation ends in `failure` with reason `r` (e.g. `conflict`). Exoscale only: no
    /// effect on OpenStack and Azure (`exoip sim` refuses `--noop-failure` for them).
    pub noop_failure: Option<Reason>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            unavailable: Trigger::default(),
            rate_limit: Trigger::default(),
            retry_after_secs: 1,
            drop_connection: Trigger::default(),
            api_down: false,
            op_delay: Duration::ZERO,
            op_immediate: false,
            op_stuck: Trigger::default(),
            op_failure: Trigger::default(),
            op_failure_reason: Reason::Fault,
            response_lost: Trigger::default(),
            clock_skew_secs: 0,
            noop_failure: None,
        }
    }
}

impl Faults {
    /// Rejects probabilities outside 0..=1.
    pub fn validate(&self) -> Result<(), String> {
        self.unavailable.validate("unavailable")?;
        self.rate_limit.validate("rate_limit")?;
        self.drop_connection.validate("drop_connection")?;
        self.op_stuck.validate("op_stuck")?;
        self.op_failure.validate("op_failure")?;
        self.response_lost.validate("response_lost")?;
        Ok(())
    }
}

/// What the front door does with one API request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Door {
    Pass,
    Drop,
    Unavailable,
    RateLimited { retry_after_secs: u64 },
}

/// The faults in force plus the randomness and counters they consume.
pub(crate) struct FaultState {
    pub faults: Faults,
    rng: StdRng,
}

impl FaultState {
    pub fn new(faults: Faults) -> Self {
        FaultState {
            faults,
            rng: StdRng::from_entropy(),
        }
    }

    /// Decides the fate of a request before it reaches the API, and the delay to add first.
    /// Only the fault that fires consumes its count.
    pub fn door(&mut self, is_mutation: bool) -> (Duration, Door) {
        let f = &mut self.faults;
        if f.api_down {
            return (Duration::ZERO, Door::Drop);
        }
        let mut delay = f.latency;
        if !f.jitter.is_zero() {
            let max = f.jitter.as_micros().min(u64::MAX as u128) as u64;
            delay += Duration::from_micros(self.rng.gen_range(0..=max));
        }
        let door = if f.drop_connection.fire(&mut self.rng, is_mutation) {
            Door::Drop
        } else if f.unavailable.fire(&mut self.rng, is_mutation) {
            Door::Unavailable
        } else if f.rate_limit.fire(&mut self.rng, is_mutation) {
            Door::RateLimited {
                retry_after_secs: f.retry_after_secs,
            }
        } else {
            Door::Pass
        };
        (delay, door)
    }

    /// Decides how an accepted mutation's operation ends: stuck, failed, or applied.
    pub fn operation_outcome(&mut self) -> OpOutcome {
        if self.faults.op_stuck.fire(&mut self.rng, true) {
            OpOutcome::Stuck
        } else if self.faults.op_failure.fire(&mut self.rng, true) {
            OpOutcome::Fail(self.faults.op_failure_reason)
        } else {
            OpOutcome::Apply
        }
    }

    pub fn response_lost(&mut self) -> bool {
        self.faults.response_lost.fire(&mut self.rng, true)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpOutcome {
    Apply,
    Stuck,
    Fail(Reason),
}

/// Durations as humantime strings (`"250ms"`, `"1s"`) in JSON.
pub(crate) mod humantime_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a duration like \"250ms\": {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_consumed_before_probabilities_and_only_when_eligible() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut t = Trigger::count(2).mutations_only();
        assert!(!t.fire(&mut rng, false), "reads are not eligible");
        assert_eq!(
            t.count, 2,
            "an ineligible request does not consume the count"
        );
        assert!(t.fire(&mut rng, true));
        assert!(t.fire(&mut rng, true));
        assert!(!t.fire(&mut rng, true));

        let mut always = Trigger::probability(1.0);
        assert!((0..100).all(|_| always.fire(&mut rng, false)));
        let mut never = Trigger::default();
        assert!((0..100).all(|_| !never.fire(&mut rng, true)));
    }

    #[test]
    fn only_the_firing_fault_consumes_its_count() {
        let mut st = FaultState::new(Faults {
            unavailable: Trigger::count(1),
            rate_limit: Trigger::count(1),
            retry_after_secs: 3,
            ..Faults::default()
        });
        assert_eq!(st.door(false).1, Door::Unavailable);
        assert_eq!(st.faults.rate_limit.count, 1);
        assert_eq!(
            st.door(false).1,
            Door::RateLimited {
                retry_after_secs: 3
            }
        );
        assert_eq!(st.door(false).1, Door::Pass);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let mut st = FaultState::new(Faults {
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            ..Faults::default()
        });
        for _ in 0..200 {
            let (d, _) = st.door(false);
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(15));
        }
    }

    #[test]
    fn json_round_trip_and_validation() {
        let f: Faults = serde_json::from_str(
            r#"{"latency":"250ms","op_failure":{"count":1},"op_failure_reason":"not-found",
                "noop_failure":"conflict"}"#,
        )
        .unwrap();
        assert_eq!(f.latency, Duration::from_millis(250));
        assert_eq!(f.op_failure_reason, Reason::NotFound);
        assert_eq!(f.noop_failure, Some(Reason::Conflict));
        assert_eq!(f.retry_after_secs, 1, "missing fields take their defaults");
        let back: Faults = serde_json::from_value(serde_json::to_value(&f).unwrap()).unwrap();
        assert_eq!(back, f);

        assert!(serde_json::from_str::<Faults>(r#"{"latency":"soon"}"#).is_err());
        assert!(serde_json::from_str::<Faults>(r#"{"latncy":"1s"}"#).is_err());
        let bad = Faults {
            rate_limit: Trigger::probability(1.5),
            ..Faults::default()
        };
        assert!(bad.validate().is_err());
    }
}
