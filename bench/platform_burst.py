"""A marketplace's burst of pushes: N signed pushes sent at once to the platform adapter of
a running system (``caravan up`` with ``CARAVAN_PLATFORM_APPS`` naming the app, whose
``api_url`` is a platform simulator this script starts), each of its own new paid order.

    .venv/bin/python bench/platform_burst.py --adapter http://127.0.0.1:8084 \\
        --app demo-market --sim-port 8094 --sku MKT-PEPPER --buyer nick-1 \\
        --bursts 100,200,500 --log .cache/logs/platform.log

(the app's secret in ``CARAVAN_PLATFORM_SIMULATOR_SECRET``).

Reports, per burst (one JSON line): the answers by status (a 200 by its ``status``, another
by its detail), the time to each answer (p50, p99, the longest), the
adapter's pool connections in use at most (``caravan_db_pool_connections``, sampled from its
``/metrics`` every 0.2 s, with ``CARAVAN_TOKEN`` or ``caravan up``'s token), the order API's
fetches, the adapter's CPU seconds (its process's, from ``/proc``), and the answers of the
same pushes sent again at once after the burst (each must be ``accepted`` or ``duplicate``,
never a second order, or a 503 again). The 503s' ``Retry-After`` values are counted apart;
with ``--log`` (the adapter's), so are the warnings of pushes turned away it wrote.
"""

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.platform.domain.signing import signed


def pusher(app: str, secret: str) -> Any:
    def params(order_id: str) -> dict[str, str]:
        stamp = str(int(datetime.now(UTC).timestamp()))
        base = {
            "app_key": app,
            "push_id": uuid.uuid4().hex,
            "timestamp": stamp,
            "order_id": order_id,
            "event": "order_created",
        }
        return signed(base, secret)

    return params


async def pool_in_use(adapter: httpx.AsyncClient) -> int | None:
    try:
        text = (await adapter.get("/metrics", timeout=2)).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("caravan_db_pool_connections") and 'state="in_use"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return None


def dev_token() -> str:
    """A token reading ``/metrics``: ``CARAVAN_TOKEN``, else ``caravan up``'s."""
    return os.environ.get("CARAVAN_TOKEN") or Path(".cache/dev-token").read_text().strip()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def adapter_pid(port: int) -> int | None:
    found = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout
    marker = "pid="
    if marker not in found:
        return None
    return int(found.split(marker, 1)[1].split(",", 1)[0])


BUSY_LINE = "not taken in time"
"""The words of the adapter's warnings of a push turned away busy."""
BURST_WINDOW = 10.0
"""The adapter's window after a burst's first such warning (shared.logs.Burst)."""


def warned(log: Path, since: int) -> int:
    """The warnings of pushes turned away busy written to the adapter's ``log`` after byte
    ``since``."""
    with log.open("rb") as lines:
        lines.seek(since)
        return sum(
            1 for line in lines if b'"level": "warning"' in line and BUSY_LINE.encode() in line
        )


async def burst(
    n: int,
    adapter: httpx.AsyncClient,
    sim: httpx.AsyncClient,
    params_of: Any,
    app: str,
    sku: str,
    buyer: str,
    pid: int | None,
    log: Path | None = None,
) -> dict[str, Any]:
    order_ids = [f"B-{uuid.uuid4().hex[:12]}" for _ in range(n)]
    for order_id in order_ids:
        body = {
            "order_id": order_id,
            "status": "paid",
            "buyer": {"id": buyer, "phone": "+8613900000001"},
            "items": [{"sku": sku, "quantity": 1}],
            "delivery": {"county": "Shawan", "address": "Village 3"},
        }
        made = await sim.post("/orders", json=body)
        made.raise_for_status()
    pushes = [params_of(o) for o in order_ids]
    fetched_before = len((await sim.get("/fetches")).json())
    peak_pool = 0
    done = asyncio.Event()
    token = dev_token()

    async def sample() -> None:
        nonlocal peak_pool
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=str(adapter.base_url), headers=headers) as own:
            while not done.is_set():
                used = await pool_in_use(own)
                peak_pool = max(peak_pool, used or 0)
                await asyncio.sleep(0.2)

    async def one(params: dict[str, str]) -> tuple[float, int, str, str | None]:
        began = time.monotonic()
        try:
            answer = await adapter.post(f"/platform/{app}/push", json=params)
        except httpx.HTTPError as exc:
            return time.monotonic() - began, 0, type(exc).__name__, None
        took = time.monotonic() - began
        body = answer.json() if answer.headers.get("content-type", "").find("json") >= 0 else {}
        said = body.get("status") if answer.status_code == 200 else body.get("detail", "")
        return took, answer.status_code, str(said)[:90], answer.headers.get("retry-after")

    cpu_before = cpu_seconds(pid) if pid else None
    log_before = log.stat().st_size if log else 0  # noqa: ASYNC240 (once, before the burst)
    sampler = asyncio.create_task(sample())
    began = time.monotonic()
    answers = await asyncio.gather(*(one(p) for p in pushes))
    wall = time.monotonic() - began
    done.set()
    await sampler
    cpu = cpu_seconds(pid) - cpu_before if pid and cpu_before is not None else None
    fetches = (await sim.get("/fetches")).json()[fetched_before:]
    times = sorted(a[0] for a in answers)
    counted = Counter(f"{a[1]} {re.sub(r'[0-9]+ pushes', 'N pushes', a[2])}" for a in answers)
    # Each pushed again: accepted (it was not placed) or duplicate, never a second order.
    again = await asyncio.gather(*(one({**p}) for p in pushes))
    again_counted = Counter(f"{a[1]} {re.sub(r'[0-9]+ pushes', 'N pushes', a[2])}" for a in again)
    if log:
        await asyncio.sleep(BURST_WINDOW + 1)  # its last summary line logged
    warnings = warned(log, log_before) if log else None
    return {
        "pushes": n,
        "wall_s": round(wall, 2),
        "p50_s": round(statistics.median(times), 2),
        "p99_s": round(times[min(n - 1, int(n * 0.99))], 2),
        "max_s": round(times[-1], 2),
        "answers": dict(counted.most_common()),
        "retry_after": dict(sorted(Counter(int(a[3]) for a in answers if a[3]).items())),
        "busy_warning_lines": warnings,
        "pushed_again": dict(again_counted.most_common()),
        "pool_in_use_at_most": peak_pool,
        "fetches": len(fetches),
        "adapter_cpu_s": None if cpu is None else round(cpu, 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", required=True, help="the adapter's base URL")
    parser.add_argument("--app", required=True)
    parser.add_argument("--secret", default=os.environ.get("CARAVAN_PLATFORM_SIMULATOR_SECRET"))
    parser.add_argument("--sim-port", type=int, required=True, help="the app's api_url port")
    parser.add_argument("--sku", required=True, help="a platform SKU mapped to one of ours")
    parser.add_argument("--buyer", required=True, help="a platform buyer mapped to one of ours")
    parser.add_argument("--bursts", default="100,200,500")
    parser.add_argument("--pause", type=float, default=10.0, help="seconds between bursts")
    parser.add_argument("--label", default="")
    parser.add_argument(
        "--log", type=Path, help="the adapter's log (.cache/logs/platform.log under caravan up)"
    )
    args = parser.parse_args()
    if not args.secret:
        parser.error("the app's secret: --secret or CARAVAN_PLATFORM_SIMULATOR_SECRET")
    push_url = f"{args.adapter}/platform/{args.app}/push"
    command = [sys.executable, "-m", "services.platform.simulator", "--port", str(args.sim_port)]
    sim_proc = subprocess.Popen(  # noqa: ASYNC220 (started once, before the bursts)
        [*command, "--app", args.app, "--callback", push_url],
        env={**os.environ, "CARAVAN_PLATFORM_SIMULATOR_SECRET": args.secret},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    try:
        async with (
            httpx.AsyncClient(base_url=args.adapter, timeout=60, limits=limits) as adapter,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{args.sim_port}", timeout=10) as sim,
        ):
            for _ in range(100):
                try:
                    if (await sim.get("/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
            pid = adapter_pid(int(args.adapter.rsplit(":", 1)[1].split("/")[0]))
            params_of = pusher(args.app, args.secret)
            for i, n in enumerate(int(b) for b in args.bursts.split(",")):
                if i:
                    await asyncio.sleep(args.pause)
                loadavg = os.getloadavg()[0]
                found = await burst(
                    n, adapter, sim, params_of, args.app, args.sku, args.buyer, pid, args.log
                )
                found["label"] = args.label
                found["loadavg_before"] = round(loadavg, 2)
                found["at"] = datetime.now(UTC).isoformat(timespec="seconds")
                print(json.dumps(found), flush=True)
    finally:
        sim_proc.terminate()
        sim_proc.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
