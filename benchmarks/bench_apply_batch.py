"""The stream's state step alone: StreamStore.apply_batch (no Kafka, no Faust) on bench_stream's events, in batches of
5,000 messages over 8 partitions, with the Feast push marks on; prints the worker's CPU µs per event, Redis's CPU µs
per event and events/s as one JSON line.

Run from a checkout's root, so the same script times another commit's code (its stream.state) in that checkout:

    python benchmarks/bench_apply_batch.py 200000 [shards]             # this checkout
    (cd /tmp/old && python /work/main/benchmarks/bench_apply_batch.py 200000)   # another commit's, alternated
    python benchmarks/bench_apply_batch.py 200000 12 cluster           # a private 3-master Redis Cluster, 12 shards

With ``cluster`` the Redis CPU is the sum over the three masters (checkouts with the sharded layout only).

The figures of docs/BENCH_STREAM.md's "state step" rows come from three such old/new pairs alternated in one session.
"""

import asyncio
import json
import sys
import time

sys.path.insert(0, ".")
from benchmarks.bench_stream import make_events
from topicfs.services import LocalRedis
from topicfs.settings import Settings
import redis.asyncio as aioredis
from stream.state import StreamStore, RawMessage
import psutil

n_events, shards = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1
cluster = len(sys.argv) > 3 and sys.argv[3] == "cluster"
messages, topics_of, *_ = make_events(n_events, 10000, seed=11)
if cluster:
    from topicfs.services import LocalRedisCluster

    r = LocalRedisCluster.start(3)
    redis_pids = [node.process.pid for node in r.nodes]
else:
    r = LocalRedis.start()
    redis_pids = [r.process.pid]
try:
    settings = Settings()
    try:
        from topicfs.keys import KeyLayout
        from topicfs.redis_client import async_client

        settings.redis.url, settings.redis.shards, settings.redis.cluster = r.url, shards, cluster
        client = async_client(settings.redis)
        store = StreamStore(client, KeyLayout("m", shards), settings.stream, push_enabled=True)
    except ImportError:
        client = aioredis.Redis.from_url(r.url)
        store = StreamStore(client, "m", settings.stream, push_enabled=True)
    raw = [RawMessage("ev", i % 8, i // 8, m, None) for i, m in enumerate(messages)]

    async def go():
        if hasattr(store, "init_epochs"):
            await store.init_epochs()
        await store.register_videos(topics_of)

        async def dl(x):
            pass

        me, redis_procs = psutil.Process(), [psutil.Process(pid) for pid in redis_pids]

        def redis_cpu() -> float:
            return sum(t.user + t.system for t in (p.cpu_times() for p in redis_procs))

        c0, rc0, w0 = me.cpu_times(), redis_cpu(), time.perf_counter()
        for s in range(0, len(raw), 5000):
            await store.apply_batch(raw[s : s + 5000], dl)
        c1, rc1, w1 = me.cpu_times(), redis_cpu(), time.perf_counter()
        cpu = c1.user + c1.system - c0.user - c0.system
        rcpu = rc1 - rc0
        print(
            json.dumps(
                {
                    "events": n_events,
                    "wall_s": w1 - w0,
                    "py_cpu_us_per_event": 1e6 * cpu / n_events,
                    "redis_cpu_us_per_event": 1e6 * rcpu / n_events,
                    "events_per_s": n_events / (w1 - w0),
                }
            )
        )

    asyncio.run(go())
finally:
    r.stop()
