"""Run one Python callable in another process (the lab starts it inside a namespace).

``Lab.call(host, func, *args, **kwargs)`` pickles (func, args, kwargs) to this module's
stdin; `func` is pickled by reference (module + name), so it must be a module-level
function importable with the caller's sys.path (passed in PYTHONPATH).  The pickled
result, or the exception, comes back on the original stdout; anything the function prints
goes to stderr.
"""

from __future__ import annotations

import os
import pickle
import sys


def main() -> int:
    func, args, kwargs = pickle.load(sys.stdin.buffer)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # the function's prints -> stderr
    try:
        result = ("ok", func(*args, **kwargs))
    except BaseException as exc:  # noqa: BLE001 -- sent back and raised in the caller
        result = ("error", exc)
    try:
        payload = pickle.dumps(result)
    except Exception as exc:  # noqa: BLE001 -- an unpicklable result or exception
        payload = pickle.dumps(("error", RuntimeError(f"unpicklable result: {exc!r}")))
    out.write(payload)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
