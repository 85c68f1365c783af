"""The README's first page, up to its picture, is what a newcomer and an operator read first:
what `make up` gives them is a table of the ports `caravan up` takes, each the code's own
default, with the variable that moves it; and no sentence is long. The ports had been two
sentences of 63 and 67 words, with parentheses inside parentheses."""

import inspect
import re

import pytest

from caravan import cli
from caravan.checkout import LOCAL_PORTS_VAR, REPO_ROOT, local_ports
from caravan.infra.kafka import CONTROLLER_PORT_OFFSET
from caravan.system import HTTP_PORT_VARS
from shared.settings import Settings

LONGEST = 30  # words in a sentence of the first page


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


def sentences(page: str) -> list[str]:
    """The prose of ``page``: code blocks, tables and headings left out, a link by its text,
    each paragraph or list item split into its sentences."""
    prose = re.sub(r"^```.*?^```", "", page, flags=re.MULTILINE | re.DOTALL)
    prose = re.sub(r"^[|#].*$", "", prose, flags=re.MULTILINE)
    prose = re.sub(r"\]\([^)]*\)", "]", prose)
    found = []
    for block in re.split(r"\n\s*\n|\n(?=- |\d+\. )", prose):
        found += re.split(r"(?<=[.!?])\s+(?=[A-Z(`\[])", " ".join(block.split()))
    return [s for s in found if s]


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


def test_no_sentence_of_the_first_page_is_long() -> None:
    long = [
        s
        for s in sentences(first_page((REPO_ROOT / "README.md").read_text()))
        if len(s.split()) > LONGEST
    ]
    assert long == []


def test_sentences_are_split_as_a_reader_reads_them() -> None:
    page = (
        "# T\n\nOne two. Three (`x`) four.\n\n- an item. Another\n  sentence.\n"
        "1. a step\n\n```sh\nmake up   # a long comment. Not prose\n```\n"
        "| a | b |\n\n[a link](docs/x.md#y) ends."
    )
    assert sentences(page) == [
        "One two.",
        "Three (`x`) four.",
        "- an item.",
        "Another sentence.",
        "1. a step",
        "[a link] ends.",
    ]
