//! `kafka-fetch`: a Kafka broker's fetch ceiling as librdkafka sees it — one bare consumer
//! (the client Sluice's Kafka streams use, with their settings' defaults) reading every
//! partition of a topic from its start until it has `records` records, touching each payload.
//! What Sluice's Kafka stream reads at is comparable to this, not to a Python client's rate.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

/// Reads `records` records of `topic` on `brokers`; the figures as JSON.
pub fn run(brokers: &str, topic: &str, records: u64) -> anyhow::Result<Value> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sluice-bench-fetch")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .context("cannot create a Kafka consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("cannot read the topic's metadata")?;
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let (mut got, mut bytes) = (0u64, 0u64);
    let started = Instant::now();
    while got < records {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(message)) => {
                got += 1;
                bytes += message.payload().map_or(0, |p| p.len() as u64);
            }
            Some(Err(e)) => bail!("the consumer failed after {got} records: {e}"),
            None => bail!("no record for 10 s after {got} records"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(
        json!({"bench": "kafka-fetch", "records": got, "bytes": bytes, "seconds": seconds,
              "records_per_s": got as f64 / seconds}),
    )
}
