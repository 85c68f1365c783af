"""How the ``caravan`` commands print: one console (and ``err_console``, its stderr twin),
tables that never cut a cell short, and :class:`OperatorError`, a failure said in one line.

Rich shortens a cell that does not fit the terminal to "…", which in an 80-column terminal
turned ``SWN-PEPPER-CAYENNE-1KG`` and ``SWN-PEPPER-POWDER-250G`` into the same ``SWN-PE…``
and a token's creation time into ``2026-12-03T09:12:28+00:…``. Here a table's ``whole``
columns (the ids an operator copies) never wrap, so the others give way first, and a cell
that must give way folds onto more lines instead of losing its end. A table whose whole
columns leave too little room for the others is printed wider than the terminal (its lines
wrap there); piped, a table is as wide as its cells whole (:func:`show`). The console does
not wrap printed lines itself (``soft_wrap``): a long URL or path stays one line to copy.

Nothing printed is read as Rich markup (``markup=False``): what the commands print is data
from outside (a dead letter's error, a SKU, a problem's detail), and a ``[/]`` or
``[parameters: ...]`` in it crashed the command or vanished. Style with ``style=`` or
:class:`rich.text.Text`.
"""

import codecs
import csv
import io
import json
import os
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Column, Table
from rich.text import Text

if TYPE_CHECKING:
    from shared.db.engine import Kind

console = Console(soft_wrap=True, markup=False)
err_console = Console(stderr=True, soft_wrap=True, markup=False)
"""For what is not a command's output: what it says about its output when stdout is the
output itself, to be captured whole (``TOKEN=$(caravan tokens issue ...)``), and the failures
``main()`` says (:class:`OperatorError`, a part of the system it cannot reach)."""


PREPARE_FIRST = "run `caravan prepare` (or `caravan up`) first"
"""What to do about topics or tables that are not there: Kafka or PostgreSQL never prepared."""
NO_DATABASE = "no DATABASE_URL and no local cluster running"
"""A command that needs PostgreSQL where none is named and ``caravan up``'s is not running
(its cluster's folder may be there: stopped, it said "no local cluster" of one there)."""

CHECK_THE_LOGIN = (
    "check the role, its password and the database in DATABASE_URL (or in the file "
    "DATABASE_URL_FILE names)"
)
"""What to do about a login PostgreSQL refuses: the settings that hold it."""
CONNECTIONS_FULL = "its max_connections are all in use: try again once some are closed"
"""What to do about a server with no connection to spare (53300)."""
NAME_A_DATABASE = "name its database in DATABASE_URL, or run `caravan up` first"
"""What to do where no database is named (:data:`NO_DATABASE`)."""


def error_text(exc: BaseException) -> str:
    """What ``exc`` says, or its class where it says nothing (httpx's ``ReadError`` of a
    connection the server closed: an empty ``str``)."""
    return str(exc) or type(exc).__name__


def what_lifts(kind: "Kind") -> str | None:
    """What an operator does about PostgreSQL unusable in this way, as the CLI's one line
    and a refused replay or redrive say it; None where only waiting for it helps."""
    from shared.db.engine import Kind  # here: not for every command

    return {
        Kind.NOT_MIGRATED: PREPARE_FIRST,
        Kind.LOGIN_REFUSED: CHECK_THE_LOGIN,
        Kind.TOO_MANY_CONNECTIONS: CONNECTIONS_FULL,
        Kind.NOT_NAMED: NAME_A_DATABASE,
    }.get(kind)


class OperatorError(Exception):
    """A failure whose cause is known and is the operator's to see to (a tool not installed,
    a service that keeps exiting, a database never migrated, a refusal): ``caravan``'s
    ``main()`` says it in one line on stderr and exits ``exit_code``, not with a traceback,
    which would bury the one line that matters. Raised where the cause is known; anything
    else keeps its traceback, since that is a bug to see."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


FOLDED_WIDTH = 4
"""The least a column that may fold is given before a table is printed wider instead."""


def table(
    *headers: str,
    title: str | None = None,
    whole: Collection[str] = (),
    right: Collection[str] = (),
) -> Table:
    """A table of ``headers``: the ``whole`` columns kept on one line, the ``right`` ones
    right-justified (numbers), no cell ever shortened to "…". Print it with :func:`show`."""
    for name in (*whole, *right):
        if name not in headers:
            raise ValueError(f"no column {name!r} in {headers}")
    columns = [
        Column(h, no_wrap=h in whole, overflow="fold", justify="right" if h in right else "left")
        for h in headers
    ]
    return Table(*columns, title=title)


def show(table: Table, on: Console = console, empty: str | None = None) -> None:
    """Print ``table`` as wide as the terminal, or wider where its whole columns need it.
    Printed to a pipe or a file (no terminal, no width asked for by ``COLUMNS`` or given to
    the console), every cell is whole on its lines, however wide: what ``grep`` wants (a
    pipe was given 80 columns, and ``storefront/walk`` came out as ``stor/efro/nt/w/alk``).
    A table of no rows is ``empty``'s line instead, where it is given (a table of headers
    alone reads as something failed to show)."""
    if empty is not None and not table.row_count:
        on.print(empty)
        return
    piped = not on.is_terminal and on._width is None and "COLUMNS" not in os.environ
    set_widths = [column.width for column in table.columns]
    need = 1  # the left edge; each column adds its padding and a rule
    for column in table.columns:
        if piped:  # as wide as its widest cell: Rich lays it out without measuring it
            column.width = _widest(column)
        need += (column.width or (_widest(column) if column.no_wrap else FOLDED_WIDTH)) + 3
    # Console.print's own width may only narrow it. Rich keeps a width set as fixed: put
    # back what was set (None: read from the terminal again), not the width read now.
    was_set = on._width
    if need > on.width:
        on.width = need
    try:
        on.print(table)
    finally:
        on._width = was_set
        for column, width in zip(table.columns, set_widths, strict=True):
            column.width = width


def listed_title(count: int, what: str, more: bool, first: str = "the newest") -> str:
    """The title of a list read a page at a time up to ``--limit``: how many of ``what`` it
    shows, and, where ``--limit`` left some out, that there are more."""
    return f"{first} {count} {what}: more with a higher --limit" if more else f"{count} {what}"


def none_of(what: str, filters: Mapping[str, object] | None = None) -> str:
    """The line a list of no rows prints instead of its table (:func:`show`'s ``empty``), as
    ``caravan stuck``'s says it: ``no parked event``, or, where the list was filtered, with the
    filters as given (``no order matches --status cancelled --buyer b-1``; a flag given by its
    name alone): a title counting 0 above the headers of an empty table read as something that
    failed to show."""
    given = [
        name if value is True else f"{name} {_given(value)}"
        for name, value in (filters or {}).items()
        if value is not None and value is not False
    ]
    return f"no {what} matches {' '.join(given)}" if given else f"no {what}"


def _given(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _widest(column: Column) -> int:
    """The width of ``column``'s widest line, its header's or a cell's, whole (a
    :class:`Clipped` cell's text whole), from the text: a pipe's table was measured by Rich
    (every cell rendered), then laid out again by its print."""
    cells = [column.header, *column.cells]
    texts = [cell.text if isinstance(cell, Clipped) else str(cell) for cell in cells]
    return max(cell_len(line) for text in texts for line in text.split("\n"))


def shortened(text: str, chars: int) -> str:
    """``text`` in at most ``chars`` characters: whole if it fits, else cut at the last space
    that leaves it at least half its room, with "…" after, not mid-word ("... at line 1
    colum"): what :class:`Clipped` cuts a table cell with, and a tool's error line."""
    if len(text) <= chars:
        return text
    cut = text[: chars - 1]
    space = cut.rfind(" ")
    if space >= chars // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:(") + "…"


class Clipped:
    """A table cell of ``text`` in at most ``lines`` lines of whatever width its column is
    given, cut at a word with "…" (:func:`shortened`) where it runs on: a long text (a
    problem's detail) beside ids that never wrap folded onto ten lines of eight characters
    at 80 columns. Its column gives way first, as a folding column does. ``last``, if given,
    is the cell's last line (cut to one), the text cut to those above it: beside the last
    line of the cells before it (``dlq list``'s discard reason, beside who discarded)."""

    def __init__(self, text: str, lines: int = 2, last: str | None = None) -> None:
        self.text, self.lines, self.last = text, lines, last

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        widest = max(cell_len(self.text), cell_len(self.last or ""))
        return Measurement(min(FOLDED_WIDTH, widest), widest)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        if self.last is None:
            yield Text(_cut(console, self.text, width, self.lines), overflow="fold")
            return
        above = _cut(console, self.text, width, self.lines - 1)
        blank = self.lines - 1 - len(Text(above).wrap(console, width, overflow="fold"))
        last = _cut(console, self.last, width, 1)
        yield Text(f"{above}{chr(10) * blank}\n{last}", overflow="fold")


def _cut(console: Console, text: str, width: int, lines: int) -> str:
    """``text`` cut at a word (:func:`shortened`) to fit ``lines`` lines of ``width``."""
    cut, room = text, len(text)
    while len(Text(cut).wrap(console, width, overflow="fold")) > lines:
        room = min(room, width * lines) - 1
        cut = shortened(text, room)
    return cut


def at(when: datetime | str) -> str:
    """A time as the command line's tables show it (``dlq list``, ``tokens list``, ``stuck``,
    ``platform problems`` and ``callbacks``): to the second, its zone said
    (``2026-12-04T09:12:28+00:00``); ``when`` as read, or in ISO 8601 as an API gives it."""
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    return when.isoformat(timespec="seconds")


def stamped(line: Text, when: datetime | None = None) -> Text:
    """``line`` after the time it is said (now, unless ``when``), as :func:`at` shows times
    and the services' logs are written, in UTC: what ``caravan up``'s watch says (a process
    exited, started again, up again) read in a terminal's scrollback, said when."""
    return Text.assemble((at(when or datetime.now(UTC)), "dim"), " ", line)


def as_json(value: object) -> None:
    """Print ``value`` as JSON on stdout, alone: what a command's ``--json`` prints, for a
    program to read (no Rich: no colour, no wrapping). UTF-8 whatever stdout's own encoding
    is (:func:`_utf8`), as JSON between programs must be (RFC 8259)."""
    _utf8(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _utf8(printed: str, mark: bytes = b"") -> None:
    """Write ``printed`` on stdout as UTF-8 (after ``mark``), whatever the locale of the shell
    that ran the command: a stdout in another locale's encoding could not write a Chinese
    buyer id or reason at all (UnicodeEncodeError), or wrote it in GBK."""
    sys.stdout.flush()  # anything printed before goes first
    sys.stdout.buffer.write(mark + printed.encode("utf-8"))
    sys.stdout.buffer.flush()


def one_output(as_json: bool, as_csv: bool) -> None:
    """Refuse ``--json`` and ``--csv`` given together, before anything is asked (exit 2, as
    an option's bad value): a command prints one or the other."""
    if as_json and as_csv:
        raise OperatorError("--csv or --json, not both", exit_code=2)


FORMULA = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
"""The first characters of a cell that a spreadsheet reads as a formula (OWASP's CSV
Injection, whose list has held the line feed since 2025): a repayment's key ``-2-3`` is
computed to -5, a ``=HYPERLINK(...)`` in a buyer id is a link that sends what the sheet holds
elsewhere. Also the full-width ``＝＋－＠``
(U+FF1D, U+FF0B, U+FF0D, U+FF20), what a Chinese or Japanese input method types for those
four keys: Excel in an East Asian locale reads a formula typed in them as one (it makes them
half-width), and a ``＝cmd|...`` in a CSV was reported run in a Japanese one (OWASP
www-community issue 1088)."""


def as_csv(
    fields: Sequence[str], rows: Iterable[Mapping[str, object]], left: str | None = None
) -> None:
    """Print ``rows`` as CSV on stdout, for a spreadsheet: what a command's ``--csv`` prints.
    UTF-8 after a byte-order mark (:data:`codecs.BOM_UTF8`), whatever stdout's own encoding
    is: Excel on Windows reads a CSV without one in the PC's code page (GBK on a
    Chinese-locale PC), a seller's or buyer's id or a reason in Chinese as mojibake, and a
    stdout in another locale's encoding could not write them at all. Then RFC 4180 as
    Python's csv writes it (CRLF line ends, ``"`` doubled); a header of ``fields``, then a
    row each, of its values of them (a field a row lacks empty, one it has besides left
    out); a number (fen) bare, a text (an id, a time as the API gives it) always quoted, so
    that no ``,`` or ``;`` in it starts a cell of its own in a spreadsheet that splits on
    either; None empty. A text that begins with one of :data:`FORMULA` is written after a
    ``'``, which a spreadsheet shows as text and does not compute (OWASP's advice):
    ``'=HYPERLINK(...)``, also in the file. ``left``, where given, is said on stderr: that
    ``--limit`` left some out (the table's title)."""
    sheet = io.StringIO()
    writer = csv.writer(sheet, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\r\n")
    writer.writerow(fields)
    writer.writerows([_cell(row.get(field)) for field in fields] for row in rows)
    _utf8(sheet.getvalue(), mark=codecs.BOM_UTF8)
    if left is not None:
        err_console.print(left)


def _cell(value: object) -> object:
    """A value as :func:`as_csv` writes it: a text beginning with a formula's character after
    a ``'``, None empty, anything else as it is."""
    if isinstance(value, str) and value.startswith(FORMULA):
        return "'" + value
    return "" if value is None else value
