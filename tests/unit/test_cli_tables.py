"""What ``caravan tokens list`` and ``caravan inventory stock`` print, read at 80 columns:
each token's scopes apart, each SKU's figures under headers that are not broken up. The
database and the admin API are faked."""

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from caravan import cli, inventory_cli, output, platform_cli, tokens_cli
from shared.auth.tokens import TokenInfo

SKUS = ["YNG-HONEY-BLACKBEE-500G", "SWN-PEPPER-CAYENNE-1KG"]  # the demo's longest SKUs
FIGURES = ("received", "available", "reserved", "sold", "spoiled", "sellable", "expired_unsold")


def shown(monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    monkeypatch.setenv("COLUMNS", "80")  # read by Rich each time; not console.width, whose
    # undo would pin the width it read then on the console for every later test
    done = CliRunner().invoke(cli.app, list(args))
    assert done.exit_code == 0, done.output
    return done.output


def test_a_tokens_scopes_are_listed_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    at = datetime(2026, 12, 3, 9, 12, 28, tzinfo=UTC)
    listed = [TokenInfo("desk", ["ops", "orders:read"], at, None)]

    async def in_tx(database_url: str, work: object) -> list[TokenInfo]:
        return listed

    monkeypatch.setattr(tokens_cli, "_in_tx", in_tx)
    monkeypatch.setattr(tokens_cli, "_database_url", lambda: "postgresql://caravan@db/caravan")
    assert "ops, orders:read" in shown(monkeypatch, "tokens", "list")


def test_the_stock_of_every_sku_fits_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    def pages(base: str, service: str, path: str) -> Iterator[dict[str, Any]]:
        yield {"skus": [{"sku": sku, **dict.fromkeys(FIGURES, 1234)} for sku in SKUS]}

    monkeypatch.setattr(inventory_cli, "pages", pages)
    text = shown(monkeypatch, "inventory", "stock", "--url", "http://api")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    heads = [[cell.strip() for cell in line.split("┃")[1:-1]] for line in lines if "sku" in line]
    assert heads == [["sku", "recv", "avail", "resv", "sold", "spoil", "sell", "exp"]], text
    for sku in SKUS:  # one line each, every figure whole on it
        assert [line.count("1234") for line in lines if sku in line] == [len(FIGURES)], text


def test_a_platform_problem_s_long_detail_is_cut_at_a_word() -> None:
    detail = "unmapped SKU " + ", ".join(f"ALI-SKU-{n:03d}" for n in range(20))
    listed = {
        "app": "t-market",
        "platform_order_id": "P-1",
        "kind": "unmapped_sku",
        "detail": detail,
        "occurrences": 2,
        "first_seen_at": "2026-12-04T09:12:28.123456+00:00",
        "resolved_at": None,
    }
    wide = Console(width=200, file=io.StringIO())
    output.show(platform_cli.problems_table([listed]), on=wide)
    [row] = [line for line in wide.file.getvalue().splitlines() if "P-1" in line]  # type: ignore[attr-defined]
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    shortened = "unmapped SKU ALI-SKU-000, ALI-SKU-001, ALI-SKU-002, ALI-SKU-003, ALI-SKU-004…"
    assert cells == ["t-market", "P-1", "unmapped_sku", "2026-12-04 09:12", "2", shortened]
