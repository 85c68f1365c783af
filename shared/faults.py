"""Failpoints: named places in the code where a test can make the process die on purpose.

A failpoint is armed by the environment of the process: ``CARAVAN_FAILPOINT`` names it and
``CARAVAN_FAILPOINT_AFTER`` (default 1) says on which hit it fires. When it fires the process
ends at once with ``os._exit(137)``, as a ``kill -9`` would leave it: no cleanup, no flush,
no commit. It fires at most once per process; unarmed, ``failpoint()`` does nothing.
"""

import os

FAILPOINT_VAR = "CARAVAN_FAILPOINT"
FAILPOINT_AFTER_VAR = "CARAVAN_FAILPOINT_AFTER"
KILLED_EXIT_CODE = 137

RELAY_AFTER_PUBLISH = "relay.after_publish"
# A consumer's transaction of a batch (or of one record) handled and not committed yet; and
# committed, its records' offsets not yet told to Kafka.
CONSUMER_BEFORE_COMMIT = "consumer.before_commit"
CONSUMER_AFTER_COMMIT = "consumer.after_commit"

_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Die here if the failpoint ``name`` is armed and this is its chosen hit."""
    if os.environ.get(FAILPOINT_VAR) != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(os.environ.get(FAILPOINT_AFTER_VAR, "1")):
        os._exit(KILLED_EXIT_CODE)
