"""Kafka principals and their ACLs: what each service may read and write (docs/security.md).

Each service logs in as its own principal, ``User:caravan-<service>``. It may read the topics
it consumes (with its consumer group ``caravan-<service>`` only) and describe their
configuration and their dead-letter twins' (how long Kafka keeps their records, which its
inbox must outlive: ``shared/messaging/retention.py``), write the topics it emits and the
dead-letter twins of the topics it consumes, and use the idempotent producer.
Everything else is refused (``allow.everyone.if.no.acl.found=false``); the admin principal
(the CLI, ``caravan prepare``) is the broker's super user.
"""

import asyncio
import functools
from dataclasses import dataclass
from enum import IntEnum

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest

from shared.kafka_security import client_kwargs
from shared.settings import DEV_SECRET_PREFIX, Settings, secret_from_env
from shared.topics import Topic, consumer_group, principal

ADMIN_PRINCIPAL = "caravan-admin"


@dataclass(frozen=True)
class Access:
    """The topics one service consumes and the topics it emits."""

    reads: tuple[Topic, ...]
    writes: tuple[Topic, ...]


@functools.cache
def access() -> dict[str, Access]:
    """Each service's row, from what the AsyncAPI document is built from: the subscriptions
    its bootstrap registers and the topics it is the producer of. A service missing there
    gets no ACL, so it can do nothing on a secured broker."""
    from services.orders.asyncapi import PRODUCERS, consumers

    subscriptions = consumers(Settings.model_construct())  # defaults: topics do not vary
    return {
        service: Access(
            reads=tuple(sub.topic for sub in subs),
            writes=tuple(t for t, producers in PRODUCERS.items() if service in producers),
        )
        for service, subs in subscriptions.items()
    }


class Resource(IntEnum):  # Kafka's AclResourceType codes
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4


class Operation(IntEnum):  # Kafka's AclOperation codes
    READ = 3
    WRITE = 4
    DESCRIBE_CONFIGS = 10
    IDEMPOTENT_WRITE = 12


_LITERAL = 3  # PatternType.LITERAL
_ALLOW = 3  # AclPermissionType.ALLOW


@dataclass(frozen=True)
class Acl:
    principal: str  # "User:<name>"
    resource: Resource
    name: str
    operation: Operation


def acls(service: str) -> list[Acl]:
    """Every ACL of one service's principal (empty for a service without an ACCESS row)."""
    row = access().get(service)
    if row is None:
        return []
    user = f"User:{principal(service)}"
    found = [Acl(user, Resource.GROUP, consumer_group(service), Operation.READ)]
    found += [Acl(user, Resource.TOPIC, t.value, Operation.READ) for t in row.reads]
    described = [t.value for t in row.reads] + [t.dlq for t in row.reads]  # its inbox window
    found += [Acl(user, Resource.TOPIC, t, Operation.DESCRIBE_CONFIGS) for t in described]
    found += [Acl(user, Resource.TOPIC, t.value, Operation.WRITE) for t in row.writes]
    found += [Acl(user, Resource.TOPIC, t.dlq, Operation.WRITE) for t in row.reads]
    found.append(Acl(user, Resource.CLUSTER, "kafka-cluster", Operation.IDEMPOTENT_WRITE))
    return found


def password(name: str, environ: dict[str, str] | None = None) -> str:
    """The password of Kafka user ``name`` for the local broker and the services it launches:
    ``CARAVAN_KAFKA_PASSWORD_<NAME>`` (or its ``_FILE``), else a development default."""
    variable = "CARAVAN_KAFKA_PASSWORD_" + name.removeprefix("caravan-").upper()
    return secret_from_env(variable, environ) or f"{DEV_SECRET_PREFIX}{name}"


async def ensure_acls(bootstrap: str, services: tuple[str, ...], settings: Settings) -> int:
    """Create the ACLs of ``services`` (idempotent: an existing ACL is left as it is), logged
    in as ``settings`` say (the admin); returns how many ACLs were asked for."""
    wanted = [acl for service in services for acl in acls(service)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs(settings))
    try:
        await admin.start()
        responses = await asyncio.gather(
            *(
                admin._send_request(
                    CreateAclsRequest(
                        acl.resource, acl.name, _LITERAL, acl.principal, "*", acl.operation, _ALLOW
                    )
                )
                for acl in wanted
            )
        )
    finally:
        await admin.close()
    for acl, response in zip(wanted, responses, strict=True):
        error_code, message = response.creation_responses[0]
        if error_code:
            raise for_code(error_code)(f"creating {acl}: {message}")
    return len(wanted)


__all__ = ["ADMIN_PRINCIPAL", "Access", "access", "acls", "ensure_acls", "password", "principal"]
