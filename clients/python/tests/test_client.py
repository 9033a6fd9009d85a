"""Tests of the blocking client against a real daemon: every op, every
error code a client can provoke, duplicates and expected_seq, state and
read, subscriptions, threads, and protocol 2's leases and fencing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import unittest

import liminald
from liminald import (
    Ack, AlreadyFinished, BadRequest, Busy, Client, Decision, Fenced, FingerprintMismatch,
    Forbidden, Internal, LiminalError, LineTooLong, NotQuarantined, Quarantined,
    SequenceConflict, ShuttingDown, Step, StepConflict, Unavailable, UnknownMessage, UnknownOp,
)

from harness import IO_TIMEOUT, WORKER, Daemon, DaemonTestCase, load_worker, wait_for_decision

worker = load_worker()


class ClientTest(DaemonTestCase):

    def test_hello_and_ping(self):
        h = self.client.hello()
        self.assertIsInstance(h, liminald.ServerInfo)
        self.assertEqual(h.protocol, 2)
        self.assertEqual(h.name, "liminald")
        for op in ("receive", "step", "subscribe", "renew", "release", "messages", "explain"):
            self.assertIn(op, h.ops)
        self.assertEqual(h.limits["max_lease_ms"], 86_400_000)
        self.assertEqual(h.max_output_bytes, h.limits["max_output_bytes"])
        self.assertEqual(self.client.server_info, h)  # kept for the connection
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
        limit = self.client.hello().limits["max_line_bytes"]
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
        self.assertEqual(tuple(c.read(conv)), ([], 0))

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
        self.assertEqual(c.read(conv, from_seq=100), liminald.EventsPage([], 100))
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
        with c.subscribe(conv, wait_timeout=IO_TIMEOUT) as sub:
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
        with c.subscribe(conv, from_seq=1, wait_timeout=IO_TIMEOUT) as sub:
            first = next(sub)
            c.receive(conv, "c")
            second = next(sub)
        self.assertEqual([(e.seq, e.message_id) for e in (first, second)], [(1, "b"), (2, "c")])

    def test_subscribe_every_conversation(self):
        c = self.client
        a, b = self.conv("-a"), self.conv("-b")
        c.receive(a, "m")
        start_pos = c.read(a)[0][0].pos
        with c.subscribe(from_pos=start_pos, wait_timeout=IO_TIMEOUT) as sub:
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
        sub = c.subscribe(conv, wait_timeout=IO_TIMEOUT)
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
        with c.subscribe(conv, wait_timeout=IO_TIMEOUT) as sub, \
                c.subscribe(conv, wait_timeout=IO_TIMEOUT, resume_on_lag=False) as strict:
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
        with c.subscribe(conv, from_seq=cm.exception.next_seq, wait_timeout=IO_TIMEOUT) as again:
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
            self.assertEqual(cm.exception.socket, d.socket)
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
                self.assertEqual((cm.exception.socket, cm.exception.sent), (d.socket, False))
                first.ping()  # the others are served as before
            self.assertEqual(d.stop(), 0)
        finally:
            d.remove()

    def test_shutting_down(self):
        # A client that does not reconnect sees the daemon's shutting_down
        # (one that does sends a safe call to the next daemon: see
        # test_reconnect).
        d = Daemon()
        try:
            with Client(d.socket, timeout=IO_TIMEOUT, reconnect_timeout=0) as c:
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
            # The renewer's next renewal is refused: it marks the lease lost.
            self.assertTrue(lease.wait_lost(IO_TIMEOUT), "the renewer never found the lease lost")
            self.assertFalse(lease.held)
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
        self.assertEqual(tuple(c.messages(conv, status="quarantined")), ([], None))

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



class OutputSizeTest(DaemonTestCase):
    """A step's output over the daemon's max_output_bytes is refused before
    it is sent, naming both sizes."""

    def test_refused_before_sending(self):
        c, conv = self.client, self.conv()
        c.receive(conv, "m")
        c.start(conv, "m")
        limit = c.hello().max_output_bytes
        self.assertEqual(limit, 783_360)  # for the default max_line_bytes
        with self.assertRaises(liminald.OutputTooLarge) as cm:
            c.step(conv, "m", 0, bytes(limit + 1))
        e = cm.exception
        self.assertIsInstance(e, BadRequest)
        self.assertEqual((e.code, e.field, e.size, e.limit, e.retryable),
                         ("bad_request", "output", limit + 1, limit, False))
        self.assertIn(f"output is {limit + 1} bytes", str(e))
        self.assertIn(f"max_output_bytes of {limit}", str(e))
        self.assertEqual(c.read(conv).next_seq, 2)  # nothing was sent
        # The largest output the daemon takes goes through.
        self.assertEqual(c.step(conv, "m", 0, bytes(limit)), Ack(2))
        self.assertEqual(len(c.state(conv, "m").output(0) or b""), limit)

    def test_a_fresh_connection_asks_hello_first(self):
        # The first step on a connection asks the daemon its limit.
        with Client(self.daemon.socket, timeout=IO_TIMEOUT) as c:
            self.assertIsNone(c.server_info)
            with self.assertRaises(liminald.OutputTooLarge):
                c.step(self.conv(), "m", 0, bytes(2 << 20))
            self.assertIsNotNone(c.server_info)


class DiscoveryTest(DaemonTestCase):
    """Without a socket path, the client finds the daemon as the daemon
    finds its socket: $LIMINAL_SOCKET first."""

    def setUp(self) -> None:
        old = os.environ.get("LIMINAL_SOCKET")
        os.environ["LIMINAL_SOCKET"] = self.daemon.socket

        def restore() -> None:
            if old is None:
                os.environ.pop("LIMINAL_SOCKET", None)
            else:
                os.environ["LIMINAL_SOCKET"] = old

        self.addCleanup(restore)

    def test_client_uses_liminal_socket(self):
        with Client(timeout=IO_TIMEOUT) as c:
            self.assertEqual(c.socket_path, self.daemon.socket)
            self.assertIsNone(c.ping())
        self.assertEqual(liminald.default_socket_path(), self.daemon.socket)

    def test_worker_uses_liminal_socket(self):
        conv = self.conv()
        proc = subprocess.run([sys.executable, str(WORKER), "--conversation", conv, "m"],
                              capture_output=True, text=True, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("m: finished seq", proc.stdout)
        self.assertEqual(self.client.decide(conv, "m").action, "skip")


if __name__ == "__main__":
    unittest.main()
