"""``caravan demo`` in a Kafka outage: its one red line, and nothing after it. It printed
``Unclosed AIOKafkaConsumer`` too: the Kafka clients it had made were left open when one of
them failed to start (here: a port nothing listens on)."""

import asyncio
import gc
import socket
import time
import warnings
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from rich.console import Console

from caravan import demo
from caravan.demo import run_demo
from caravan.output import OperatorError
from shared.settings import Settings
from tests.harness import free_port
from tests.unit.test_demo_seed import seed


def test_the_demo_that_cannot_reach_kafka_closes_the_clients_it_made() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(KafkaConnectionError):
            asyncio.run(run_demo(bootstrap, seed(), count=1, timeout=1.0))
        gc.collect()
    assert [str(w.message).split(" <")[0] for w in caught if "Unclosed" in str(w.message)] == []


def test_a_demo_of_no_storefront_order_asks_kafka_nothing_and_shows_nothing() -> None:
    """``caravan demo --orders 0 --platform-orders 4`` (platform orders alone) showed a bar of
    0/0 and an empty "Demo orders by outcome" table above the platform's: a run of nothing.
    Here no Kafka answers: it was asked all the same."""
    console = Console(record=True, width=80)
    outcomes = asyncio.run(run_demo(f"127.0.0.1:{free_port()}", seed(), count=0, console=console))
    assert (outcomes, console.export_text()) == ([], "")


@pytest.mark.parametrize("bound", ["127.0.0.1", "0.0.0.0"])
async def test_the_platform_demo_whose_adapter_is_down_names_the_adapter_not_the_simulator(
    bound: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """``caravan demo --platform-orders N`` while the platform adapter was down (its mappings
    made, then stopped): the simulator printed a 100-line "Exception in ASGI application"
    traceback on the demo's terminal, and the demo said "cannot reach the HTTP API at
    http://127.0.0.1:<the simulator's port>: ReadError", the simulator, which was up. The
    simulator answers its push 502, with the adapter's URL and the error; the demo names the
    adapter. Its mappings faked as the adapter takes them; the adapter's port answers none.
    An adapter bound to every interface is called, and named, at the loopback address (it
    was ``http://0.0.0.0:<port>``: :mod:`shared.addresses`)."""
    mapped: list[tuple[str, ...]] = []

    def put_mapping(base: str, app: str, kind: str, external_id: str, *_: Any, **__: Any) -> Any:
        mapped.append((base, app, kind, external_id))
        return {}

    monkeypatch.setattr(demo, "put_mapping", put_mapping)
    adapter = free_port()
    apps = {"shop": {"secret": "t-shop-secret-0001", "api_url": f"http://127.0.0.1:{free_port()}"}}
    settings = Settings(platform_apps=apps, platform_http_port=adapter, token="t", http_host=bound)
    named = "127.0.0.1"  # on this machine, whatever the adapter is bound to
    push = f"http://{named}:{adapter}/platform/shop/push"
    with pytest.raises(OperatorError) as raised:
        await demo.run_platform_demo(settings, seed(), "shop", count=1, timeout=1.0)
    assert {base for base, *_ in mapped} == {f"http://{named}:{adapter}"}, "mapped first"
    assert str(raised.value) == (
        f"the platform adapter cannot be reached at {push} (ConnectError: All connection"
        " attempts failed): is it up (`caravan up`)?"
    ), raised.value
    assert "Traceback" not in capfd.readouterr().err


async def test_the_platform_demo_whose_adapter_is_down_from_the_start_names_the_adapter() -> None:
    """With the adapter down before the demo, its first mapping said "platform API
    unreachable: [Errno 111] Connection refused", as the commands call the adapter's API: the
    demo names the adapter, as it does for a push (is it up?)."""
    adapter = free_port()
    apps = {"shop": {"secret": "t-shop-secret-0001", "api_url": f"http://127.0.0.1:{free_port()}"}}
    settings = Settings(platform_apps=apps, platform_http_port=adapter, token="t")
    with pytest.raises(OperatorError) as raised:
        await demo.run_platform_demo(settings, seed(), "shop", count=1, timeout=1.0)
    assert (str(raised.value), raised.value.exit_code) == (
        f"the platform adapter cannot be reached at http://127.0.0.1:{adapter} (ConnectError:"
        " [Errno 111] Connection refused): is it up (`caravan up`)?",
        2,
    )


def test_a_ctrl_c_while_a_mapping_waits_for_the_adapter_is_not_held() -> None:
    """The demo's mappings were made in ``asyncio.to_thread``'s threads, each call waiting up
    to 10 s for an answer, which ``asyncio.run`` waits for before it returns: a Ctrl-C while
    the adapter took a mapping and did not answer was held those 10 s. Here the adapter's
    port takes the connection and answers nothing; the demo is cancelled once it is taken."""
    apps = {"shop": {"secret": "t-shop-secret-0001", "api_url": f"http://127.0.0.1:{free_port()}"}}
    taken: list[socket.socket] = []
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.setblocking(False)
        port = silent.getsockname()[1]
        settings = Settings(platform_apps=apps, platform_http_port=port, token="t")

        async def ctrl_c_once_a_mapping_waits() -> float:
            running = asyncio.create_task(
                demo.run_platform_demo(settings, seed(), "shop", count=1, timeout=1.0)
            )
            conn, _ = await asyncio.wait_for(asyncio.get_running_loop().sock_accept(silent), 60)
            taken.append(conn)
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            return time.monotonic()

        try:
            cancelled = asyncio.run(ctrl_c_once_a_mapping_waits())
            held = time.monotonic() - cancelled  # asyncio.run's end, after its task's
        finally:
            for conn in taken:
                conn.close()
    assert held < 2, f"asyncio.run returned {held:.1f} s after the demo was cancelled"
