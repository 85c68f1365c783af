"""A platform app's secret never on a command line, where ``ps`` shows it to every user of
the machine: ``caravan demo --platform-orders N`` started its platform simulator with
``--secret <the app's secret>``. The simulator takes it from its environment
(``CARAVAN_PLATFORM_SIMULATOR_SECRET``, or a file ``..._FILE`` names), as the services take
theirs (docs/security.md)."""

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from caravan import demo
from caravan.checkout import REPO_ROOT
from caravan.output import OperatorError
from services.platform.domain.signing import signed
from services.platform.simulator import SECRET_VARIABLE
from shared.settings import Settings
from tests.harness import free_port
from tests.unit.test_demo_seed import seed
from tests.unit.test_simulators_say_where import started

SECRET = "t-shop-secret-0001-unseen"


async def test_the_platform_demo_gives_its_simulator_the_secret_out_of_ps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The demo's simulator (the adapter down: the demo stops once its simulator is up) is
    started with no secret on its command line, as ``/proc/<pid>/cmdline`` (what ``ps``
    reads) shows it; it has the secret, in its environment, which only its user reads."""
    seen: list[tuple[bytes, bytes]] = []
    start = asyncio.create_subprocess_exec

    async def started(*argv: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await start(*argv, **kwargs)
        pid = Path(f"/proc/{proc.pid}")
        seen.append(((pid / "cmdline").read_bytes(), (pid / "environ").read_bytes()))
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", started)
    apps = {"shop": {"secret": SECRET, "api_url": f"http://127.0.0.1:{free_port()}"}}
    settings = Settings(platform_apps=apps, platform_http_port=free_port(), token="t")
    with pytest.raises(OperatorError, match="the platform adapter cannot be reached"):
        await demo.run_platform_demo(settings, seed(), "shop", count=1, timeout=1.0)
    ((cmdline, environ),) = seen
    assert b"platform.simulator" in cmdline, cmdline
    assert SECRET.encode() not in cmdline, cmdline.replace(b"\0", b" ")
    assert f"{SECRET_VARIABLE}={SECRET}".encode() in environ.split(b"\0")


def test_the_simulator_takes_its_secret_from_a_file_and_the_help_says_so(
    tmp_path: Path,
) -> None:
    """Its order API answers a fetch signed with the secret in the file
    ``CARAVAN_PLATFORM_SIMULATOR_SECRET_FILE`` names (401 for another); its ``--help`` says
    where the secret may come from, and that ``--secret`` shows it to ``ps``; ``caravan demo
    --help`` that the demo gives it so."""
    said = helped("services.platform.simulator")
    assert f"{SECRET_VARIABLE} (or a file {SECRET_VARIABLE}_FILE names)" in said, said
    assert "`ps` shows it to every user of the machine" in said, said
    said = helped("caravan", "demo")
    assert "its secret is given to the simulator in its environment, never on a command" in said
    (tmp_path / "secret").write_text(SECRET + "\n")
    env = {"PATH": "/usr/bin:/bin", f"{SECRET_VARIABLE}_FILE": str(tmp_path / "secret")}
    argv = ("--app", "shop", "--callback", "http://127.0.0.1:1/push")
    with started("services.platform.simulator", *argv, env=env) as (port, line):
        assert "listening on" in line, line
        base = f"http://127.0.0.1:{port}"
        buyer = {"id": "nick", "phone": "+8613912345678"}
        items = [{"sku": "MKT-PEPPER", "quantity": 1}]
        order = {"order_id": "P-1", "status": "paid", "buyer": buyer, "items": items}
        assert httpx.post(f"{base}/orders", json=order, timeout=10).is_success

        def fetched(secret: str) -> int:
            params = {"app_key": "shop", "timestamp": str(int(time.time()))}
            asked = signed(params, secret)
            return httpx.get(f"{base}/orders/P-1", params=asked, timeout=10).status_code

        assert (fetched(SECRET), fetched("t-another-secret-0002")) == (200, 401)


def helped(module: str, *command: str) -> str:
    """``python -m <module> <command> --help``'s words, wide, one space apart."""
    said = subprocess.run(
        [sys.executable, "-m", module, *command, "--help"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
        check=True,
    ).stdout
    return " ".join(said.replace("│", " ").split())
