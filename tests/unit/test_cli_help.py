"""``--help`` shows the commands' docstrings as text: ``code`` without its backticks, and a
paragraph's lines joined, not broken where the docstring's lines are."""

import pytest
from typer.testing import CliRunner

from caravan import cli
from tests.unit.conftest import uncoloured

PREPARE = (
    "Create the topics and migrate every schema on the Kafka and PostgreSQL that the "
    "environment names (for deployments; caravan up does this itself)."
)


@pytest.mark.parametrize("command", [(), ("prepare",)])
def test_a_docstring_is_shown_as_one_paragraph_without_markup(command: tuple[str, ...]) -> None:
    done = CliRunner().invoke(cli.app, [*command, "--help"], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    text = uncoloured(done.output)
    assert PREPARE in text, text
    assert "``" not in text and "`caravan" not in text, text
