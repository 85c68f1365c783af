"""``caravan check``: the history checker's checks that need only the database
(:func:`~caravan.reliability.history.check_database`), over the whole database, and what the
command says of them."""

import time
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from caravan import output
from caravan.output import console
from caravan.reliability.history import (
    DATABASE_CHECKS,
    NO_RUNBOOK,
    DatabaseState,
    Violation,
    check_database,
    read_database,
)
from shared.db.engine import async_engine


@dataclass(frozen=True)
class Checked:
    """What ``caravan check`` read (rows by table) and found, and how long each took."""

    counts: dict[str, int]
    violations: list[Violation]
    read_seconds: float
    check_seconds: float

    def as_json(self) -> dict[str, Any]:
        return {
            "checked": self.counts,
            "checks": list(DATABASE_CHECKS),
            "read_seconds": round(self.read_seconds, 3),
            "check_seconds": round(self.check_seconds, 3),
            "violations": [
                {
                    "check": v.check,
                    "subject": v.subject,
                    "evidence": v.evidence,
                    "means": DATABASE_CHECKS[v.check].means,
                    "runbook": DATABASE_CHECKS[v.check].runbook,
                }
                for v in self.violations
            ],
        }

    def show(self) -> None:
        read = ", ".join(f"{n:,} {table.replace('_', ' ')}" for table, n in self.counts.items())
        console.print(
            f"checked {read} in one snapshot (read in {self.read_seconds:.1f} s,"
            f" checked in {self.check_seconds:.1f} s)"
        )
        if not self.violations:
            console.print("no violation", style="green")
            return
        by_check = {
            name: [v for v in self.violations if v.check == name] for name in DATABASE_CHECKS
        }
        failed = {name: found for name, found in by_check.items() if found}
        console.print(f"{len(self.violations)} violation(s) of {len(failed)} check(s)", style="red")
        for name, found in failed.items():
            meaning = DATABASE_CHECKS[name]
            console.print()
            console.print(
                Text.assemble((f"{name}", "bold red"), f" ({len(found)}): {meaning.means}")
            )
            console.print(f"runbook: {meaning.runbook or NO_RUNBOOK}")
            table = output.table("subject", "evidence", whole=("subject",))
            for v in found:
                table.add_row(v.subject, v.evidence)
            output.show(table)


def counted(db: DatabaseState) -> dict[str, int]:
    """The rows read of each table the checks read."""
    return {
        "orders": len(db.orders),
        "reservations": len(db.holds),
        "lots": len(db.lots),
        "payments": len(db.payments),
        "loans": len(db.loans),
        "ledger_entries": len(db.ledger),
        "payables": len(db.payables),
    }


async def checked(database_url: str) -> Checked:
    """Read the database at ``database_url`` in one snapshot and run the checks over it."""
    began = time.monotonic()
    engine = async_engine(database_url)
    try:
        db = await read_database(engine, texts=False)
    finally:
        await engine.dispose()
    read = time.monotonic()
    violations = check_database(db)
    return Checked(counted(db), violations, read - began, time.monotonic() - read)
