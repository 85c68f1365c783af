"""How a ``caravan`` command that takes a number as an argument reads a negative one.

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

from typer._click.core import Context
from typer._click.parser import _OptionParser, _ParsingState
from typer.core import TyperCommand

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
