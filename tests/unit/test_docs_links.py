"""Every relative link of the README and of docs/ leads somewhere: the file it names exists,
and its `#anchor`, if any, is a heading of that file as GitHub names it (lower case, spaces
to '-', punctuation dropped, a repeated heading numbered -1, -2, ...)."""

import re
from pathlib import Path

import pytest

from caravan.checkout import REPO_ROOT

PAGES = sorted(
    [REPO_ROOT / "README.md", REPO_ROOT / "bench" / "README.md", *(REPO_ROOT / "docs").glob("*.md")]
)
FENCED = re.compile(r"^```.*?^```", flags=re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", flags=re.MULTILINE)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, markup and punctuation dropped
    (but '-' and '_'), each space a '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    names = set()
    for heading in HEADING.findall(FENCED.sub("", page.read_text())):
        name = anchor(heading)
        count = seen.get(name, 0)
        seen[name] = count + 1
        names.add(f"{name}-{count}" if count else name)
    return names


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(FENCED.sub("", page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked.relative_to(REPO_ROOT)}")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no heading #{fragment} in {linked.relative_to(REPO_ROOT)}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO_ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_anchors_are_named_as_github_names_them() -> None:
    assert anchor("Marketplace platforms (the platform adapter)") == (
        "marketplace-platforms-the-platform-adapter"
    )
    assert anchor("What `make up` and `make test` need and do") == (
        "what-make-up-and-make-test-need-and-do"
    )
    assert anchor("Pushing an order: `POST /platform/{app}/push`") == (
        "pushing-an-order-post-platformapppush"
    )
    assert anchor("Reading Caravan's topics") == "reading-caravans-topics"
