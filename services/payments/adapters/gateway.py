"""The payment-gateway port for prepaid orders, and its local always-approve adapter.

Contract of a gateway (what :class:`PaymentGateway` promises):

- ``charge(key, ...)`` is idempotent by ``key`` (the order id): the same key always names
  the same single charge; asking again returns the first answer and never charges twice.
- ``void(key)`` cancels (refunds) the charge of ``key`` if there is one, and refuses any
  later charge with that key; voiding twice is harmless. It raises :class:`VoidRefused` when
  the gateway refuses it for good (a charge settled already): the charge stands; and
  :class:`NoSuchCharge` when the gateway knows no charge under the key.
- Either call may raise :class:`GatewayUnavailable` (no answer in time, connection refused,
  a server error): the outcome is then unknown, and the caller retries with the same key;
  :class:`GatewayUnreached` when the request never left (the connection refused or not
  made): the gateway has not seen it.

Which adapter runs is chosen by settings (``build_gateway``): with
``CARAVAN_PAYMENTS_GATEWAY_URL`` set, the HTTP client of :mod:`.gateway_http` (for example
to the local simulator, ``python -m services.payments.simulator``); without it, the
:class:`AlwaysApprove` adapter authorises every prepaid order at once, so the rest of the
system and ``caravan up`` work with no gateway running (refused in production, where it
would approve orders and charge nothing).
"""

from dataclasses import dataclass
from typing import Literal, Protocol

from shared.settings import Settings


@dataclass(frozen=True)
class ChargeResult:
    status: Literal["approved", "declined"]
    charge_id: str | None = None
    reason: str | None = None


class GatewayUnavailable(Exception):
    """The gateway did not answer (in time): the outcome is unknown; retry with the same key."""


class GatewayUnreached(GatewayUnavailable):
    """The request never reached the gateway (the connection refused or not made): it has
    not seen the call, and the caller retries with the same key, or need not make it."""


class NoSuchCharge(GatewayUnavailable):
    """The gateway knows no charge under the key a void names (its answer, as it said it, is
    the exception's text). Nothing to void if it never approved one (the charge never reached
    it, or was never answered); one it approved and now does not know is our configuration
    (the void sent where the charge is not), and the void is made again."""


class VoidRefused(Exception):
    """The gateway refused to void the key's charge, for good (its answer, as it said it, is
    the exception's text): asking again would be refused again, and the charge stands."""


class PaymentGateway(Protocol):
    """Charges and voids prepaid payments, idempotently by key (see the module docstring)."""

    async def charge(self, key: str, amount_fen: int, buyer_id: str) -> ChargeResult: ...

    async def void(self, key: str) -> None: ...

    async def close(self) -> None: ...


class AlwaysApprove:
    """The local default: every charge is approved (there is no money to move)."""

    async def charge(self, key: str, amount_fen: int, buyer_id: str) -> ChargeResult:
        return ChargeResult("approved", charge_id=f"local-{key}")

    async def void(self, key: str) -> None:
        return None

    async def close(self) -> None:
        return None


def require_gateway(settings: Settings) -> None:
    """Refuse production without a gateway: nothing would be charged."""
    if not settings.payments_gateway_url and settings.environment == "production":
        raise ValueError(
            "CARAVAN_PAYMENTS_GATEWAY_URL is required in production: without it every "
            "prepaid order is approved and nothing is charged"
        )


def build_gateway(settings: Settings) -> PaymentGateway:
    require_gateway(settings)
    if not settings.payments_gateway_url:
        return AlwaysApprove()
    from services.payments.adapters.gateway_http import HttpGateway

    return HttpGateway(settings.payments_gateway_url, settings.payments_gateway_timeout_seconds)
