"""Tests of liminald.py and worker.py against a real daemon.

Run from the repository root:

    python3 -m unittest discover -s examples/python -v

The daemon binary is $LIMINALD_BIN if set, else built once with `go build`
into a temporary directory.  Each test class starts its own daemon, on a
socket and database in a temporary directory, and stops it with SIGTERM
(asserting it exits 0).  Readiness is the daemon's READY=1 on NOTIFY_SOCKET.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import liminald  # noqa: E402
from liminald import (  # noqa: E402
    Ack, AlreadyFinished, BadRequest, Busy, Client, Decision, Fenced, FingerprintMismatch,
    Forbidden, Internal, LiminalError, LineTooLong, NotQuarantined, Quarantined,
    SequenceConflict, ShuttingDown, Step, StepConflict, Unavailable, UnknownMessage, UnknownOp,
)

WORKER = HERE / "worker.py"
import worker  # noqa: E402
READY_TIMEOUT = 30.0   # seconds for a daemon to report READY=1
IO_TIMEOUT = 30.0      # seconds for any socket operation of a test

_build_dir: str | None = None
_binary: str | None = None


def liminald_binary() -> str:
    """$LIMINALD_BIN, or the daemon built once for this test run."""
    global _build_dir, _binary
    if _binary is None:
        env_bin = os.environ.get("LIMINALD_BIN")
        if env_bin:
            _binary = env_bin
        else:
            _build_dir = tempfile.mkdtemp(prefix="liminald-bin-")
            out = os.path.join(_build_dir, "liminald")
            subprocess.run(["go", "build", "-o", out, "./cmd/liminald"], cwd=REPO, check=True,
                           timeout=600)
            _binary = out
    return _binary


def tearDownModule() -> None:
    if _build_dir is not None:
        shutil.rmtree(_build_dir, ignore_errors=True)


def _short_tempdir() -> str:
    # A unix socket path must fit in 107 bytes; a long $TMPDIR would not.
    d = tempfile.mkdtemp(prefix="lmd-")
    if len(d) > 60:
        shutil.rmtree(d)
        d = tempfile.mkdtemp(prefix="lmd-", dir="/tmp")
    return d


class Daemon:
    """A liminald serving a socket and database in a temporary directory."""

    def __init__(self, *flags: str):
        self.dir = _short_tempdir()
        self.socket = os.path.join(self.dir, "liminald.sock")
        self.db = os.path.join(self.dir, "liminald.db")
        self.log_path = os.path.join(self.dir, "stderr.log")
        notify_path = os.path.join(self.dir, "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        notify.settimeout(READY_TIMEOUT)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIMINAL_")}
        env["XDG_CONFIG_HOME"] = self.dir  # no user config file
        env["NOTIFY_SOCKET"] = notify_path
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [liminald_binary(), "serve", "--socket", self.socket, "--db", self.db, *flags],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, env=env)
        try:
            while True:  # until READY=1, or the timeout raises
                datagram = notify.recv(4096).decode()
                if "READY=1" in datagram.split("\n"):
                    break
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            self._log.close()
            raise RuntimeError(f"liminald did not get ready:\n{self.log()}")
        finally:
            notify.close()

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> int:
        """SIGTERM, then the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self._log.close()

    def remove(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class DaemonTestCase(unittest.TestCase):
    """A test class with a daemon of its own, and a shared client."""

    flags: tuple = ()

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


class ClientTest(DaemonTestCase):

    def test_hello_and_ping(self):
        h = self.client.hello()
        self.assertEqual(h["protocol"], 2)
        self.assertEqual(h["server"]["name"], "liminald")
        for op in ("receive", "step", "subscribe", "renew", "release", "messages", "explain"):
            self.assertIn(op, h["ops"])
        self.assertEqual(h["limits"]["max_lease_ms"], 86_400_000)
        self.assertIsNone(self.client.ping())

    def test_lifecycle(self):
        c, conv = self.client, self.conv()
        self.assertEqual(c.decide(conv, "m"), Decision("start", 0))
        d = c.receive(conv, "m", received_at=1732672000000)
        self.assertEqual(d, Decision("start", resume_from=0, seq=0))
        self.assertEqual(c.state(conv, "m").status, "received")
        self.assertEqual(c.start(conv, "m"), Ack(1))
        self.assertEqual(c.state(conv, "m").status, "in_progress")
        self.assertEqual(c.step(conv, "m", 0, b"charged"), Ack(2))
        self.assertEqual(c.step(conv, "m", 1, b""), Ack(3))
        self.assertEqual(c.receive(conv, "m"), Decision("resume", resume_from=2))
        self.assertEqual(c.step(conv, "m", 2, bytes(range(256))), Ack(4))
        self.assertEqual(c.finish(conv, "m"), Ack(5))
        self.assertEqual(c.receive(conv, "m"), Decision("skip"))
        self.assertEqual(c.decide(conv, "m"), Decision("skip"))

        st = c.state(conv, "m")
        self.assertEqual(st.status, "finished")
        self.assertEqual(st.received_at, 1732672000000)
        self.assertEqual(st.last_completed_step, 2)
        self.assertEqual([(s.step_index, s.seq, s.output) for s in st.steps],
                         [(0, 2, b"charged"), (1, 3, b""), (2, 4, bytes(range(256)))])
        self.assertIsNone(st.error)

        events, next_seq = c.read(conv)
        self.assertEqual(next_seq, 6)
        self.assertEqual([(e.seq, e.type) for e in events], [
            (0, "message_received"), (1, "processing_started"), (2, "step_completed"),
            (3, "step_completed"), (4, "step_completed"), (5, "processing_finished")])
        self.assertEqual(events[0].received_at, 1732672000000)
        self.assertEqual(events[4].output, bytes(range(256)))
        self.assertTrue(all(e.conversation == conv and e.message_id == "m" for e in events))
        self.assertEqual([e.pos for e in events], sorted(e.pos for e in events))

        self.assertIn(liminald.ConversationInfo(conv, 6, 1), c.conversations(limit=1000))
        stats = c.stats()
        self.assertGreaterEqual(stats["events"], 6)
        self.assertGreaterEqual(stats["connections"], 1)

    def test_fail_and_retry(self):
        c, conv = self.client, self.conv()
        c.receive(conv, "m")
        c.start(conv, "m")
        c.step(conv, "m", 0, b"a")
        self.assertEqual(c.fail(conv, "m", "boom"), Ack(3))
        self.assertEqual(c.fail(conv, "m", "boom"), Ack(3, duplicate=True))
        st = c.state(conv, "m")
        self.assertEqual((st.status, st.error), ("errored", "boom"))
        self.assertEqual(c.receive(conv, "m"), Decision("resume", resume_from=1))
        self.assertEqual(c.start(conv, "m"), Ack(4))  # a retry appends a new start
        st = c.state(conv, "m")
        self.assertEqual((st.status, st.error), ("in_progress", "boom"))

    def test_duplicates(self):
        c, conv = self.client, self.conv()
        c.receive(conv, "m")
        self.assertEqual(c.start(conv, "m"), Ack(1))
        self.assertEqual(c.start(conv, "m"), Ack(1, duplicate=True))
        self.assertEqual(c.step(conv, "m", 0, b"out"), Ack(2))
        self.assertEqual(c.step(conv, "m", 0, b"out"), Ack(2, duplicate=True))
        self.assertEqual(c.finish(conv, "m"), Ack(3))
        self.assertEqual(c.finish(conv, "m"), Ack(3, duplicate=True))
        self.assertEqual(c.read(conv)[1], 4)  # nothing appended by the duplicates

    def test_expected_seq(self):
        c, conv = self.client, self.conv()
        self.assertEqual(c.receive(conv, "m", received_at=5, expected_seq=0),
                         Decision("start", 0, seq=0))
        # The retry of a receive that landed is a duplicate start.
        self.assertEqual(c.receive(conv, "m", received_at=5, expected_seq=0),
                         Decision("start", 0, seq=0, duplicate=True))
        self.assertEqual(c.start(conv, "m", expected_seq=1), Ack(1))
        self.assertEqual(c.start(conv, "m", expected_seq=1), Ack(1, duplicate=True))
        self.assertEqual(c.step(conv, "m", 0, b"x", expected_seq=2), Ack(2))
        self.assertEqual(c.step(conv, "m", 0, b"x", expected_seq=2), Ack(2, duplicate=True))
        with self.assertRaises(SequenceConflict) as cm:
            c.step(conv, "m", 1, b"", expected_seq=9)
        self.assertEqual((cm.exception.expected, cm.exception.actual), (9, 3))
        self.assertEqual(c.finish(conv, "m", expected_seq=3), Ack(3))

    def assertCode(self, cm, cls, code):
        e = cm.exception
        self.assertIs(type(e), cls)
        self.assertIsInstance(e, LiminalError)
        self.assertEqual(e.code, code)
        self.assertIsInstance(e.message, str)
        self.assertTrue(e.message)
        self.assertFalse(e.retryable)

    def test_error_codes(self):
        c, conv = self.client, self.conv()
        with self.assertRaises(UnknownMessage) as cm:
            c.start(conv, "never")
        self.assertCode(cm, UnknownMessage, "unknown_message")
        with self.assertRaises(UnknownMessage):
            c.step(conv, "never", 0, b"")
        with self.assertRaises(UnknownMessage):
            c.finish(conv, "never")
        with self.assertRaises(UnknownMessage):
            c.fail(conv, "never", "e")

        c.receive(conv, "m")
        c.start(conv, "m")
        c.step(conv, "m", 0, b"one")
        with self.assertRaises(StepConflict) as cm:
            c.step(conv, "m", 0, b"two")
        self.assertCode(cm, StepConflict, "step_conflict")

        with self.assertRaises(SequenceConflict) as cm:
            c.start(conv, "m", expected_seq=0)
        self.assertCode(cm, SequenceConflict, "sequence_conflict")
        self.assertEqual((cm.exception.expected, cm.exception.actual), (0, 3))
        self.assertEqual(cm.exception.details, {"expected": 0, "actual": 3})

        c.finish(conv, "m")
        for write in (lambda: c.start(conv, "m"), lambda: c.step(conv, "m", 1, b""),
                      lambda: c.fail(conv, "m", "late")):
            with self.assertRaises(AlreadyFinished) as cm:
                write()
            self.assertCode(cm, AlreadyFinished, "already_finished")

        with self.assertRaises(UnknownOp) as cm:
            c.request("frobnicate")
        self.assertCode(cm, UnknownOp, "unknown_op")
        self.assertEqual(c.read(conv)[1], 4)  # no rejected write appended anything

    def test_bad_request(self):
        c, conv = self.client, self.conv()
        cases = [
            (lambda: c.step(conv, "m", -1, b""), "step_index"),
            (lambda: c.step(conv, "m", 2**32, b""), "step_index"),
            (lambda: c.receive("", "m"), "conversation"),
            (lambda: c.receive(conv, "x" * 257), "message_id"),
            (lambda: c.receive(conv, "m", expected_seq=-1), "expected_seq"),
            (lambda: c.read(conv, limit=0), "limit"),
            (lambda: c.read(conv, limit=10001), "limit"),
            (lambda: c.conversations(limit=1001), "limit"),
            (lambda: c.fail(conv, "m", ""), "error"),
            (lambda: c.request("receive", conversation=conv), "message_id"),
        ]
        for call, field in cases:
            with self.subTest(field=field), self.assertRaises(BadRequest) as cm:
                call()
            self.assertCode(cm, BadRequest, "bad_request")
            self.assertEqual(cm.exception.field, field)
        self.client.ping()  # the connection keeps working
        self.assertEqual(c.read(conv)[1], 0)

    def test_line_too_long(self):
        limit = self.client.hello()["limits"]["max_line_bytes"]
        with self.assertRaises(LineTooLong) as cm:
            self.client.request("ping", padding="x" * limit)
        self.assertCode(cm, LineTooLong, "line_too_long")
        self.assertIsNone(self.client.ping())  # the connection keeps working
        # A line just under the limit is served.
        self.client.request("ping", padding="x" * (limit - 100))

    def test_output_must_be_bytes(self):
        with self.assertRaises(TypeError):
            self.client.step(self.conv(), "m", 0, "text")
        self.client.receive(self.conv(), "m")
        self.client.start(self.conv(), "m")
        self.assertEqual(self.client.step(self.conv(), "m", 0, bytearray(b"ba")), Ack(2))
        self.assertEqual(self.client.state(self.conv(), "m").output(0), b"ba")

    def test_state_and_read(self):
        c, conv = self.client, self.conv()
        self.assertEqual(c.state(conv), liminald.ConversationState(0, {
            "received": 0, "in_progress": 0, "errored": 0, "finished": 0, "total": 0}))
        unknown = c.state(conv, "nope")
        self.assertEqual(unknown, liminald.MessageState("unknown", None, None, [], None))
        self.assertEqual(c.read(conv), ([], 0))

        for i in range(4):
            c.receive(conv, f"m{i}")
        c.start(conv, "m1")
        c.start(conv, "m2")
        c.fail(conv, "m2", "nope")
        c.finish(conv, "m3")
        self.assertEqual(c.state(conv), liminald.ConversationState(8, {
            "received": 1, "in_progress": 1, "errored": 1, "finished": 1, "total": 4}))
        self.assertEqual(c.state(conv, "m2").error, "nope")

        events, next_seq = c.read(conv, from_seq=2, limit=3)
        self.assertEqual(([e.seq for e in events], next_seq), ([2, 3, 4], 5))
        self.assertEqual(c.read(conv, from_seq=100), ([], 100))
        self.assertEqual([e.seq for e in c.read_all(conv)], list(range(8)))

    def test_conversations_paging(self):
        c, prefix = self.client, self.conv("-")
        names = [f"{prefix}{i}" for i in range(5)]
        for name in names:
            c.receive(name, "m")
        page = [i for i in c.conversations(after=prefix, limit=3)]
        self.assertEqual([i.conversation for i in page], names[:3])
        page = c.conversations(after=names[2], limit=2)
        self.assertEqual([i.conversation for i in page], names[3:])

    def test_subscribe_live(self):
        c, conv = self.client, self.conv()
        c.receive(conv, "before")  # committed before: not pushed
        with c.subscribe(conv, timeout=IO_TIMEOUT) as sub:
            c.receive(conv, "m")
            c.start(conv, "m")
            c.step(conv, "m", 0, b"\x00\xff")
            c.receive(self.conv("-other"), "m")  # another conversation
            c.finish(conv, "m")
            got = [next(sub) for _ in range(4)]
        self.assertEqual([(e.seq, e.type) for e in got], [
            (1, "message_received"), (2, "processing_started"), (3, "step_completed"),
            (4, "processing_finished")])
        self.assertEqual(got[2].output, b"\x00\xff")
        self.assertEqual({e.message_id for e in got}, {"m"})

    def test_subscribe_catch_up_then_live(self):
        c, conv = self.client, self.conv()
        c.receive(conv, "a")
        c.receive(conv, "b")
        with c.subscribe(conv, from_seq=1, timeout=IO_TIMEOUT) as sub:
            first = next(sub)
            c.receive(conv, "c")
            second = next(sub)
        self.assertEqual([(e.seq, e.message_id) for e in (first, second)], [(1, "b"), (2, "c")])

    def test_subscribe_every_conversation(self):
        c = self.client
        a, b = self.conv("-a"), self.conv("-b")
        c.receive(a, "m")
        start_pos = c.read(a)[0][0].pos
        with c.subscribe(from_pos=start_pos, timeout=IO_TIMEOUT) as sub:
            c.receive(b, "m")
            c.start(a, "m")
            got = []
            for e in sub:  # other tests' events may come between
                if e.conversation in (a, b):
                    got.append((e.conversation, e.type))
                if len(got) == 3:
                    break
        self.assertEqual(got, [(a, "message_received"), (b, "message_received"),
                               (a, "processing_started")])

    def test_subscribe_close_from_another_thread(self):
        c, conv = self.client, self.conv()
        sub = c.subscribe(conv, timeout=IO_TIMEOUT)
        got, first = [], threading.Event()

        def follow():
            for e in sub:
                got.append(e)
                first.set()

        t = threading.Thread(target=follow)
        t.start()
        c.receive(conv, "m")
        self.assertTrue(first.wait(IO_TIMEOUT))
        sub.close()  # ends the iteration in the other thread
        t.join(IO_TIMEOUT)
        self.assertFalse(t.is_alive())
        self.assertEqual([e.type for e in got], ["message_received"])

    def test_subscribe_after_lag(self):
        # Not reading while many large events commit, one commit each, fills
        # the socket and then the daemon's queue of pushes (256 batches): the
        # daemon ends the subscriptions as lagging.  One iterator subscribes
        # again by itself, without a gap; the other raises Lagged.
        c, conv = self.client, self.conv()
        c.receive(conv, "m")
        c.start(conv, "m")
        big = b"\x07" * (32 * 1024)
        n = 800
        with c.subscribe(conv, timeout=IO_TIMEOUT) as sub, \
                c.subscribe(conv, timeout=IO_TIMEOUT, resume_on_lag=False) as strict:
            for i in range(n):
                c.step(conv, "m", i, big)
            c.finish(conv, "m")

            got = [next(sub) for _ in range(n + 1)]
            self.assertGreaterEqual(sub.lags, 1)
            self.assertEqual([e.seq for e in got], list(range(2, n + 3)))
            self.assertEqual(got[-1].type, "processing_finished")

            before = []
            with self.assertRaises(liminald.Lagged) as cm:
                for e in strict:
                    before.append(e)
            self.assertLess(len(before), n + 1)
            self.assertEqual([e.seq for e in before], list(range(2, 2 + len(before))))
            self.assertEqual(cm.exception.next_seq, 2 + len(before))
        with c.subscribe(conv, from_seq=cm.exception.next_seq, timeout=IO_TIMEOUT) as again:
            self.assertEqual(next(again).seq, 2 + len(before))

    def test_shared_between_threads(self):
        c, conv = self.client, self.conv()
        results, errors = [], []

        def work(t):
            try:
                for i in range(20):
                    m = f"t{t}-{i}"
                    results.append(c.receive(conv, m).action)
                    c.start(conv, m)
                    c.step(conv, m, 0, m.encode())
                    c.finish(conv, m)
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(IO_TIMEOUT * 4)
        self.assertEqual(errors, [])
        self.assertEqual(results, ["start"] * 160)
        self.assertEqual(c.state(conv).messages["finished"], 160)
        self.assertEqual(c.state(conv, "t3-7").output(0), b"t3-7")

    def test_reconnects_after_close(self):
        c = Client(self.daemon.socket, timeout=IO_TIMEOUT)
        with c:
            c.ping()
        c.ping()  # connects again
        c.close()


class RefusalTest(unittest.TestCase):
    """forbidden and unavailable, the codes of a refused connection."""

    def test_forbidden(self):
        # Root is not allowed implicitly, and no test runs as uid 4242.
        d = Daemon("--allow-uid", "4242")
        try:
            with Client(d.socket, timeout=IO_TIMEOUT) as c:
                with self.assertRaises(Forbidden) as cm:
                    c.ping()
            self.assertEqual(cm.exception.code, "forbidden")
            self.assertFalse(cm.exception.retryable)
            self.assertEqual(d.stop(), 0)
        finally:
            d.remove()

    def test_unavailable_over_max_connections(self):
        d = Daemon("--max-connections", "1")
        try:
            with Client(d.socket, timeout=IO_TIMEOUT) as first:
                first.ping()
                with Client(d.socket, timeout=IO_TIMEOUT) as second:
                    with self.assertRaises(Unavailable) as cm:
                        second.ping()
                self.assertEqual(cm.exception.code, "unavailable")
                self.assertTrue(cm.exception.retryable)
                first.ping()  # the others are served as before
            self.assertEqual(d.stop(), 0)
        finally:
            d.remove()

    def test_shutting_down(self):
        d = Daemon()
        try:
            with Client(d.socket, timeout=IO_TIMEOUT) as c:
                c.ping()
                d.proc.send_signal(signal.SIGTERM)
                # Ping until the daemon stops answering ok: the first failure
                # is shutting_down (requests read once shutdown began), later
                # ones find the connection closed.
                while True:
                    try:
                        c.ping()
                    except ShuttingDown as e:
                        self.assertTrue(e.retryable)
                        break
            self.assertEqual(d.stop(), 0)
        finally:
            d.remove()


class ErrorMappingTest(unittest.TestCase):
    """The mapping of codes to classes, without a daemon."""

    def test_every_code(self):
        codes = {
            "bad_request": BadRequest, "line_too_long": LineTooLong, "unknown_op": UnknownOp,
            "unknown_message": UnknownMessage, "already_finished": AlreadyFinished,
            "step_conflict": StepConflict, "sequence_conflict": SequenceConflict,
            "forbidden": Forbidden, "unavailable": Unavailable, "shutting_down": ShuttingDown,
            "internal": Internal, "busy": Busy, "fenced": Fenced, "quarantined": Quarantined,
            "not_quarantined": NotQuarantined, "fingerprint_mismatch": FingerprintMismatch,
        }
        for code, cls in codes.items():
            e = LiminalError.from_wire({"code": code, "message": "m", "retryable": True, "x": 1})
            self.assertIs(type(e), cls)
            self.assertEqual((e.code, e.message, e.retryable, e.details), (code, "m", True, {"x": 1}))
            self.assertEqual(str(e), f"{code}: m")

    def test_unknown_code(self):
        e = LiminalError.from_wire({"code": "brand_new", "message": "m", "retryable": False})
        self.assertIs(type(e), LiminalError)
        self.assertEqual(e.code, "brand_new")

    def test_protocol_2_details(self):
        busy = LiminalError.from_wire({"code": "busy", "message": "m", "retryable": True,
                                       "worker": "w1", "token": 4, "retry_after_ms": 250})
        self.assertEqual((busy.worker, busy.token, busy.retry_after_ms, busy.retryable),
                         ("w1", 4, 250, True))
        fenced = LiminalError.from_wire({"code": "fenced", "message": "m", "retryable": False,
                                         "token": 4, "current_token": 9})
        self.assertEqual((fenced.token, fenced.current_token), (4, 9))
        fm = LiminalError.from_wire({"code": "fingerprint_mismatch", "message": "m",
                                     "retryable": False, "stored": "sha256:ab"})
        self.assertEqual(fm.stored, "sha256:ab")

    def test_sequence_conflict_details(self):
        e = LiminalError.from_wire({"code": "sequence_conflict", "message": "m", "retryable": False,
                                    "expected": 9, "actual": 5})
        self.assertEqual((e.expected, e.actual), (9, 5))


class DefaultSocketPathTest(unittest.TestCase):

    def test_resolution(self):
        f = liminald.default_socket_path
        self.assertEqual(f({"LIMINAL_SOCKET": "/x/s", "XDG_RUNTIME_DIR": "/run/user/7"}, 7), "/x/s")
        self.assertEqual(f({"XDG_RUNTIME_DIR": "/run/user/7"}, 7),
                         "/run/user/7/liminald/liminald.sock")
        self.assertEqual(f({"XDG_RUNTIME_DIR": "relative"}, 0), "/run/liminald/liminald.sock")
        self.assertEqual(f({}, 0), "/run/liminald/liminald.sock")
        self.assertEqual(f({"LIMINAL_SOCKET": ""}, 1000), "/tmp/liminald-1000/liminald.sock")


def expected_outputs(message_id: str, steps: int) -> list[bytes]:
    """The outputs worker.py computes: sha256 of the id, then of each output."""
    outs, data = [], message_id.encode()
    for _ in range(steps):
        data = hashlib.sha256(data).digest()
        outs.append(data)
    return outs


def wait_for_decision(client: Client, conv: str, message_id: str, action: str) -> Decision:
    """Polls decide until it answers ``action``, sleeping between polls for
    the retry_after_ms a busy decision gives (a lease's remaining time),
    never longer than IO_TIMEOUT in all."""
    deadline = time.monotonic() + IO_TIMEOUT
    while True:
        d = client.decide(conv, message_id)
        if d.action == action:
            return d
        if time.monotonic() > deadline:
            raise AssertionError(f"decide of {message_id} still answers {d} after {IO_TIMEOUT} s")
        time.sleep(min(d.retry_after_ms or 1, 100) / 1000)


def lease_events(events: list) -> list:
    """The events without lease_renewed: how many renewals a run made depends
    on how long it took."""
    return [e for e in events if e.type != "lease_renewed"]


class WorkerTest(DaemonTestCase):
    """The worked example, end to end: crash mid-message, redelivery once the
    crashed run's lease lapsed, skip."""

    def run_worker(self, conv, message_id, *args, crash_env=None):
        env = {k: v for k, v in os.environ.items() if k != "CRASH_AFTER_STEP"}
        if crash_env is not None:
            env["CRASH_AFTER_STEP"] = str(crash_env)
        return subprocess.run(
            [sys.executable, str(WORKER), "--socket", self.daemon.socket, "--conversation", conv,
             "--steps", "3", *args, message_id],
            env=env, capture_output=True, text=True, timeout=120)

    def assert_ran(self, proc, status=0):
        self.assertEqual(proc.returncode, status, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")

    def test_crash_resume_skip(self):
        c, conv, m = self.client, self.conv(), "msg-1"
        outs = expected_outputs(m, 3)

        # 1. The first delivery dies right after recording step 1, holding a
        # lease of 300 ms.
        run1 = self.run_worker(conv, m, "--worker", "crasher", "--lease-ms", "300", crash_env=1)
        self.assertNotEqual(run1.returncode, 0)
        self.assertEqual(run1.returncode, -signal.SIGKILL)
        self.assertIn(f"{m}: start from 0", run1.stdout)
        self.assertIn(f"{m}: leased by crasher for 300 ms, token 1", run1.stdout)
        self.assertIn(f"{m}: crashing after step 1", run1.stdout)
        st = c.state(conv, m)
        self.assertEqual((st.status, st.last_completed_step, st.worker, st.token),
                         ("in_progress", 1, "crasher", 1))

        # 2. Once its lease lapsed, the redelivery takes it over and resumes
        # at step 2, with step 1's output from the receive reply.
        wait_for_decision(c, conv, m, "resume")
        run2 = self.run_worker(conv, m, "--worker", "second")
        self.assert_ran(run2)
        self.assertIn(f"{m}: resume from 2", run2.stdout)
        self.assertNotIn("step 0", run2.stdout)
        self.assertNotIn("step 1", run2.stdout)
        self.assertIn(f"{m}: step 2 seq ", run2.stdout)

        events, next_seq = c.read(conv)
        self.assertEqual([(e.type, e.step_index, e.worker) for e in lease_events(events)], [
            ("message_received", None, None), ("processing_started", None, "crasher"),
            ("step_completed", 0, None), ("step_completed", 1, None),
            ("processing_started", None, "second"), ("step_completed", 2, None),
            ("processing_finished", None, None)])
        steps = [e for e in events if e.type == "step_completed"]
        self.assertEqual([e.output for e in steps], outs)  # each step recorded once
        st = c.state(conv, m)
        self.assertEqual((st.status, st.last_completed_step, st.attempts), ("finished", 2, 2))

        # 3. A third delivery is skipped and appends nothing.
        run3 = self.run_worker(conv, m)
        self.assert_ran(run3)
        self.assertEqual(run3.stdout.strip(), f"{m}: skip")
        self.assertEqual(c.read(conv)[1], next_seq)

    def test_crash_flag_on_the_command_line(self):
        c, conv, m = self.client, self.conv(), "msg-2"
        run1 = self.run_worker(conv, m, "--lease-ms", "1", "--crash-after-step", "0")
        self.assertEqual(run1.returncode, -signal.SIGKILL)
        wait_for_decision(c, conv, m, "resume")
        run2 = self.run_worker(conv, m)
        self.assert_ran(run2)
        self.assertIn(f"{m}: resume from 1", run2.stdout)
        steps = [e for e in c.read(conv)[0] if e.type == "step_completed"]
        self.assertEqual([(e.step_index, e.output) for e in steps],
                         list(enumerate(expected_outputs(m, 3))))
        self.assertEqual(c.decide(conv, m).action, "skip")

    def test_busy_runs_nothing(self):
        # Another worker holds a live lease: the delivery is busy, and the
        # worker records nothing.
        c, conv, m = self.client, self.conv(), "msg-3"
        c.receive(conv, m)
        with c.lease(conv, m, "holder", 60_000) as lease:
            next_seq = c.read(conv)[1]
            run = self.run_worker(conv, m, "--worker", "latecomer")
            self.assert_ran(run)
            self.assertRegex(run.stdout.strip(),
                             rf"^{m}: busy: worker holder holds it \(token {lease.token}\); "
                             r"retry in \d+ ms$")
            # Nothing since but the holder's renewals.
            self.assertEqual(lease_events(c.read(conv, from_seq=next_seq)[0]), [])


# --------------------------------------------------------------------------
# Protocol 2: leases, fencing, attempts, fingerprints


class LeaseTest(DaemonTestCase):
    """The protocol-2 ops and fields, one client call at a time."""

    def test_start_with_a_lease(self):
        c, conv = self.client, self.conv()
        c.receive(conv, "m")
        ack = c.start(conv, "m", worker="w1", lease_ms=60_000)
        self.assertEqual((ack.seq, ack.token, ack.duplicate), (1, 1, False))
        self.assertIsNotNone(ack.lease_expires_at)

        # While leased: deliveries are busy and append nothing.
        d = c.receive(conv, "m")
        self.assertEqual((d.action, d.worker, d.token), ("busy", "w1", 1))
        self.assertTrue(0 < d.retry_after_ms <= 60_000)
        self.assertEqual(c.decide(conv, "m").action, "busy")
        self.assertEqual(c.read(conv)[1], 2)

        # The same worker's start is a duplicate; another's is refused.
        again = c.start(conv, "m", worker="w1", lease_ms=60_000)
        self.assertEqual((again.seq, again.token, again.duplicate), (1, 1, True))
        for other in ({"worker": "w2", "lease_ms": 60_000}, {}):
            with self.subTest(other=other), self.assertRaises(Busy) as cm:
                c.start(conv, "m", **other)
            e = cm.exception
            self.assertEqual((e.code, e.retryable, e.worker, e.token), ("busy", True, "w1", 1))
            self.assertTrue(0 < e.retry_after_ms <= 60_000)

        st = c.state(conv, "m")
        self.assertEqual((st.status, st.attempts, st.token, st.worker), ("in_progress", 1, 1, "w1"))
        self.assertEqual(st.lease_expires_at, ack.lease_expires_at)
        self.assertFalse(st.quarantined)
        started = c.read(conv)[0][1]
        self.assertEqual((started.type, started.worker, started.lease_ms),
                         ("processing_started", "w1", 60_000))

    def test_renew(self):
        c, conv = self.client, self.conv()
        c.receive(conv, "m")
        token = c.start(conv, "m", worker="w1", lease_ms=60_000).token
        ack = c.renew(conv, "m", token, 120_000)
        self.assertEqual(ack.seq, 2)
        self.assertEqual(c.state(conv, "m").lease_expires_at, ack.lease_expires_at)
        renewed = c.read(conv)[0][2]
        self.assertEqual((renewed.type, renewed.token, renewed.lease_ms),
                         ("lease_renewed", token, 120_000))
        self.assertEqual(ack.lease_expires_at, renewed.ts + 120_000)
        c.finish(conv, "m", token=token)
        with self.assertRaises(Fenced):  # no longer in progress
            c.renew(conv, "m", token, 1000)
        with self.assertRaises(UnknownMessage):
            c.renew(conv, "never", 1, 1000)

    def test_fencing(self):
        c, conv = self.client, self.conv()
        c.receive(conv, "m")
        old = c.start(conv, "m", worker="w1", lease_ms=1).token
        wait_for_decision(c, conv, "m", "resume")  # the lease of 1 ms lapsed
        new = c.start(conv, "m", worker="w2", lease_ms=60_000)
        self.assertFalse(new.duplicate)  # a takeover appends
        self.assertGreater(new.token, old)
        stale = [lambda: c.step(conv, "m", 0, b"x", token=old),
                 lambda: c.finish(conv, "m", token=old),
                 lambda: c.fail(conv, "m", "late", token=old),
                 lambda: c.renew(conv, "m", old, 1000)]
        for write in stale:
            with self.assertRaises(Fenced) as cm:
                write()
            e = cm.exception
            self.assertEqual((e.code, e.retryable, e.token, e.current_token),
                             ("fenced", False, old, new.token))
        self.assertEqual(c.read(conv)[1], new.seq + 1)  # nothing appended
        self.assertEqual(c.step(conv, "m", 0, b"x", token=new.token).seq, new.seq + 1)
        self.assertEqual(c.step(conv, "m", 1, b"y").seq, new.seq + 2)  # no token: no fencing
        self.assertEqual(c.finish(conv, "m", token=new.token).seq, new.seq + 3)

    def test_lease_renews_in_the_background_and_notices_it_was_lost(self):
        c, conv = self.client, self.conv()
        c.receive(conv, "m")
        # A lease of 1 ms renewed every 20 ms lapses between renewals, so
        # another worker can take it over, after which the next renewal is
        # refused.
        lease = c.lease(conv, "m", "a", 1, renew_every=0.02)
        with lease, Client(self.daemon.socket, timeout=IO_TIMEOUT) as other:
            deadline = time.monotonic() + IO_TIMEOUT
            while True:
                try:
                    taken = other.start(conv, "m", worker="b", lease_ms=60_000)
                    break
                except Busy as e:  # caught between a renewal and its lapse
                    self.assertLess(time.monotonic(), deadline)
                    time.sleep(e.retry_after_ms / 1000)
            while lease.lost is None:  # the renewer's next renewal
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.01)
            self.assertEqual((lease.lost.token, lease.lost.current_token),
                             (lease.token, taken.token))
            next_seq = c.read(conv)[1]
            with self.assertRaises(Fenced):
                lease.check()
            with self.assertRaises(Fenced):  # refused before it is sent
                lease.step(0, b"late")
            self.assertEqual(c.read(conv)[1], next_seq)

    def test_with_steps(self):
        c, conv = self.client, self.conv()
        self.assertIsNone(c.receive(conv, "m", with_steps=True).steps)  # start: none
        c.start(conv, "m")
        c.step(conv, "m", 0, b"a")
        c.step(conv, "m", 2, b"\x00\xff")
        d = c.receive(conv, "m", with_steps=True)
        self.assertEqual((d.action, d.resume_from), ("resume", 3))
        self.assertEqual(d.steps, [Step(0, None, b"a"), Step(2, None, b"\x00\xff")])
        self.assertEqual((d.output(2), d.output(1)), (b"\x00\xff", None))
        self.assertEqual(c.decide(conv, "m", with_steps=True), d)
        self.assertIsNone(c.receive(conv, "m").steps)  # not asked
        self.assertEqual(c.receive(conv, "m"), Decision("resume", 3))

    def test_fingerprint(self):
        c, conv = self.client, self.conv()
        self.assertEqual(c.receive(conv, "m", fingerprint="sha256:aa").action, "start")
        self.assertEqual(c.receive(conv, "m", fingerprint="sha256:aa").action, "resume")
        for call in (lambda: c.receive(conv, "m", fingerprint="sha256:bb"),
                     lambda: c.decide(conv, "m", fingerprint="sha256:bb")):
            with self.assertRaises(FingerprintMismatch) as cm:
                call()
            e = cm.exception
            self.assertEqual((e.code, e.retryable, e.stored),
                             ("fingerprint_mismatch", False, "sha256:aa"))
        self.assertEqual(c.receive(conv, "m").action, "resume")  # without one: no check
        self.assertEqual(c.state(conv, "m").fingerprint, "sha256:aa")
        self.assertEqual(c.read(conv)[0][0].fingerprint, "sha256:aa")
        self.assertEqual(c.read(conv)[1], 1)

        # The worker refuses a payload that is not the one recorded, before
        # any side effect.
        effects = []
        with self.assertRaises(FingerprintMismatch) as cm:
            worker.process(c, conv, "m", 3, worker="w", fingerprint="sha256:bb",
                           run=lambda i, m, p: effects.append(i) or b"", log=lambda line: None)
        self.assertEqual(cm.exception.stored, "sha256:aa")
        self.assertEqual(effects, [])
        self.assertEqual(c.read(conv)[1], 1)

    def test_messages_and_explain(self):
        c, conv = self.client, self.conv()
        for m in ("a", "b", "c", "d"):
            c.receive(conv, m)
        c.start(conv, "b", worker="w1", lease_ms=60_000)
        c.start(conv, "c")
        c.fail(conv, "c", "boom")
        c.finish(conv, "d")

        page, nxt = c.messages(conv, limit=3)
        self.assertEqual([(i.message_id, i.status) for i in page],
                         [("a", "received"), ("b", "in_progress"), ("c", "errored")])
        self.assertEqual(nxt, "c")
        page, nxt = c.messages(conv, after=nxt)
        self.assertEqual(([i.message_id for i in page], nxt), (["d"], None))
        leased, _ = c.messages(conv, status="leased")
        self.assertEqual([i.message_id for i in leased], ["b"])
        b = leased[0]
        self.assertEqual((b.worker, b.attempts, b.quarantined, b.compacted), ("w1", 1, False, False))
        self.assertIsNotNone(b.lease_expires_at)
        self.assertGreaterEqual(b.updated_at, b.received_at)
        self.assertEqual(c.messages(conv, status="quarantined"), ([], None))

        x = c.explain(conv, "b")
        self.assertEqual((x.decision.action, x.decision.worker, x.rule), ("busy", "w1", "leased"))
        self.assertIsInstance(x.reason, str)
        self.assertEqual([e.type for e in x.events], ["message_received", "processing_started"])
        self.assertEqual(c.explain(conv, "d").rule, "finished")
        self.assertEqual(c.explain(conv, "c").decision, Decision("resume", 0))
        never = c.explain(conv, "zz")
        self.assertEqual((never.decision.action, never.rule, never.events), ("start", "never_seen", []))

    def test_bad_request_protocol_2(self):
        c, conv = self.client, self.conv()
        c.receive(conv, "m")
        cases = [
            (lambda: c.start(conv, "m", worker="w", lease_ms=0), "lease_ms"),
            (lambda: c.start(conv, "m", worker="w", lease_ms=86_400_001), "lease_ms"),
            (lambda: c.start(conv, "m", worker="", lease_ms=1000), "worker"),
            (lambda: c.renew(conv, "m", 1, 0), "lease_ms"),
            (lambda: c.request("renew", conversation=conv, message_id="m", lease_ms=10), "token"),
            (lambda: c.step(conv, "m", 0, b"", token="x"), "token"),
            (lambda: c.finish(conv, "m", token=-1), "token"),
            (lambda: c.receive(conv, "m", fingerprint=""), "fingerprint"),
            (lambda: c.decide(conv, "m", fingerprint=""), "fingerprint"),
            (lambda: c.receive(conv, "m", sent_at=-1), "sent_at"),
            (lambda: c.decide(conv, "m", sent_at=-1), "sent_at"),
            (lambda: c.release(conv, "m", reason=""), "reason"),
            (lambda: c.messages(conv, status="bogus"), "status"),
            (lambda: c.messages(conv, limit=1001), "limit"),
        ]
        for call, field in cases:
            with self.subTest(field=field), self.assertRaises(BadRequest) as cm:
                call()
            self.assertEqual((cm.exception.code, cm.exception.field), ("bad_request", field))
        self.assertEqual(c.read(conv)[1], 1)  # nothing appended


class Gate:
    """A step's side effect that records itself, and on its first call says
    so (``entered``) and waits until the test lets it go on (``go``)."""

    def __init__(self, name: str, effects: list):
        self.name, self.effects = name, effects
        self.entered, self.go = threading.Event(), threading.Event()

    def __call__(self, index: int, message_id: str, previous):
        self.effects.append((self.name, index))
        if not self.entered.is_set():
            self.entered.set()
            if not self.go.wait(IO_TIMEOUT):
                raise AssertionError(f"{self.name} was never let go on")
        return worker.run_step(index, message_id, previous)


class LeasedWorkerTest(DaemonTestCase):
    """worker.process under leases: concurrent workers, each on a connection
    of its own in a thread of its own."""

    def spawn(self, name: str, conv: str, m: str, results: "queue.Queue",
              barrier: threading.Barrier | None = None, **kwargs):
        """Runs worker.process of 3 steps as worker ``name`` in a thread,
        after ``barrier`` if given; puts (name, what it returned or raised,
        its log) in results."""
        log: list = []

        def run():
            try:
                with Client(self.daemon.socket, timeout=IO_TIMEOUT) as c:
                    c.connect()
                    if barrier is not None:
                        barrier.wait()
                    out = worker.process(c, conv, m, 3, worker=name, log=log.append, **kwargs)
            except BaseException as e:  # reported by the test
                out = e
            results.put((name, out, log))

        t = threading.Thread(target=run, name=name, daemon=True)
        t.start()
        return t

    def test_two_workers_race_one_redelivery(self):
        c, conv, m = self.client, self.conv(), "m"
        # The first delivery's worker crashed after step 0, holding a lease
        # of 1 ms; the message is redelivered to two workers at once.
        c.receive(conv, m)
        crashed = c.start(conv, m, worker="crashed", lease_ms=1).token
        c.step(conv, m, 0, worker.run_step(0, m, None), token=crashed)
        wait_for_decision(c, conv, m, "resume")

        effects: list = []
        gates = {name: Gate(name, effects) for name in ("A", "B")}
        results: queue.Queue = queue.Queue()
        barrier = threading.Barrier(2, timeout=IO_TIMEOUT)  # both receive at once
        threads = [self.spawn(name, conv, m, results, barrier, lease_ms=30_000, run=gates[name])
                   for name in ("A", "B")]

        # No worker runs a side effect before its start succeeded, and the
        # daemon serializes the two starts: the first appends and takes a
        # lease of 30 s (renewed), the second finds that lease live and is
        # refused with Busy, or, if it received after the first start, its
        # receive is a busy decision.  The winner cannot finish (and turn
        # the loser's answer into a skip) before the loser returned: its
        # first side effect waits until the test lets it go, which the test
        # does only once the loser has returned.
        loser, out, loser_log = results.get(timeout=IO_TIMEOUT)
        self.assertEqual(out, "busy", loser_log)
        winner = "B" if loser == "A" else "A"
        self.assertTrue(gates[winner].entered.wait(IO_TIMEOUT))  # the winner is mid-work
        self.assertEqual(effects, [(winner, 1)])
        self.assertEqual(c.decide(conv, m).action, "busy")
        gates[winner].go.set()
        name, out, winner_log = results.get(timeout=IO_TIMEOUT)
        self.assertEqual((name, out), (winner, "resume"), winner_log)
        for t in threads:
            t.join(IO_TIMEOUT)

        # The side effects ran once each, all in the winner.
        self.assertEqual(effects, [(winner, 1), (winner, 2)])
        self.assertIn(f"{m}: busy: worker {winner} holds it", "\n".join(loser_log))
        events = lease_events(c.read(conv)[0])
        self.assertEqual([(e.type, e.step_index, e.worker) for e in events], [
            ("message_received", None, None), ("processing_started", None, "crashed"),
            ("step_completed", 0, None), ("processing_started", None, winner),
            ("step_completed", 1, None), ("step_completed", 2, None),
            ("processing_finished", None, None)])
        self.assertEqual([e.output for e in events if e.type == "step_completed"],
                         expected_outputs(m, 3))

        # The loser's next delivery is skipped.
        log: list = []
        with Client(self.daemon.socket, timeout=IO_TIMEOUT) as lc:
            self.assertEqual(worker.process(lc, conv, m, 3, worker=loser, run=gates[loser],
                                            log=log.append), "skip")
        self.assertEqual(log, [f"{m}: skip"])
        self.assertEqual(len(effects), 2)

    def test_fenced_worker_stops(self):
        c, conv, m = self.client, self.conv(), "m"
        c.receive(conv, m)
        effects: list = []
        a, b = Gate("A", effects), Gate("B", effects)
        results: queue.Queue = queue.Queue()

        # A takes a lease of 1 ms and does not renew it, as a process that
        # stalls would not (a long GC pause, SIGSTOP), and is held inside
        # step 0's side effect.
        self.spawn("A", conv, m, results, lease_ms=1, renew_every=0, run=a)
        self.assertTrue(a.entered.wait(IO_TIMEOUT))
        wait_for_decision(c, conv, m, "resume")  # A's lease lapsed

        # B takes the message over and is held inside its own step 0.
        self.spawn("B", conv, m, results, lease_ms=30_000, run=b)
        self.assertTrue(b.entered.wait(IO_TIMEOUT))
        self.assertEqual(c.state(conv, m).worker, "B")

        # A wakes up: its step 0 write is fenced, and it stops.
        a.go.set()
        name, out, a_log = results.get(timeout=IO_TIMEOUT)
        self.assertEqual((name, out), ("A", "fenced"), a_log)
        self.assertIn(f"{m}: fenced: token 1 is no longer current (now 2); stopped", a_log)
        self.assertEqual([e for e in effects if e[0] == "A"], [("A", 0)])  # nothing after

        b.go.set()
        name, out, b_log = results.get(timeout=IO_TIMEOUT)
        self.assertEqual((name, out), ("B", "resume"), b_log)
        self.assertEqual([e for e in effects if e[0] == "A"], [("A", 0)])
        self.assertEqual([e for e in effects if e[0] == "B"], [("B", 0), ("B", 1), ("B", 2)])
        events = lease_events(c.read(conv)[0])
        self.assertEqual([(e.type, e.step_index, e.worker) for e in events], [
            ("message_received", None, None), ("processing_started", None, "A"),
            ("processing_started", None, "B"), ("step_completed", 0, None),
            ("step_completed", 1, None), ("step_completed", 2, None),
            ("processing_finished", None, None)])

    def test_renewal_keeps_the_lease_across_long_work(self):
        c, conv, m = self.client, self.conv(), "m"
        c.receive(conv, m)
        effects: list = []
        gate = Gate("W", effects)
        results: queue.Queue = queue.Queue()
        # A lease of 1200 ms, renewed every 400 ms, while step 0 takes over
        # 2.4 seconds: the test holds it until it has checked.
        self.spawn("W", conv, m, results, lease_ms=1200, run=gate)
        self.assertTrue(gate.entered.wait(IO_TIMEOUT))
        started = c.read(conv)[0][1]
        self.assertEqual((started.type, started.worker), ("processing_started", "W"))

        # Wait (by the daemon's clock) until a renewal committed 2.4 seconds
        # after the start: the work has lasted two lease lengths.
        deadline = time.monotonic() + IO_TIMEOUT
        while (c.state(conv, m).lease_expires_at or 0) < started.ts + 2400 + 1200:
            self.assertLess(time.monotonic(), deadline, "no renewal 2.4 seconds after the start")
            time.sleep(0.05)

        # W is still inside step 0, and the message is still its own.
        self.assertFalse(gate.go.is_set())
        d = c.decide(conv, m)
        self.assertEqual((d.action, d.worker, d.token), ("busy", "W", started.seq))
        with self.assertRaises(Busy) as cm:
            c.start(conv, m, worker="other", lease_ms=300)
        self.assertEqual(cm.exception.worker, "W")

        gate.go.set()
        name, out, log = results.get(timeout=IO_TIMEOUT)
        self.assertEqual((name, out), ("W", "resume"), log)
        self.assertEqual(effects, [("W", 0), ("W", 1), ("W", 2)])
        # Each renewal came before the lease it extended expired: the lease
        # never lapsed.
        events = c.read(conv)[0]
        expires = started.ts + 1200
        renewals = [e for e in events if e.type == "lease_renewed"]
        self.assertGreaterEqual(len(renewals), 3)
        for e in renewals:
            self.assertEqual((e.token, e.lease_ms), (started.seq, 1200))
            self.assertLess(e.ts, expires, "a renewal came after the lease lapsed")
            expires = e.ts + 1200
        self.assertEqual(events[-1].type, "processing_finished")


class QuarantineTest(DaemonTestCase):
    """max_attempts: a message started twice without finishing is set aside
    until released."""

    flags = ("--max-attempts", "2")

    def test_quarantine_and_release(self):
        c, conv, m = self.client, self.conv(), "m"
        effects: list = []

        def broken(index, message_id, previous):
            effects.append(index)
            if index == 1:
                raise RuntimeError("boom")
            return worker.run_step(index, message_id, previous)

        quiet = {"log": lambda line: None}
        # Two attempts fail at step 1; the failure is recorded with the token.
        for attempt in (1, 2):
            with self.subTest(attempt=attempt), self.assertRaises(RuntimeError):
                worker.process(c, conv, m, 3, worker=f"w{attempt}", run=broken, **quiet)
            self.assertEqual(c.state(conv, m).attempts, attempt)
        self.assertEqual(effects, [0, 1, 1])

        # The third delivery is quarantined: nothing runs or is appended.
        next_seq = c.read(conv)[1]
        self.assertEqual(worker.process(c, conv, m, 3, worker="w3", run=broken, **quiet),
                         "quarantined")
        self.assertEqual(effects, [0, 1, 1])
        d = c.decide(conv, m)
        self.assertEqual((d.action, d.attempts, d.error),
                         ("quarantined", 2, "step 1: RuntimeError('boom')"))
        with self.assertRaises(Quarantined) as cm:
            c.start(conv, m, worker="w3", lease_ms=1000)
        self.assertEqual((cm.exception.code, cm.exception.retryable), ("quarantined", False))
        self.assertEqual(c.read(conv)[1], next_seq)
        listed, _ = c.messages(conv, status="quarantined")
        self.assertEqual([(i.message_id, i.attempts, i.quarantined) for i in listed],
                         [(m, 2, True)])
        self.assertTrue(c.state(conv, m).quarantined)
        self.assertEqual(c.explain(conv, m).rule, "quarantined")

        # Released, the next delivery resumes after step 0.
        ack = c.release(conv, m, reason="fixed step 1")
        self.assertEqual(ack.seq, next_seq)
        released = c.read(conv)[0][-1]
        self.assertEqual((released.type, released.reason), ("message_released", "fixed step 1"))
        self.assertEqual((c.state(conv, m).attempts, c.decide(conv, m)), (0, Decision("resume", 1)))
        with self.assertRaises(NotQuarantined) as cm:
            c.release(conv, m)
        self.assertEqual((cm.exception.code, cm.exception.retryable), ("not_quarantined", False))
        with self.assertRaises(UnknownMessage):
            c.release(conv, "never")
        self.assertEqual(worker.process(c, conv, m, 3, worker="w4", **quiet), "resume")
        self.assertEqual(c.decide(conv, m).action, "skip")

    def test_a_crash_counts_as_an_attempt(self):
        # Starts whose leases lapsed, with no fail, count too.
        c, conv, m = self.client, self.conv(), "m"
        c.receive(conv, m)
        c.start(conv, m, worker="w1", lease_ms=1)
        wait_for_decision(c, conv, m, "resume")
        c.start(conv, m, worker="w2", lease_ms=1)
        d = wait_for_decision(c, conv, m, "quarantined")
        self.assertEqual((d.attempts, d.error), (2, None))
        self.assertEqual(c.receive(conv, m), d)


# --------------------------------------------------------------------------
# Retention: compaction into tombstones, and forgotten messages


PRODUCED_AT = 1_732_672_000_000  # when the tests' messages were produced: long ago


def wait_until(what: str, probe):
    """Polls probe until it returns something true, and returns that; fails
    after IO_TIMEOUT."""
    deadline = time.monotonic() + IO_TIMEOUT
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {IO_TIMEOUT} s")
        time.sleep(0.02)


def finish_message(c: Client, conv: str, m: str, outputs=(b"x",)) -> None:
    """Receives (sent at PRODUCED_AT), starts, steps and finishes m."""
    c.receive(conv, m, sent_at=PRODUCED_AT)
    c.start(conv, m, worker="w", lease_ms=60_000)
    for i, out in enumerate(outputs):
        c.step(conv, m, i, out)
    c.finish(conv, m)


class CompactionTest(DaemonTestCase):
    """A daemon that compacts a message 1 ms after it finished, and keeps
    its tombstone."""

    flags = ("--retain-finished", "1ms")

    def test_a_finished_message_is_compacted_and_skipped(self):
        c, conv, m = self.client, self.conv(), "done"
        self.assertEqual(c.receive(conv, m, fingerprint="sha256:aa", sent_at=PRODUCED_AT),
                         Decision("start", 0, seq=0))  # no horizon: no forgotten_before
        c.start(conv, m, worker="w", lease_ms=60_000)
        c.step(conv, m, 0, b"charged")
        self.assertEqual(c.finish(conv, m), Ack(3))
        c.receive(conv, "open")  # not finished: kept whole

        # Compaction runs in the background: the message's state says when.
        st = wait_until("compaction of the finished message",
                        lambda: (lambda s: s if s.compacted else None)(c.state(conv, m)))
        self.assertEqual(st, liminald.MessageState(
            "finished", None, None, [], None, attempts=1, fingerprint="sha256:aa", compacted=True))
        self.assertEqual(c.state(conv), liminald.ConversationState(5, {
            "received": 1, "in_progress": 0, "errored": 0, "finished": 1, "total": 2},
            compacted=1, forgotten_before=None))

        # Its redeliveries are skipped, with or without sent_at, and append nothing.
        skip = Decision("skip", compacted=True)
        self.assertEqual(c.receive(conv, m), skip)
        self.assertEqual(c.receive(conv, m, sent_at=PRODUCED_AT), skip)
        self.assertEqual(c.decide(conv, m, sent_at=PRODUCED_AT), skip)
        x = c.explain(conv, m)
        self.assertEqual((x.decision, x.rule, x.events), (skip, "compacted", []))
        with self.assertRaises(FingerprintMismatch):  # the tombstone keeps it
            c.receive(conv, m, fingerprint="sha256:bb")

        # Writes answer as for a finished message; its retried finish is a duplicate.
        self.assertEqual(c.finish(conv, m, expected_seq=3), Ack(3, duplicate=True))
        for write in (lambda: c.start(conv, m), lambda: c.step(conv, m, 1, b""),
                      lambda: c.fail(conv, m, "late")):
            with self.assertRaises(AlreadyFinished):
                write()

        # Its events are gone: the log has a gap, and seqs are not reused.
        events, next_seq = c.read(conv)
        self.assertEqual(([(e.seq, e.message_id) for e in events], next_seq), ([(4, "open")], 5))
        self.assertEqual(c.state(conv).next_seq, 5)
        listed, _ = c.messages(conv)
        self.assertEqual([(i.message_id, i.status, i.compacted) for i in listed],
                         [(m, "finished", True), ("open", "received", False)])

        stats = c.stats()
        self.assertGreaterEqual(stats["compacted"], 1)
        self.assertGreaterEqual(stats["tombstones"], 1)
        self.assertEqual((stats["tombstones_dropped"], stats["forgotten_before"]), (0, None))
        self.assertGreaterEqual(stats["compaction"]["passes"], 1)

        # The worker skips it, saying why.
        log: list = []
        self.assertEqual(worker.process(c, conv, m, 3, sent_at=PRODUCED_AT, log=log.append),
                         "skip")
        self.assertEqual(log, [f"{m}: skip (compacted)"])
        self.assertEqual(c.state(conv).next_seq, 5)


class ForgettingTest(DaemonTestCase):
    """A daemon that compacts a message 1 ms after it finished and drops its
    tombstone 200 ms after: the conversation forgets it."""

    flags = ("--retain-finished", "1ms", "--retain-tombstones", "200ms")

    def forget(self, conv: str, *messages: str) -> int:
        """Finishes messages and waits until their tombstones were dropped;
        returns the conversation's forgotten_before."""
        c = self.client
        for m in messages:
            finish_message(c, conv, m)
        wait_until("the tombstones dropped",
                   lambda: all(c.state(conv, m).status == "unknown" for m in messages))
        st = c.state(conv)
        self.assertEqual((st.compacted, st.messages["total"]), (len(messages), 0))
        self.assertIsNotNone(st.forgotten_before)
        return st.forgotten_before

    def test_forgotten_and_the_horizon(self):
        c, conv, m = self.client, self.conv(), "done"
        before = int(time.time() * 1000)
        fb = self.forget(conv, m)
        self.assertGreaterEqual(fb, before)  # its finish time, by the daemon's clock
        stats = c.stats()
        self.assertGreaterEqual(stats["tombstones_dropped"], 1)
        self.assertGreaterEqual(stats["forgotten_before"], fb)

        # A redelivery sent at or before the horizon is forgotten: nothing
        # is appended, the client chooses.
        next_seq = c.state(conv).next_seq
        self.assertEqual(next_seq, 4)
        forgotten = Decision("forgotten", forgotten_before=fb)
        self.assertEqual(c.receive(conv, m, sent_at=PRODUCED_AT), forgotten)
        self.assertEqual(c.receive(conv, m, sent_at=fb), forgotten)
        self.assertEqual(c.receive(conv, "never-seen", sent_at=PRODUCED_AT), forgotten)
        self.assertEqual(c.decide(conv, m, sent_at=PRODUCED_AT), forgotten)
        x = c.explain(conv, m, sent_at=PRODUCED_AT)
        self.assertEqual((x.decision, x.rule, x.events), (forgotten, "forgotten", []))
        self.assertEqual(c.state(conv).next_seq, next_seq)
        self.assertEqual(c.read(conv)[0], [])  # every event was compacted

        # Sent after the horizon, it is new for sure: a start, still
        # carrying the horizon.
        self.assertEqual(c.decide(conv, m, sent_at=fb + 1), Decision("start", 0, forgotten_before=fb))
        self.assertEqual(c.explain(conv, m).rule, "never_seen")
        # Without sent_at the daemon cannot tell: a start that appends, and
        # carries forgotten_before for the client to judge.
        self.assertEqual(c.receive(conv, m), Decision("start", 0, seq=next_seq, forgotten_before=fb))
        self.assertEqual(c.state(conv).next_seq, next_seq + 1)
        self.assertEqual(c.state(conv, m).status, "received")

    def test_worker_on_forgotten(self):
        c, conv = self.client, self.conv()
        fb = self.forget(conv, "a", "b")
        next_seq = c.state(conv).next_seq
        effects: list = []

        def run(index, message_id, previous):
            effects.append((message_id, index))
            return worker.run_step(index, message_id, previous)

        # The default: skipped and reported, nothing run or appended.
        log: list = []
        self.assertEqual(worker.process(c, conv, "a", 3, sent_at=PRODUCED_AT, run=run,
                                        log=log.append), "forgotten")
        self.assertEqual(log, [
            f"a: forgotten: sent at {PRODUCED_AT}, at or before the conversation's forgotten_before "
            f"{fb}, so it may have been processed; skipped, not processed (on_forgotten=skip)"])
        self.assertEqual((effects, c.state(conv).next_seq), ([], next_seq))

        # on_forgotten="process": received again as new, and processed.
        log = []
        self.assertEqual(worker.process(c, conv, "b", 3, sent_at=PRODUCED_AT,
                                        on_forgotten="process", run=run, log=log.append), "start")
        self.assertIn("processing it again (on_forgotten=process)", log[0])
        self.assertEqual(log[1], "b: start from 0")
        self.assertEqual(effects, [("b", 0), ("b", 1), ("b", 2)])
        types = [e.type for e in lease_events(c.read(conv, from_seq=next_seq)[0])]
        self.assertEqual(types[0], "message_received")
        with self.assertRaises(ValueError):
            worker.process(c, conv, "a", 3, on_forgotten="retry", log=log.append)

        # Without sent_at it starts, and says it cannot tell.  (The horizon
        # may have moved on since: "b" finished, and is forgotten in turn.)
        log = []
        self.assertEqual(worker.process(c, conv, "c", 1, run=run, log=log.append), "start")
        said = re.fullmatch(r"c: start from 0 \(no sent_at, and the conversation forgot messages "
                            r"finished up to (\d+): it may have been processed before\)", log[0])
        self.assertIsNotNone(said, log[0])
        self.assertGreaterEqual(int(said.group(1)), fb)

    def test_worker_command_line(self):
        c, conv = self.client, self.conv()
        fb = self.forget(conv, "a", "b")

        def run(*args):
            proc = subprocess.run(
                [sys.executable, str(WORKER), "--socket", self.daemon.socket, "--conversation", conv,
                 "--steps", "2", "--sent-at", str(PRODUCED_AT), *args],
                capture_output=True, text=True, timeout=120)
            self.assertEqual(proc.returncode, 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
            return proc.stdout.splitlines()

        next_seq = c.state(conv).next_seq
        out = run("a")
        self.assertEqual(len(out), 1)
        self.assertTrue(out[0].startswith(f"a: forgotten: sent at {PRODUCED_AT}, at or before "
                                          f"the conversation's forgotten_before {fb}"), out)
        self.assertTrue(out[0].endswith("skipped, not processed (on_forgotten=skip)"), out)
        self.assertEqual(c.state(conv).next_seq, next_seq)

        out = run("--on-forgotten", "process", "b")
        self.assertIn("processing it again (on_forgotten=process)", out[0])
        self.assertEqual(out[1], "b: start from 0")
        self.assertTrue(out[-1].startswith("b: finished seq "), out)


if __name__ == "__main__":
    unittest.main()
