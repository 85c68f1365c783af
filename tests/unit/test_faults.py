"""Failpoints: a no-op unless armed; armed, the process dies with 137 on the chosen hit."""

import os
import subprocess
import sys

from shared.faults import FAILPOINT_AFTER_VAR, FAILPOINT_VAR, KILLED_EXIT_CODE

SCRIPT = (
    "from shared.faults import failpoint\n"
    "for i in range(1, 6):\n"
    "    print(i, flush=True)\n"
    "    failpoint('relay.after_publish')\n"
    "print('done', flush=True)\n"
)


def run(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(FAILPOINT_VAR)}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_unarmed_or_another_failpoint_does_nothing() -> None:
    for env in ({}, {FAILPOINT_VAR: "somewhere.else"}):
        done = run(**env)
        assert (done.returncode, done.stdout.split()) == (0, ["1", "2", "3", "4", "5", "done"])


def test_armed_it_dies_on_the_chosen_hit() -> None:
    done = run(**{FAILPOINT_VAR: "relay.after_publish", FAILPOINT_AFTER_VAR: "3"})
    assert (done.returncode, done.stdout.split()) == (KILLED_EXIT_CODE, ["1", "2", "3"])
    first = run(**{FAILPOINT_VAR: "relay.after_publish"})
    assert (first.returncode, first.stdout.split()) == (KILLED_EXIT_CODE, ["1"])
