"""The ``caravan`` command line (CONTRACT.md, Command line)."""

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from caravan import system
from caravan.demo import run_demo
from caravan.seeding import load
from shared.seed import SeedFile
from shared.settings import Settings

# The broker's clients log every refused connection while Kafka starts; the CLI reports itself.
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

app = typer.Typer(
    help="Caravan: order processing for rural produce marketplaces.", no_args_is_help=True
)
console = Console()
DEMO_SEED = system.REPO_ROOT.parent / "shared" / "data" / "shawan-demo.json"


def _seed_file(path: Path | None) -> SeedFile:
    chosen = path or DEMO_SEED
    if not chosen.exists():
        raise typer.BadParameter(f"{chosen} does not exist")
    return SeedFile.load(chosen)


def _database_url() -> str:
    url = Settings().database_url
    if url:
        return url
    from caravan.infra.postgres import LocalPostgres

    pg = LocalPostgres(system.CACHE / "postgres-54329", port=54329)
    if not pg.is_running():
        raise typer.BadParameter("no DATABASE_URL and no local cluster: run `caravan up` first")
    return pg.url


@app.command()
def up(
    demo: Annotated[
        bool, typer.Option(help="seed demo data and drive demo orders once ready")
    ] = False,
    seed_file: Annotated[Path | None, typer.Option("--seed", help="seed file for --demo")] = None,
    orders: Annotated[int, typer.Option(help="demo orders to drive")] = 20,
    kafka_nodes: Annotated[int, typer.Option(help="local Kafka nodes: 1, or 3 for a cluster")] = 1,
) -> None:
    """Start Kafka, PostgreSQL, the four services and the HTTP API; Ctrl-C stops all of it."""
    settings = Settings()
    started = time.monotonic()
    rf = min(kafka_nodes, 3)
    with console.status("starting Kafka and PostgreSQL"):
        infra = system.start_infrastructure(
            kafka_nodes=kafka_nodes, kafka_port=9092 if kafka_nodes == 1 else 19092
        )
    procs = system.ServiceProcesses(
        system.service_env(infra, settings.http_port), system.CACHE / "logs"
    )
    try:
        console.print(f"Kafka: {infra.kafka_bootstrap} [dim]({infra.kafka_path})[/dim]")
        console.print(f"PostgreSQL: {infra.database_url} [dim]({infra.postgres_path})[/dim]")
        with console.status("creating topics and migrating schemas"):
            asyncio.run(system.prepare(infra.kafka_bootstrap, infra.database_url, rf=rf))
        with console.status("starting services"):
            procs.start()
            base = f"http://{settings.http_host}:{settings.http_port}"
            system.wait_ready(procs)
        console.print(
            f"[green]ready[/green] in {time.monotonic() - started:.1f}s: HTTP API on {base}, "
            f"service logs in {procs.log_dir}"
        )
        if demo:
            seed = _seed_file(seed_file)
            asyncio.run(load(infra.database_url, seed))
            asyncio.run(run_demo(infra.kafka_bootstrap, seed, count=orders, console=console))
        console.print("Press Ctrl-C to stop.")
        while True:
            procs.check_alive()
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        procs.stop()
        infra.stop()
        console.print("stopped")


@app.command()
def prepare() -> None:
    """Create the topics and migrate every schema on the Kafka and PostgreSQL that the
    environment names (for deployments; ``caravan up`` does this itself)."""
    settings = Settings()
    asyncio.run(system.prepare(settings.kafka_bootstrap_servers, _database_url()))
    console.print("topics created and schemas migrated")


@app.command()
def seed(file: Annotated[Path, typer.Argument(help="a seed file, as in CONTRACT.md")]) -> None:
    """Load sellers, products, harvest lots and credit lines; loading twice changes nothing."""
    data = _seed_file(file)
    asyncio.run(load(_database_url(), data))
    console.print(
        f"seeded {len(data.sellers)} sellers, {len(data.products)} products, "
        f"{len(data.lots)} lots, {len(data.buyers)} buyers"
    )


@app.command()
def demo(
    seed_file: Annotated[Path | None, typer.Option("--seed")] = None,
    orders: Annotated[int, typer.Option()] = 20,
) -> None:
    """Seed demo data and drive storefront orders through the running system."""
    data = _seed_file(seed_file)
    asyncio.run(load(_database_url(), data))
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", Settings().kafka_bootstrap_servers)
    outcomes = asyncio.run(run_demo(bootstrap, data, count=orders, console=console))
    if any(o.status == "pending" for o in outcomes):
        raise typer.Exit(1)
