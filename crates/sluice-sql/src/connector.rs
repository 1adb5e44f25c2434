//! Streams whose records live elsewhere: `CREATE STREAM … WITH (connector = 'kafka' |
//! 'kinesis', …)`.
//!
//! A connector's options are parsed and checked here, once, for every door that creates
//! streams (SQL, the config file). What a stream keeps of them is its [`Connector`]: where the
//! records are and where reading starts — never a secret. A secret option is the name of an
//! environment variable (`"properties.sasl.password_env" = 'KAFKA_PASSWORD'`,
//! `secret_access_key_env = 'AWS_SECRET'`), read when the connection is made; given literally it is refused, so that no catalog, `SHOW STREAMS`,
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
    /// A Kinesis stream: its shards are the stream's, numbered as their ids are
    /// (`shardId-000000000003` is shard 3); the positions are ordinals of records in a shard.
    Kinesis(Box<KinesisStream>),
}

impl Connector {
    /// What the connector is, as `connector = '…'` names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Connector::Kafka(_) => "kafka",
            Connector::Kinesis(_) => "kinesis",
        }
    }

    /// What the connector's stream has instead of shards of its own.
    pub fn shards_are(&self) -> &'static str {
        match self {
            Connector::Kafka(_) => "the topic's partitions",
            Connector::Kinesis(_) => "the Kinesis stream's",
        }
    }

    /// The connector as declared, not as fixed when its stream was created (where it starts),
    /// to compare a declaration with what a stream keeps: none for a topic Sluice created for
    /// a stream declared without one (in a cluster).
    pub fn as_declared(&self) -> Option<Connector> {
        let mut declared = self.clone();
        match &mut declared {
            Connector::Kafka(topic) if topic.owned => return None,
            Connector::Kafka(topic) => topic.starts.clear(),
            Connector::Kinesis(stream) => stream.started_ms = None,
        }
        Some(declared)
    }

    /// Where producers send this stream's records (for a door that refuses them).
    pub fn produce_to(&self) -> String {
        match self {
            Connector::Kafka(k) => format!("Kafka topic '{}' on {}", k.topic, k.brokers),
            Connector::Kinesis(k) => format!(
                "Kinesis stream '{}' ({})",
                k.stream_name,
                k.endpoint.as_deref().unwrap_or(&k.region)
            ),
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
    /// Whether Sluice created the topic for its stream (a cluster's stream declared without a
    /// connector), and so deletes it with the stream.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub owned: bool,
}

/// A Kinesis stream a stream follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KinesisStream {
    /// The Kinesis stream's name.
    pub stream_name: String,
    /// Its AWS region.
    pub region: String,
    /// The Kinesis endpoint, when not AWS's for the region (another Sluice, a test double).
    pub endpoint: Option<String>,
    /// Where reading starts, as the statement said.
    pub start: Start,
    /// For `latest`: the instant the stream was created (ms since the epoch), from which
    /// every shard is read (fixed then, so that every pipeline and restart agree).
    #[serde(default)]
    pub started_ms: Option<i64>,
    /// The environment variable holding the access key id (with the next: the AWS SDK's
    /// default credentials chain otherwise).
    #[serde(default)]
    pub access_key_id_env: Option<String>,
    /// The environment variable holding the secret access key.
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    /// The environment variable holding a session token, if any.
    #[serde(default)]
    pub session_token_env: Option<String>,
}

/// Where a stream elsewhere starts reading, per partition or shard.
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
pub(crate) const OPTIONS: &str = "connector, start, for Kafka brokers, topic, group_id, \
     \"properties.<librdkafka setting>\", for Kinesis stream_name, region, endpoint, \
     access_key_id_env, secret_access_key_env, session_token_env";

/// The Kinesis options (besides `connector` and `start`).
const KINESIS: &[&str] = &[
    "stream_name",
    "region",
    "endpoint",
    "access_key_id_env",
    "secret_access_key_env",
    "session_token_env",
];

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
            || KINESIS.contains(&key)
            || KINESIS.contains(&format!("{key}_env").as_str())
    }

    pub(crate) fn add(&mut self, key: String, value: String, at: Location) {
        self.options.insert(key, (value, at));
    }

    /// The connector these options describe, if any; `stream` names the default group.
    pub(crate) fn connector(mut self, stream: &str, at: Location) -> Result<Option<Connector>> {
        let Some((kind, kind_at)) = self.options.remove("connector") else {
            return match self.options.keys().next() {
                Some(key) => Err(SqlError::at(
                    format!("option '{key}' needs connector = 'kafka' or 'kinesis'"),
                    self.options[key].1,
                )),
                None => Ok(None),
            };
        };
        match kind.to_ascii_lowercase().as_str() {
            "kafka" => self.kafka(stream, at).map(Some),
            "kinesis" => self.kinesis(at).map(Some),
            _ => Err(SqlError::at(
                format!("unknown connector '{kind}': use 'kafka' or 'kinesis'"),
                kind_at,
            )),
        }
    }

    /// Takes option `name`, which must not be empty.
    fn required(&mut self, name: &str, kind: &str, at: Location) -> Result<String> {
        self.options
            .remove(name)
            .map(|(v, _)| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| SqlError::at(format!("a {kind} stream needs {name} = '…'"), at))
    }

    fn start(&mut self) -> Result<Start> {
        match self.options.remove("start") {
            None => Ok(Start::Earliest),
            Some((text, at)) => start(&text, at),
        }
    }

    fn kinesis(mut self, at: Location) -> Result<Connector> {
        let stream_name = self.required("stream_name", "Kinesis", at)?;
        let region = self.required("region", "Kinesis", at)?;
        let start = self.start()?;
        let mut take = |name: &str| self.options.remove(name).map(|(v, _)| v.trim().to_string());
        let connector = KinesisStream {
            stream_name,
            region,
            endpoint: take("endpoint"),
            start,
            started_ms: None,
            access_key_id_env: take("access_key_id_env"),
            secret_access_key_env: take("secret_access_key_env"),
            session_token_env: take("session_token_env"),
        };
        if let Some((key, (_, at))) = self.options.into_iter().next() {
            let message = if KINESIS.contains(&format!("{key}_env").as_str()) {
                format!(
                    "'{key}' is a secret, never kept in the catalog: name the environment \
                     variable that holds it, as {key}_env = 'VARIABLE'"
                )
            } else {
                format!("a Kinesis stream takes no option '{key}'")
            };
            return Err(SqlError::at(message, at));
        }
        if connector.access_key_id_env.is_some() != connector.secret_access_key_env.is_some() {
            return Err(SqlError::at(
                "access_key_id_env and secret_access_key_env go together",
                at,
            ));
        }
        Ok(Connector::Kinesis(Box::new(connector)))
    }

    fn kafka(mut self, stream: &str, at: Location) -> Result<Connector> {
        let brokers = self.required("brokers", "Kafka", at)?;
        let topic = self.required("topic", "Kafka", at)?;
        let start = self.start()?;
        let group_id = self
            .options
            .remove("group_id")
            .map_or_else(|| format!("sluice-{stream}"), |(v, _)| v);
        let mut properties = BTreeMap::new();
        for (key, (value, at)) in self.options {
            let Some(setting) = key.strip_prefix("properties.") else {
                return Err(SqlError::at(
                    format!("a Kafka stream takes no option '{key}'"),
                    at,
                ));
            };
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
        Ok(Connector::Kafka(Box::new(KafkaTopic {
            brokers,
            topic,
            start,
            group_id,
            properties,
            starts: BTreeMap::new(),
            owned: false,
        })))
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
