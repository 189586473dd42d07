//! What the fleet-wide limits report: every call to Redis by operation and
//! outcome, their time, whether the fallback is in force, and the replicas seen.

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts};

use crate::metrics::{LATENCY_BUCKETS, Metrics};

/// A call to Redis, for the `operation` label.
#[derive(Debug, Clone, Copy)]
pub enum Operation {
    /// A request found no lease and asked on the request path.
    Acquire,
    /// A lease ran low and was topped up in the background.
    Refill,
    /// What was left of expired leases went back.
    GiveBack,
    /// The replica count.
    Heartbeat,
    /// A batch of quota usage, or the read of a subject's total before its first
    /// request on this replica.
    Quota,
}

impl Operation {
    fn label(self) -> &'static str {
        match self {
            Operation::Acquire => "acquire",
            Operation::Refill => "refill",
            Operation::GiveBack => "give_back",
            Operation::Heartbeat => "heartbeat",
            Operation::Quota => "quota",
        }
    }
}

/// How a call ended, for the `outcome` label.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// Redis answered.
    Ok,
    /// Redis answered with an error, or the connection failed.
    Error,
    /// Redis did not answer within the timeout.
    Timeout,
    /// The breaker was open: no call was made.
    Skipped,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Skipped => "skipped",
        }
    }
}

/// The meters.
#[derive(Debug, Clone)]
pub struct Meter {
    calls: IntCounterVec,
    seconds: HistogramVec,
    fallback: IntGauge,
    replicas: IntGauge,
}

impl Meter {
    /// The meters, registered in `metrics`.
    pub fn new(metrics: &Metrics) -> prometheus::Result<Meter> {
        let meter = Meter {
            calls: IntCounterVec::new(
                Opts::new(
                    "authmd_ratelimit_backend_calls_total",
                    "Calls to the fleet-wide rate limit backend (Redis), by operation and outcome.",
                ),
                &["operation", "outcome"],
            )?,
            seconds: HistogramVec::new(
                HistogramOpts::new(
                    "authmd_ratelimit_backend_duration_seconds",
                    "Time of calls to the fleet-wide rate limit backend (Redis) that it answered or that timed out, by operation.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["operation"],
            )?,
            fallback: IntGauge::new(
                "authmd_ratelimit_fallback_active",
                "1 while the fleet-wide rate limit backend is unavailable and `on_unavailable` is in force, else 0.",
            )?,
            replicas: IntGauge::new(
                "authmd_ratelimit_live_replicas",
                "Replicas sharing the fleet-wide rate limits, as last counted in Redis.",
            )?,
        };
        let collectors: [Box<dyn Collector>; 4] = [
            Box::new(meter.calls.clone()),
            Box::new(meter.seconds.clone()),
            Box::new(meter.fallback.clone()),
            Box::new(meter.replicas.clone()),
        ];
        for collector in collectors {
            metrics.register(collector)?;
        }
        Ok(meter)
    }

    /// A call ended `outcome` after `took` (none when it was not made).
    pub fn call(&self, operation: Operation, outcome: Outcome, took: Option<Duration>) {
        if let Ok(counter) = self
            .calls
            .get_metric_with_label_values(&[operation.label(), outcome.label()])
        {
            counter.inc();
        }
        if let (Some(took), Ok(h)) = (
            took,
            self.seconds
                .get_metric_with_label_values(&[operation.label()]),
        ) {
            h.observe(took.as_secs_f64());
        }
    }

    /// The fallback is in force (or not).
    pub fn fallback(&self, active: bool) {
        self.fallback.set(i64::from(active));
    }

    /// `live` replicas share the limits.
    pub fn replicas(&self, live: u32) {
        self.replicas.set(i64::from(live));
    }
}
