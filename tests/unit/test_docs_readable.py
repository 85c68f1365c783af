"""The pages people read have no long sentence: the README (a newcomer, and an operator
deciding whether to run it), the architecture and a developer's guide, and the guides an
operator or an integrator works from. Their sentences had run to hundreds of words (1,462 in
operations.md), lists written as prose, with parentheses inside parentheses."""

import re

import pytest

from caravan.checkout import REPO_ROOT

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
    "README.md",
    *sorted(str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.glob("docs/*.md")),
    "bench/README.md",
]
"""The pages held to it: the README, every page of docs/ (a new page too), and the
benchmark's page, which the README gives whoever asks how fast. bench/HISTORY.md is the
benchmark's log, not held to it."""


@pytest.mark.parametrize("page", PAGES)
def test_no_sentence_of_a_page_people_read_first_is_long(page: str) -> None:
    text = (REPO_ROOT / page).read_text()
    assert long_sentences(text) == []


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
