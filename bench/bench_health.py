"""Health-check bench: N real servers checked every T seconds, the runner's CPU in percent
of one core (issue 6: 1000 servers every 2 s, target under 10 %).

    sudo .venv/bin/python bench/bench_health.py                 # 1000 servers, 2 s, 20 s measured
    sudo .venv/bin/python bench/bench_health.py --servers 200 --seconds 5 --probe fake

Needs root: it creates ONE network namespace of its own (unique name, deleted in a
``finally``), brings up ``lo`` in it, and runs everything inside it with ``ip netns exec``:
a small asyncio HTTP answerer (its own process, so its CPU is not counted) listening on
port 80 of every 127.0.0.0/8 address (it binds 0.0.0.0 inside the fresh namespace, which
only has ``lo``), and the ``HealthRunner`` with the real probe (``pylvs.health.probes.run_check``,
nanny's default port-80 probe: send ``GET / HTTP/1.0``, expect ``HTTP``) against
127.0.x.y:80.  The root namespace's loopback is never used.

CPU = process CPU time (all threads) over a bounded wall time, after one warm-up interval
in which every server comes up.  ``--probe fake`` replaces the probe with an instant pass
(the runner's own cost without sockets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pylvs.health.runner import WAKE_GRID  # noqa: E402

PORT = 80  # nanny's default HTTP probe applies on virtual port 80 (reference 4.2)
HTTP_REPLY = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"
LISTEN_BACKLOG = 1024
READY_TIMEOUT = 10.0  # seconds to wait for the answerer to listen
WARMUP_LIMIT = 60.0  # seconds at most for all servers to come up
CHILD_SLACK = 120.0  # seconds the inside run may take beyond warm-up and measurement


# --------------------------------------------------------------------------- inside the namespace

def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the answerer ends with its parent even if that is killed."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def serve(port: int, ready_fd: int) -> None:
    """The real servers: answer every connection with an HTTP status line, then close."""
    _die_with_parent()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.read(1024), 5)
            writer.write(HTTP_REPLY)
            await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "0.0.0.0", port, backlog=LISTEN_BACKLOG, reuse_address=True)
        os.write(ready_fd, b"1")
        os.close(ready_fd)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def server_addresses(n: int) -> list[str]:
    """127.0.x.y, x from 1, y in 1..250: all reach lo."""
    return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(n)]


async def _lean_probe(spec, *, clock):
    """An experiment, not the product: the same TCP send/expect check with the fewest asyncio
    objects (one future per wait, a plain timer instead of asyncio.timeout), to show what
    the event-loop machinery of a probe costs (``--probe lean``)."""
    import errno
    import socket
    from types import SimpleNamespace

    loop = asyncio.get_running_loop()
    t0 = clock()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    fd = sock.fileno()
    fut = None

    def expire():
        if fut is not None and not fut.done():
            fut.set_exception(TimeoutError())

    timer = loop.call_at(loop.time() + spec.timeout, expire)
    ok, data = False, b""
    try:
        err = sock.connect_ex((spec.address, spec.port))
        if err == errno.EINPROGRESS:
            fut = loop.create_future()
            loop.add_writer(fd, fut.set_result, None)
            try:
                await fut
            finally:
                loop.remove_writer(fd)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err == 0:
            if spec.send:
                sock.send(spec.send)
            fut = loop.create_future()
            loop.add_reader(fd, fut.set_result, None)
            try:
                await fut
            finally:
                loop.remove_reader(fd)
            data = sock.recv(254)
            ok = data.startswith(spec.expect or b"")
    except (OSError, TimeoutError):
        ok = False
    finally:
        timer.cancel()
        sock.close()
    return SimpleNamespace(ok=ok, reason="OK" if ok else "failed", duration=clock() - t0, detail="")


def make_config(n: int, interval: int):
    from pylvs.config.model import BoundAddress, Config, RealServer, VirtualServer

    servers = tuple(RealServer(name=f"rs{i}", address=IPv4Address(a), active=True, weight=1)
                    for i, a in enumerate(server_addresses(n)))
    v = VirtualServer(name="bench", active=True, address=BoundAddress(IPv4Address("192.0.2.100"), "lo"), port=PORT,
                      timeout=interval, reentry=interval, servers=servers)
    return Config(primary=IPv4Address("192.0.2.1"), network="nat", virtuals=(v,))


def inside(args: argparse.Namespace) -> dict:
    from pylvs.health.runner import HealthRunner

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    rfd, wfd = os.pipe()
    answerer = subprocess.Popen([sys.executable, __file__, "--serve", str(PORT), "--ready-fd", str(wfd)],
                                pass_fds=(wfd,))
    os.close(wfd)
    try:
        import select
        if not select.select([rfd], [], [], READY_TIMEOUT)[0]:
            raise RuntimeError("the HTTP answerer did not start listening")
        os.close(rfd)
        config = make_config(args.servers, args.interval)
        checks = [0]
        failures = [0]
        if args.probe == "lean":
            lean = _lean_probe

            async def probe(spec, *, clock):
                checks[0] += 1
                r = await lean(spec, clock=clock)
                if not r.ok:
                    failures[0] += 1
                return r
        elif args.probe == "fake":
            from types import SimpleNamespace

            async def probe(spec, *, clock):
                checks[0] += 1
                return SimpleNamespace(ok=True, reason="OK", duration=0.0, detail="")
        else:
            from pylvs.health.probes import run_check

            async def probe(spec, *, clock):
                checks[0] += 1
                r = await run_check(spec, clock=clock)
                if not r.ok:
                    failures[0] += 1
                return r
        changes = [0]
        all_up = threading.Event()

        def on_change(health):
            changes[0] += 1
            if all(h.up for h in health.values()):
                all_up.set()

        if args.loop == "uvloop":  # asyncio.run in the runner's thread takes its loop from the policy
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        runner = HealthRunner(config, on_change, probe=probe, grid=args.grid)
        runner.start()
        try:
            t_warm = time.monotonic()
            up = all_up.wait(min(WARMUP_LIMIT, args.interval * 3 + 5))
            warmup = time.monotonic() - t_warm
            r0, w0, n0, f0 = os.times(), time.monotonic(), checks[0], failures[0]
            time.sleep(args.seconds)
            r1, w1, n1, f1 = os.times(), time.monotonic(), checks[0], failures[0]
            snap = runner.snapshot()
        finally:
            runner.stop()
        wall, user, system = w1 - w0, r1.user - r0.user, r1.system - r0.system
        cpu = user + system
        return {
            "servers": args.servers, "interval_s": args.interval, "probe": args.probe,
            "loop": args.loop, "grid_s": args.grid, "all_up_after_warmup": up,
            "warmup_s": round(warmup, 2), "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 3), "cpu_percent_of_one_core": round(100 * cpu / wall, 2),
            "user_percent": round(100 * user / wall, 2), "system_percent": round(100 * system / wall, 2),
            "checks": n1 - n0, "checks_per_s": round((n1 - n0) / wall, 1), "failed_checks": f1 - f0,
            "up_at_end": sum(1 for s in snap if s["up"]), "on_change_calls": changes[0],
            "mean_probe_ms": round(1000 * sum(s["duration"] for s in snap) / max(1, len(snap)), 3),
        }
    finally:
        answerer.terminate()
        try:
            answerer.wait(5)
        except subprocess.TimeoutExpired:
            answerer.kill()
            answerer.wait()


# --------------------------------------------------------------------------- the root side

def outside(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("bench_health: needs root (it creates a network namespace)", file=sys.stderr)
        return 2
    ns = f"pylvs-hb-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        cmd = ["ip", "netns", "exec", ns, sys.executable, __file__, "--inside", "--servers", str(args.servers),
               "--interval", str(args.interval), "--seconds", str(args.seconds), "--probe", args.probe,
               "--loop", args.loop, "--grid", str(args.grid)]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        limit = args.seconds + WARMUP_LIMIT + CHILD_SLACK
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=limit, env=env)
        sys.stderr.write(out.stderr)
        result = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    result["namespace"] = ns
    print(json.dumps(result, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=1000)
    ap.add_argument("--interval", type=int, default=2, help="lvs.cf timeout: the check interval, seconds")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured wall time")
    ap.add_argument("--probe", choices=("real", "fake", "lean"), default="real")
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                    help="event loop of the runner's thread (uvloop must be importable)")
    ap.add_argument("--grid", type=float, default=WAKE_GRID, help="HealthRunner grid (0: exact wake-ups)")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.ready_fd)
        return 0
    if args.inside:
        print(json.dumps(inside(args)))
        return 0
    return outside(args)


if __name__ == "__main__":
    sys.exit(main())
