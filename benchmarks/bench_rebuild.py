"""Benchmark of one queue-rebuild script call (``stream/lua/rebuild_queues.lua``) against the same script of an earlier
commit, alternated in one process on one private redis-server.

    python -m benchmarks.bench_rebuild                      # against 1553a92 (before the tie-run ordering)
    python -m benchmarks.bench_rebuild --baseline HEAD~3 --topics 12 --rounds 40

The state: ``--topics`` topics, each with ``--established`` established videos (ids of 1 to 7 digits, so equal CTRs
come from Redis in an order that is not numeric) whose CTRs have two decimals (so many videos tie, as clicks /
exposures of small counts do, also at the cut of the top 900) and ``--fresh`` fresh videos; queues of 1,000 (900
established by CTR + 100 fresh), as ``stream.max_queue_length`` = 1000 and ``fresh_share`` = 0.1 give. Before timing,
each script's queues are checked against the specification (:func:`stream.logic.build_queue`: the top 900 of the whole
index by CTR, equal CTRs lower id first); the current one must match. Prints the Redis server's own time in EVALSHA
(``INFO commandstats`` after ``CONFIG RESETSTAT``: no round trip) per topic rebuilt, median and min over ``--rounds``
rounds of 10 calls per script, the order of the two flipped every round.
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from stream.state import lua

ROOT = Path(__file__).resolve().parent.parent


def baseline_source(commit: str) -> str:
    """The rebuild script of ``commit`` with its shared files, as :func:`stream.state.lua` joins them today."""

    def show(name: str) -> str:
        return subprocess.run(["git", "show", f"{commit}:stream/lua/{name}"], cwd=ROOT, check=True, capture_output=True, text=True).stdout

    return show("replace_queue.lua") + "\n" + show("rebuild_queues.lua")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default="1553a92", help="git commit whose rebuild_queues.lua is the baseline")
    parser.add_argument("--topics", type=int, default=12, help="topics rebuilt per call")
    parser.add_argument("--established", type=int, default=2000, help="established videos per topic")
    parser.add_argument("--fresh", type=int, default=500, help="fresh videos per topic")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder],
            stdout=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(port=port)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            run(client, args)
        finally:
            server.terminate()
            server.wait(10)


def spec_established(client: redis.Redis, topic: int, keep: int) -> list[int]:
    """The queue's established part as :func:`stream.logic.build_queue` specifies it: the top ``keep`` of the whole
    index by CTR, equal CTRs lower id first."""
    pairs = client.zrange(f"est:{topic}", 0, -1, withscores=True)
    return [v for v, _ in sorted(((int(v), score) for v, score in pairs), key=lambda item: (-item[1], item[0]))[:keep]]


def redis_usec(client: redis.Redis) -> float:
    """Microseconds the server spent in EVALSHA since the last CONFIG RESETSTAT (its own clock: no round trip)."""
    return float(client.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0.0))


def run(client: redis.Redis, args: argparse.Namespace) -> None:
    scripts = {"baseline": client.script_load(baseline_source(args.baseline)), "now": client.script_load(lua("rebuild_queues"))}
    rng = random.Random(0)
    for t in range(args.topics):
        pipe = client.pipeline(transaction=False)
        # ids of 1 to 7 digits (the byte order of equal CTRs is not their numeric order), CTRs with two decimals
        unique: set[int] = set()
        while len(unique) < args.established + args.fresh:
            digits = rng.randint(1, 7)
            unique.add(rng.randrange(10 ** (digits - 1), 10**digits))
        ids = sorted(unique)
        rng.shuffle(ids)
        pipe.zadd(f"est:{t}", {str(v): round(rng.random() * 0.3, 2) for v in ids[: args.established]})
        pipe.zadd(f"fresh:{t}", {str(v): 0 for v in ids[args.established :]})
        pipe.execute()
    keys = [k for t in range(args.topics) for k in (f"est:{t}", f"fresh:{t}", f"q:{t}")] + ["dirty"]
    call = [900, 100, "0.1", 50, 1000, 12345, 1, *range(args.topics)]  # keep, sample, share, cold start, length, seed, want
    for name, sha in scripts.items():
        queues = client.evalsha(sha, len(keys), *keys, *call)
        wrong = 0
        for topic, queue in enumerate(queues):
            fresh = {int(v) for v in client.zrange(f"fresh:{topic}", 0, -1)}
            wrong += [int(v) for v in queue if int(v) not in fresh] != spec_established(client, topic, 900)
        print(f"{name}: established part as build_queue specifies it in {args.topics - wrong} of {args.topics} topics")
        if name == "now" and wrong:
            raise SystemExit("the current script does not build the specified queues")
    call[6] = 0
    per_topic: dict[str, list[float]] = {name: [] for name in scripts}
    for round_ in range(args.rounds):
        for name in ("baseline", "now") if round_ % 2 == 0 else ("now", "baseline"):
            client.config_resetstat()
            for _ in range(10):
                client.evalsha(scripts[name], len(keys), *keys, *call)
            per_topic[name].append(redis_usec(client) / 10 / args.topics / 1e3)
    for name, values in per_topic.items():
        label = f"{name} ({args.baseline})" if name == "baseline" else "now"
        print(
            f"{label}: {statistics.median(values):.3f} ms of Redis time per topic rebuilt, median of {args.rounds} rounds (min {min(values):.3f})"
        )
    print(f"now / baseline: {statistics.median(per_topic['now']) / statistics.median(per_topic['baseline']):.2f}")


if __name__ == "__main__":
    main()
