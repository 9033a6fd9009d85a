"""What the tests share: a real liminald in a temporary directory, which a
test may stop, kill and start again on the same socket and database, and
the helpers of the worked example's tests.

The daemon binary is $LIMINALD_BIN if set, else built once with `go build`
into a temporary directory.  Readiness is the daemon's READY=1 on
NOTIFY_SOCKET, never a sleep.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, List, Optional, TypeVar

from liminald import Client, Decision

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
WORKER = REPO / "examples" / "python" / "worker.py"
READY_TIMEOUT = 30.0   # seconds for a daemon to report READY=1
IO_TIMEOUT = 30.0      # seconds for any call of a test

T = TypeVar("T")

_build_dir: Optional[str] = None
_binary: Optional[str] = None
_lock = threading.Lock()


def liminald_binary() -> str:
    """$LIMINALD_BIN, or the daemon built once for this test run."""
    global _build_dir, _binary
    with _lock:
        if _binary is None:
            env_bin = os.environ.get("LIMINALD_BIN")
            if env_bin:
                _binary = env_bin
            else:
                _build_dir = tempfile.mkdtemp(prefix="liminald-bin-")
                atexit.register(shutil.rmtree, _build_dir, True)
                out = os.path.join(_build_dir, "liminald")
                subprocess.run(["go", "build", "-o", out, "./cmd/liminald"], cwd=REPO,
                               check=True, timeout=600)
                _binary = out
        return _binary


def short_tempdir() -> str:
    # A unix socket path must fit in 107 bytes; a long $TMPDIR would not.
    d = tempfile.mkdtemp(prefix="lmd-")
    if len(d) > 60:
        shutil.rmtree(d)
        d = tempfile.mkdtemp(prefix="lmd-", dir="/tmp")
    return d


def load_worker() -> ModuleType:
    """examples/python/worker.py, the worked example, as a module."""
    mod = sys.modules.get("worker")
    if mod is None:
        spec = importlib.util.spec_from_file_location("worker", WORKER)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["worker"] = mod
        spec.loader.exec_module(mod)
    return mod


def stop_child(pid: int) -> None:
    """SIGSTOP to a child process, returning once it is stopped (a signal
    is delivered when the process next runs, not when kill returns)."""
    os.kill(pid, signal.SIGSTOP)
    os.waitid(os.P_PID, pid, os.WSTOPPED)


class Daemon:
    """A liminald serving a socket and database in a temporary directory.
    :meth:`stop` (SIGTERM) or :meth:`kill` (SIGKILL) it, then :meth:`start`
    it again on the same socket and database: a restart."""

    def __init__(self, *flags: str):
        self.flags = flags
        self.dir = short_tempdir()
        self.socket = os.path.join(self.dir, "liminald.sock")
        self.db = os.path.join(self.dir, "liminald.db")
        self.log_path = os.path.join(self.dir, "stderr.log")
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.starts = 0
        self.start()

    def start(self) -> None:
        """Starts the daemon and returns once it reported READY=1."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        notify_path = os.path.join(self.dir, f"notify-{self.starts}.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        notify.settimeout(READY_TIMEOUT)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIMINAL_")}
        env["XDG_CONFIG_HOME"] = self.dir  # no user config file
        env["NOTIFY_SOCKET"] = notify_path
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [liminald_binary(), "serve", "--socket", self.socket, "--db", self.db,
                 *self.flags],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        try:
            while True:  # until READY=1, or the timeout raises
                datagram = notify.recv(4096).decode()
                if "READY=1" in datagram.split("\n"):
                    break
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"liminald did not get ready:\n{self.log()}")
        finally:
            notify.close()
            os.unlink(notify_path)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> int:
        """SIGTERM, then the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        """SIGKILL: the socket file stays, and connecting to it is refused."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def pause(self) -> None:
        """SIGSTOP: the daemon reads and answers nothing until resume.
        Returns once it is stopped."""
        stop_child(self.pid)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def restart(self) -> None:
        """A clean restart: SIGTERM (asserting exit 0), then start."""
        status = self.stop()
        if status != 0:
            raise AssertionError(f"liminald exited {status}:\n{self.log()}")
        self.start()

    def remove(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.resume()
            except ProcessLookupError:
                pass
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class DaemonTestCase(unittest.TestCase):
    """A test class with a daemon of its own, and a shared client."""

    flags: tuple = ()
    daemon: Daemon
    client: Client

    @classmethod
    def setUpClass(cls) -> None:
        cls.daemon = Daemon(*cls.flags)
        cls.client = Client(cls.daemon.socket, timeout=IO_TIMEOUT)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.client.close()
        try:
            status = cls.daemon.stop()
            if status != 0:
                raise AssertionError(f"liminald exited {status}:\n{cls.daemon.log()}")
        finally:
            cls.daemon.remove()

    def conv(self, suffix: str = "") -> str:
        """A conversation name of this test's own."""
        return self.id().rsplit(".", 1)[-1] + suffix


class OwnDaemonTestCase(unittest.TestCase):
    """A test class whose every test gets a daemon of its own (it may stop
    or restart it)."""

    flags: tuple = ()

    def setUp(self) -> None:
        self.daemon = Daemon(*self.flags)
        self.addCleanup(self.daemon.remove)

    def conv(self, suffix: str = "") -> str:
        return self.id().rsplit(".", 1)[-1] + suffix


def expected_outputs(message_id: str, steps: int) -> List[bytes]:
    """The outputs worker.py computes: sha256 of the id, then of each output."""
    outs, data = [], message_id.encode()
    for _ in range(steps):
        data = hashlib.sha256(data).digest()
        outs.append(data)
    return outs


def wait_for_decision(client: Client, conv: str, message_id: str, action: str) -> Decision:
    """Polls decide until it answers ``action``, sleeping between polls for
    the retry_after_ms a busy decision gives (a lease's remaining time: the
    daemon's clock, which no event announces), never longer than
    IO_TIMEOUT in all."""
    deadline = time.monotonic() + IO_TIMEOUT
    while True:
        d = client.decide(conv, message_id)
        if d.action == action:
            return d
        if time.monotonic() > deadline:
            raise AssertionError(f"decide of {message_id} still answers {d} after {IO_TIMEOUT} s")
        time.sleep(min(d.retry_after_ms or 1, 100) / 1000)


def wait_until(what: str, probe: Callable[[], T]) -> T:
    """Polls probe until it returns something true, and returns that; fails
    after IO_TIMEOUT.  For what only polling tells (the daemon's background
    compaction)."""
    deadline = time.monotonic() + IO_TIMEOUT
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {IO_TIMEOUT} s")
        time.sleep(0.02)


def lease_events(events: List[Any]) -> List[Any]:
    """The events without lease_renewed: how many renewals a run made depends
    on how long it took."""
    return [e for e in events if e.type != "lease_renewed"]


class Gate:
    """A step's side effect that records itself, and on its first call says
    so (``entered``) and waits until the test lets it go on (``go``)."""

    def __init__(self, name: str, effects: list):
        self.name, self.effects = name, effects
        self.entered, self.go = threading.Event(), threading.Event()

    def __call__(self, index: int, message_id: str, previous: Optional[bytes]) -> bytes:
        self.effects.append((self.name, index))
        if not self.entered.is_set():
            self.entered.set()
            if not self.go.wait(IO_TIMEOUT):
                raise AssertionError(f"{self.name} was never let go on")
        out: bytes = load_worker().run_step(index, message_id, previous)
        return out
