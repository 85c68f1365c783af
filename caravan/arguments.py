"""How a ``caravan`` command reads a negative number given as an argument, and a time given
as an option (:func:`time_option`).

A negative number:

Click reads ``-5000`` as the short options ``-5``, ``-0``, ... and refuses it ("No such
option: -5") unless it follows ``--``: ``caravan payments credit-set BUYER -5`` said
something about options, not about the limit. A command made with ``cls=NegativeNumbers``
reads a word that begins with ``-`` and a digit as an argument: a negative delta is that
number, and a number that may not be negative is refused by the argument's own bounds
(``min=0``), as any other bad value of it is. Every other word that begins with ``-`` is still
an option, so a mistyped one (``--limt``) is refused as Click refuses it ("No such option");
an argument that begins with ``-`` and a letter (a buyer ``-abc``) follows ``--``.

Click's ``ignore_unknown_options``, used before, let negative numbers through but every
mistyped option too, which then became an argument ("Got unexpected extra argument(s) (--kye
ca-3)", or a buyer named ``--kye``). This builds on the parser of the Click that Typer carries
(``typer._click``), where ``_process_opts`` is the one place a word beginning with ``-`` is
read as options: ``tests/unit/test_cli_negative_numbers.py`` fails if a Typer upgrade moves it."""

import re
from datetime import UTC, date, datetime
from typing import Any

import typer
from typer._click.core import Context
from typer._click.parser import _OptionParser, _ParsingState
from typer.core import TyperCommand

from shared import days

NUMBER = re.compile(r"-\.?\d")
"""The beginning of a negative number (``-5``, ``-0.5``, ``-.5``): no option of ``caravan``
begins with a digit."""


class _NumbersParser(_OptionParser):
    def _process_opts(self, arg: str, state: _ParsingState) -> None:
        if NUMBER.match(arg):
            state.largs.append(arg)
        else:
            super()._process_opts(arg, state)


class NegativeNumbers(TyperCommand):
    """The command class (``@app.command(..., cls=NegativeNumbers)``) of a command that takes
    a number as an argument: a negative number given there is a number, not options."""

    def make_parser(self, ctx: Context) -> _OptionParser:
        parser = _NumbersParser(ctx)
        for param in self.get_params(ctx):
            param.add_to_parser(parser, ctx)
        return parser


TIME = "ISO 8601; UTC if no zone, a date alone from its start in the market's zone"
"""How a time option's help says what :func:`time_option` reads."""


def time_option(value: str) -> datetime:
    """A time option's value: ISO 8601 as ``datetime.fromisoformat`` reads it (an offset or
    ``Z``, fractions of a second, what ``caravan dlq list`` prints), UTC when it names no
    zone; a date alone (``2026-12-06``) the start of that day in the marketplace's zone
    (``CARAVAN_MARKET_TIMEZONE``): read as midnight UTC, an operator's "today" in Shawan began
    at 08:00 and missed the market's first 8 hours. Typer's own datetime type reads click's
    three formats (no zone, no fractions) or, in newer Typers, pydantic's (a bare number as
    Unix seconds), whichever is installed."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        pass
    else:
        return datetime.combine(day, datetime.min.time(), days.market_zone())
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 time, e.g. 2026-12-03T09:00:00+08:00"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def month_option(value: str) -> datetime:
    """A month's value, ``YYYY-MM``: the start of its first day in the marketplace's zone, as
    a date alone is (:func:`time_option`); :func:`month_end` is the next month's."""
    if not re.fullmatch(r"\d{4}-\d{2}", value) or not 1 <= int(value[5:]) <= 12:
        raise typer.BadParameter(f"{value!r} is not a month, YYYY-MM (2026-12)")
    first = date(int(value[:4]), int(value[5:]), 1)
    return datetime.combine(first, datetime.min.time(), days.market_zone())


def month_end(start: datetime) -> datetime:
    """The start of the month after the one ``start`` (:func:`month_option`) begins."""
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return start.replace(year=year, month=month)


def time_opt(said: str) -> Any:
    """A time option (``--since``, ``--until``, ``--from-timestamp``) read by
    :func:`time_option`, its help ``said`` and how it is read (:data:`TIME`):
    ``Annotated[datetime | None, time_opt("placed before")] = None``."""
    return typer.Option(parser=time_option, help=f"{said} ({TIME})")
