"""How every Kafka client of the project reaches the brokers: one :class:`~topicfs.settings.KafkaConfig`, four dialects.

The same settings (``kafka.security_protocol``, ``kafka.sasl_*``, ``kafka.ssl_*``) become

- :func:`aiokafka_params`: keyword arguments of ``AIOKafkaProducer`` / ``AIOKafkaConsumer`` / ``AIOKafkaAdminClient``
  (the worker's own consumers, ``stream replay``, topic creation and offset alignment in :mod:`stream.broker`);
- :func:`kafka_python_params`: keyword arguments of kafka-python's ``KafkaProducer`` / ``KafkaConsumer`` /
  ``KafkaAdminClient`` (the synchronous tools of :mod:`stream.kafka_tools`);
- :func:`faust_params`: ``broker`` and ``broker_credentials`` of ``faust.App`` (the worker's group consumer and producer);
- :func:`preflight`: one TCP (and TLS) connection to the bootstrap servers before any client starts, so a wrong CA,
  a plain-text port or an unreachable broker is one line naming the cause within ``kafka.connect_timeout_s``,
  not a minute of client retries.

Passwords are :class:`pydantic.SecretStr`: they are revealed only inside the parameter dicts handed to the clients.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

from topicfs.settings import KafkaConfig

SSL_PROTOCOLS = {"SSL", "SASL_SSL"}
SASL_PROTOCOLS = {"SASL_PLAINTEXT", "SASL_SSL"}


class KafkaSecurityError(RuntimeError):
    """A Kafka connection setting is wrong or the brokers refuse it; the message is one line naming the setting."""


def as_config(kafka: KafkaConfig | str) -> KafkaConfig:
    """``kafka`` itself, or a plain-text config for a bare ``host:port[,host:port]`` string."""
    if isinstance(kafka, KafkaConfig):
        return kafka
    return KafkaConfig(bootstrap_servers=kafka, embedded=False)


def servers(kafka: KafkaConfig | str) -> list[str]:
    """The bootstrap servers as a list of ``host:port``."""
    return [server.strip() for server in as_config(kafka).bootstrap_servers.split(",") if server.strip()]


def _secret(value) -> str | None:
    return value.get_secret_value() if value is not None else None


def check(kafka: KafkaConfig | str) -> KafkaConfig:
    """The config, after checking that its settings fit together and that the files it names exist."""
    kafka = as_config(kafka)
    protocol = kafka.security_protocol
    if protocol in SASL_PROTOCOLS and (not kafka.sasl_username or kafka.sasl_password is None):
        raise KafkaSecurityError(
            f"kafka.security_protocol={protocol} needs kafka.sasl_username and kafka.sasl_password "
            "(TOPICFS_KAFKA__SASL_USERNAME, TOPICFS_KAFKA__SASL_PASSWORD)"
        )
    if protocol in SSL_PROTOCOLS:
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(kafka, name)
            if path is not None and not Path(path).is_file():
                raise KafkaSecurityError(f"kafka.{name}: no such file: {path} (TOPICFS_KAFKA__{name.upper()})")
        if kafka.ssl_keyfile is not None and kafka.ssl_certfile is None:
            raise KafkaSecurityError("kafka.ssl_keyfile is set without kafka.ssl_certfile (the client certificate it belongs to)")
    return kafka


def ssl_context(kafka: KafkaConfig | str) -> ssl.SSLContext | None:
    """The TLS context of SSL / SASL_SSL (None otherwise): the CA file (or the system's CAs), the client certificate."""
    kafka = check(kafka)
    if kafka.security_protocol not in SSL_PROTOCOLS:
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    except ssl.SSLError as exc:
        raise KafkaSecurityError(f"kafka.ssl_cafile {kafka.ssl_cafile} holds no usable PEM certificate ({exc.reason or exc})") from None
    context.check_hostname = kafka.ssl_check_hostname
    if kafka.ssl_certfile is not None:
        try:
            context.load_cert_chain(
                str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None, _secret(kafka.ssl_key_password)
            )
        except ssl.SSLError as exc:
            raise KafkaSecurityError(
                f"kafka.ssl_certfile {kafka.ssl_certfile} / kafka.ssl_keyfile {kafka.ssl_keyfile}: not a matching PEM certificate and key ({exc.reason or exc})"
            ) from None
    return context


def aiokafka_params(kafka: KafkaConfig | str) -> dict[str, Any]:
    """``bootstrap_servers`` and the security keyword arguments of aiokafka's producer, consumer and admin client."""
    kafka = check(kafka)
    params: dict[str, Any] = {"bootstrap_servers": kafka.bootstrap_servers, "security_protocol": kafka.security_protocol}
    if kafka.security_protocol in SSL_PROTOCOLS:
        params["ssl_context"] = ssl_context(kafka)
    if kafka.security_protocol in SASL_PROTOCOLS:
        params.update(
            sasl_mechanism=kafka.sasl_mechanism, sasl_plain_username=kafka.sasl_username, sasl_plain_password=_secret(kafka.sasl_password)
        )
    return params


def kafka_python_params(kafka: KafkaConfig | str) -> dict[str, Any]:
    """``bootstrap_servers`` and the security keyword arguments of kafka-python's producer, consumer and admin client."""
    kafka = check(kafka)
    params: dict[str, Any] = {"bootstrap_servers": servers(kafka), "security_protocol": kafka.security_protocol}
    if kafka.security_protocol in SSL_PROTOCOLS:
        params.update(
            ssl_check_hostname=kafka.ssl_check_hostname,
            ssl_cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None,
            ssl_certfile=str(kafka.ssl_certfile) if kafka.ssl_certfile else None,
            ssl_keyfile=str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None,
            ssl_password=_secret(kafka.ssl_key_password),
        )
    if kafka.security_protocol in SASL_PROTOCOLS:
        params.update(
            sasl_mechanism=kafka.sasl_mechanism, sasl_plain_username=kafka.sasl_username, sasl_plain_password=_secret(kafka.sasl_password)
        )
    return params


def faust_params(kafka: KafkaConfig | str) -> dict[str, Any]:
    """``broker`` and ``broker_credentials`` of ``faust.App`` (Faust hands the credentials to its aiokafka clients)."""
    import faust

    kafka = check(kafka)
    credentials = None
    context = ssl_context(kafka)
    if kafka.security_protocol in SASL_PROTOCOLS:
        credentials = faust.SASLCredentials(
            username=kafka.sasl_username, password=_secret(kafka.sasl_password), ssl_context=context, mechanism=kafka.sasl_mechanism
        )
    elif context is not None:
        credentials = faust.SSLCredentials(context)
    return {"broker": [f"kafka://{server}" for server in servers(kafka)], "broker_credentials": credentials}


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc).splitlines()[0]
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def preflight(kafka: KafkaConfig | str, timeout_s: float | None = None) -> None:
    """Connect to each bootstrap server (with the TLS handshake under SSL / SASL_SSL) until one answers.

    Raises :class:`KafkaSecurityError` with one line naming the cause when none does within ``kafka.connect_timeout_s``.
    """
    kafka = check(kafka)
    timeout_s = timeout_s or kafka.connect_timeout_s
    context = ssl_context(kafka)
    problems = []
    for server in servers(kafka):
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            raise KafkaSecurityError(f"kafka.bootstrap_servers must be host:port[,host:port...], got {kafka.bootstrap_servers!r}")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s) as raw:
                if context is None:
                    return
                with context.wrap_socket(raw, server_hostname=host):
                    return
        except ssl.SSLCertVerificationError as exc:
            cafile = f"kafka.ssl_cafile={kafka.ssl_cafile}" if kafka.ssl_cafile else "the system's CAs (kafka.ssl_cafile is not set)"
            raise KafkaSecurityError(
                f"TLS handshake with {server} failed: {_one_line(exc)}; the broker's certificate is not signed by {cafile}"
                + (" or does not name that host (kafka.ssl_check_hostname)" if "hostname" in (exc.verify_message or "").lower() else "")
            ) from None
        except ssl.SSLError as exc:
            problems.append(
                f"TLS handshake with {server} failed: {_one_line(exc)} (is it a TLS listener? kafka.security_protocol={kafka.security_protocol})"
            )
        except (socket.timeout, TimeoutError):
            problems.append(f"{server} did not answer within {timeout_s:.0f} s")
        except OSError as exc:
            problems.append(f"cannot connect to {server}: {exc.strerror or exc}")
    raise KafkaSecurityError("; ".join(problems) + " (kafka.bootstrap_servers)")
