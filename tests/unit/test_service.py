"""The service pieces without a daemon: the instance lock, sd_notify's datagrams, the
readiness pipe, journald priorities, runtime paths."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time

import pytest

from pylvs.service import daemon, lock, logs, paths
from pylvs.service.notify import Notifier, child_env


@pytest.fixture
def role():
    return f"test-{os.getpid()}-{time.monotonic_ns()}"  # unique per run: abstract names are per namespace


def test_the_lock_refuses_a_second_holder_and_names_the_first(role, tmp_path):
    with lock.InstanceLock(role, {"config": "/etc/x.cf"}, lock_dir=tmp_path) as first:
        assert first.held
        assert (tmp_path / f"{role}.net{os.stat('/proc/self/ns/net').st_ino}").exists()
        with pytest.raises(lock.AlreadyRunning) as err:
            lock.InstanceLock(role, lock_dir=tmp_path).acquire()
        assert err.value.holder["pid"] == os.getpid()
        assert f"pylvs {role} is already running in this network namespace (pid {os.getpid()}, -c /etc/x.cf)" \
            in str(err.value)  # fmt: skip
        assert lock.holder(role)["config"] == "/etc/x.cf"
    assert lock.holder(role) is None  # released: free again
    assert not list(tmp_path.iterdir())  # a clean release leaves no file behind
    with lock.InstanceLock(role, lock_dir=tmp_path):
        pass


def test_a_squatter_on_the_name_neither_holds_nor_blocks_the_lock(role, tmp_path):
    """Any user may bind an abstract name: the flock decides, the socket only informs."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(lock.ABSTRACT_PREFIX + role)
    s.listen(1)  # bound, never accepting: the connect is queued, nothing is said
    try:
        assert lock.holder(role) == {"pid": os.getpid()}  # named by its credentials
        with lock.InstanceLock(role, lock_dir=tmp_path) as got:
            assert got.held and got.sock is None  # held, only nobody can ask it
            with pytest.raises(lock.AlreadyRunning):
                lock.InstanceLock(role, lock_dir=tmp_path).acquire()
    finally:
        s.close()


@pytest.fixture
def listener(tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(tmp_path / "notify"))
    s.settimeout(2)
    yield s, str(tmp_path / "notify")
    s.close()


def test_notify_messages(listener):
    s, path = listener
    n = Notifier(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
    assert n.watchdog_interval == 2.0
    n.ready("active: forwarding")
    assert s.recv(512) == b"READY=1\nSTATUS=active: forwarding"
    n.status("active: forwarding")  # unchanged: not sent again
    n.status("standby")
    assert s.recv(512) == b"STATUS=standby"
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    fields = dict(line.split("=", 1) for line in s.recv(512).decode().splitlines())
    assert fields["RELOADING"] == "1" and int(fields["MONOTONIC_USEC"]) >= before
    n.watchdog()
    assert s.recv(512) == b"WATCHDOG=1"
    n.stopping()
    assert s.recv(512).startswith(b"STOPPING=1")


def test_notify_abstract_socket_and_watchdog_for_another_pid():
    name = f"pylvs-test-notify-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(2)
    try:
        n = Notifier(env={"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
        assert n.watchdog_usec == 0  # the watchdog is another process's
        n.ready()
        assert s.recv(64) == b"READY=1"
    finally:
        s.close()


def test_nobody_listening_is_not_an_error(tmp_path):
    n = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "absent")})
    n.ready("x")
    n.watchdog()
    assert not n.sent
    Notifier(env={}).ready()


def test_children_do_not_inherit_the_notify_socket():
    env = child_env({"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2", "PATH": "/b"})
    assert env == {"PATH": "/b"}


@pytest.mark.parametrize("said, code", [(b"READY\n", 0), (b"EXIT 4\n", 4), (b"EXIT 0\n", 0), (b"", 1), (b"junk", 1)])
def test_the_waiting_parent_exits_with_what_the_daemon_said(said, code, capsys):
    r, w = os.pipe()
    os.write(w, said)
    os.close(w)
    assert daemon._wait_ready(r, "pylvs lvs") == code
    os.close(r)
    if code == 1:
        assert "the daemon exited during start-up" in capsys.readouterr().err


def test_notifier_tells_the_waiting_parent():
    r, w = os.pipe()
    Notifier(ready_fd=w, env={}).failed(4, "lvs.cf has errors")
    assert daemon._wait_ready(r, "x") == 4
    r, w = os.pipe()
    Notifier(ready_fd=w, env={}).ready()
    assert daemon._wait_ready(r, "x") == 0


def test_journal_priorities():
    f = logs.JournalFormatter("%(message)s")
    rec = logging.LogRecord("pylvs", logging.ERROR, __file__, 1, "a\nb", None, None)
    assert f.format(rec) == "<3>a\n<3>b"
    rec = logging.LogRecord("pylvs", logging.INFO, __file__, 1, "up", None, None)
    assert f.format(rec) == "<6>up"


def test_under_journal_only_when_stderr_is_the_stream(tmp_path):
    with open(tmp_path / "f", "w") as f:
        st = os.fstat(f.fileno())
        assert logs.under_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, f)
        assert not logs.under_journal({"JOURNAL_STREAM": "1:2"}, f)
        assert not logs.under_journal({}, f)
    assert not logs.under_journal({"JOURNAL_STREAM": "junk"}, sys.stderr)


def test_pidfile_is_ours_to_remove(tmp_path):
    p = tmp_path / "lvs.pid"
    daemon.write_pidfile(p)
    assert p.read_text() == f"{os.getpid()}\n"
    p.write_text("1\n")  # a successor's
    daemon.remove_pidfile(p)
    assert p.exists()
    daemon.write_pidfile(p)
    daemon.remove_pidfile(p)
    assert not p.exists()


def test_runtime_paths(tmp_path, monkeypatch):
    rp = paths.RuntimePaths.resolve(tmp_path / "rt")
    assert (rp.pidfile("lvs"), rp.status("pulse"), rp.control("lvs")) == (
        tmp_path / "rt/lvs.pid", tmp_path / "rt/pulse.status.json", tmp_path / "rt/lvs.ctl")  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert paths.RuntimePaths.resolve("rel").dir == tmp_path / "rel"  # absolute before any chdir
    # the namespace's name from /run/netns: a bind of our own namespace names it
    monkeypatch.setattr(paths, "NETNS_RUN", tmp_path / "netns")
    (tmp_path / "netns").mkdir()
    assert paths.netns_name() is None and paths.default_runtime_dir() == paths.RUN_ROOT
    os.symlink(paths.OWN_NETNS, tmp_path / "netns" / "blue")  # stat follows it to our namespace
    assert paths.netns_name() == "blue"
    assert paths.default_runtime_dir() == paths.RUN_ROOT / "blue"


def test_the_waker_wakes_from_a_signal_handler_inside_another():
    """The hang an Event gave (wake.py): a handler interrupted by a second one, both waking."""
    import signal

    from pylvs.service.wake import Waker

    w = Waker()
    nested = []

    def inner(*_):
        w.set()

    def outer(*_):
        w.set()
        os.kill(os.getpid(), signal.SIGUSR2)  # delivered while this handler runs
        nested.append(True)
        w.set()

    old1, old2 = signal.signal(signal.SIGUSR1, outer), signal.signal(signal.SIGUSR2, inner)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert nested and w.wait(1.0)
        assert not w.wait(0.01)  # drained: cleared
        for _ in range(10_000):  # more than the pipe holds: never blocks
            w.set()
        assert w.wait(0) and not w.wait(0)
    finally:
        signal.signal(signal.SIGUSR1, old1)
        signal.signal(signal.SIGUSR2, old2)
        w.close()
    w.set()  # after close: nothing, no error


def test_a_killed_owner_s_lock_file_goes_with_its_namespace(role, tmp_path):
    ino = os.stat("/proc/self/ns/net").st_ino
    stale = tmp_path / f"{role}-dead.net{ino}"
    stale.write_text("")  # a killed daemon's: nobody holds it
    other = tmp_path / f"{role}.net{ino + 1}"  # another namespace's
    other.write_text("")
    with lock.InstanceLock(role, lock_dir=tmp_path) as live:
        assert lock.remove_unheld_locks("/proc/self/ns/net", tmp_path) == [stale]
        assert live.path.exists() and other.exists()  # held, or not this namespace's: kept
