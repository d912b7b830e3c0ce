"""Kafka security settings: what each client library receives, masking, and the compose SASL_SSL override.

The embedded broker cannot run SASL here (tansu's --authentication needs users its memory storage cannot hold),
so SASL is tested as the exact parameters every client gets: aiokafka clients as constructed (their connection
settings read back), kafka-python's parameter names against each client's own config keys, and the Faust app the
worker builds (its credentials turned into aiokafka parameters by Faust's own code). The call sites themselves
(worker, admin calls, producers, the kafka-python tools) are proven by tests/stream/test_kafka_tls.py: they run
over TLS only because each passes these same parameter dicts.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stream.security import KafkaSecurityError, aiokafka_params, faust_params, kafka_python_params
from test_kafka_tls import make_ca
from topicfs.settings import KafkaConfig, Settings

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-Pa55"


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ca")
    make_ca(folder, "ca")
    return folder / "ca.pem"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_settings_reach_aiokafka_kafka_python_and_faust_exactly(protocol, mechanism, ca_file):
    kafka = KafkaConfig(
        bootstrap_servers="k1:9094,k2:9094",
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username="topicfs",
        sasl_password=PASSWORD,
        ssl_cafile=ca_file if protocol == "SASL_SSL" else None,
    )
    with_tls = protocol == "SASL_SSL"

    # kafka-python: the documented parameter names of KafkaProducer / KafkaConsumer / KafkaAdminClient
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    expected = {
        "bootstrap_servers": ["k1:9094", "k2:9094"],
        "security_protocol": protocol,
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "topicfs",
        "sasl_plain_password": PASSWORD,
    }
    if with_tls:
        expected.update(ssl_cafile=str(ca_file), ssl_certfile=None, ssl_keyfile=None, ssl_password=None, ssl_check_hostname=True)
    assert kafka_python_params(kafka) == expected
    for client in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
        assert set(expected) <= set(client.DEFAULT_CONFIG), client

    # aiokafka: the clients as constructed hold exactly these connection settings
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    async def constructed() -> list:
        params = aiokafka_params(kafka)
        producer, consumer, admin = AIOKafkaProducer(**params), AIOKafkaConsumer(**params), AIOKafkaAdminClient(**params)
        clients = [producer.client, consumer._client, admin._client]
        seen = [
            (c._security_protocol, c._sasl_mechanism, c._sasl_plain_username, c._sasl_plain_password, c._ssl_context is not None)
            for c in clients
        ]
        await producer.client.close()
        await consumer._client.close()
        await admin.close()
        return seen

    assert asyncio.run(constructed()) == [(protocol, mechanism, "topicfs", PASSWORD, with_tls)] * 3

    # Faust: the worker's app (stream.app.create_app) gets the credentials; Faust's own code turns them into aiokafka's
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    params = faust_params(kafka)
    assert params["broker"] == ["kafka://k1:9094", "kafka://k2:9094"]
    auth = credentials_to_aiokafka_auth(params["broker_credentials"])
    assert (auth["security_protocol"], auth["sasl_mechanism"], auth["sasl_plain_username"], auth["sasl_plain_password"]) == (
        protocol,
        mechanism,
        "topicfs",
        PASSWORD,
    )
    assert (auth["ssl_context"] is not None) == with_tls
    assert "topicfs" in repr(params["broker_credentials"]) and PASSWORD not in repr(params["broker_credentials"])


def test_the_workers_faust_app_is_built_with_the_credentials(stream_settings, ca_file):
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from stream.app import create_app
    from topicfs.redis_client import async_client

    settings = stream_settings
    settings.kafka = KafkaConfig(
        bootstrap_servers="k1:9094",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="topicfs",
        sasl_password=PASSWORD,
        ssl_cafile=ca_file,
    )

    async def build():
        client = async_client(settings.redis)
        try:
            return create_app(settings, client).app.conf
        finally:
            await client.aclose()

    conf = asyncio.run(build())
    assert [str(url) for url in conf.broker] == ["kafka://k1:9094"]
    auth = credentials_to_aiokafka_auth(conf.broker_credentials)
    assert (auth["security_protocol"], auth["sasl_mechanism"], auth["sasl_plain_username"], auth["sasl_plain_password"]) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        "topicfs",
        PASSWORD,
    )


def test_ssl_and_plaintext_give_no_sasl_parameters(ca_file):
    assert aiokafka_params("h:1") == {"bootstrap_servers": "h:1", "security_protocol": "PLAINTEXT"}
    assert faust_params("h:1")["broker_credentials"] is None
    ssl_only = aiokafka_params(KafkaConfig(bootstrap_servers="h:1", security_protocol="SSL", ssl_cafile=ca_file))
    assert set(ssl_only) == {"bootstrap_servers", "security_protocol", "ssl_context"} and ssl_only["security_protocol"] == "SSL"


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"security_protocol": "SASL_SSL", "sasl_username": "u"},
            "kafka.security_protocol=SASL_SSL needs kafka.sasl_username and kafka.sasl_password",
        ),
        (
            {"security_protocol": "SSL", "ssl_cafile": "/nope/ca.pem"},
            "kafka.ssl_cafile: no such file: /nope/ca.pem (TOPICFS_KAFKA__SSL_CAFILE)",
        ),
    ],
)
def test_incomplete_settings_are_one_line_naming_the_setting(changes, message):
    with pytest.raises(KafkaSecurityError) as caught:
        aiokafka_params(KafkaConfig(**changes))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_passwords_are_masked_in_topicfs_settings_and_reach_child_processes(tmp_path):
    from stream.process import child_env

    env = {
        **os.environ,
        "TOPICFS_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "TOPICFS_KAFKA__SASL_USERNAME": "topicfs",
        "TOPICFS_KAFKA__SASL_PASSWORD": PASSWORD,
        "TOPICFS_KAFKA__SSL_KEY_PASSWORD": PASSWORD + "k",
    }
    shown = subprocess.run(
        [sys.executable, "-m", "topicfs_app.cli", "settings"], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    assert PASSWORD not in shown.stdout + shown.stderr and '"sasl_password": "**********"' in shown.stdout
    settings = Settings(kafka=KafkaConfig(sasl_username="topicfs", sasl_password=PASSWORD, ssl_key_password=PASSWORD + "k"))
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.kafka)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from topicfs.settings import Settings; k = Settings().kafka; print(k.sasl_password.get_secret_value(), k.ssl_key_password.get_secret_value())",
        ],
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.stdout.split() == [PASSWORD, PASSWORD + "k"], child.stderr  # the worker a test or the demo starts gets the password


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is installed by .ci/setup")
def test_the_compose_sasl_ssl_override_validates_and_its_worker_settings_match_the_listener():
    files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "docker-compose.sasl.yml")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPICFS_")}
    env.update(TOPICFS_REDIS_PASSWORD="r" * 32, TOPICFS_KAFKA_PASSWORD="k" * 32)
    checked = subprocess.run(["docker-compose", *files, "config", "-q"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stderr
    resolved = yaml.safe_load(
        subprocess.run(["docker-compose", *files, "config"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120).stdout
    )
    kafka, worker = resolved["services"]["kafka"]["environment"], resolved["services"]["worker"]["environment"]
    # the worker's variables are valid settings, and they name the SASL_SSL listener, its mechanism and its user
    worker_env = {k: str(v) for k, v in worker.items() if k.startswith("TOPICFS_KAFKA__")}
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("TOPICFS_")}
    try:
        os.environ.update(worker_env)
        config = Settings().kafka
    finally:
        for key in worker_env:
            os.environ.pop(key, None)
        os.environ.update(saved)
    assert config.security_protocol == "SASL_SSL" and "SASL_SSL://kafka:9094" in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert config.bootstrap_servers == "kafka:9094" and config.sasl_mechanism in kafka["KAFKA_SASL_ENABLED_MECHANISMS"].split(",")
    assert (
        f'user_{config.sasl_username}="{config.sasl_password.get_secret_value()}"'
        in kafka["KAFKA_LISTENER_NAME_SASL__SSL_PLAIN_SASL_JAAS_CONFIG"]
    )
    assert "SASL_SSL:SASL_SSL" in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    mounted = {volume.split(":")[1] for volume in resolved["services"]["worker"]["volumes"]}
    assert str(config.ssl_cafile) in mounted and kafka["KAFKA_SSL_KEYSTORE_LOCATION"] in {
        v.split(":")[1] for v in resolved["services"]["kafka"]["volumes"]
    }
    # without the password the override refuses to resolve, naming the variable
    env.pop("TOPICFS_KAFKA_PASSWORD")
    missing = subprocess.run(["docker-compose", *files, "config", "-q"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "set TOPICFS_KAFKA_PASSWORD" in missing.stderr
