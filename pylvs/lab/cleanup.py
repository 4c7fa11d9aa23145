"""Remove every lab this process owns on exit, on an exception that ends the program, and
on SIGTERM / SIGINT / SIGHUP.

Labs register here while they exist (a `pylvs lab up` lab unregisters once it is built,
because it is meant to outlive the command).  The first lab installs an atexit hook and,
in the main thread, signal handlers that tear the labs down and then hand the signal to
whatever handler was there before (so SIGINT still raises KeyboardInterrupt and SIGTERM
still ends the process with the usual status).  A SIGKILLed owner cannot clean up: its
helpers still die (PR_SET_PDEATHSIG) and `pylvs lab down --all` removes the namespaces
from the record under /run/pylvs-lab/.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import Protocol

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Destroyable(Protocol):
    name: str
    owner_pid: int  # the process that built it; a forked child must not tear it down

    def destroy(self) -> None: ...


_lock = threading.RLock()
_labs: dict[str, Destroyable] = {}
_previous: dict[int, object] = {}
_atexit_installed = False


def register(lab: Destroyable) -> None:
    global _atexit_installed
    with _lock:
        _labs[lab.name] = lab
        if not _atexit_installed:
            atexit.register(destroy_all)
            _atexit_installed = True
    _install_signal_handlers()


def unregister(lab: Destroyable) -> None:
    with _lock:
        _labs.pop(lab.name, None)


def owned() -> list[str]:
    with _lock:
        return list(_labs)


def destroy_all() -> None:
    """Tear down every registered lab; each one is removed from the registry first, so a
    second call (a signal arriving during atexit) does not repeat work."""
    while True:
        with _lock:
            if not _labs:
                return
            _name, lab = _labs.popitem()
        if getattr(lab, "owner_pid", os.getpid()) != os.getpid():
            continue  # inherited through fork(): the parent owns and removes it
        try:
            lab.destroy()
        except Exception as exc:  # noqa: BLE001 -- keep cleaning the other labs
            print(f"pylvs.lab: cleanup of {lab.name} incomplete: {exc}", file=sys.stderr)


def _on_signal(signum: int, frame: object) -> None:
    destroy_all()
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)  # e.g. default_int_handler raises KeyboardInterrupt
        return
    # Default action: restore it and re-deliver, so the exit status says "killed by SIG".
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_signal_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signal.signal only works in the main thread; atexit still covers us
    with _lock:
        for sig in HANDLED_SIGNALS:
            if sig in _previous:
                continue
            current = signal.getsignal(sig)
            if current is signal.SIG_IGN or current is _on_signal:
                continue  # e.g. nohup: the user asked to ignore it
            _previous[sig] = current
            signal.signal(sig, _on_signal)
