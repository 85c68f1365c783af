"""The pages a newcomer to the code reads (README.md, docs/developing.md,
docs/architecture.md) name functions, classes and files that exist: a name of the code
between backticks (one with an underscore, or in CamelCase: `allocate` alone is too plain a
word to check) is a word of the project's Python, and a path of the checkout (under one of
its top folders; `<name>` any folder) is there. A function renamed or folded into another
leaves its old name here to fail, where a newcomer would look for it and find nothing."""

import re
from pathlib import Path

import pytest

from caravan.checkout import REPO_ROOT

PAGES = [
    REPO_ROOT / "README.md",
    REPO_ROOT / "docs" / "developing.md",
    REPO_ROOT / "docs" / "architecture.md",
]
TOP = ("shared", "services", "caravan", "tests", "infra", "bench", "scripts", "docs")
FENCED = re.compile(r"^```.*?^```", flags=re.MULTILINE | re.DOTALL)
CODE = re.compile(r"`([^`\n]+)`")
DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?:\(\))?")
PATH = re.compile(r"[\w.<>-]+(?:/[\w.<>-]*)+")


def python_words() -> set[str]:
    """Every word of the project's Python, but this file's (whose probe names what is gone)."""
    sources = (
        path
        for top in TOP
        for path in (REPO_ROOT / top).rglob("*.py")
        if path != Path(__file__).resolve()
    )
    return {word for path in sources for word in re.findall(r"\w+", path.read_text())}


def looks_like_code(part: str) -> bool:
    """A name no prose would write: snake_case with an underscore inside, or CamelCase."""
    return "_" in part.strip("_") or re.fullmatch(r"[A-Z][a-z0-9]+[A-Z]\w*", part) is not None


def missing(page: Path, words: set[str]) -> list[str]:
    absent = []
    for code in sorted(set(CODE.findall(FENCED.sub("", page.read_text())))):
        if DOTTED.fullmatch(code):
            parts = code.removesuffix("()").split(".")
            absent += [code for part in parts if looks_like_code(part) and part not in words]
        elif PATH.fullmatch(code) and code.split("/")[0] in TOP:
            pattern = re.sub(r"<[^>]*>", "*", code.rstrip("/"))
            if not any(REPO_ROOT.glob(pattern)):
                absent.append(code)
    return absent


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_code_name_and_path_of_the_page_exists(page: Path) -> None:
    assert missing(page, python_words()) == []


def test_a_name_or_path_gone_is_found() -> None:
    page = REPO_ROOT / ".cache" / "code-names-probe.md"
    page.parent.mkdir(exist_ok=True)
    page.write_text(
        "`record_charge` in `services/payments/prepaid.py`, `Order._maybe_confirm`, "
        "`services/<name>/bootstrap.py`, `services/payments/gone.py`, `NoSuchModel`"
    )
    try:
        assert missing(page, python_words()) == [
            "NoSuchModel",
            "record_charge",
            "services/payments/gone.py",
        ]
    finally:
        page.unlink()
