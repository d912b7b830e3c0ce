"""Benchmark of the streaming updater: throughput, exactness and freshness, with its baselines in the same run.

    python -m benchmarks.bench_stream                   # 1,000,000 events on one private redis-server
    python -m benchmarks.bench_stream --events 200000   # quicker
    python -m benchmarks.bench_stream --redis cluster   # on a private 3-master Redis Cluster, 12 state shards

Same broker (embedded tansu), same Redis (one node, or ``--redis cluster``: ``--masters`` masters on loopback,
``--shards`` logical state shards), same machine, one run:
1. ceiling: a bare aiokafka consumer reading the whole events topic (no processing);
2. our worker (``topicfs stream worker``, one process) on a backlog of N events in refreshes of 10 exposures with
   clicks at the synthetic log's CTR (~10%); every per-video and per-topic count is compared with the truth.
   Over the same window: Redis commands per event (INFO commandstats deltas summed over the masters, the
   benchmark's own polling and INFO calls taken out; commands run inside the Lua scripts count), the Redis main
   threads' CPU per event, and the worker's and its pusher's CPU per event (the per-core rate of a capacity plan);
3. freshness at 5,000 events/s: probe clicks flip the order of two videos in a probe topic while a replay keeps
   5,000 events/s flowing; p50/p99 of click → served queue reordered and click → Feast online value updated;
4. baseline: a naive Faust agent (one message per event, per-event updates of changelogged Faust tables) on a
   prefix of the same events.
Results are printed (the last line, ``RESULT {...}``, as JSON) and, with ``--output``, written as a markdown
report. The figures and their comparison with the previous layout are in docs/BENCH_STREAM.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import logging
import multiprocessing
import os
import signal
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
PROBE_TOPIC = 10_000
PROBE_USER = 10_000_000
PROBE_VIDEOS = (9_000_000, 9_000_001)


def make_events(n_events: int, n_videos: int, seed: int) -> tuple[list[bytes], dict[int, list[int]], Counter, Counter, int]:
    """Synthetic refreshes of 10 videos + clicks until ``n_events`` exposures+clicks; returns messages and truth."""
    from topicfs.synthetic import make_catalogue, make_click_log

    catalogue = make_catalogue(n_videos=n_videos, n_true_topics=12, with_images=False, seed=7, show_progress=False)
    topics_of = {int(v): [int(t)] for v, t in zip(catalogue.videos["video_id"], catalogue.true_topic)}
    n_users = max(50, int(n_events / (11.0 * 7 * 5)) + 1)  # ~11 events per refresh, 7 days x 5 refreshes
    log = make_click_log(catalogue, n_users=n_users, n_days=7, refreshes_per_user_per_day=5, videos_per_refresh=10, seed=seed)
    messages, exposures, clicks, total = [], Counter(), Counter(), 0
    for event in log.events():
        if total >= n_events:
            break
        if event["type"] == "exposure":
            exposures.update(event["video_ids"])
            total += len(event["video_ids"])
        else:
            clicks[event["video_id"]] += 1
            total += 1
        messages.append(json.dumps(event, separators=(",", ":")).encode())
    return messages, topics_of, exposures, clicks, total


def raw_consume_rate(bootstrap: str, topic: str, n_messages: int) -> float:
    """Messages/s of a bare aiokafka consumer reading the topic from its start (the ceiling)."""
    from aiokafka import AIOKafkaConsumer

    async def run() -> float:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False, max_partition_fetch_bytes=4 << 20
        )
        await consumer.start()
        seen, started = 0, time.perf_counter()
        try:
            while seen < n_messages:
                batch = await consumer.getmany(timeout_ms=1000, max_records=10000)
                seen += sum(len(v) for v in batch.values())
        finally:
            await consumer.stop()
        return seen / (time.perf_counter() - started)

    return asyncio.run(run())


class Progress:
    """Messages every shard has applied, read with one MGET per shard (each shard's offsets share its slot);
    ``commands`` counts the MGETs so the command count of a run can leave them out."""

    def __init__(self, client, layout, topic: str, partitions: int) -> None:
        self.client, self.layout, self.topic, self.partitions = client, layout, topic, partitions
        self.commands = 0

    def applied(self) -> int:
        lowest = [float("inf")] * self.partitions
        for shard in self.layout.all_shards():
            values = self.client.mget([self.layout.offset(shard, self.topic, p) for p in range(self.partitions)])
            self.commands += 1
            for p, v in enumerate(values):
                lowest[p] = min(lowest[p], -1 if v is None else int(v))  # a shard without an offset has applied nothing
        return int(sum(x + 1 for x in lowest))


class Costs:
    """Snapshots of what the stream costs: per Redis master, the command calls (INFO commandstats) and the main
    thread's CPU seconds; per process (the worker and its children, i.e. the Feast pusher), CPU seconds."""

    def __init__(self, node_clients: list, worker_pid: int) -> None:
        self.nodes, self.worker = node_clients, psutil.Process(worker_pid)

    def snapshot(self) -> dict:
        commands, cpu = [], []
        for node in self.nodes:
            stats = node.info("commandstats")
            commands.append({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})
            info = node.info("cpu")
            cpu.append(float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"]))
        times = self.worker.cpu_times()
        children = 0.0
        for child in self.worker.children(recursive=True):
            try:
                t = child.cpu_times()
                children += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return {"commands": commands, "redis_cpu": cpu, "worker_cpu": times.user + times.system, "children_cpu": children}

    @staticmethod
    def delta(before: dict, after: dict, own_mgets: int) -> dict:
        per_node, by_name = [], Counter()
        for b, a in zip(before["commands"], after["commands"]):
            d = {name: calls - b.get(name, 0) for name, calls in a.items() if name != "info" and calls != b.get(name, 0)}
            per_node.append(sum(d.values()))
            by_name.update(d)
        by_name["mget"] -= own_mgets  # the benchmark's own progress polling
        return {
            "commands": sum(by_name.values()),
            "commands_per_node": per_node,
            "by_name": dict(by_name.most_common()),
            "redis_cpu_s": [a - b for a, b in zip(after["redis_cpu"], before["redis_cpu"])],
            "worker_cpu_s": after["worker_cpu"] - before["worker_cpu"],
            "pusher_cpu_s": after["children_cpu"] - before["children_cpu"],
        }


def check_exact(client, layout, topics_of, exposures: Counter, clicks: Counter) -> int:
    """Number of videos or topics whose stored counts differ from the truth (0 = exact)."""
    pipe = client.pipeline(transaction=False)
    videos = sorted(topics_of)
    for v in videos:
        pipe.hmget(layout.video_stats(v), "exposures", "clicks")
    wrong = sum(int(e or 0) != exposures[v] or int(c or 0) != clicks[v] for v, (e, c) in zip(videos, pipe.execute()))
    topic_exposures, topic_clicks = Counter(), Counter()
    for v in videos:
        for t in topics_of[v]:
            topic_exposures[t] += exposures[v]
            topic_clicks[t] += clicks[v]
    for t in topic_exposures:
        e, c = client.hmget(layout.topic_stats(t), "exposures", "clicks")
        wrong += int(e or 0) != topic_exposures[t] or int(c or 0) != topic_clicks[t]
    return wrong


def run_freshness(settings, client, feast_store, load_messages: list[bytes], duration_s: float, rate_events_s: float, costs=None) -> dict:
    """Probe clicks under a steady load; latency until the served queue and the Feast online value show them."""
    from stream.replay import produce
    from topicfs.keys import KeyLayout

    topic, bootstrap = settings.stream.events_topic, settings.kafka.bootstrap_servers
    events_per_message = 5.5  # refresh of 10 + ~1 click: ~11 events in 2 messages
    # the load comes from its own process: a producer thread here would share this process's GIL with the probe loop
    # and the Feast reads, and its turns would count as latency of the system under test
    load = multiprocessing.get_context("spawn").Process(
        target=_produce_load, args=(bootstrap, topic, load_messages, rate_events_s / events_per_message), daemon=True
    )
    a, b = PROBE_VIDEOS
    # 1,000 exposures each and a CTR of 0.1: every probe's few clicks change the order yet keep the CTR sane (< 1)
    clicks = {a: 100, b: 100}
    now = time.time()
    setup = [{"type": "exposure", "event_id": f"p-exp{i}", "user_id": PROBE_USER, "video_ids": [a, b], "ts": now} for i in range(1000)]
    setup += [
        {"type": "click", "event_id": f"p-c{v}-{i}", "user_id": PROBE_USER, "video_id": v, "ts": now}
        for v in (a, b)
        for i in range(clicks[v])
    ]
    asyncio.run(produce(bootstrap, topic, setup))
    queue_key = KeyLayout.from_config(settings.redis).queue(PROBE_TOPIC)
    deadline = time.monotonic() + 30
    while {int(v) for v in client.zrange(queue_key, 0, -1)} != {a, b}:
        if time.monotonic() > deadline:
            raise RuntimeError("probe videos never became established")
        time.sleep(0.05)
    # the pusher imports Feast (torch, dask, sqlalchemy) before its first push: over 20 s of a core on a busy 2-core box,
    # which must not count as freshness. Probes start once Feast holds the set-up clicks (the pusher pushes).
    waited = time.monotonic()
    deadline = waited + 180
    while feast_store is not None:
        rows = feast_store.get_online_features(features=["video_stats:clicks"], entity_rows=[{"video_id": v} for v in (a, b)]).to_dict()
        if rows["clicks"] == [clicks[a], clicks[b]]:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the Feast pusher never pushed the probe videos' set-up clicks (180 s)")
        time.sleep(0.2)
    print(f"probes start: the queue holds the probe videos, Feast their set-up clicks (waited {time.monotonic() - waited:.1f} s for Feast)")
    queue_latency, feast_latency, to_push, push_to_read = [], [], [], []
    before, phase_started = (costs.snapshot() if costs is not None else None), time.monotonic()
    pushes_before = _pusher_pushes(settings.stream.pusher_metrics_port)
    redis_before = _redis_usec(costs)
    load.start()
    producer_loop = asyncio.new_event_loop()
    from aiokafka import AIOKafkaProducer

    asyncio.set_event_loop(producer_loop)

    async def new_producer() -> AIOKafkaProducer:
        started = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await started.start()
        return started

    producer = producer_loop.run_until_complete(new_producer())
    end = time.monotonic() + duration_s
    probe = 0
    while time.monotonic() < end:
        target, other = (a, b) if clicks[a] <= clicks[b] else (b, a)
        needed = clicks[other] - clicks[target] + 1  # the one behind (or tied) gets just enough clicks to lead strictly
        clicks[target] += needed
        expected = clicks[target]
        sent_at, sent_wall = time.perf_counter(), time.time()
        for i in range(needed):
            message = {"type": "click", "event_id": f"probe{probe}-{i}", "user_id": PROBE_USER, "video_id": target, "ts": time.time()}
            producer_loop.run_until_complete(producer.send_and_wait(topic, json.dumps(message).encode(), key=str(PROBE_USER).encode()))
        probe += 1
        seen_queue = seen_feast = None
        next_feast_read = 0.0
        while (seen_queue is None or seen_feast is None) and time.perf_counter() - sent_at < 10:
            if seen_queue is None:
                top = client.zrevrange(queue_key, 0, 0)
                if top and int(top[0]) == target:
                    seen_queue = time.perf_counter() - sent_at
            if seen_feast is None and feast_store is None:
                seen_feast = float("nan")
            elif seen_feast is None and time.perf_counter() >= next_feast_read:
                # the SDK read costs ~10 ms of CPU: polled every 50 ms, so the probe does not starve the pusher it times
                next_feast_read = time.perf_counter() + 0.05
                response = feast_store.get_online_features(features=["video_stats:clicks"], entity_rows=[{"video_id": target}])
                if response.to_dict()["clicks"][0] == expected:
                    seen_feast = time.perf_counter() - sent_at
                    # the row's event timestamp is the pusher's clock when that push began: click -> push start,
                    # then push start -> this read saw it (the push itself and the poll)
                    column = list(response.proto.metadata.feature_names.val).index("clicks")  # the entity key comes first
                    stamp = response.proto.results[column].event_timestamps[0]
                    pushed = stamp.seconds + stamp.nanos / 1e9 - sent_wall
                    to_push.append(pushed)
                    push_to_read.append(seen_feast - pushed)
            time.sleep(0.005)
        queue_latency.append(seen_queue if seen_queue is not None else float("inf"))
        feast_latency.append(seen_feast if seen_feast is not None else float("inf"))
        time.sleep(0.2)
    producer_loop.run_until_complete(producer.stop())
    producer_loop.close()
    load.join()
    pushes_after = _pusher_pushes(settings.stream.pusher_metrics_port)
    redis_after = _redis_usec(costs)
    cpu_shares = {}
    if redis_before is not None:  # where the Redis main thread's time went over the probe phase, ms per second
        spent = {name: (usec - redis_before.get(name, 0)) / 1000 / (time.monotonic() - phase_started) for name, usec in redis_after.items()}
        cpu_shares["redis_ms_per_s"] = {name: round(ms, 1) for name, ms in sorted(spent.items(), key=lambda kv: -kv[1])[:6]}
    if pushes_before and pushes_after:  # the pusher's own histogram (stream.pusher_metrics_port set), over the probe phase
        counts = {le: pushes_after["buckets"][le] - n for le, n in pushes_before["buckets"].items()}
        total = counts[float("inf")]
        cpu_shares["pushes"] = total
        cpu_shares["rows_per_push"] = (pushes_after["rows"] - pushes_before["rows"]) / max(total, 1)
        cpu_shares["pushes_over_s"] = {le: total - n for le, n in counts.items() if le in (0.05, 0.1, 0.25, 0.5, 1.0)}
    if costs is not None:  # cores busy over the probe phase: the load the latencies were measured under
        after, seconds = costs.snapshot(), time.monotonic() - phase_started
        cpu_shares |= {
            "worker_cores": (after["worker_cpu"] - before["worker_cpu"]) / seconds,
            "pusher_cores": (after["children_cpu"] - before["children_cpu"]) / seconds,
            "redis_cores": (sum(after["redis_cpu"]) - sum(before["redis_cpu"])) / seconds,
        }

    def pct(values, q):
        # "higher": a probe never seen within 10 s (inf) shows as inf, not as the nan that interpolating inf gives
        return float(np.percentile(np.array(values), q, method="higher"))

    return {
        "probes": probe,
        "queue_p50_s": pct(queue_latency, 50),
        "queue_p99_s": pct(queue_latency, 99),
        "feast_p50_s": pct(feast_latency, 50),
        "feast_p99_s": pct(feast_latency, 99),
        "queue_max_s": max(queue_latency),
        "feast_max_s": max(feast_latency),
        # the Feast latency in two parts (probes Feast saw): click -> the push holding it began; push start -> read
        "feast_to_push_p50_s": pct(to_push, 50) if to_push else None,
        "feast_to_push_p99_s": pct(to_push, 99) if to_push else None,
        "feast_push_to_read_p50_s": pct(push_to_read, 50) if push_to_read else None,
        "feast_push_to_read_p99_s": pct(push_to_read, 99) if push_to_read else None,
        **cpu_shares,
    }


def _redis_usec(costs) -> dict | None:
    """Per command, the microseconds the Redis nodes spent in it (INFO commandstats, summed over the nodes)."""
    if costs is None:
        return None
    spent: Counter = Counter()
    for node in costs.nodes:
        for name, v in node.info("commandstats").items():
            spent[name.removeprefix("cmdstat_")] += int(v["usec"])
    return spent


def _pusher_pushes(port: int) -> dict | None:
    """Cumulative push-duration buckets and rows of the pusher's /metrics (None when it serves none)."""
    if not port:
        return None
    import urllib.request

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    buckets, rows = {}, 0.0
    for line in text.splitlines():
        if line.startswith("topicfs_stream_push_latency_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets[float(le)] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("topicfs_stream_pushed_rows_total"):
            rows = float(line.rsplit(" ", 1)[1])
    return {"buckets": buckets, "rows": rows}


def _produce_load(bootstrap: str, topic: str, messages: list[bytes], rate_per_s: float) -> None:
    """The freshness phase's steady load, in a process of its own."""
    from stream.replay import produce

    asyncio.run(produce(bootstrap, topic, messages, rate_per_s=rate_per_s))


# ------------------------------------------------------------ the naive baseline


def naive_worker(bootstrap: str, topic: str, redis_url: str, cluster: bool, topics_json: str, partitions: int) -> None:
    """Faust agent, one message per event, each event updating changelogged Faust tables (the naive design)."""
    import faust

    from topicfs.redis_client import sync_client
    from topicfs.settings import RedisConfig

    topics_of = {int(k): v for k, v in json.loads(Path(topics_json).read_text()).items()}
    progress = sync_client(RedisConfig(url=redis_url, cluster=cluster))
    app = faust.App(
        "bench-naive",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        topic_partitions=partitions,
        broker_rebalance_timeout=2.0,
        broker_session_timeout=6.0,
        web_enabled=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
    )
    video_exposures = app.Table("video_exposures", default=int, help="exposures per video")
    video_clicks = app.Table("video_clicks", default=int, help="clicks per video")
    topic_exposures = app.Table("topic_exposures", default=int, help="exposures per topic")
    topic_clicks = app.Table("topic_clicks", default=int, help="clicks per topic")
    source = app.topic(topic, value_type=bytes, value_serializer="raw")

    @app.agent(source)
    async def count(stream):
        seen = 0
        async for value in stream:
            event = json.loads(value)
            video_id = event["video_id"]
            if event["type"] == "exposure":
                video_exposures[video_id] += 1
                for t in topics_of[video_id]:
                    topic_exposures[t] += 1
            else:
                video_clicks[video_id] += 1
                for t in topics_of[video_id]:
                    topic_clicks[t] += 1
            seen += 1
            if seen % 500 == 0:
                progress.hset("bench:naive", mapping={f"seen:{os.getpid()}": seen, f"at:{os.getpid()}": time.time()})

    faust.Worker(app, loglevel="warning").execute_from_commandline()


def naive_rate(settings, client, messages: list[bytes], n_events: int, tmp: Path, topics_of) -> float:
    """Events/s of the naive agent on single-event messages made from the first ``n_events`` events."""
    from stream.broker import create_topics
    from stream.replay import produce

    single = []
    for raw in messages:
        event = json.loads(raw)
        if event["type"] == "exposure":
            single += [{**event, "video_id": v, "video_ids": None} for v in event["video_ids"]]
        else:
            single.append(event)
        if len(single) >= n_events:
            break
    single = [{k: v for k, v in e.items() if v is not None} for e in single[:n_events]]
    topic = "bench.naive.events"
    bootstrap = settings.kafka.bootstrap_servers
    asyncio.run(create_topics(bootstrap, {topic: settings.stream.partitions}))
    asyncio.run(produce(bootstrap, topic, single))
    topics_json = tmp / "topics.json"
    topics_json.write_text(json.dumps(topics_of))
    client.delete("bench:naive")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_stream",
            "--naive-worker",
            bootstrap,
            topic,
            settings.redis.url,
            str(settings.redis.cluster).lower(),
            str(topics_json),
            str(settings.stream.partitions),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        first = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            state = client.hgetall("bench:naive")
            seen = sum(int(v) for k, v in state.items() if k.startswith(b"seen:"))
            if seen and first is None:
                first = (time.time(), seen)
            if seen >= n_events - 500:
                last = max(float(v) for k, v in state.items() if k.startswith(b"at:"))
                return (seen - first[1]) / (last - first[0])
            time.sleep(0.2)
        raise RuntimeError("the naive agent did not finish in 15 minutes")
    finally:
        process.terminate()
        process.wait(timeout=30)


# ------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events (exposures + clicks) in the throughput replay")
    parser.add_argument("--naive-events", type=int, default=30_000, help="events replayed to the naive agent (0: skip the naive baseline)")
    parser.add_argument("--videos", type=int, default=10_000, help="videos in the synthetic catalogue")
    parser.add_argument(
        "--freshness-seconds",
        type=float,
        default=120.0,
        help="length of the 5,000 events/s phase; ~2 probes/s, so 120 s gives ~240 probes and a p99 that is not just the slowest one (0: skip it)",
    )
    parser.add_argument(
        "--redis",
        choices=("single", "cluster"),
        default="single",
        help="one private redis-server, or a private Redis Cluster of --masters masters",
    )
    parser.add_argument("--masters", type=int, default=3, help="masters of the --redis cluster")
    parser.add_argument(
        "--shards",
        type=int,
        default=None,
        help="redis.shards, the logical state shards (default: 1 on one node, 4 per master on a cluster)",
    )
    parser.add_argument("--output", type=Path, default=None, help="also write the run's figures as a markdown report to this file")
    parser.add_argument(
        "--no-feast", action="store_true", help="run the worker without the Feast push (freshness then measures the queue only)"
    )
    parser.add_argument("--naive-worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_worker:
        bootstrap, topic, url, cluster, topics_json, partitions = args.naive_worker
        naive_worker(bootstrap, topic, url, cluster == "true", topics_json, int(partitions))
        return
    cluster_mode = args.redis == "cluster"
    shards = args.shards or (4 * args.masters if cluster_mode else 1)
    if cluster_mode:
        # the Feast plugin in this process (the probes' reads) takes the cluster mode from the setting, as a user's would
        os.environ["TOPICFS_REDIS__CLUSTER"] = "true"
    logging.basicConfig(level=logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed benchmark still stops its broker, Redis and worker

    from stream.app import prepare
    from stream.broker import EmbeddedBroker
    from stream.process import WorkerProcess
    from stream.replay import produce, video_published_events
    from stream.sinks import write_push_repo
    from topicfs.keys import KeyLayout
    from topicfs.redis_client import async_client, sync_client
    from topicfs.services import LocalRedis, LocalRedisCluster
    from topicfs.settings import RedisConfig, Settings

    tmp = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    broker = EmbeddedBroker.start()
    local_redis = LocalRedisCluster.start(args.masters) if cluster_mode else LocalRedis.start()
    node_urls = [local_redis.node_url(i) for i in range(args.masters)] if cluster_mode else [local_redis.url]
    worker = None
    try:
        settings = Settings()
        settings.kafka.bootstrap_servers, settings.kafka.embedded = broker.bootstrap_servers, False
        settings.redis.url, settings.redis.key_prefix = local_redis.url, "bench"
        settings.redis.cluster, settings.redis.shards = cluster_mode, shards
        settings.paths.artifacts_dir = tmp / "artifacts"
        settings.stream.partitions = 8
        settings.stream.rebalance_timeout_s = 2.0
        feast_store = None
        if not args.no_feast:
            settings.stream.feast_repo_path = tmp / "feast_repo"
            feast_store = write_push_repo(settings.stream.feast_repo_path, local_redis.url)
        client = sync_client(settings.redis)
        layout = KeyLayout.from_config(settings.redis)
        nodes = [sync_client(RedisConfig(url=url)) for url in node_urls]  # each master on its own, for INFO

        t0 = time.perf_counter()
        messages, topics_of, exposures, clicks, n_events = make_events(args.events, args.videos, seed=11)
        load_messages = make_events(int(args.freshness_seconds * 5000 * 1.3), args.videos, seed=12)[0] if args.freshness_seconds > 0 else []
        print(
            f"made {n_events:,} events in {len(messages):,} messages ({sum(clicks.values()) / sum(exposures.values()):.3f} CTR) in {time.perf_counter() - t0:.0f} s"
        )
        topics_with_probe = {**topics_of, **{v: [PROBE_TOPIC] for v in PROBE_VIDEOS}}
        gc.collect()
        gc.freeze()  # a full GC pass over the million event messages held here would stall the probes and count as latency

        async def setup() -> dict:
            setup_client = async_client(settings.redis)
            try:
                await prepare(settings, setup_client)
            finally:
                await setup_client.aclose()
            await produce(
                settings.kafka.bootstrap_servers,
                settings.stream.videos_topic,
                video_published_events(topics_with_probe, time.time() - 86400),
                key_field="video_id",
            )
            return await produce(settings.kafka.bootstrap_servers, settings.stream.events_topic, messages, show_progress=True)

        sent = asyncio.run(setup())
        n_messages = sum(sent.values())
        ceiling = raw_consume_rate(settings.kafka.bootstrap_servers, settings.stream.events_topic, n_messages)
        events_per_message = n_events / n_messages
        print(f"ceiling: bare aiokafka consumer {ceiling:,.0f} messages/s = {ceiling * events_per_message:,.0f} events/s")

        load_at_start = os.getloadavg()
        worker = WorkerProcess.start(settings)
        progress = Progress(client, layout, settings.stream.events_topic, settings.stream.partitions)
        costs = Costs(nodes, worker.process.pid)
        first_at = None
        start_wall = time.perf_counter()
        while True:
            done = progress.applied()
            if done and first_at is None:
                first_at, first_done, before, mgets_before = time.perf_counter(), done, costs.snapshot(), progress.commands
            if done >= n_messages:
                finished_at = time.perf_counter()
                cost = Costs.delta(before, costs.snapshot(), progress.commands - mgets_before)
                break
            if not worker.alive():
                raise RuntimeError(worker.log()[-3000:])
            time.sleep(0.02)
        if first_done >= n_messages:
            raise SystemExit(
                f"--events {args.events:,} is too few: the worker applied them all before the first progress poll (use 50,000 or more)"
            )
        elapsed = finished_at - first_at
        measured_events = n_events * (n_messages - first_done) / n_messages
        throughput = measured_events / elapsed
        wrong = check_exact(client, layout, topics_of, exposures, clicks)
        per_event = {
            "commands": cost["commands"] / measured_events,
            "script_calls": cost["by_name"].get("evalsha", 0) / measured_events,
            "redis_cpu_us": 1e6 * sum(cost["redis_cpu_s"]) / measured_events,
            "worker_cpu_us": 1e6 * cost["worker_cpu_s"] / measured_events,
            "pusher_cpu_us": 1e6 * cost["pusher_cpu_s"] / measured_events,
        }
        print(
            f"worker: {n_events:,} events in {elapsed:.1f} s = {throughput:,.0f} events/s ({(finished_at - start_wall):.1f} s incl. group join); {wrong} counts differ from the truth; load average at the start {load_at_start[0]:.1f}"
        )
        print(
            f"per event: {per_event['commands']:.3f} Redis commands ({per_event['script_calls']:.4f} script calls), Redis main-thread CPU {per_event['redis_cpu_us']:.2f} µs, "
            f"worker CPU {per_event['worker_cpu_us']:.1f} µs, pusher CPU {per_event['pusher_cpu_us']:.1f} µs; commands per master {cost['commands_per_node']}; "
            f"top commands {dict(list(cost['by_name'].items())[:8])}"
        )

        fresh = None
        if args.freshness_seconds > 0:
            fresh = run_freshness(settings, client, feast_store, load_messages, args.freshness_seconds, 5000, costs)
            if not np.isfinite(fresh["queue_max_s"]) or not np.isfinite(fresh["feast_max_s"]):
                print("a probe was not seen within 10 s; the worker's (and pusher's) log ends with:\n" + worker.log()[-3000:])
            print(
                f"freshness at 5,000 events/s ({fresh['probes']} probes): queue p50 {fresh['queue_p50_s']:.3f} s p99 {fresh['queue_p99_s']:.3f} s; Feast p50 {fresh['feast_p50_s']:.3f} s p99 {fresh['feast_p99_s']:.3f} s; slowest probe: queue {fresh['queue_max_s']:.3f} s, Feast {fresh['feast_max_s']:.3f} s"
            )
            if fresh["feast_to_push_p50_s"] is not None:
                print(
                    f"  Feast in parts: click -> its push began p50 {fresh['feast_to_push_p50_s']:.3f} s p99 {fresh['feast_to_push_p99_s']:.3f} s; "
                    f"push began -> read p50 {fresh['feast_push_to_read_p50_s']:.3f} s p99 {fresh['feast_push_to_read_p99_s']:.3f} s"
                )
            if "pushes" in fresh:
                print(
                    f"  pusher over the probe phase: {fresh['pushes']:.0f} pushes, {fresh['rows_per_push']:.0f} rows each; "
                    f"pushes longer than (s): {fresh['pushes_over_s']}"
                )
            if "redis_ms_per_s" in fresh:
                print(f"  Redis main thread over the probe phase, ms per s by command: {fresh['redis_ms_per_s']}")
            if "worker_cores" in fresh:
                print(
                    f"  cores busy over the probe phase: worker {fresh['worker_cores']:.2f}, pusher {fresh['pusher_cores']:.2f}, Redis {fresh['redis_cores']:.2f}; "
                    f"load average at its end {os.getloadavg()[0]:.1f}"
                )
        worker.stop()
        worker = None

        naive = None
        if args.naive_events > 0:
            naive = naive_rate(settings, client, messages, args.naive_events, tmp, topics_of)
            print(
                f"naive Faust agent: {naive:,.0f} events/s on {args.naive_events:,} single-event messages; ours is {throughput / naive:.1f}x"
            )

        result = {
            "redis": args.redis,
            "masters": args.masters if cluster_mode else 1,
            "shards": shards,
            "events": n_events,
            "messages": n_messages,
            "events_per_s": throughput,
            "elapsed_s": elapsed,
            "wrong_counts": wrong,
            "ceiling_events_per_s": ceiling * events_per_message,
            "per_event": per_event,
            "commands_per_node": cost["commands_per_node"],
            "commands_by_name": cost["by_name"],
            "redis_cpu_s": cost["redis_cpu_s"],
            "freshness": fresh,
            "naive_events_per_s": naive,
            "load_at_start": load_at_start,
            "load_at_end": os.getloadavg(),
        }
        if args.output is not None:
            write_report(args, result)
        print("RESULT " + json.dumps(result))
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
        local_redis.stop()


def write_report(args, r: dict) -> None:
    load, fresh, per = r["load_at_end"], r["freshness"], r["per_event"]
    redis_text = f"private Redis Cluster, {r['masters']} masters" if r["redis"] == "cluster" else "private redis-server"
    rows = [
        f"| replay | {r['events']:,} events = {r['messages']:,} messages (refreshes of 10 exposures + clicks, CTR ≈ 10%) |",
        f"| **our worker, sustained** | **{r['events_per_s']:,.0f} events/s** ({r['elapsed_s']:.1f} s from the first to the last applied batch) |",
        f"| exactness | {r['wrong_counts']} per-video / per-topic counts differ from the truth |",
        f"| Redis commands per event (scripts' inner commands included) | {per['commands']:.3f} ({per['script_calls']:.4f} script calls); per master {r['commands_per_node']} |",
        f"| CPU per event | Redis main threads {per['redis_cpu_us']:.2f} µs, worker {per['worker_cpu_us']:.1f} µs, pusher {per['pusher_cpu_us']:.1f} µs |",
        f"| ceiling: bare aiokafka consumer, no processing | {r['ceiling_events_per_s']:,.0f} events/s |",
    ]
    if r["naive_events_per_s"]:
        rows.append(
            f"| baseline: naive Faust agent (1 message per event, changelogged tables) | {r['naive_events_per_s']:,.0f} events/s ({r['events_per_s'] / r['naive_events_per_s']:.1f}x) |"
        )
    if fresh:
        rows.append(
            f"| freshness at 5,000 events/s, click → served queue reordered | p50 {fresh['queue_p50_s']:.3f} s, p99 {fresh['queue_p99_s']:.3f} s, max {fresh['queue_max_s']:.3f} s ({fresh['probes']} probes) |"
        )
        rows.append(
            f"| freshness at 5,000 events/s, click → Feast online value | p50 {fresh['feast_p50_s']:.3f} s, p99 {fresh['feast_p99_s']:.3f} s, max {fresh['feast_max_s']:.3f} s |"
        )
    text = "\n".join(
        [
            "# Streaming updater (stream), one run",
            "",
            f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {os.cpu_count()}-core {platform.machine()}, Python {platform.python_version()};",
            f"  load average at the start {r['load_at_start'][0]:.1f}, at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}",
            f"- Command: `python -m benchmarks.bench_stream --redis {args.redis} --shards {r['shards']} --events {args.events} --naive-events {args.naive_events} --freshness-seconds {args.freshness_seconds:g}`",
            f"- Broker: embedded tansu, 8 partitions; Redis: {redis_text}, {r['shards']} state shards; one worker process and its Feast pusher.",
            "",
            "| measurement | figure |",
            "|---|---|",
            *rows,
            "",
        ]
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
