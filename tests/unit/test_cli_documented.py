"""Every command and option of the ``caravan`` CLI is described in docs/commands.md, and
every option the docs give a ``caravan`` command is one it has.

A command is described by its row of the summary table (the row's first cell names
``caravan <command>``, or ``caravan <group> a\\|b`` for several of a group's), by a section
of "Commands in detail" whose heading names it, and, in a group's section (``### caravan
inventory``), by the item that begins with its name (``- `adjust LOT --delta N```). Each of
its options is named in one of those, but ``--url``, which the page says once that every
command of ``caravan inventory``, ``payments`` and ``platform`` takes. ``payments repay
--amount`` and ``--key``, ``credit-adjust --key``, ``inventory add-lot --from`` and
``--best-before`` and ``inventory spoiled --sku`` were in none.

The other way, each ``caravan ...`` that any page of docs/ (and the READMEs) writes as code
names commands there are, and options of the command it names; and every option the page
names is one of some command's."""

import re

from typer._click.core import Command
from typer.core import TyperGroup

from caravan.checkout import REPO_ROOT
from tests.unit.test_cli_help import commands
from tests.unit.test_settings_documented import DOCS

PAGE = REPO_ROOT / "docs" / "commands.md"
SHARED = {"--url": ("inventory", "payments", "platform")}
SHARED_SAID = "each of their commands takes `--url`"
MISTYPED = {"--limt"}  # the page's example of an option refused as mistyped
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z-]*")

Path_ = tuple[str, ...]  # a command's names after caravan


def options(command: Command) -> set[str]:
    """Its long options, and ``--help``, which every command has (and the page names once)."""
    return {"--help", *(o for param in command.params for o in param.opts if o[:2] == "--")}


def words(text: str) -> set[str]:
    """The lowercase names in ``text``, its options left out (``--demo`` is not ``demo``)."""
    return set(re.findall(r"(?<![\w-])[a-z][a-z-]*", OPTION.sub(" ", text)))


def rows(page: str) -> list[tuple[str, str]]:
    """The summary table's rows: the first cell, and the row whole."""
    return [(line.split(" | ")[0], line) for line in page.splitlines() if line.startswith("| `")]


def sections(page: str) -> list[tuple[str, str]]:
    """The headings of "Commands in detail", each with its text."""
    detail = page.split("\n## Commands in detail\n", 1)[1]
    parts = re.split(r"^### (.*)$", detail, flags=re.MULTILINE)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def items(text: str) -> list[tuple[str, str]]:
    """A section's items: the names their first code spans begin with, and the item whole."""
    found = []
    for item in re.split(r"^- ", text, flags=re.MULTILINE)[1:]:
        lead = item.split("`:", 1)[0]
        found.append((" ".join(re.findall(r"`([a-z][a-z-]*)", lead)), item))
    return found


def described(page: str, path: Path_) -> str:
    """What the page says of the command at ``path``: its rows, sections and items."""
    text = []
    for cell, row in rows(page):
        if f"`caravan {path[0]}" in cell and set(path) <= words(cell):
            text.append(row)
    for heading, section in sections(page):
        if "caravan" in heading and set(path) <= words(heading):
            text.append(section)
        elif len(path) > 1 and words(heading) == {"caravan", *path[:-1]}:
            text += [item for names, item in items(section) if path[-1] in names.split()]
    return "\n".join(text)


def spans(text: str) -> list[str]:
    """Each ``caravan ...`` the docs write as code: a span, or a line of a code block."""
    found = re.findall(r"(?<!`)`(caravan [^`]+)`", text)
    return found + re.findall(r"^\$? ?(caravan .+)$", text, flags=re.MULTILINE)


def command_of(span: str, known: dict[Path_, Command]) -> tuple[Path_, list[str]]:
    """The longest command path ``span`` begins with, and the words after it: a group's
    first (``stock\\|lot``) its commands."""
    names = span.split()[1:]
    path: Path_ = ()
    while names and (*path, names[0]) in known:
        path, names = (*path, names[0]), names[1:]
    if names and isinstance(known.get(path), TyperGroup):
        return path, re.findall(r"[a-z][a-z-]*", names[0].split("[")[0])
    return path, []


def test_every_command_and_option_is_described() -> None:
    page = PAGE.read_text()
    assert SHARED_SAID in " ".join(page.split())
    known = commands()
    assert ("payments", "repay") in known and ("dlq", "show") in known
    undescribed, unnamed = [], {}
    for path, command in known.items():
        text = described(page, path)
        if not text:
            undescribed.append(" ".join(path))
            continue
        shared = {o for o, groups in SHARED.items() if path[0] in groups}
        said = set(OPTION.findall(text))
        missing = sorted(options(command) - shared - said - {"--help"})
        if missing:
            unnamed[" ".join(path)] = missing
    assert undescribed == [], f"commands docs/commands.md does not describe: {undescribed}"
    assert unnamed == {}, f"options docs/commands.md does not name with their command: {unnamed}"


def test_every_option_the_docs_name_exists() -> None:
    known = commands()
    every = set().union(*(options(command) for command in known.values()))
    wrong = {}
    for doc in DOCS:
        text = doc.read_text()
        for span in spans(text):
            path, commands_named = command_of(span, known)
            command = known.get(path)
            if command is None or {(*path, name) for name in commands_named} - known.keys():
                wrong[f"{doc.name}: {span}"] = "no such command"
            elif bad := sorted(set(OPTION.findall(span)) - options(command)):
                wrong[f"{doc.name}: {span}"] = f"caravan {' '.join(path)} has no {bad}"
    strays = sorted(set(OPTION.findall(PAGE.read_text())) - every - MISTYPED)
    assert wrong == {}, wrong
    assert strays == [], f"options docs/commands.md names that no command has: {strays}"
