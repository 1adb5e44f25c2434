//! Streams whose records live elsewhere: `CREATE STREAM … WITH (connector = 'kafka', …)`.
//!
//! A connector's options are parsed and checked here, once, for every door that creates
//! streams (SQL, the config file). What a stream keeps of them is its [`Connector`]: where the
//! records are and where reading starts — never a secret. A secret option is the name of an
//! environment variable (`"properties.sasl.password_env" = 'KAFKA_PASSWORD'`), read when the
//! connection is made; given literally it is refused, so that no catalog, `SHOW STREAMS`,
//! `/v1/streams` or dashboard ever holds one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlparser::tokenizer::Location;

use crate::{Result, SqlError};

/// Where a stream's records come from, when not from Sluice's own doors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Externally tagged (`{"kafka": {…}}`): serde cannot read integer map keys (`starts`) back
// through an internally tagged enum.
#[serde(rename_all = "lowercase")]
pub enum Connector {
    /// A Kafka topic: its partitions are the stream's shards, their offsets its positions.
    Kafka(Box<KafkaTopic>),
}

impl Connector {
    /// What the connector is, as `connector = '…'` names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Connector::Kafka(_) => "kafka",
        }
    }

    /// Where producers send this stream's records (for a door that refuses them).
    pub fn produce_to(&self) -> String {
        match self {
            Connector::Kafka(k) => format!("Kafka topic '{}' on {}", k.topic, k.brokers),
        }
    }
}

/// A Kafka topic a stream follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaTopic {
    /// The bootstrap brokers, `host:port` separated by commas.
    pub brokers: String,
    /// The topic.
    pub topic: String,
    /// Where reading starts, as the statement said.
    pub start: Start,
    /// The consumer group Sluice commits its positions to, for Kafka's own lag tools (it
    /// reads by its own positions: the group's are never read back).
    pub group_id: String,
    /// Other librdkafka settings (`properties.*`); a key ending in `_env` names the
    /// environment variable holding the value of the key without it.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Per partition, the first offset the stream holds: fixed when the stream is created
    /// (`start` resolved then), so that every pipeline and every restart agree. A partition
    /// not here (one added to the topic later) starts at its oldest record.
    #[serde(default)]
    pub starts: BTreeMap<u32, u64>,
}

/// Where a Kafka stream starts reading, per partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// The oldest record each partition holds.
    Earliest,
    /// The end of each partition when the stream is created.
    Latest,
    /// The first record whose timestamp is at or after this instant (ms since the epoch).
    Timestamp(i64),
}

/// Stream options that belong to a connector.
pub(crate) const OPTIONS: &str =
    "connector, brokers, topic, start, group_id, \"properties.<librdkafka setting>\"";

/// librdkafka settings that hold secrets: given only as `<key>_env`.
const SECRETS: &[&str] = &[
    "sasl.password",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.key.pem",
    "ssl_key",
];

/// Settings Sluice owns: how it reads is what exactly once rests on.
const OWNED: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.partition.eof",
    "isolation.level",
];

/// The connector options of a `CREATE STREAM`, gathered before they are checked together.
#[derive(Debug, Default)]
pub(crate) struct ConnectorOptions {
    options: BTreeMap<String, (String, Location)>,
}

impl ConnectorOptions {
    /// Whether `key` (lower case) is a connector option.
    pub(crate) fn takes(key: &str) -> bool {
        matches!(
            key,
            "connector" | "brokers" | "topic" | "start" | "group_id"
        ) || key.starts_with("properties.")
    }

    pub(crate) fn add(&mut self, key: String, value: String, at: Location) {
        self.options.insert(key, (value, at));
    }

    /// The connector these options describe, if any; `stream` names the default group.
    pub(crate) fn connector(mut self, stream: &str, at: Location) -> Result<Option<Connector>> {
        let Some((kind, kind_at)) = self.options.remove("connector") else {
            return match self.options.keys().next() {
                Some(key) => Err(SqlError::at(
                    format!("option '{key}' needs connector = 'kafka'"),
                    self.options[key].1,
                )),
                None => Ok(None),
            };
        };
        if !kind.eq_ignore_ascii_case("kafka") {
            return Err(SqlError::at(
                format!("unknown connector '{kind}': use 'kafka' (Kinesis streams come later)"),
                kind_at,
            ));
        }
        let mut required = |name: &str| {
            self.options
                .remove(name)
                .map(|(v, _)| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| SqlError::at(format!("a Kafka stream needs {name} = '…'"), at))
        };
        let brokers = required("brokers")?;
        let topic = required("topic")?;
        let start = match self.options.remove("start") {
            None => Start::Earliest,
            Some((text, at)) => start(&text, at)?,
        };
        let group_id = self
            .options
            .remove("group_id")
            .map_or_else(|| format!("sluice-{stream}"), |(v, _)| v);
        let mut properties = BTreeMap::new();
        for (key, (value, at)) in self.options {
            let setting = key.strip_prefix("properties.").unwrap_or(&key);
            let plain = setting.strip_suffix("_env").unwrap_or(setting);
            if OWNED.contains(&plain) {
                return Err(SqlError::at(
                    format!(
                        "'{plain}' is Sluice's to set: it reads by the positions the lake holds \
                         (brokers and group_id are options of their own)"
                    ),
                    at,
                ));
            }
            if SECRETS.contains(&setting) {
                return Err(SqlError::at(
                    format!(
                        "'{setting}' is a secret, never kept in the catalog: name the environment \
                         variable that holds it, as \"properties.{setting}_env\" = 'VARIABLE'"
                    ),
                    at,
                ));
            }
            properties.insert(setting.to_string(), value);
        }
        Ok(Some(Connector::Kafka(Box::new(KafkaTopic {
            brokers,
            topic,
            start,
            group_id,
            properties,
            starts: BTreeMap::new(),
        }))))
    }
}

/// `start`: 'earliest', 'latest', or an instant (RFC 3339, or a UTC date and time).
fn start(text: &str, at: Location) -> Result<Start> {
    let text = text.trim();
    match text.to_ascii_lowercase().as_str() {
        "earliest" => return Ok(Start::Earliest),
        "latest" => return Ok(Start::Latest),
        _ => {}
    }
    let instant = chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .or_else(|_| {
            [
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M",
                "%Y-%m-%d",
            ]
            .iter()
            .find_map(|f| {
                chrono::NaiveDateTime::parse_from_str(text, f)
                    .ok()
                    .or_else(|| {
                        chrono::NaiveDate::parse_from_str(text, f)
                            .ok()
                            .and_then(|d| d.and_hms_opt(0, 0, 0))
                    })
            })
            .map(|t| t.and_utc().timestamp_millis())
            .ok_or(())
        })
        .map_err(|()| {
            SqlError::at(
                format!(
                    "start '{text}' is not 'earliest', 'latest' or a time such as \
                     '2026-12-01 00:00:00' (UTC) or '2026-12-01T00:00:00+01:00'"
                ),
                at,
            )
        })?;
    Ok(Start::Timestamp(instant))
}
