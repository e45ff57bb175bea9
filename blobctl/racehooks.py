"""Test-only delays that widen race windows, so the reliability tests can hit them.

`pause("PUBLISH")` sleeps for the seconds in BLOBCTL_TEST_DELAY_PUBLISH when that
variable is set. The environment is read once, at import: with no such variable set,
each call is a lookup in an empty dict. Points: PUBLISH (a put between encoding its
object and taking the write lock to publish it), PUBLISHED (a put's objects renamed in,
its transaction not yet committed), GC_EXECUTE (gc between planning and each batch of
deletions), EVICTED (a gc batch's files deleted, its transaction not yet committed).
"""

from __future__ import annotations

import os
import time

_PREFIX = "BLOBCTL_TEST_DELAY_"
_DELAYS = {name[len(_PREFIX):]: float(value) for name, value in os.environ.items()
           if name.startswith(_PREFIX)}


def pause(point: str) -> None:
    """Sleep for the delay configured for `point`, if any (see the module docstring)."""
    if _DELAYS and (seconds := _DELAYS.get(point)):
        time.sleep(seconds)
