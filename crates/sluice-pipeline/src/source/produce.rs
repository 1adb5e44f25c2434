//! Records into Kafka topics: the doors' appends to a cluster's streams, and the topics Sluice
//! creates for streams declared without one.
//!
//! ```text
//!  HTTP / Kinesis door ─► Stream::append ─► Producers (sluice_log::Forward)
//!                                             └► one idempotent producer a stream (acks=all):
//!                                                shard i's records ─► partition i, in order
//!                                                answered once the brokers acknowledged them
//! ```
//!
//! Invariants:
//! - A door acknowledges a record only once the brokers did (acks=all, idempotent: a retry
//!   of the producer's own never writes a record twice). A record's position is its offset,
//!   as the stream's readers see it; the offsets of one append are in its order but need not be
//!   consecutive (every worker's doors write the same partitions). A partition that took part of
//!   a request's records before failing answers that its outcome is unknown, never a plain
//!   refusal, which would invite a retry that writes the part twice.
//! - The records of a shard go to the partition of the same number, so a partition key lands
//!   where the log's own doors would put it (its MD5, as in Kinesis). A stream of a topic has
//!   as many shards as the topic had partitions when the stream was created
//!   ([`super::prepare_stream`]).
//! - A topic Sluice created (`owned`) is deleted with its stream; any other is never touched.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use sluice_log::{Appended, Forward, SealedBatch, ShardAppend, Stream};
use sluice_sql::{Connector, KafkaTopic, Start, StreamDefinition};

use super::TopicHome;
use super::kafka::{CHECK_TIMEOUT, client_config, unreachable};
use crate::{PipelineError, Result};

/// The doors' appends to streams of Kafka topics: one producer a stream, made at its first
/// append, and made anew after one failed (librdkafka keeps some failures, a topic's
/// authorization for one, until its next metadata refresh, and an idempotent producer's fatal
/// errors for ever).
#[derive(Default)]
pub struct Producers {
    by_stream: Arc<Mutex<HashMap<u64, Arc<TopicProducer>>>>,
}

/// The producer of one stream's topic.
struct TopicProducer {
    topic: KafkaTopic,
    producer: FutureProducer,
}

impl Producers {
    fn producer(&self, stream: &Stream) -> sluice_log::Result<Arc<TopicProducer>> {
        let mut by_stream = self.by_stream.lock().expect("producers lock");
        if let Some(producer) = by_stream.get(&stream.id()) {
            return Ok(producer.clone());
        }
        let meta = stream.meta();
        let Some(Connector::Kafka(topic)) = StreamDefinition::from_log(&meta.definition).connector
        else {
            return Err(sluice_log::Error::Elsewhere {
                stream: meta.name,
                source_of_records: meta.elsewhere.unwrap_or_default(),
            });
        };
        let producer = Arc::new(
            TopicProducer::new(&meta.name, *topic)
                .map_err(|e| sluice_log::Error::Unavailable(e.to_string()))?,
        );
        by_stream.insert(stream.id(), producer.clone());
        Ok(producer)
    }
}

impl Forward for Producers {
    fn append(
        &self,
        stream: &Stream,
        batches: Vec<(u32, SealedBatch)>,
    ) -> Pin<Box<dyn Future<Output = sluice_log::Result<Vec<ShardAppend>>> + Send>> {
        let (id, by_stream) = (stream.id(), self.by_stream.clone());
        match self.producer(stream) {
            Ok(producer) => Box::pin(async move {
                let outcome = producer.append(batches).await;
                let failed = outcome.iter().any(|o| {
                    o.result
                        .as_ref()
                        .is_err_and(|e| !matches!(e, sluice_log::Error::Backpressure))
                });
                if failed {
                    let mut by_stream = by_stream.lock().expect("producers lock");
                    if by_stream
                        .get(&id)
                        .is_some_and(|p| Arc::ptr_eq(p, &producer))
                    {
                        by_stream.remove(&id);
                    }
                }
                Ok(outcome)
            }),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn takes_doors(&self, stream: &Stream) -> bool {
        // A topic is where the records of the stream come from when the stream says so: a
        // PostgreSQL source's stream in a cluster has a topic too, written by its reader only.
        let meta = stream.meta();
        match StreamDefinition::from_log(&meta.definition).connector {
            Some(connector) => meta.elsewhere == Some(connector.produce_to()),
            None => false,
        }
    }

    fn forget(&self, stream_id: u64) {
        self.by_stream
            .lock()
            .expect("producers lock")
            .remove(&stream_id);
    }
}

impl TopicProducer {
    fn new(stream: &str, topic: KafkaTopic) -> Result<TopicProducer> {
        let mut defaults = ClientConfig::new();
        defaults
            .set("client.id", format!("sluice-{stream}-doors"))
            .set("linger.ms", "5")
            // The log's in-flight budget bounds what waits for the brokers, not librdkafka's
            // own queue (100,000 records by default: fewer than one request may carry).
            .set("queue.buffering.max.messages", "2147483647")
            .set("queue.buffering.max.kbytes", "2147483647");
        let producer = client_config(stream, &topic, defaults)?
            // Acknowledged by every in-sync replica, never written twice by a retry.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .map_err(|e| unreachable(&topic, e))?;
        Ok(TopicProducer { topic, producer })
    }

    /// Produces each shard's records into its partition; per shard, their offsets or the
    /// first failure.
    async fn append(&self, batches: Vec<(u32, SealedBatch)>) -> Vec<ShardAppend> {
        let mut sent = Vec::with_capacity(batches.len());
        for (shard, batch) in &batches {
            let mut deliveries = Vec::with_capacity(batch.count() as usize);
            let mut refused = None;
            for (key, data) in batch.records() {
                let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic.topic)
                    .partition(*shard as i32)
                    .payload(data);
                if !key.is_empty() {
                    record = record.key(key);
                }
                match self.producer.send_result(record) {
                    Ok(delivery) => deliveries.push(delivery),
                    Err((e, _)) => {
                        refused = Some(self.error(e));
                        break;
                    }
                }
            }
            sent.push((*shard, deliveries, refused));
        }
        let mut outcome = Vec::with_capacity(sent.len());
        for (shard, deliveries, refused) in sent {
            let mut offsets = Vec::with_capacity(deliveries.len());
            let mut failed = refused;
            for delivery in deliveries {
                match delivery.await {
                    Ok(Ok(delivered)) => offsets.push(delivered.offset as u64),
                    Ok(Err((e, _))) => {
                        failed.get_or_insert_with(|| self.error(e));
                    }
                    Err(_) => {
                        failed.get_or_insert(sluice_log::Error::Closed);
                    }
                }
            }
            let result = match failed {
                None => Ok(Appended::scattered(offsets)),
                // Some of the shard's records are in the topic: sent again, they would be
                // there twice.
                Some(e) if !offsets.is_empty() => Err(sluice_log::Error::Indeterminate(format!(
                    "{} of the request's records for partition {shard} were written, then: {e}",
                    offsets.len()
                ))),
                Some(e) => Err(e),
            };
            outcome.push(ShardAppend { shard, result });
        }
        outcome
    }

    /// What a failure to produce means to the door: records whose fate is unknown (a retry may
    /// write them twice), or a topic that does not take them.
    fn error(&self, e: KafkaError) -> sluice_log::Error {
        let message = format!(
            "Kafka topic '{}' on {}: {e}",
            self.topic.topic, self.topic.brokers
        );
        match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::QueueFull) => sluice_log::Error::Backpressure,
            Some(RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::RequestTimedOut) => {
                sluice_log::Error::Indeterminate(message)
            }
            _ => sluice_log::Error::Unavailable(message),
        }
    }
}

/// Creates stream `stream`'s own topic in `home`, with `partitions` partitions (the broker's
/// default replication), and returns it as the stream's connector. Refused if the topic exists:
/// it is someone's, or a dropped stream's not yet deleted. Blocking (broker calls).
pub fn create_topic(home: &TopicHome, stream: &str, partitions: u32) -> Result<KafkaTopic> {
    let topic = KafkaTopic {
        brokers: home.brokers.clone(),
        topic: format!("{}.{stream}", home.cluster),
        start: Start::Earliest,
        group_id: format!("sluice-{}-{stream}", home.cluster),
        properties: Default::default(),
        starts: Default::default(),
        owned: true,
    };
    let admin = admin(stream, &topic)?;
    let new = NewTopic::new(&topic.topic, partitions as i32, TopicReplication::Fixed(-1));
    let options = AdminOptions::new().operation_timeout(Some(CHECK_TIMEOUT));
    let results = futures::executor::block_on(admin.create_topics([&new], &options))
        .map_err(|e| unreachable(&topic, e))?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                return Err(PipelineError::Invalid(format!(
                    "Kafka topic '{}' exists on {}: a stream of the cluster reads its own new \
                     topic; to read that one, declare the stream with connector = 'kafka', \
                     topic = '{}'",
                    topic.topic, topic.brokers, topic.topic
                )));
            }
            Err((_, code)) => {
                return Err(PipelineError::Unavailable(format!(
                    "Kafka brokers {}: cannot create topic '{}': {code}",
                    topic.brokers, topic.topic
                )));
            }
        }
    }
    Ok(topic)
}

/// Deletes the topic of dropped stream `stream`, if Sluice created it. Blocking.
pub fn delete_topic(stream: &str, topic: &KafkaTopic) -> Result<()> {
    if !topic.owned {
        return Ok(());
    }
    let admin = admin(stream, topic)?;
    let options = AdminOptions::new().operation_timeout(Some(CHECK_TIMEOUT));
    let results =
        futures::executor::block_on(admin.delete_topics(&[topic.topic.as_str()], &options))
            .map_err(|e| unreachable(topic, e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((_, code)) => {
                return Err(PipelineError::Unavailable(format!(
                    "Kafka brokers {}: cannot delete topic '{}': {code}",
                    topic.brokers, topic.topic
                )));
            }
        }
    }
    Ok(())
}

fn admin(stream: &str, topic: &KafkaTopic) -> Result<AdminClient<DefaultClientContext>> {
    client_config(stream, topic, ClientConfig::new())?
        .create()
        .map_err(|e| unreachable(topic, e))
}
