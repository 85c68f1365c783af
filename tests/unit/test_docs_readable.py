"""The pages people read first have no long sentence: the README's first page (a newcomer
and an operator deciding whether to run it) and docs/running.md (what an operator reads to
start, stop, upgrade and go back). Their sentences had run to 67 and 359 words, lists
written as prose, with parentheses inside parentheses (the longest was what taking a schema
back refuses)."""

import re
from collections.abc import Callable

import pytest

from caravan.checkout import REPO_ROOT
from tests.unit.test_readme_start import first_page

LONGEST = 30  # words in a sentence


def sentences(page: str) -> list[str]:
    """The prose of ``page``: code blocks, tables and headings left out, a link by its text,
    each paragraph or list item (nested ones too) split into its sentences."""
    prose = re.sub(r"^\s*```.*?^\s*```", "", page, flags=re.MULTILINE | re.DOTALL)
    prose = re.sub(r"^[|#].*$", "", prose, flags=re.MULTILINE)
    prose = re.sub(r"\]\([^)]*\)", "]", prose)
    found = []
    for block in re.split(r"\n\s*\n|\n\s*(?=- |\d+\. )", prose):
        found += re.split(r'(?<=[.!?])\s+(?=[A-Z(`\["])', " ".join(block.split()))
    return [s for s in found if s]


def long_sentences(page: str) -> list[str]:
    return [f"{len(s.split())} words: {s}" for s in sentences(page) if len(s.split()) > LONGEST]


PAGES: dict[str, Callable[[], str]] = {
    "README.md, its first page": lambda: first_page((REPO_ROOT / "README.md").read_text()),
    "docs/running.md": lambda: (REPO_ROOT / "docs" / "running.md").read_text(),
    "docs/configuration.md": lambda: (REPO_ROOT / "docs" / "configuration.md").read_text(),
    "docs/http.md": lambda: (REPO_ROOT / "docs" / "http.md").read_text(),
    "docs/operations.md": lambda: (REPO_ROOT / "docs" / "operations.md").read_text(),
    "docs/commands.md": lambda: (REPO_ROOT / "docs" / "commands.md").read_text(),
}
"""The pages held to it: a page rewritten for reading joins them."""


@pytest.mark.parametrize("page", PAGES)
def test_no_sentence_of_a_page_people_read_first_is_long(page: str) -> None:
    assert long_sentences(PAGES[page]()) == []


def test_sentences_are_split_as_a_reader_reads_them() -> None:
    page = (
        '# T\n\nOne two. Three (`x`) four. "Five" six.\n\n- an item. Another\n  sentence.\n'
        "  - a nested item\n1. a step\n\n  ```sh\n  make up   # a long comment. Not prose\n"
        "  ```\n| a | table |\n[a link](x.md#y) here.\n"
    )
    assert sentences(page) == [
        "One two.",
        "Three (`x`) four.",
        '"Five" six.',
        "- an item.",
        "Another sentence.",
        "- a nested item",
        "1. a step",
        "[a link] here.",
    ]
