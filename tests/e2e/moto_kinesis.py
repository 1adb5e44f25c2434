"""moto's server, with its Kinesis made to behave as Amazon's where the Kinesis-source tests
need it (run as `python moto_kinesis.py -H 127.0.0.1 -p 0`, the arguments of moto.server):

- Sequence numbers have 56 digits, as Amazon's do (moto counts from 1): a shard's first record
  gets 49590338271490256608559692538361571095921575989136588898 and the next ones count on.
  They do not fit 64 bits, which is what the tests are about.
- SplitShard and MergeShards keep the parent shards' records, as Amazon's do (moto moves them
  into the children, which would make a consumer read them twice); records are put to open
  shards only (moto would put them to a closed parent too); and GetRecords of a closed shard
  read to its end gives no next iterator (moto always gives one), which is how a consumer
  knows to go on to its children.
"""

from __future__ import annotations

import sys
from collections import OrderedDict

from moto.kinesis import models
from moto.kinesis.models import KinesisBackend, Record, Shard, Stream
from moto.kinesis.utils import decompose_shard_iterator

FIRST_SEQUENCE = 49590338271490256608559692538361571095921575989136588898


def put_record(self: Shard, partition_key: str, data: str, explicit_hash_key: str) -> str:
    sequence_number = self.get_max_sequence_number() + 1 if self.records else FIRST_SEQUENCE
    self.records[sequence_number] = Record(partition_key, data, sequence_number, explicit_hash_key)
    return str(sequence_number)


def keeping_records(reshard):
    """`reshard`, with the records of every shard it closes left where they were."""

    def wrapped(self: Stream, *args, **kwargs):
        kept = {shard_id: OrderedDict(shard.records) for shard_id, shard in self.shards.items()}
        reshard(self, *args, **kwargs)
        for shard_id, shard in self.shards.items():
            if shard_id in kept and not shard.is_open:
                shard.records = kept[shard_id]
            elif shard_id not in kept:
                # A child: only what is put to it from now on (moto re-put the parents' here).
                shard.records = OrderedDict()

    return wrapped


def open_shard_for_key(self: Stream, partition_key: str, explicit_hash_key: str) -> Shard | None:
    open_shards = {k: v for k, v in self.shards.items() if v.is_open}
    every, self.shards = self.shards, open_shards
    try:
        return find_shard(self, partition_key, explicit_hash_key)
    finally:
        self.shards = every


def get_records(self: KinesisBackend, stream_arn, shard_iterator: str, limit):
    next_iterator, records, millis_behind = read_records(self, stream_arn, shard_iterator, limit)
    stream_name, shard_id, _ = decompose_shard_iterator(shard_iterator)
    shard = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name).get_shard(shard_id)
    _, _, last = decompose_shard_iterator(next_iterator)
    if not shard.is_open and int(last) >= shard.get_max_sequence_number():
        next_iterator = None
    return next_iterator, records, millis_behind


find_shard = Stream.get_shard_for_key
read_records = KinesisBackend.get_records
Stream.get_shard_for_key = open_shard_for_key
KinesisBackend.get_records = get_records
Shard.put_record = put_record
Stream.split_shard = keeping_records(Stream.split_shard)
Stream.merge_shards = keeping_records(Stream.merge_shards)
assert models.Shard is Shard

if __name__ == "__main__":
    from moto.server import main

    sys.exit(main(sys.argv[1:]))
