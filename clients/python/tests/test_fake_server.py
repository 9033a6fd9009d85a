"""The client against small fake servers on a unix socket, for what the
real daemon cannot be made to do: speak protocol 1 (no protocol-1 binary
exists), or answer shutting_down on cue.

A protocol-1 daemon ignores the fields it does not know, so it would
answer a start with a lease ok, with no token and no lease: the client
asks hello first and refuses, sending nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import unittest
from typing import Any, Callable, Dict, List, Optional

from liminald import (
    Ack, AsyncClient, Client, Decision, ProtocolError, ShuttingDown,
)

from harness import IO_TIMEOUT, short_tempdir

PROTOCOL_1_OPS = ["hello", "ping", "receive", "decide", "start", "step", "finish", "fail",
                  "state", "read", "subscribe", "unsubscribe", "conversations", "stats"]

Responder = Callable[[Dict[str, Any], int], Optional[Dict[str, Any]]]


class FakeServer:
    """A unix socket server answering each request line with what
    ``respond(request, connection_number)`` returns (None: close the
    connection without answering).  ``requests`` records (connection
    number, request) in order."""

    def __init__(self, respond: Responder):
        self.respond = respond
        self.dir = short_tempdir()
        self.socket = os.path.join(self.dir, "fake.sock")
        self.requests: List[tuple] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.socket)
        self._listener.listen(16)
        self._conns: List[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        with conn, conn.makefile("rb") as reader:
            for line in reader:
                request = json.loads(line)
                with self._lock:
                    self.requests.append((number, request))
                reply = self.respond(request, number)
                if reply is None:
                    return
                reply = {"id": request.get("id"), **reply}
                try:
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    return

    def ops(self) -> List[str]:
        with self._lock:
            return [r["op"] for _, r in self.requests]

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        os.unlink(self.socket)
        os.rmdir(self.dir)


def protocol_1(request: Dict[str, Any], _: int) -> Dict[str, Any]:
    """A protocol-1 daemon: it knows no lease, token or fingerprint, and
    ignores them."""
    op = request["op"]
    if op == "hello":
        return {"ok": True, "protocol": 1, "server": {"name": "liminald", "version": "1.0.0"},
                "ops": PROTOCOL_1_OPS, "limits": {"max_line_bytes": 1048576}}
    if op == "receive":
        return {"ok": True, "decision": "start", "seq": 0}
    if op in ("start", "step", "finish", "fail"):
        return {"ok": True, "seq": 1}
    if op in PROTOCOL_1_OPS:
        return {"ok": True}
    return {"ok": False, "error": {"code": "unknown_op", "message": f"unknown op {op!r}",
                                   "retryable": False}}


class Protocol1Test(unittest.TestCase):

    def setUp(self) -> None:
        self.server = FakeServer(protocol_1)
        self.addCleanup(self.server.close)
        self.client = Client(self.server.socket, timeout=IO_TIMEOUT)
        self.addCleanup(self.client.close)

    def assertRefused(self, cm: Any, feature: str) -> None:
        e = cm.exception
        self.assertEqual((e.code, e.retryable, e.need, e.have, e.feature),
                         ("protocol", False, 2, 1, feature))
        self.assertEqual(e.socket, self.server.socket)
        self.assertIn(f"liminald at {self.server.socket} speaks protocol 1", str(e))

    def test_lease_refused_before_start_is_sent(self):
        c = self.client
        self.assertEqual(c.receive("c", "m"), Decision("start", 0, seq=0))
        with self.assertRaises(ProtocolError) as cm:
            c.lease("c", "m", "worker-1", 30_000)
        self.assertRefused(cm, "start with worker, lease_ms")
        # hello was asked, and no start was sent: a protocol-1 daemon would
        # have answered it ok, with no token and no lease.
        self.assertEqual(self.server.ops(), ["receive", "hello"])

    def test_every_protocol_2_feature_is_refused(self):
        c = self.client
        cases = [
            (lambda: c.start("c", "m", worker="w", lease_ms=1000), "start with worker, lease_ms"),
            (lambda: c.step("c", "m", 0, b"x", token=1), "step with token"),
            (lambda: c.finish("c", "m", token=1), "finish with token"),
            (lambda: c.fail("c", "m", "e", token=1), "fail with token"),
            (lambda: c.receive("c", "m", fingerprint="sha256:aa"), "receive with fingerprint"),
            (lambda: c.receive("c", "m", sent_at=5), "receive with sent_at"),
            (lambda: c.decide("c", "m", with_steps=True), "decide with with_steps"),
            (lambda: c.renew("c", "m", 1, 1000), "renew"),
            (lambda: c.release("c", "m"), "release"),
            (lambda: c.messages("c"), "messages"),
            (lambda: c.explain("c", "m"), "explain"),
            (lambda: c.request("start", conversation="c", message_id="m", lease_ms=5),
             "start with lease_ms"),
        ]
        for call, feature in cases:
            with self.subTest(feature=feature), self.assertRaises(ProtocolError) as cm:
                call()
            self.assertRefused(cm, feature)
        self.assertEqual(self.server.ops(), ["hello"])  # asked once for the connection

    def test_protocol_1_use_works(self):
        c = self.client
        self.assertEqual(c.hello().protocol, 1)
        self.assertEqual(c.start("c", "m"), Ack(1))
        self.assertIsNone(c.start("c", "m").token)
        self.assertEqual(c.step("c", "m", 0, b"x" * 100_000), Ack(1))  # no max_output_bytes told
        self.assertEqual(c.finish("c", "m"), Ack(1))
        self.assertEqual(self.server.ops(), ["hello", "start", "start", "step", "finish"])

    def test_async_lease_refused(self):
        async def run() -> None:
            async with AsyncClient(self.server.socket, timeout=IO_TIMEOUT) as c:
                with self.assertRaises(ProtocolError) as cm:
                    async with c.lease("c", "m", "worker-1", 30_000):
                        self.fail("the lease was entered")
                self.assertRefused(cm, "start with worker, lease_ms")
                with self.assertRaises(ProtocolError):
                    await c.explain("c", "m")
                self.assertEqual(await c.start("c", "m"), Ack(1))

        asyncio.run(run())
        self.assertEqual(self.server.ops(), ["hello", "start"])


class NoTokenTest(unittest.TestCase):
    """A server that says protocol 2 but answers a start with a lease with
    no token is not believed to have given a lease."""

    def test_lease_needs_a_token(self):
        def respond(request: Dict[str, Any], n: int) -> Dict[str, Any]:
            if request["op"] == "hello":
                return {"ok": True, "protocol": 2, "server": {"name": "x", "version": "0"},
                        "ops": [], "limits": {}}
            return {"ok": True, "seq": 1}

        server = FakeServer(respond)
        self.addCleanup(server.close)
        with Client(server.socket, timeout=IO_TIMEOUT) as c:
            with self.assertRaises(ProtocolError) as cm:
                c.lease("c", "m", "w", 1000)
        self.assertIn("no token", str(cm.exception))


class ShuttingDownTest(unittest.TestCase):
    """A daemon that answers shutting_down then closes: a safe call goes to
    the next connection (the next daemon), an unsafe one raises it."""

    def setUp(self) -> None:
        def respond(request: Dict[str, Any], n: int) -> Optional[Dict[str, Any]]:
            if n == 1:  # the stopping daemon
                return {"ok": False, "error": {"code": "shutting_down",
                                               "message": "the daemon is shutting down",
                                               "retryable": True}}
            if request["op"] == "receive":
                return {"ok": True, "decision": "start", "seq": 0}
            return {"ok": True}

        self.server = FakeServer(respond)
        self.addCleanup(self.server.close)

    def test_safe_call_goes_to_the_next_daemon(self):
        with Client(self.server.socket, timeout=IO_TIMEOUT, reconnect_timeout=IO_TIMEOUT) as c:
            self.assertIsNone(c.ping())
            self.assertEqual(c.connects, 2)
        self.assertEqual(self.server.requests, [(1, {"id": 1, "op": "ping"}),
                                                (2, {"id": 2, "op": "ping"})])

    def test_unsafe_call_raises_it(self):
        with Client(self.server.socket, timeout=IO_TIMEOUT, reconnect_timeout=IO_TIMEOUT) as c:
            with self.assertRaises(ShuttingDown) as cm:
                c.receive("c", "m")
            self.assertTrue(cm.exception.retryable)
            # The next call goes to the next daemon.
            self.assertEqual(c.receive("c", "m"), Decision("start", 0, seq=0))
            self.assertEqual(c.connects, 2)

    def test_with_expected_seq_it_is_sent_again(self):
        with Client(self.server.socket, timeout=IO_TIMEOUT, reconnect_timeout=IO_TIMEOUT) as c:
            self.assertEqual(c.receive("c", "m", expected_seq=0), Decision("start", 0, seq=0))
        self.assertEqual([n for n, _ in self.server.requests], [1, 2])


class LostHelloTest(unittest.TestCase):
    """A connection lost while the client asks hello, before a call that is
    not safe to send twice: the call was not sent, so it goes on the next
    connection."""

    def test_unsafe_call_after_a_lost_hello(self):
        def respond(request: Dict[str, Any], n: int) -> Optional[Dict[str, Any]]:
            if n == 1:
                return None  # closes the connection without answering
            if request["op"] == "hello":
                return {"ok": True, "protocol": 2, "server": {"name": "liminald", "version": "x"},
                        "ops": [], "limits": {"max_output_bytes": 10}}
            return {"ok": True, "seq": 1, "token": 1, "lease_expires_at": 5}

        server = FakeServer(respond)
        self.addCleanup(server.close)
        with Client(server.socket, timeout=IO_TIMEOUT, reconnect_timeout=IO_TIMEOUT) as c:
            self.assertEqual(c.start("c", "m", worker="w", lease_ms=1000).token, 1)
            self.assertEqual(c.connects, 2)
        self.assertEqual([(n, r["op"]) for n, r in server.requests],
                         [(1, "hello"), (2, "hello"), (2, "start")])


if __name__ == "__main__":
    unittest.main()
