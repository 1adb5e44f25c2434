//! Streams that read Kafka topics, against librdkafka's mock cluster in this process (Tansu,
//! the real broker of the end-to-end tests, answers ListOffsets wrongly: `start = 'latest'`, a
//! timestamp start and broker faults are tested here).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use sluice_lake::Lake;
use sluice_log::{Log, LogConfig, Retention, Stream, StreamOptions};
use sluice_pipeline::source::membership::{Group, Membership};
use sluice_pipeline::source::{Assignment, StreamSource, prepare_stream};
use sluice_pipeline::{Pipeline, PipelineError, RawConfig, RawPipeline, errors_table};

use super::count;

/// A mock cluster of one broker with topic `clicks`, and a producer to it.
struct Kafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
    producer: BaseProducer,
}

/// Event time of record `i`: one a second from 2026-01-05 14:30 UTC.
const T0_MS: i64 = 1_767_623_400_000;

impl Kafka {
    fn new(partitions: i32) -> Kafka {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("clicks", partitions, 1).unwrap();
        let producer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .unwrap();
        Kafka { cluster, producer }
    }

    fn brokers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Produces records `from..to` to `partitions` partitions in turn, every `bad_every`-th
    /// one malformed (none for 0), each with key `u<i>` and timestamp `T0_MS + i` seconds; returns how many
    /// are good.
    fn produce(&self, from: i64, to: i64, partitions: i32, bad_every: i64) -> usize {
        let mut good = 0;
        for i in from..to {
            let payload = if bad_every > 0 && i % bad_every == 0 {
                format!(r#"{{"user_id":"u{i}","ts":"not a time"}}"#)
            } else {
                good += 1;
                format!(r#"{{"user_id":"u{i}","n":{i},"ts":"2026-01-05T14:30:00Z"}}"#)
            };
            let key = format!("u{i}");
            let record = BaseRecord::to("clicks")
                .partition((i % i64::from(partitions)) as i32)
                .key(&key)
                .payload(&payload)
                .timestamp(T0_MS + i * 1000);
            self.producer.send(record).map_err(|(e, _)| e).unwrap();
        }
        self.producer.flush(Duration::from_secs(10)).unwrap();
        good
    }
}

/// Creates stream `name` reading topic `clicks`, with `options` added to its WITH (a later
/// option of a name wins), as the
/// server does (the connector checked, where it starts fixed).
fn kafka_stream(
    log: &Log,
    name: &str,
    brokers: &str,
    options: &str,
) -> sluice_pipeline::Result<Arc<Stream>> {
    let create = format!(
        "CREATE STREAM {name} (user_id TEXT, n BIGINT, ts TIMESTAMP NOT NULL) WITH \
         (connector = 'kafka', brokers = '{brokers}', topic = 'clicks', event_time = 'ts'{options})"
    );
    let sluice_sql::Statement::CreateStream(mut c) = sluice_sql::parse(&create)?.remove(0) else {
        panic!("not a CREATE STREAM")
    };
    let elsewhere = prepare_stream(&mut c)?;
    Ok(log.create_stream(
        name,
        StreamOptions {
            shards: c.shards,
            retention: Retention::default(),
            definition: c.definition.to_log(),
            elsewhere,
        },
    )?)
}

async fn raw(log: &Arc<Log>, lake: &Lake, name: &str) -> RawPipeline {
    let config = RawConfig {
        max_records_per_round: 300,
        ..RawConfig::default()
    };
    RawPipeline::open(StreamSource::open(log, name).unwrap(), lake, config)
        .await
        .unwrap()
}

/// Runs rounds until the pipeline has taken `records` in all (reads never wait for the
/// broker: the consumer fetches in the background). A round that fails is taken again, as
/// the runtime does.
async fn take(pipeline: &mut RawPipeline, records: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut taken, mut failed) = (0, None);
    while taken < records {
        assert!(
            Instant::now() < deadline,
            "took {taken} of {records} records; the last failure: {failed:?}"
        );
        match pipeline.round().await {
            Ok(round) => taken += round.records,
            Err(e) => failed = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(taken, records, "no round takes more than the topic holds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_lands_in_the_raw_and_errors_tables_once_with_partition_offset_key_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let lake = Lake::local(dir.path().join("lake")).unwrap();
    let kafka = Kafka::new(4);
    let good = kafka.produce(0, 1000, 4, 50);
    let stream = kafka_stream(&log, "clicks", &kafka.brokers(), "").unwrap();

    let mut pipeline = raw(&log, &lake, "clicks").await;
    take(&mut pipeline, 1000).await;
    let rows = lake.open("clicks").await.unwrap();
    let errors = lake.open(&errors_table("clicks")).await.unwrap();
    assert_eq!(count(&rows, "SELECT count(*) FROM t").await, good as i64);
    assert_eq!(count(&errors, "SELECT count(*) FROM t").await, 20);
    assert_eq!(
        count(&rows, "SELECT count(DISTINCT (_shard, _seq)) FROM t").await,
        good as i64
    );
    // Partition and offset say where each row came from: record i is offset i / 4 of
    // partition i % 4, its key u<i>, its time T0 + i seconds.
    assert_eq!(
        count(
            &rows,
            "SELECT count(*) FROM t WHERE n % 4 = _shard AND n / 4 = _seq \
             AND _key = concat('u', n) \
             AND _kafka_ts = to_timestamp_millis(1767623400000 + n * 1000)"
        )
        .await,
        good as i64
    );
    assert_eq!(
        count(
            &errors,
            "SELECT count(*) FROM t WHERE raw LIKE '%not a time%' AND _seq * 4 + _shard IN \
             (SELECT value * 50 FROM generate_series(0, 19))"
        )
        .await,
        20,
        "an error row names the partition and offset of its record"
    );

    // A restart resumes from the lake's positions: nothing twice, nothing lost.
    drop(pipeline);
    let more = kafka.produce(1000, 1400, 4, 50);
    let mut restarted = raw(&log, &lake, "clicks").await;
    take(&mut restarted, 400).await;
    assert_eq!(
        count(&rows, "SELECT count(DISTINCT (_shard, _seq)) FROM t").await,
        (good + more) as i64
    );
    assert_eq!(
        count(&rows, "SELECT count(*) FROM t").await,
        (good + more) as i64
    );

    // Sluice's own doors refuse the stream's records, and say where to produce them.
    let mut batches = stream.batches();
    batches.push(0, b"k", b"{}").unwrap();
    let refused = stream.append(batches).await.unwrap_err().to_string();
    assert!(
        refused.contains("Kafka topic 'clicks' on") && refused.contains("produce them there"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_and_a_timestamp_start_where_the_stream_was_created_to() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let lake = Lake::local(dir.path().join("lake")).unwrap();
    let kafka = Kafka::new(2);
    kafka.produce(0, 100, 2, 0);
    kafka_stream(&log, "latest", &kafka.brokers(), ", start = 'latest'").unwrap();
    // Record 60's time: records 60..100 are at or after it.
    kafka_stream(
        &log,
        "since",
        &kafka.brokers(),
        ", start = '2026-01-05 14:31:00'",
    )
    .unwrap();
    kafka.produce(100, 150, 2, 0);

    let mut latest = raw(&log, &lake, "latest").await;
    take(&mut latest, 50).await;
    let mut since = raw(&log, &lake, "since").await;
    take(&mut since, 90).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(latest.round().await.unwrap().records, 0);
    assert_eq!(since.round().await.unwrap().records, 0);
    let rows = lake.open("latest").await.unwrap();
    assert_eq!(count(&rows, "SELECT min(n) FROM t").await, 100);
    let rows = lake.open("since").await.unwrap();
    assert_eq!(count(&rows, "SELECT min(n) FROM t").await, 60);
    assert_eq!(count(&rows, "SELECT count(*) FROM t").await, 90);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_fails_rounds_clearly_and_they_resume_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let lake = Lake::local(dir.path().join("lake")).unwrap();
    let kafka = Kafka::new(2);
    kafka.produce(0, 100, 2, 0);
    kafka_stream(&log, "clicks", &kafka.brokers(), "").unwrap();
    let mut pipeline = raw(&log, &lake, "clicks").await;
    take(&mut pipeline, 100).await;

    kafka.cluster.broker_down(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let error = loop {
        assert!(
            Instant::now() < deadline,
            "rounds go on with the broker down"
        );
        match pipeline.round().await {
            Err(e) => break e,
            Ok(round) => assert_eq!(round.records, 0),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        matches!(error, PipelineError::Unavailable(_)) && error.to_string().contains("Kafka"),
        "{error}"
    );

    kafka.cluster.broker_up(1).unwrap();
    kafka.produce(100, 200, 2, 0);
    // The runtime opens a failed pipeline again; so does this test.
    let mut reopened = raw(&log, &lake, "clicks").await;
    take(&mut reopened, 100).await;
    let rows = lake.open("clicks").await.unwrap();
    assert_eq!(
        count(&rows, "SELECT count(DISTINCT (_shard, _seq)) FROM t").await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_a_topic_that_is_not_there_is_refused_when_created() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let kafka = Kafka::new(1);
    kafka
        .cluster
        .topic_error(
            "missing",
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        )
        .unwrap();
    let create = |options: &str| {
        kafka_stream(&log, "missing", &kafka.brokers(), options)
            .map(drop)
            .unwrap_err()
            .to_string()
    };
    // A later option overrides an earlier one of the same name.
    let refused = create(", topic = 'missing'");
    assert!(refused.contains("does not exist"), "{refused}");
    assert!(log.stream("missing").is_err(), "nothing was created");

    let refused = create(", \"properties.sasl.password\" = 'hunter2'");
    assert!(
        refused.contains("properties.sasl.password_env"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitions_time_lag_is_how_far_its_position_is_behind_its_newest_record() {
    use sluice_pipeline::exactly_once::Positions;
    use sluice_pipeline::source::{Limits, Source};

    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let kafka = Kafka::new(2);
    // Records 0..100, a second apart: each partition's newest is 98 s after its first.
    kafka.produce(0, 100, 2, 0);
    kafka_stream(&log, "clicks", &kafka.brokers(), "").unwrap();
    let source = StreamSource::open(&log, "clicks").unwrap();
    let at_start = Positions::from([(0, 0), (1, 0)]);
    let one_each = Limits::from([(0, 1), (1, 1)]);
    let behind = BTreeMap::from([(0, 98_000), (1, 98_000)]);
    let deadline = Instant::now() + Duration::from_secs(60);
    // A reader that stays at the start while the consumer fetches the rest.
    while source.time_lag(&at_start) != behind {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            source.time_lag(&at_start)
        );
        source.read(&at_start, &one_each).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Caught up: nothing behind.
    let at_end = Positions::from([(0, 50), (1, 50)]);
    assert_eq!(source.time_lag(&at_end), BTreeMap::from([(0, 0), (1, 0)]));
}

/// An assignment that says what it was told: a worker that has not heard that it lost its
/// partitions.
struct Fixed(BTreeSet<u32>);

impl Assignment for Fixed {
    fn held(&self) -> Option<BTreeSet<u32>> {
        Some(self.0.clone())
    }
}

/// A raw pipeline of stream `clicks` reading the partitions `assignment` holds.
async fn raw_holding(
    log: &Arc<Log>,
    lake: &Lake,
    assignment: Arc<dyn Assignment>,
) -> sluice_pipeline::Result<RawPipeline> {
    let source = StreamSource::open(log, "clicks")?.held(assignment);
    RawPipeline::open(source, lake, RawConfig::default()).await
}

/// Runs rounds of `workers` in turn, each opened again when its partitions changed (as the
/// runtime does), until `rows` rows are in table `clicks`.
async fn share(log: &Arc<Log>, lake: &Lake, workers: &[Arc<Membership>], rows: i64) {
    let mut pipelines = Vec::new();
    for worker in workers {
        pipelines.push(raw_holding(log, lake, worker.clone()).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (pipeline, worker) in pipelines.iter_mut().zip(workers) {
            match pipeline.round().await {
                Ok(_) => {}
                Err(PipelineError::Reassigned(_)) => {
                    *pipeline = raw_holding(log, lake, worker.clone()).await.unwrap()
                }
                Err(e) => panic!("a round failed: {e}"),
            }
        }
        let table = lake.open("clicks").await.unwrap();
        if count(&table, "SELECT count(*) FROM t").await >= rows {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the workers did not take {rows} rows"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `workers` hold the topic's `partitions` between them, each some, none twice.
async fn until_shared(workers: &[&Membership], partitions: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held: Vec<BTreeSet<u32>> = workers
            .iter()
            .map(|w| w.held().unwrap_or_default())
            .collect();
        let all: BTreeSet<u32> = held.iter().flatten().copied().collect();
        let total: usize = held.iter().map(BTreeSet::len).sum();
        if held.iter().all(|h| !h.is_empty()) && total == partitions as usize && all.len() == total
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the group never shared the partitions: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_sharing_a_topic_through_a_group_write_every_record_once_as_partitions_move() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let lake = Lake::local(dir.path().join("lake")).unwrap();
    let kafka = Kafka::new(4);
    kafka_stream(&log, "clicks", &kafka.brokers(), "").unwrap();
    let group = |member: &str| Group {
        brokers: kafka.brokers(),
        topic: "clicks".into(),
        group_id: "sluice-test-clicks".into(),
        member: member.into(),
        session_timeout: Duration::from_secs(6),
    };
    let first = Arc::new(Membership::join(&group("w1")).unwrap());
    let second = Arc::new(Membership::join(&group("w2")).unwrap());
    until_shared(&[&first, &second], 4).await;
    let held_by_second = second.held().unwrap();

    // Two workers, one lake: each writes its partitions' rows and positions.
    kafka.produce(0, 2000, 4, 0);
    share(&log, &lake, &[first.clone(), second.clone()], 2000).await;
    let table = lake.open("clicks").await.unwrap();
    assert_eq!(
        count(&table, "SELECT count(DISTINCT (_shard, _seq)) FROM t").await,
        2000
    );

    // The second leaves: the first takes its partitions from the lake's positions.
    drop(second);
    until_shared(&[&first], 4).await;
    assert!(
        first.rebalances() >= 2,
        "one rebalance to share, one to take over"
    );
    kafka.produce(2000, 3000, 4, 0);
    share(&log, &lake, std::slice::from_ref(&first), 3000).await;

    // A worker that has not heard it lost its partitions cannot commit for them: whatever it
    // reads, the table says another worker has them past where it read from.
    let mut stale = raw_holding(&log, &lake, Arc::new(Fixed(held_by_second.clone())))
        .await
        .unwrap();
    // The first worker moves on after the stale one opened.
    kafka.produce(3000, 4000, 4, 0);
    share(&log, &lake, std::slice::from_ref(&first), 4000).await;
    // Its reads come once the stream's consumer has gone back to where it reads from; until
    // then its rounds take nothing, and none may commit.
    let deadline = Instant::now() + Duration::from_secs(60);
    let refused = loop {
        match stale.round().await {
            Err(e) => break e,
            Ok(round) => assert!(!round.committed, "a stale worker committed {round:?}"),
        }
        assert!(Instant::now() < deadline, "the stale worker never read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        matches!(refused, PipelineError::Reassigned(_))
            || refused.to_string().contains("transaction"),
        "{refused}"
    );
    let table = lake.open("clicks").await.unwrap();
    assert_eq!(count(&table, "SELECT count(*) FROM t").await, 4000);
    assert_eq!(
        count(&table, "SELECT count(DISTINCT (_shard, _seq)) FROM t").await,
        4000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doors_of_a_log_that_forwards_appends_produce_into_the_topic_each_record_once_at_its_offset()
 {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let lake = Lake::local(dir.path().join("lake")).unwrap();
    let kafka = Kafka::new(3);
    let stream = kafka_stream(&log, "clicks", &kafka.brokers(), "").unwrap();
    assert_eq!(stream.shards().len(), 3, "a shard a partition");
    log.forward_appends(sluice_pipeline::source::forward_appends().unwrap());
    // Brokers that fail some produce requests: the producer retries them, never twice.
    kafka.cluster.request_errors(
        rdkafka::types::RDKafkaApiKey::Produce,
        &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 4],
    );

    // Two doors append at once, and another producer writes the same partitions.
    let door = |first: i64| {
        let stream = stream.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for request in 0..10 {
                let mut batches = stream.batches();
                let mut placed = Vec::new();
                for i in 0..50 {
                    let n = first + request * 50 + i;
                    let key = format!("u{n}");
                    let shard = stream.shard_for_key(key.as_bytes());
                    let record =
                        format!(r#"{{"user_id":"u{n}","n":{n},"ts":"2026-01-05T14:30:00Z"}}"#);
                    let index = batches
                        .push(shard, key.as_bytes(), record.as_bytes())
                        .unwrap();
                    placed.push((n, shard, index));
                }
                let outcome = stream.append(batches).await.unwrap();
                for (n, shard, index) in placed {
                    let part = outcome.iter().find(|o| o.shard == shard).unwrap();
                    let appended = part.result.as_ref().unwrap();
                    acked.push((n, shard, appended.seq(index)));
                }
            }
            acked
        })
    };
    let (first, second) = (door(10_000), door(20_000));
    let others = kafka.produce(0, 300, 3, 0);
    let mut acked = first.await.unwrap();
    acked.extend(second.await.unwrap());
    assert_eq!(acked.len(), 1000);

    let mut pipeline = raw(&log, &lake, "clicks").await;
    take(&mut pipeline, 1000 + others).await;
    let rows = lake.open("clicks").await.unwrap();
    assert_eq!(
        count(&rows, "SELECT count(DISTINCT (_shard, _seq)) FROM t").await,
        1300
    );
    // Each acknowledged record is at the partition and offset its door was told, with its key.
    let told: Vec<String> = acked
        .iter()
        .map(|(n, shard, seq)| format!("({n}, {shard}, {seq})"))
        .collect();
    let sql = format!(
        "SELECT count(*) FROM t JOIN (VALUES {}) AS told(n, shard, seq) \
         ON t.n = told.n AND t._shard = told.shard AND t._seq = told.seq \
         AND t._key = concat('u', told.n)",
        told.join(", ")
    );
    assert_eq!(count(&rows, &sql).await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_the_brokers_refuse_fail_the_door_s_append_and_a_later_one_lands() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let kafka = Kafka::new(1);
    let stream = kafka_stream(&log, "clicks", &kafka.brokers(), "").unwrap();
    log.forward_appends(sluice_pipeline::source::forward_appends().unwrap());
    let append = || {
        let mut batches = stream.batches();
        for n in 0..10 {
            let record = format!(r#"{{"user_id":"u{n}","n":{n},"ts":"2026-01-05T14:30:00Z"}}"#);
            batches.push(0, b"k", record.as_bytes()).unwrap();
        }
        stream.append(batches)
    };
    kafka.cluster.request_errors(
        rdkafka::types::RDKafkaApiKey::Produce,
        &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 1],
    );
    let refused = append().await.unwrap();
    let error = refused[0].result.as_ref().unwrap_err();
    assert!(
        matches!(error, sluice_log::Error::Unavailable(_))
            && error.to_string().contains("Kafka topic 'clicks'"),
        "{error:?}"
    );
    let landed = append().await.unwrap();
    let appended = landed[0].result.as_ref().unwrap();
    assert_eq!(appended.count(), 10);
    assert_eq!(
        kafka_offsets(&kafka),
        10,
        "the refused records are not in the topic"
    );
}

/// The end of partition 0 of topic `clicks`: how many records it holds.
fn kafka_offsets(kafka: &Kafka) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.brokers())
        .create()
        .unwrap();
    let (_, high) = consumer
        .fetch_watermarks("clicks", 0, Duration::from_secs(10))
        .unwrap();
    high
}
