"""The pages people read most have no long sentence: the README's first page (a newcomer,
and an operator deciding whether to run it), and the guides an operator works from (running,
configuration, the HTTP API, operations, the commands). Their sentences had run to 67, 359,
146, 299, 1,462 and 503 words, lists written as prose, with parentheses inside parentheses."""

import re

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


PAGES = [
    "README.md",  # its first page, up to the picture
    "docs/running.md",
    "docs/configuration.md",
    "docs/http.md",
    "docs/operations.md",
    "docs/commands.md",
    "docs/security.md",
    "docs/guarantees.md",
    "docs/topics.md",
    "docs/platform.md",
    "docs/platform-adapter.md",
    "docs/personal-data.md",
]
"""The pages held to it: a page rewritten for reading joins them."""


@pytest.mark.parametrize("page", PAGES)
def test_no_sentence_of_a_page_people_read_first_is_long(page: str) -> None:
    text = (REPO_ROOT / page).read_text()
    assert long_sentences(first_page(text) if page == "README.md" else text) == []


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
