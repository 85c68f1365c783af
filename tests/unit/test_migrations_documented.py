"""docs/running.md's Upgrading names, schema by schema, every migration that holds the writers
of a table that exists until it commits (an index built without ``CONCURRENTLY``, a check
constraint validated at once, rows updated or deleted), for the operator to know what to
stop and how long it takes. Written by hand, the list had missed three of payments'
(``0016`` and ``0019``, indexes of ``payments``; ``0022``, an update of every voided loan's
payment) that an operator upgrading from 2026-12-05 crosses, and five older ones."""

import ast
import re
import subprocess
from pathlib import Path

from caravan.checkout import REPO_ROOT
from caravan.cli import SCHEMAS
from services import SERVICES
from shared.db.migrate import migrations_folder

RUNNING = REPO_ROOT / "docs" / "running.md"
HELPERS = REPO_ROOT / "shared" / "db" / "messaging_migration.py"
# SQL that locks the rows it reaches, each writer of one waiting until the migration commits.
ROWS_LOCKED = re.compile(r"\s*(UPDATE|DELETE)\b", flags=re.IGNORECASE)


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _strings(tree: ast.Module) -> dict[str, str]:
    """The module's constants that are strings (SQL named once, executed by name)."""
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    found[target.id] = node.value.value
    return found


def _argument(call: ast.Call, index: int, keyword: str) -> ast.expr | None:
    for given in call.keywords:
        if given.arg == keyword:
            return given.value
    return call.args[index] if len(call.args) > index else None


def _sql(node: ast.expr | None, strings: dict[str, str]) -> str:
    """The start of the SQL ``op.execute`` is given (an f-string's first literal part)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        return _sql(node.values[0], strings)
    if isinstance(node, ast.Name):
        return strings.get(node.id, "")
    return ""


def holds_writers(path: Path) -> list[str]:
    """What the ``upgrade`` of the migration at ``path`` does that holds a table's writers,
    following the functions it calls (its own, and the shared messaging tables' helpers)."""
    tree = ast.parse(path.read_text())
    functions = {**_functions(ast.parse(HELPERS.read_text())), **_functions(tree)}
    strings = _strings(tree)
    calls: list[ast.Call] = []
    pending, seen = [functions["upgrade"]], set()
    while pending:
        function = pending.pop()
        seen.add(function.name)
        for node in ast.walk(function):
            if not isinstance(node, ast.Call):
                continue
            if isinstance(node.func, ast.Name) and node.func.id in functions:
                if node.func.id not in seen:
                    pending.append(functions[node.func.id])
            elif isinstance(node.func, ast.Attribute) and ast.unparse(node.func.value) == "op":
                calls.append(node)
    created = {
        ast.unparse(table)
        for call in calls
        if call.func.attr == "create_table"  # type: ignore[attr-defined]
        and (table := _argument(call, 0, "table_name")) is not None
    }
    found = []
    for call in calls:
        what = call.func.attr  # type: ignore[attr-defined]
        if what == "create_index":
            name = ast.unparse(_argument(call, 1, "table_name") or ast.Constant(""))
            concurrently = any(k.arg == "postgresql_concurrently" for k in call.keywords)
            if name not in created and not concurrently:
                found.append(f"an index of {name}")
        elif what == "create_check_constraint":
            found.append("a check validated at once")
        elif what == "execute" and ROWS_LOCKED.match(_sql(_argument(call, 0, "sqltext"), strings)):
            found.append("rows updated")
    return list(dict.fromkeys(found))  # each kind once


def documented() -> dict[str, set[str]]:
    """Each schema's row of running.md's table: the revisions it names."""
    text = RUNNING.read_text()
    rows = re.findall(r"^\| (\w+) \| (.+) \|$", text, flags=re.MULTILINE)
    return {schema: set(re.findall(r"`(\d{4})`", named)) for schema, named in rows}


def test_every_migration_holding_a_table_s_writers_is_named_in_its_schema_s_row() -> None:
    named = documented()
    missing = []
    for schema in (*SERVICES, "auth", "ops"):
        for path in sorted((migrations_folder(schema) / "versions").glob("[0-9]*.py")):
            revision = path.name[:4]
            why = holds_writers(path)
            if why and revision not in named.get(schema, set()):
                missing.append(f"{schema} {revision} ({', '.join(why)})")
    assert not missing, f"not in docs/running.md's Upgrading table: {'; '.join(missing)}"


def test_what_holds_a_table_s_writers_is_told_from_what_does_not(tmp_path: Path) -> None:
    """The finder itself: an index of a table that exists, an update and a check are found;
    a table made with its indexes, a column added, a CONCURRENTLY index are not."""
    folder = migrations_folder("payments") / "versions"
    assert holds_writers(folder / "0022_voided_loan_refund_owed.py") == [
        "rows updated",
        "an index of 'payments'",
    ]
    assert holds_writers(folder / "0010_checks_declared.py")
    assert holds_writers(folder / "0012_instalments_reminders_done.py")
    assert holds_writers(folder / "0001_payments_schema.py") == []
    assert holds_writers(folder / "0024_payment_voided_after_sale.py") == []
    outbox = migrations_folder("orders") / "versions" / "0005_outbox_refusals.py"
    assert holds_writers(outbox) == ["an index of 'outbox'"]
    written = tmp_path / "0099_example.py"
    written.write_text(
        "def upgrade():\n"
        "    op.create_table('new', sa.Column('id', sa.Integer()), schema=S)\n"
        "    op.create_index('new_id', 'new', ['id'], schema=S)\n"
        "    op.create_index('old_id', 'old', ['id'], schema=S, postgresql_concurrently=True)\n"
        '    op.execute("INSERT INTO s.new SELECT 1")\n'
        '    op.execute("  delete from s.old")\n'
    )
    assert holds_writers(written) == ["rows updated"]


def test_developing_md_says_where_each_schema_s_migrations_are() -> None:
    """docs/developing.md's recipe for a schema change says where every schema's history is
    (``migrations_folder``): a newcomer changing ``auth`` or ``ops`` looked under services/."""
    said = " ".join((REPO_ROOT / "docs" / "developing.md").read_text().split())
    for schema in ("auth", "ops", *SERVICES):
        folder = migrations_folder(schema).relative_to(REPO_ROOT).as_posix()
        if folder != f"services/{schema}/migrations":
            phrases = (f"`{schema}` schema's in `{folder}`", f"`{schema}`' in `{folder}`")
            assert any(p in said for p in phrases), f"developing.md lacks {phrases[0]!r}"
    assert "a service's in `services/<name>/migrations`" in said


def _newest(names: list[str]) -> str:
    return max((name[:4] for name in names if re.match(r"\d{4}_", name)), default="")


def _newest_at(commit: str, schema: str) -> str:
    """The revision ``schema``'s migrations ended at in ``commit`` ('' without any then)."""
    folder = (migrations_folder(schema) / "versions").relative_to(REPO_ROOT).as_posix()
    listed = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-tree", "--name-only", f"{commit}:{folder}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return _newest(listed.stdout.split())


def going_back_lists() -> dict[str, dict[str, str]]:
    """Each release running.md's Going back names by its commit (``release (`ded44c89`...``),
    with the revisions it takes each schema back to, up to the next release or paragraph."""
    text = RUNNING.read_text().split("### Going back", 1)[1].split("\n#", 1)[0]
    releases = list(re.finditer(r"release\s+\(`([0-9a-f]{7,40})`", text))
    lists = {}
    for release, after in zip(releases, [*releases[1:], None], strict=True):
        said = text[release.end() : after.start() if after else len(text)].split("\n\n")[0]
        downgrades = re.findall(r"`(?:caravan downgrade )?(\w+)\s+(\d{4})`", said)
        lists[release[1]] = dict(downgrades)
    return lists


def test_going_back_to_each_release_named_takes_back_every_schema_it_is_behind() -> None:
    """running.md's Going back lists, for a release it names, the ``caravan downgrade`` of
    each schema: every one the upgrade from that release migrated, to the revision its
    migrations ended at then. Written by hand, 2026-12-05's list went stale as migrations came
    (``inventory`` and ``notifications`` missing, ``payments 0014`` for its 0016): followed,
    it left two schemas ahead of the older version, which then would not start."""
    lists = going_back_lists()
    assert len(lists) >= 2, lists
    for commit, listed in lists.items():
        known = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "cat-file", "-e", f"{commit}^{{commit}}"],
            capture_output=True,
            check=False,
        )
        assert known.returncode == 0, (
            f"{commit}, a release running.md's Going back names, is not in this clone's history"
            " (a shallow clone? `git fetch --unshallow`)"
        )
        behind = {}
        for schema in SCHEMAS:
            then = _newest_at(commit, schema)
            now = _newest([p.name for p in (migrations_folder(schema) / "versions").iterdir()])
            if then != now:
                behind[schema] = then
        assert listed == behind, f"running.md's Going back for {commit}"
