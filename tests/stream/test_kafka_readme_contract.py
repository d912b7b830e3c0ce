"""The README's stream message contract, as a user reads it: a producer written from its examples is accepted.

The three ```json examples of README.md's "The stream" section are sent by a plain kafka-python producer (keyed as the
README says), a real worker counts them, and nothing is dead-lettered. The same exposure without its ``type`` is
dead-lettered with the reason (the mistake the README once invited).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from stream.kafka_tools import check_topics, read_dead_letters
from stream.process import WorkerProcess
from stream_truth import Truth, assert_state_matches

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_examples() -> dict[str, dict]:
    text = README.read_text()
    section = text[text.index("## The stream") :]
    section = section[: section.index("\n## ", 1)]
    blocks = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.S)]
    examples = {block["type"]: block for block in blocks}
    assert set(examples) == {"exposure", "click", "video_published"} and len(blocks) == 3
    assert all(len(block.strip().splitlines()) == 5 for block in re.findall(r"```json\n(.*?)```", section, re.S))  # five lines each
    return examples


def test_a_producer_written_from_the_readme_is_accepted_not_dead_lettered(stream_settings):
    from kafka import KafkaProducer

    from topicfs.redis_client import sync_client

    settings = stream_settings
    examples = readme_examples()
    exposure, click, video = examples["exposure"], examples["click"], examples["video_published"]
    check_topics(settings, create=True)
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    # the worker must know every video an event names: the README's video example, and the same for the others shown
    shown = sorted(set(exposure["video_ids"]) | {click["video_id"]})
    for video_id in shown:
        message = {**video, "event_id": f"v{video_id}", "video_id": video_id}
        producer.send(settings.stream.videos_topic, key=str(video_id).encode(), value=json.dumps(message).encode())
    producer.send(settings.stream.events_topic, key=str(exposure["user_id"]).encode(), value=json.dumps(exposure).encode())
    producer.send(settings.stream.events_topic, key=str(click["user_id"]).encode(), value=json.dumps(click).encode())
    untyped = {k: v for k, v in exposure.items() if k != "type"} | {"event_id": "no-type"}
    producer.send(settings.stream.events_topic, key=str(exposure["user_id"]).encode(), value=json.dumps(untyped).encode())
    producer.flush()
    producer.close()

    topics_of = {video_id: video["topic_ids"] for video_id in shown}
    truth = Truth()
    for video_id in exposure["video_ids"]:
        truth.video_exposures[video_id] += 1
        for topic in topics_of[video_id]:
            truth.topic_exposures[topic] += 1
    truth.video_clicks[click["video_id"]] += 1
    for topic in topics_of[click["video_id"]]:
        truth.topic_clicks[topic] += 1
    truth.user_clicks[click["user_id"]].append(click["video_id"])

    client = sync_client(settings.redis)
    worker = WorkerProcess.start(settings)
    try:
        config = settings.stream
        deadline = time.monotonic() + 90
        while True:
            try:
                assert_state_matches(
                    client,
                    settings.redis.key_prefix,
                    truth,
                    topics_of,
                    config.recent_clicks,
                    config.min_exposures,
                    config.min_ctr,
                    config.fresh_share,
                )
                letters = read_dead_letters(settings.kafka, config.dead_letter_topic, idle_s=0.5)
                assert len(letters) == 1
                break
            except AssertionError:
                if time.monotonic() > deadline or not worker.alive():
                    print(worker.log()[-3000:])
                    raise
                time.sleep(0.5)
    finally:
        worker.stop()
    assert json.loads(letters[0].payload)["event_id"] == "no-type"  # only the message without type
    assert letters[0].body["reasons"] == ["type must be 'exposure' or 'click', got None"]
