"""How every Kafka client of the project authenticates: the one place that turns the security
settings (``CARAVAN_KAFKA_SECURITY_PROTOCOL`` and friends) into aiokafka keyword arguments and
into FastStream's security object.

PLAINTEXT (the local default, on loopback) adds nothing; SASL_PLAINTEXT and SASL_SSL log in
with SCRAM-SHA-256/512; SSL and SASL_SSL check the brokers' certificates against
``CARAVAN_KAFKA_SSL_CAFILE`` (the system's CAs when unset) and present a client certificate
when one is configured.
"""

import ssl
from typing import TYPE_CHECKING, Any

from aiokafka.helpers import create_ssl_context

from shared.settings import Settings, get_settings

if TYPE_CHECKING:  # FastStream is the services' (it costs an operator's command 0.4 s)
    from faststream.security import BaseSecurity


def client_kwargs(settings: Settings | None = None) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin client).

    ``settings`` default to this process's own (its environment): the CLI and operations
    tools act as whoever their environment names.
    """
    s = settings or get_settings()
    kwargs: dict[str, Any] = {"security_protocol": s.kafka_security_protocol}
    context = _ssl_context(s)
    if context is not None:
        kwargs["ssl_context"] = context
    if s.kafka_security_protocol.startswith("SASL"):
        username, password = _credentials(s)
        kwargs.update(
            sasl_mechanism=s.kafka_sasl_mechanism,
            sasl_plain_username=username,
            sasl_plain_password=password,
        )
    return kwargs


def broker_security(settings: Settings) -> "BaseSecurity | None":
    """The same security as :func:`client_kwargs`, as FastStream's ``KafkaBroker`` takes it."""
    from faststream.security import BaseSecurity, SASLScram256, SASLScram512

    protocol = settings.kafka_security_protocol
    context = _ssl_context(settings)
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    username, password = _credentials(settings)
    scram = SASLScram256 if settings.kafka_sasl_mechanism == "SCRAM-SHA-256" else SASLScram512
    return scram(username, password, ssl_context=context, use_ssl=protocol == "SASL_SSL")


def _credentials(settings: Settings) -> tuple[str, str]:
    if not settings.kafka_username or settings.kafka_password is None:  # Settings refuse this
        raise ValueError("SASL needs CARAVAN_KAFKA_USERNAME and CARAVAN_KAFKA_PASSWORD")
    return settings.kafka_username, settings.kafka_password.get_secret_value()


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    key_password = settings.kafka_ssl_key_password
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.kafka_ssl_cafile,
        certfile=settings.kafka_ssl_certfile,
        keyfile=settings.kafka_ssl_keyfile,
        password=key_password.get_secret_value() if key_password is not None else None,
    )
    return context


__all__ = ["broker_security", "client_kwargs"]
