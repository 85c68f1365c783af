"""The operations page says how old its figures are and which it could not get, rather
than showing old or missing figures as live ones (caravan.ops.dashboard, pure rendering)."""

import socket
import time

import httpx
import pytest

from caravan.ops.dashboard import Dashboard, Snapshot
from shared.settings import Settings


def board() -> Dashboard:
    return Dashboard(Settings(), interval=3.0)


def test_fresh_figures_say_when_they_were_taken() -> None:
    page = board()
    page.history.append(Snapshot(at=time.time() - 1, stuck=[]))
    text = page.page()
    assert "figures as of " in text and "<b>stale</b>" not in text
    assert "<tr><td colspan=3>none</td></tr>" in text


def test_figures_older_than_two_samples_are_marked_stale_with_the_reason() -> None:
    page = board()
    page.history.append(Snapshot(at=time.time() - 60))
    page.failure = "KafkaConnectionError('Unable to bootstrap <here>')"
    text = page.page()
    assert "(60 s ago)" in text and "<b>stale</b>" in text
    assert "Unable to bootstrap &lt;here&gt;" in text


def test_figures_it_could_not_get_are_not_shown_as_none() -> None:
    page = board()
    page.history.append(
        Snapshot(
            at=time.time(),
            unavailable={"stuck": "HTTP 403", "dead_letters": "Kafka unreachable (Timeout)"},
        )
    )
    text = page.page()
    assert "unavailable: HTTP 403" in text and ">none<" not in text
    assert "unavailable: Kafka unreachable (Timeout)" in text


def test_stuck_orders_beyond_those_listed_are_counted() -> None:
    page = board()
    listed = [{"order_id": f"o-{i}", "order_ref": f"r-{i}", "placed_at": "t"} for i in range(2)]
    page.history.append(Snapshot(at=time.time(), stuck=listed, stuck_total=5000))
    assert "<p>the oldest 2 of 5000</p>" in page.page()
    page.history.append(Snapshot(at=time.time(), stuck=listed, stuck_total=2))
    assert "the oldest" not in page.page()


def test_throughput_is_counted_service_by_service_through_a_missed_sample_and_a_restart() -> None:
    """A service missing from one sample (its /metrics timed out) put its whole count since
    it started into the next interval (333,000/s for a day's million records), and a
    restarted one made the sum go down (0/s for everyone)."""
    page = board()
    counts: list[dict[str, float]] = [
        {"orders": 1_000_000, "payments": 500},
        {"payments": 530},  # orders missed this sample
        {"orders": 1_000_090, "payments": 560},
        {"orders": 1_000_120, "payments": 12},  # payments restarted: 12 since
    ]
    for i, consumed in enumerate(counts):
        page.history.append(Snapshot(at=100.0 + 3 * i, consumed=consumed))
    assert page.throughput() == [(103.0, 10.0), (106.0, 10.0), (109.0, 14.0)]


def test_a_service_whose_figures_are_old_says_so_beside_them() -> None:
    """A service's lag and outbox gauges keep their last values while its Kafka or database
    is away: the page showed "up, lag 0" while nothing was consumed."""
    page = board()
    now = time.time()
    page.history.append(
        Snapshot(
            at=now,
            lag={"orders": 0, "payments": 0},
            observed={"orders": now - 3, "payments": now - 45},
            down=["platform"],
        )
    )
    text = page.page()
    assert "<td>orders</td><td>up</td>" in text
    assert "<td>payments</td><td>up <span class='stale'>(figures 45 s old)</span></td>" in text
    assert "<td>inventory</td><td>up <span class='stale'>(no figures sampled yet)" in text
    assert "<td>platform</td><td>down</td>" in text


async def test_the_page_says_503_when_it_cannot_check_a_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With PostgreSQL away the token cannot be checked: 503 "retry", as the services answer,
    where the page answered 500 "Internal Server Error"."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    monkeypatch.setenv("DATABASE_URL", f"postgresql://caravan:caravan@127.0.0.1:{port}/caravan")
    app = Dashboard(Settings()).create_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://page") as client:
        answer = await client.get("/", headers={"Authorization": "Bearer cvn_" + "x" * 43})
    assert answer.status_code == 503, answer.text
    assert answer.json()["detail"] == "the database is not reachable; retry"
