"""The platforms' HTTP APIs, as the adapter calls them (every request signed, see
:mod:`services.platform.domain.signing`):

- order API: ``GET {api_url}/orders/{order_id}?app_key=&timestamp=&sign=`` answers a
  :class:`~services.platform.domain.orders.PlatformOrder` as JSON;
- status API: ``POST {api_url}/status`` with the JSON object ``{app_key, order_id,
  caravan_order_id, status, reason, idempotency_key, timestamp, sign}`` (all strings;
  ``reason`` empty for a confirmed order) and the header ``Idempotency-Key``: the platform
  applies one key once.
"""

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from services.platform.domain.orders import ERRORS_SAID, PlatformOrder, describe
from services.platform.domain.signing import signed
from shared.api import field_errors
from shared.settings import PlatformApp

log = logging.getLogger(__name__)


class PlatformUnavailable(Exception):
    """No usable answer (refused, timed out, 5xx): worth trying again later. The order API's
    say what happened in words a push's answer may carry (not where the API is), and
    ``failing_for``: how long it has failed, every fetch of the app's orders since its first
    failure (0 for that one; a failure after none for ``forget_after`` seconds is a first)."""

    failing_for = 0.0


class SignatureRefused(Exception):
    """The order API refused our signed request (401, 403): the app's secret or a clock to
    put right by hand, which pushing again does not mend by itself."""


class PlatformRefused(Exception):
    """The platform does not know the order (its order API answered 404)."""


class UnreadableOrder(Exception):
    """The platform answered with an order that is not one (a status, a field we cannot
    take): a problem for operations, not something a second push mends by itself.
    ``errors``: each field of the answer at fault, ``{field, message}``, as a 422 says them
    (``body``: the answer whole), the first :data:`ERRORS_SAID`."""

    def __init__(self, why: str, errors: list[dict[str, str]]) -> None:
        super().__init__(f"not an order we can read: {why}")
        self.errors = errors[:ERRORS_SAID]


ORDER_ANSWER_MAX_BYTES = 4 * 2**20
"""The most of an order API's answer read, decoded (4 MiB; an order of 1,000 items is some
40 KB): a platform broken or compromised may answer without end, which was held whole."""


async def _capped(answer: httpx.Response) -> bytes:
    """``answer``'s body, decoded; an :class:`UnreadableOrder` past
    :data:`ORDER_ANSWER_MAX_BYTES`, read no further than the chunk that passed it (a
    compressed chunk is decoded whole first: some 64 KiB received may decode to more)."""
    said = f"the order API answered over {ORDER_ANSWER_MAX_BYTES} bytes (4 MiB), the most read"
    too_big = UnreadableOrder(said, [{"field": "body", "message": said}])
    declared = answer.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > ORDER_ANSWER_MAX_BYTES:
        raise too_big
    body = bytearray()
    async for chunk in answer.aiter_bytes():
        body += chunk
        if len(body) > ORDER_ANSWER_MAX_BYTES:
            raise too_big
    return bytes(body)


@dataclass(frozen=True)
class StatusUpdate:
    """One order outcome for a platform; ``key`` is the idempotency key, ``order_id`` the
    platform's, ``caravan_order_id`` ours (the platform reads ``GET /orders/{id}`` by it)."""

    key: str
    order_id: str
    status: str
    reason: str | None
    caravan_order_id: str


class PlatformApi:
    def __init__(
        self,
        apps: dict[str, PlatformApp],
        timeout: float,
        deadline: float | None = None,
        forget_after: float = math.inf,
    ) -> None:
        """``timeout``: of each connect, read or write; ``deadline``: of a whole fetch of an
        order (:meth:`fetch_order`), none if None; ``forget_after``: seconds without a failed
        fetch after which an app's order API is no longer counted as failing."""
        self.apps = apps
        self.timeout = timeout
        self.deadline = deadline
        self.forget_after = forget_after
        self.clock = time.monotonic
        # by app: its order API's first failure and its last
        self.failing: dict[str, tuple[float, float]] = {}
        self.client = httpx.AsyncClient(timeout=timeout)

    def _params(self, app: str, **params: str) -> dict[str, str]:
        config = self.apps[app]
        stamp = str(int(datetime.now(UTC).timestamp()))
        return signed(
            {"app_key": app, "timestamp": stamp, **params},
            config.secret.get_secret_value(),
            config.sign_method,
        )

    async def fetch_order(self, app: str, order_id: str) -> PlatformOrder:
        """The order as the platform has it now (its answer read no further than
        :data:`ORDER_ANSWER_MAX_BYTES`, and within ``deadline``, all told); a
        :class:`PlatformUnavailable` says how long the app's order API has failed."""
        try:
            order = await self._fetch_order(app, order_id)
        except PlatformUnavailable as exc:
            now = self.clock()
            first, last = self.failing.get(app, (now, now))
            if now - last > self.forget_after:
                first = now
            self.failing[app] = (first, now)
            exc.failing_for = now - first
            raise
        except (SignatureRefused, PlatformRefused, UnreadableOrder):
            self.failing.pop(app, None)  # it answered
            raise
        self.failing.pop(app, None)
        return order

    async def _fetch_order(self, app: str, order_id: str) -> PlatformOrder:
        url = f"{self.apps[app].api_url.rstrip('/')}/orders/{quote(order_id, safe='')}"
        params = self._params(app, order_id=order_id)
        try:
            async with asyncio.timeout(self.deadline):
                try:
                    status, content = await self._get(url, params)
                except httpx.RemoteProtocolError:  # a kept connection the server had just closed
                    status, content = await self._get(url, params)  # a GET: asked once more
        except TimeoutError as exc:  # a whole answer too slow, however quick each read
            said = f"the order API did not send the whole order within {self.deadline:g} s"
            raise PlatformUnavailable(said) from exc
        except httpx.TimeoutException as exc:
            said = f"the order API did not answer within {self.timeout:g} s"
            raise PlatformUnavailable(said) from exc
        except httpx.HTTPError as exc:
            said = f"the order API could not be reached ({type(exc).__name__})"
            raise PlatformUnavailable(said) from exc
        if status == 404:
            raise PlatformRefused(f"order API answered 404 for {order_id!r}")
        if status in (401, 403):
            raise SignatureRefused(
                f"the order API answered {status} to Caravan's signed request: check that the"
                " app's secret is the same on both sides, and both clocks"
            )
        if status != 200:
            raise PlatformUnavailable(f"the order API answered {status}")
        try:
            return PlatformOrder.model_validate_json(content)
        except ValidationError as exc:
            raise UnreadableOrder(describe(exc), field_errors(exc)) from exc

    async def _get(self, url: str, params: dict[str, str]) -> tuple[int, bytes]:
        """The status of a GET of ``url`` and its body (if 200, :func:`_capped`)."""
        async with self.client.stream("GET", url, params=params) as answer:
            return answer.status_code, await _capped(answer) if answer.status_code == 200 else b""

    async def push_status(self, app: str, update: StatusUpdate) -> int:
        """Tell the platform an order's outcome; the HTTP status it answered."""
        body = self._params(
            app,
            order_id=update.order_id,
            caravan_order_id=update.caravan_order_id,
            status=update.status,
            reason=update.reason or "",
            idempotency_key=update.key,
        )
        url = f"{self.apps[app].api_url.rstrip('/')}/status"
        try:
            answer = await self.client.post(url, json=body, headers={"Idempotency-Key": update.key})
        except httpx.HTTPError as exc:
            raise PlatformUnavailable(f"status API: {exc!r}") from exc
        return answer.status_code

    async def close(self) -> None:
        await self.client.aclose()
