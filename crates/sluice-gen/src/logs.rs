//! `logs`: application logs of a few services, with incidents that raise their error rate.
//!
//! `{"service":"checkout","level":"ERROR","status":503,"latency_ms":1234,
//! "message":"upstream timed out","ts":"2026-01-05T14:30:00.123Z"}`
//!
//! - 8 services, uniform.
//! - Normally a service logs 90 % INFO (status 200), 8 % WARN (status 404 or 429), 2 % ERROR
//!   (status 500 or 503). Latency: LogNormal(ln 40, 0.6) ms, tripled for errors.
//! - Incidents: each event of a healthy service starts an incident there with a probability
//!   chosen so that a service has about one incident per 10 minutes of event time. An incident
//!   lasts 30 s of event time, during which 40 % of the service's lines are errors and latency
//!   is five times higher: the error spikes a log pipeline alerts on.

use std::io::Write;

use rand::Rng;
use rand_distr::{Distribution, LogNormal};

use crate::time::EventClock;

const SERVICES: [&str; 8] = [
    "api-gateway",
    "auth",
    "catalog",
    "cart",
    "checkout",
    "payments",
    "search",
    "shipping",
];
/// Mean event time between a service's incidents, and how long one lasts.
const INCIDENT_EVERY_MS: f64 = 600_000.0;
const INCIDENT_MS: i64 = 30_000;
const ERROR_SHARE: f64 = 0.02;
const INCIDENT_ERROR_SHARE: f64 = 0.40;
const WARN_SHARE: f64 = 0.08;
const INFO_MESSAGES: [&str; 3] = ["request served", "cache hit", "session refreshed"];
const WARN_MESSAGES: [(&str, u16); 2] = [("not found", 404), ("rate limited", 429)];
const ERROR_MESSAGES: [(&str, u16); 2] = [("internal error", 500), ("upstream timed out", 503)];

pub(crate) struct Logs {
    /// Per service, the event time (ms) its current incident ends; in the past when healthy.
    incident_until: [i64; SERVICES.len()],
    /// Probability that one event of a healthy service starts an incident.
    incident_p: f64,
    latency: LogNormal<f64>,
}

impl Logs {
    /// `rate`: events per second of event time, over all services.
    pub(crate) fn new(rate: u64) -> Self {
        let events_per_service_between_incidents =
            INCIDENT_EVERY_MS / 1000.0 * rate as f64 / SERVICES.len() as f64;
        Logs {
            incident_until: [i64::MIN; SERVICES.len()],
            incident_p: (1.0 / events_per_service_between_incidents).min(1.0),
            latency: LogNormal::new(40f64.ln(), 0.6).expect("valid log-normal parameters"),
        }
    }

    /// Appends the next event, one line.
    pub(crate) fn write_event<R: Rng>(
        &mut self,
        rng: &mut R,
        clock: &mut EventClock,
        out: &mut Vec<u8>,
    ) {
        let service = rng.random_range(0..SERVICES.len());
        let ts = clock.next_event_ms(rng);
        let until = &mut self.incident_until[service];
        if ts >= *until && rng.random_bool(self.incident_p) {
            *until = ts.saturating_add(INCIDENT_MS);
        }
        let incident = ts < *until;
        let error_share = if incident {
            INCIDENT_ERROR_SHARE
        } else {
            ERROR_SHARE
        };
        let mut latency = self.latency.sample(rng) * if incident { 5.0 } else { 1.0 };
        let draw = rng.random::<f64>();
        let (level, message, status) = if draw < error_share {
            latency *= 3.0;
            let (message, status) = ERROR_MESSAGES[rng.random_range(0..ERROR_MESSAGES.len())];
            ("ERROR", message, status)
        } else if draw < error_share + WARN_SHARE {
            let (message, status) = WARN_MESSAGES[rng.random_range(0..WARN_MESSAGES.len())];
            ("WARN", message, status)
        } else {
            let message = INFO_MESSAGES[rng.random_range(0..INFO_MESSAGES.len())];
            ("INFO", message, 200)
        };
        // Writing to a Vec cannot fail.
        let _ = write!(
            out,
            "{{\"service\":\"{}\",\"level\":\"{level}\",\"status\":{status},\
             \"latency_ms\":{},\"message\":\"{message}\",\"ts\":\"",
            SERVICES[service],
            latency.round() as u64
        );
        clock.push_timestamp(out, ts);
        out.extend_from_slice(b"\"}\n");
    }
}
