"""Bounded waits shared by the netns tests (never a timing assertion: the bound only
keeps a broken run from hanging)."""

from __future__ import annotations

import time

POLL = 0.1


def wait_for(predicate, timeout: float, what: str, poll: float = POLL):
    """``predicate()``'s first true value; AssertionError saying what, after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(poll)
