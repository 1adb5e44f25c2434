// The AWS SDK for JavaScript v3's Kinesis client, as shipped (HTTP/2: in clear text with prior
// knowledge, or agreed as `h2` in the TLS handshake), against Sluice's Kinesis API.
//
// Environment: SLUICE_URL (the HTTP port's URL), SLUICE_KEY_ID and SLUICE_SECRET (an access key:
// a user's name and secret), STREAM (a stream name the script creates and deletes). A server's
// own certificate authority comes through NODE_EXTRA_CA_CERTS. Exits non-zero on the first check
// that fails.
import assert from "node:assert/strict";
import {
  CreateStreamCommand,
  DeleteStreamCommand,
  DescribeStreamSummaryCommand,
  GetRecordsCommand,
  GetShardIteratorCommand,
  KinesisClient,
  ListShardsCommand,
  ListStreamsCommand,
  PutRecordCommand,
  PutRecordsCommand,
  ResourceNotFoundException,
} from "@aws-sdk/client-kinesis";

const { SLUICE_URL, SLUICE_KEY_ID, SLUICE_SECRET, STREAM } = process.env;
const kinesis = new KinesisClient({
  endpoint: SLUICE_URL,
  region: "us-east-1",
  credentials: { accessKeyId: SLUICE_KEY_ID, secretAccessKey: SLUICE_SECRET },
  maxAttempts: 1,
});
const text = new TextEncoder();
const untext = new TextDecoder();

await kinesis.send(new CreateStreamCommand({ StreamName: STREAM, ShardCount: 2 }));
const { StreamNames } = await kinesis.send(new ListStreamsCommand({}));
assert.ok(StreamNames.includes(STREAM), `ListStreams: ${StreamNames}`);
const { StreamDescriptionSummary: summary } = await kinesis.send(
  new DescribeStreamSummaryCommand({ StreamName: STREAM }),
);
assert.equal(summary.StreamStatus, "ACTIVE");
assert.equal(summary.OpenShardCount, 2);
const { Shards } = await kinesis.send(new ListShardsCommand({ StreamName: STREAM }));
assert.equal(Shards.length, 2);

// Records in, one at a time and in a batch; their shards are where the hash keys say.
const sent = [];
for (let i = 0; i < 5; i++) {
  const data = `{"n": ${i}, "by": "aws-sdk-js"}`;
  const put = await kinesis.send(
    new PutRecordCommand({ StreamName: STREAM, PartitionKey: `key-${i}`, Data: text.encode(data) }),
  );
  assert.match(put.SequenceNumber, /^\d+$/);
  sent.push(data);
}
const batch = Array.from({ length: 20 }, (_, i) => `{"n": ${5 + i}, "by": "aws-sdk-js"}`);
const putMany = await kinesis.send(
  new PutRecordsCommand({
    StreamName: STREAM,
    Records: batch.map((data, i) => ({ PartitionKey: `batch-${i}`, Data: text.encode(data) })),
  }),
);
assert.equal(putMany.FailedRecordCount, 0);
assert.equal(putMany.Records.length, 20);
sent.push(...batch);

// Read back from both shards, from their start: every record once.
const read = [];
for (const shard of Shards) {
  let { ShardIterator: iterator } = await kinesis.send(
    new GetShardIteratorCommand({
      StreamName: STREAM,
      ShardId: shard.ShardId,
      ShardIteratorType: "TRIM_HORIZON",
    }),
  );
  for (;;) {
    const page = await kinesis.send(new GetRecordsCommand({ ShardIterator: iterator, Limit: 7 }));
    read.push(...page.Records.map((r) => untext.decode(r.Data)));
    if (page.Records.length === 0 && page.MillisBehindLatest === 0) break;
    iterator = page.NextShardIterator;
  }
}
assert.deepEqual([...read].sort(), [...sent].sort());

// An error is the SDK's own exception, and the client goes on.
await assert.rejects(
  kinesis.send(new DescribeStreamSummaryCommand({ StreamName: `${STREAM}-missing` })),
  ResourceNotFoundException,
);
await kinesis.send(new DeleteStreamCommand({ StreamName: STREAM }));
kinesis.destroy();
console.log(`kinesis: ${sent.length} records in and out`);
