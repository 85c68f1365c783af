"""What a tool's output says went wrong, in a line: what an operator is shown when Maven,
Kafka, PostgreSQL or a service fails (:class:`caravan.output.OperatorError`), beside the log
that keeps the whole of it."""

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from caravan.output import shortened

_ERROR = re.compile(r"\bERROR\b.*\w|^\S*(Exception|Error)\b|\b(FATAL|PANIC):|^Caused by:")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_line(
    output: str,
    first: bool = False,
    chars: int = 200,
    otherwise: str = "",
    writes_to: Sequence[Path] = (),
) -> str:
    """The last error line of ``output`` (or the ``first``), cut short; with none, that a
    disk the tool ``writes_to`` is full (:func:`no_space`, the first of ``writes_to`` whose
    disk is: a tool that cannot write says nothing in a log on that disk), else the last
    line of ``otherwise`` (what the tool said itself, where its log says nothing)."""
    lines = (_ANSI.sub("", line).strip() for line in output.splitlines())
    found = [line for line in lines if _ERROR.search(line)]
    full = "" if found else next(filter(None, map(no_space, writes_to)), "")
    last = (
        [full] if full else [line.strip() for line in otherwise.splitlines() if line.strip()][-1:]
    )
    said = (found[0] if first else found[-1]) if found else (last or [NOTHING])[0]
    return shortened(said, chars)


NOTHING = "its output says nothing of why"

FULL_BELOW = 1 << 20
"""Bytes free on a disk under which it counts as full: Kafka and PostgreSQL stop at the
first write they cannot make, and a log line is one."""


def no_space(path: Path) -> str:
    """That the disk holding ``path`` is full, saying how much is free ("" if it is not, or
    cannot be read): a Kafka node whose disk filled exits at its first write, and started
    again exits before it can write a line of why. A symlink or a mount point is the disk it
    leads to (PostgreSQL's ``pg_wal`` on a disk of its own)."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return ""
    if free >= FULL_BELOW:
        return ""
    return f"no space left on the disk of {path}: {free} bytes free"


def service_error(output: str, chars: int = 200) -> str:
    """The last error of a service's log (``shared/logs.py`` writes a JSON object a line:
    the message of one at level error or critical; or a line :func:`error_line` takes for an
    error, such as a traceback's last), cut short; with none, the log's last line."""
    found = []
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            if entry.get("level") in ("error", "critical"):
                found.append(str(entry.get("message", "")))
        elif _ERROR.search(plain := _ANSI.sub("", line).strip()):
            found.append(plain)
    if not found:
        return error_line("", chars=chars, otherwise=output)
    return shortened(found[-1], chars)


def written_since(log: Path, offset: int) -> str:
    """What was written to ``log`` after its first ``offset`` bytes (a run's own lines)."""
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def size(log: Path) -> int:
    """Where what is written to ``log`` next begins."""
    try:
        return log.stat().st_size
    except FileNotFoundError:
        return 0
