"""TLS end to end: the worker, `stream produce`, `stream topics` / `dead-letters` and aiokafka producers reach a
broker only through a TLS-terminating proxy that also requires a client certificate.

The embedded tansu broker cannot serve TLS itself (its --cert and --key refuse each other), so the test makes its
own CA, server and client certificates (openssl CLI), runs tansu on a plain port advertising the proxy's address,
and puts a small asyncio ``ssl`` proxy in front: every client connection, bootstrap and after, is TLS with a
verified client certificate. A wrong CA fails fast with one clear line.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from stream.broker import EmbeddedBroker
from stream.process import WorkerProcess, child_env
from stream.replay import produce, video_published_events
from stream_truth import Truth, assert_state_matches
from topicfs.services import free_port

pytestmark = [pytest.mark.integration]

T0 = 1_767_225_600.0  # 2026-01-01 UTC


def openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder, name: str) -> None:
    openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )


def make_cert(folder, name: str, ca: str, extensions: str) -> None:
    openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={name}",
        cwd=folder,
    )
    (folder / f"{name}.ext").write_text(extensions)
    openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.pem",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
        cwd=folder,
    )


class TlsProxy:
    """TLS in front, plain TCP behind: ``127.0.0.1:port`` (TLS, client certificate required) -> ``127.0.0.1:target``."""

    def __init__(self, port: int, target: int, context: ssl.SSLContext):
        self.port, self.target, self.context = port, target, context
        self.verified_clients = 0  # connections that completed the handshake with a client certificate the CA signed
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(lambda loop, ctx: None)  # refused handshakes are part of the test
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(asyncio.start_server(self.handle, "127.0.0.1", port, ssl=context))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10), "proxy did not start"

    async def handle(self, reader, writer) -> None:
        if writer.get_extra_info("peercert"):
            self.verified_clients += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return

        async def pipe(source, sink) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, ssl.SSLError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture()
def tls_cluster(tmp_path):
    """(certificate folder, proxy) with tansu behind the proxy, advertising it."""
    certs = tmp_path / "certs"
    certs.mkdir()
    make_ca(certs, "ca")
    make_ca(certs, "other-ca")
    make_cert(certs, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    make_cert(certs, "client", "ca", "extendedKeyUsage=clientAuth\n")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs / "ca.pem"))
    context.load_cert_chain(str(certs / "server.pem"), str(certs / "server.key"))
    context.verify_mode = ssl.CERT_REQUIRED
    plain_port, tls_port = free_port(), free_port()
    broker = EmbeddedBroker.start(plain_port, advertised=f"127.0.0.1:{tls_port}")
    proxy = TlsProxy(tls_port, plain_port, context)
    yield certs, proxy
    proxy.stop()
    broker.stop()


def tls_settings(settings, certs, proxy, ca="ca.pem"):
    settings = settings.model_copy(deep=True)
    settings.kafka.bootstrap_servers = f"127.0.0.1:{proxy.port}"
    settings.kafka.security_protocol = "SSL"
    settings.kafka.ssl_cafile = certs / ca
    settings.kafka.ssl_certfile = certs / "client.pem"
    settings.kafka.ssl_keyfile = certs / "client.key"
    settings.kafka.connect_timeout_s = 5.0
    return settings


def cli(settings, *args, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "topicfs_app.cli", "stream", *args], env=child_env(settings), capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_worker_produce_and_admin_over_tls_give_exact_counts(stream_settings, tls_cluster, tmp_path):
    from topicfs.redis_client import sync_client

    certs, proxy = tls_cluster
    settings = tls_settings(stream_settings, certs, proxy)
    created = cli(settings, "topics", "--create")
    assert created.returncode == 0, created.stderr[-2000:]
    assert created.stdout.count(": ok") == 3

    topics_of = {v: [v % 6] for v in range(60)}
    asyncio.run(
        produce(settings.kafka, settings.stream.videos_topic, video_published_events(topics_of, T0), key_field="video_id")
    )  # aiokafka over TLS
    rng = np.random.default_rng(5)
    n = 1500
    log = pd.DataFrame(
        {
            "user_id": rng.integers(0, 25, n),
            "video_id": rng.integers(0, 60, n),
            "clicked": (rng.random(n) < 0.25).astype(int),
            "ts": pd.to_datetime(T0 + rng.uniform(0, 7200, n), unit="s", utc=True),
        }
    )
    path = tmp_path / "clicks.parquet"
    log.to_parquet(path)

    client = sync_client(settings.redis)
    worker = WorkerProcess.start(settings)
    try:
        replayed = cli(settings, "produce", "--interactions", str(path))
        assert replayed.returncode == 0, replayed.stderr[-2000:]
        assert json.loads(replayed.stdout)["click_messages"] == int(log["clicked"].sum())

        truth = Truth()
        for row in log.sort_values("ts", kind="stable").itertuples():
            truth.video_exposures[row.video_id] += 1
            truth.topic_exposures[topics_of[row.video_id][0]] += 1
            if row.clicked:
                truth.video_clicks[row.video_id] += 1
                truth.topic_clicks[topics_of[row.video_id][0]] += 1
                truth.user_clicks[row.user_id].append(row.video_id)
        config = settings.stream
        deadline = time.monotonic() + 120
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
                break
            except AssertionError:
                if time.monotonic() > deadline or not worker.alive():
                    print(worker.log()[-3000:])
                    raise
                time.sleep(0.5)
        letters = cli(settings, "dead-letters")
        assert letters.returncode == 0 and letters.stdout.startswith("0 dead letters"), letters.stderr[-2000:]
    finally:
        worker.stop()
    # everything went through the proxy with the client certificate: admin, producers, the worker's consumers
    assert proxy.verified_clients >= 6


def test_a_wrong_ca_fails_fast_with_one_clear_line(stream_settings, tls_cluster, tmp_path):
    certs, proxy = tls_cluster
    settings = tls_settings(stream_settings, certs, proxy, ca="other-ca.pem")
    expected = re.compile(  # OpenSSL's own reason in the middle (its wording depends on the OpenSSL version)
        re.escape(f"error: TLS handshake with 127.0.0.1:{proxy.port} failed: certificate verify failed: ")
        + "[^;]+"
        + re.escape(f"; the broker's certificate is not signed by kafka.ssl_cafile={certs / 'other-ca.pem'}")
    )
    path = tmp_path / "clicks.csv"
    path.write_text("user_id,video_id,clicked,ts\n1,2,1,2026-01-01T00:00:00Z\n")
    for args in (("topics",), ("produce", "--interactions", str(path)), ("dead-letters",)):
        started = time.monotonic()
        result = cli(settings, *args, timeout=60)  # without the preflight check, clients retry for a minute or more
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert expected.fullmatch(result.stderr.strip()), (args, result.stderr)
        assert time.monotonic() - started < 60
    worker = WorkerProcess.start(settings)
    try:
        worker.process.wait(timeout=60)
    finally:
        worker.stop()
    assert worker.process.returncode == 2
    assert expected.fullmatch(worker.log().strip().splitlines()[-1]), worker.log()[-2000:]
