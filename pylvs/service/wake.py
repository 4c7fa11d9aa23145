"""Waking a control loop from signal handlers and from other threads alike.

``threading.Event.set()`` takes a lock; called from a signal handler that interrupted
the same thread inside another ``set()`` (SIGUSR2 then SIGTERM a few milliseconds apart,
as pulse sends them when it stops), it waits for itself forever: a director hung that
way in about 1 of 20 stops, killed after 10 s with its VIP and rules still up.  A byte
written to a non-blocking pipe takes no lock (the self-pipe trick; pulse's loop uses it
too).
"""

from __future__ import annotations

import contextlib
import os
import select

DRAIN = 4096


class Waker:
    """``set()`` from anywhere; ``wait(timeout)`` in the loop, which also clears it."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def set(self) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is pending anyway; closed: nobody waits
            os.write(self._w, b"x")

    def wait(self, timeout: float) -> bool:
        """Until ``set()`` or ``timeout`` seconds; True if woken.  Clears."""
        try:
            ready, _, _ = select.select([self._r], [], [], timeout)
        except InterruptedError:  # a signal: its handler has written, or will next time
            ready = []
        woken = False
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, DRAIN):
                woken = True
        return woken or bool(ready)

    def close(self) -> None:
        # Forget the numbers before closing them: a late set() (a signal) must not write
        # into whatever file reuses the number next.
        fds, self._r, self._w = (self._r, self._w), -1, -1
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
