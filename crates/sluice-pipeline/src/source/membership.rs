//! A worker's share of a Kafka topic's partitions: a member of a Kafka consumer group, whose
//! assignment is the partitions this worker's pipelines read (see [`super::Assignment`]).
//!
//! ```text
//!  worker 1: Membership ─┐  JoinGroup / SyncGroup (cooperative-sticky)   ┌─ {0, 1}
//!  worker 2: Membership ─┼──────────── the group's coordinator ──────────┼─ {2, 3}
//!  worker 3: Membership ─┘   a member silent past the session timeout    └─ {4, 5}
//!                            loses its partitions to the others
//! ```
//!
//! Invariants:
//! - The member only takes part in the group: it pauses every partition it is given and drops
//!   whatever it polls. The stream's records are read by the stream's own consumer
//!   ([`super::kafka::Topic`]), from the positions the lake holds, never from the group's
//!   offsets.
//! - What it holds is the assignment after the last rebalance that completed; before the first
//!   one it holds nothing. The group's word is not what keeps a partition to one writer: a
//!   worker slow to hear that it lost a partition is refused by the tables (`exactly_once`,
//!   rule 7).
//! - Brokers that cannot run cooperative rebalancing fall back to the eager protocol (every
//!   partition revoked, then assigned): librdkafka chooses, the assignment read is the same.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, TopicPartitionList};

use super::Assignment;
use crate::exactly_once::Partition;
use crate::{PipelineError, Result};

/// How long the group waits for a silent member before giving its partitions to the others.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the member's thread serves the group (rebalances are taken between two polls).
const POLL: Duration = Duration::from_millis(100);

/// A member of the consumer group that shares a topic's partitions among workers. Dropped, it
/// leaves the group from its own thread (closing a consumer may wait on the brokers: never on
/// the caller's).
pub struct Membership {
    shared: Arc<Shared>,
}

/// What the member's thread and its holders share.
#[derive(Default)]
struct Shared {
    /// The partitions held after the last rebalance; none before the first.
    held: Mutex<Option<BTreeSet<Partition>>>,
    /// Rebalances this member took part in.
    rebalances: AtomicU64,
    stop: AtomicBool,
}

/// Where a member is: the group, the topic and the brokers.
#[derive(Debug, Clone)]
pub struct Group {
    /// The brokers' addresses (`host:port,…`).
    pub brokers: String,
    /// The topic whose partitions are shared.
    pub topic: String,
    /// The consumer group's id.
    pub group_id: String,
    /// This worker's name in the group (its client id).
    pub member: String,
    /// How long the group waits for a silent member.
    pub session_timeout: Duration,
}

impl Membership {
    /// Joins `group`; the first assignment comes after the group's rebalance (seconds).
    pub fn join(group: &Group) -> Result<Membership> {
        let shared = Arc::new(Shared::default());
        let consumer: BaseConsumer<Member> = ClientConfig::new()
            .set("bootstrap.servers", &group.brokers)
            .set("group.id", &group.group_id)
            .set("client.id", &group.member)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "session.timeout.ms",
                group.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (group.session_timeout.as_millis() / 5).max(100).to_string(),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create_with_context(Member {
                shared: shared.clone(),
                topic: group.topic.clone(),
            })
            .map_err(|e| unreachable(group, e))?;
        consumer
            .subscribe(&[&group.topic])
            .map_err(|e| unreachable(group, e))?;
        let serving = shared.clone();
        std::thread::Builder::new()
            .name(format!("group-{}", group.topic))
            .spawn(move || {
                while !serving.stop.load(Ordering::Relaxed) {
                    // Records are not this consumer's to read; rebalances run inside poll.
                    let _ = consumer.poll(POLL);
                }
                // Dropping the consumer leaves the group: the others take its partitions now,
                // not after the session timeout.
                drop(consumer);
            })
            .map_err(|e| PipelineError::Internal(format!("cannot start a thread: {e}")))?;
        Ok(Membership { shared })
    }

    /// Rebalances this member took part in since it joined.
    pub fn rebalances(&self) -> u64 {
        self.shared.rebalances.load(Ordering::Relaxed)
    }
}

impl Assignment for Membership {
    fn held(&self) -> Option<BTreeSet<Partition>> {
        self.shared.held.lock().expect("held lock").clone()
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// The member consumer's context: keeps the assignment after each rebalance.
struct Member {
    shared: Arc<Shared>,
    topic: String,
}

impl ClientContext for Member {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        tracing::debug!(?level, facility, message, "librdkafka (group)");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "librdkafka (group)");
    }
}

impl ConsumerContext for Member {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Error(e) = rebalance {
            tracing::warn!(topic = self.topic, error = %e, "consumer group rebalance failed");
            return;
        }
        let assignment = match consumer.assignment() {
            Ok(assignment) => assignment,
            Err(e) => {
                tracing::warn!(topic = self.topic, error = %e, "cannot read the group's assignment");
                return;
            }
        };
        // Nothing is to be fetched by this consumer.
        if let Err(e) = consumer.pause(&assignment) {
            tracing::debug!(topic = self.topic, error = %e, "cannot pause the group's partitions");
        }
        let held = partitions_of(&assignment, &self.topic);
        tracing::info!(
            topic = self.topic,
            ?held,
            "partitions assigned by the consumer group"
        );
        *self.shared.held.lock().expect("held lock") = Some(held);
        self.shared.rebalances.fetch_add(1, Ordering::Relaxed);
    }
}

fn partitions_of(list: &TopicPartitionList, topic: &str) -> BTreeSet<Partition> {
    list.elements_for_topic(topic)
        .iter()
        .map(|e| e.partition() as Partition)
        .collect()
}

fn unreachable(group: &Group, e: KafkaError) -> PipelineError {
    PipelineError::Unavailable(format!(
        "Kafka brokers {} (group '{}' of topic '{}'): {e}",
        group.brokers, group.group_id, group.topic
    ))
}
