"""Every setting the code reads is named in the documentation: the settings' fields by the
variable each is read from, and each ``CARAVAN_*`` variable the code names on its own (read
from the environment, or handed to a process it starts). Eleven were read and named nowhere
(docs/configuration.md's list had drifted), and the README promises configuration.md
"every setting, with its default": seventeen settings' variables were named elsewhere only."""

import ast
import re
from pathlib import Path

from pydantic import AliasChoices

from caravan.checkout import REPO_ROOT
from shared.settings import FILE_SECRETS, Settings

CODE = ("caravan", "services", "shared")
DOCS = [*sorted((REPO_ROOT / "docs").glob("*.md")), REPO_ROOT / "README.md"]
DOCS.append(REPO_ROOT / "bench" / "README.md")


def field_variables() -> set[str]:
    """The variable each settings field is read from (its alias, else prefix and name)."""
    prefix = Settings.model_config.get("env_prefix", "")
    found: set[str] = set(FILE_SECRETS.values())
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            found.update(str(choice) for choice in alias.choices)
        else:
            found.add(f"{prefix}{name}".upper())
    return found


def named_variables(root: Path = REPO_ROOT) -> set[str]:
    """Every ``CARAVAN_*`` variable the code spells whole in a string of its own."""
    found: set[str] = set()
    for package in CODE:
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                value = node.value if isinstance(node, ast.Constant) else None
                if isinstance(value, str) and re.fullmatch(r"CARAVAN_[A-Z0-9_]+", value):
                    found.add(value)
    return found


def test_every_setting_the_code_reads_is_named_in_the_docs() -> None:
    docs = "\n".join(path.read_text() for path in DOCS)
    variables = field_variables() | named_variables()
    assert "CARAVAN_INSTANCE_ID" in variables and "CARAVAN_DB_POOL_SIZE" in variables
    unnamed = sorted(v for v in variables if not re.search(rf"\b{v}\b", docs))
    assert unnamed == [], f"read by the code, named in no page of docs/: {unnamed}"


def test_every_settings_field_is_in_the_configuration_list() -> None:
    """Each field of ``Settings`` by its variable in docs/configuration.md (a secret's
    ``_FILE`` variant may be written ``(or `_FILE`)`` beside its variable)."""
    listed = (REPO_ROOT / "docs" / "configuration.md").read_text()
    files = set(FILE_SECRETS.values())
    unlisted = sorted(
        v
        for v in field_variables()
        if not re.search(rf"\b{v}\b", listed)
        and not (v in files and re.search(rf"`{v.removesuffix('_FILE')}` \(or `_FILE`\)", listed))
    )
    assert unlisted == [], f"settings missing from docs/configuration.md: {unlisted}"
