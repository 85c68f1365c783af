"""How long an app's order API has been failing, as a push's ``Retry-After`` reads it: since
the first failure of an unbroken run, a run broken by an answer or by a quiet spell."""

import httpx
import pytest

from services.platform.adapters.platform_api import PlatformApi, PlatformUnavailable
from shared.settings import PlatformApp

APP = PlatformApp.model_validate({"api_url": "http://platform.test/api", "secret": "s" * 16})


async def _failing_for(api: PlatformApi, at: float) -> float:
    api.clock = lambda: at
    with pytest.raises(PlatformUnavailable) as caught:
        await api.fetch_order("shop", "P-1")
    return caught.value.failing_for


async def test_a_failure_long_after_the_last_starts_a_new_outage() -> None:
    api = PlatformApi({"shop": APP}, timeout=1, forget_after=600)
    api.client = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(500)))
    assert await _failing_for(api, 1000) == 0
    assert await _failing_for(api, 1300) == 300  # pushed again after a Retry-After: still out
    assert await _failing_for(api, 1800) == 800
    # two hours without a failure: the next one is the first of another outage
    assert await _failing_for(api, 1800 + 7200) == 0
