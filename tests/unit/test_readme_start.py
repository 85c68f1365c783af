"""The README's first page, up to its picture, is what a newcomer and an operator read first:
what `make up` gives them is a table of the ports `caravan up` takes, each the code's own
default, with the variable that moves it (its sentences are kept short by
test_docs_readable.py). The ports had been two sentences of 63 and 67 words, with
parentheses inside parentheses."""

import inspect
import re

import pytest

from caravan import cli
from caravan.checkout import LOCAL_PORTS_VAR, REPO_ROOT, local_ports
from caravan.infra.kafka import CONTROLLER_PORT_OFFSET
from caravan.system import HTTP_PORT_VARS
from shared.settings import Settings


def first_page(text: str) -> str:
    return text.split("\n## Architecture\n", 1)[0]


def ports_table(page: str) -> dict[str, tuple[list[int], str]]:
    """The table under ``| what | port |``: each row's ports, and the variable moving them."""
    lines = page.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| what | port |"))
    rows: dict[str, tuple[list[int], str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("| "):
            break
        what, port, move = (cell.strip() for cell in line.strip("|").split("|"))
        found = re.search(r"`(CARAVAN_[A-Z_]+)", move)
        rows[what] = ([int(p) for p in re.findall(r"\d+", port)], found[1] if found else "")
    return rows


def test_the_ports_table_gives_the_defaults_of_caravan_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(LOCAL_PORTS_VAR, raising=False)
    kafka, postgres = local_ports()
    http = Settings.model_fields["http_port"].default
    dashboard = inspect.signature(cli.up).parameters["dashboard_port"].default
    table = ports_table(first_page((REPO_ROOT / "README.md").read_text()))
    by_first_word = {what.split()[0].strip(":"): row for what, row in table.items()}
    assert by_first_word == {
        "Kafka": ([kafka], LOCAL_PORTS_VAR),
        "Kafka's": ([kafka + CONTROLLER_PORT_OFFSET], ""),
        "PostgreSQL": ([postgres], LOCAL_PORTS_VAR),
        "HTTP": ([http + i for i in range(len(HTTP_PORT_VARS))], HTTP_PORT_VARS[0]),
        "the": ([dashboard], cli.DASHBOARD_PORT_VAR),
    }
