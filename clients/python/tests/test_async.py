"""The asyncio client against a real daemon: the main flows of the
blocking client's tests, the lease helper, subscriptions, and restarts."""

from __future__ import annotations

import asyncio
import os
import time
import unittest
from typing import Any, List

import liminald
from liminald import (
    Ack, AsyncClient, BadRequest, Busy, Decision, Fenced, OutputTooLarge, Reconnect,
    SequenceConflict, Step, StepConflict, Timeout, Unavailable, UnknownMessage,
)

from harness import IO_TIMEOUT, Daemon, lease_events


async def blocking(fn: Any) -> Any:
    """Runs a blocking call (stopping or starting the daemon) off the event
    loop."""
    return await asyncio.get_running_loop().run_in_executor(None, fn)


class AsyncDaemonTestCase(unittest.IsolatedAsyncioTestCase):
    """A daemon for the class; a client for each test (a client belongs to
    the event loop that uses it, and each test has its own)."""

    daemon: Daemon

    @classmethod
    def setUpClass(cls) -> None:
        cls.daemon = Daemon()

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            status = cls.daemon.stop()
            if status != 0:
                raise AssertionError(f"liminald exited {status}:\n{cls.daemon.log()}")
        finally:
            cls.daemon.remove()

    async def asyncSetUp(self) -> None:
        self.client = AsyncClient(self.daemon.socket, timeout=IO_TIMEOUT)
        await self.client.connect()

    async def asyncTearDown(self) -> None:
        await self.client.close()

    def conv(self, suffix: str = "") -> str:
        return self.id().rsplit(".", 1)[-1] + suffix


class AsyncClientTest(AsyncDaemonTestCase):

    async def test_hello(self):
        h = await self.client.hello()
        self.assertEqual((h.protocol, h.name), (2, "liminald"))
        self.assertIn("explain", h.ops)
        self.assertIsNone(await self.client.ping())

    async def test_lifecycle(self):
        c, conv = self.client, self.conv()
        self.assertEqual(await c.decide(conv, "m"), Decision("start", 0))
        self.assertEqual(await c.receive(conv, "m", received_at=1732672000000),
                         Decision("start", 0, seq=0))
        self.assertEqual(await c.start(conv, "m"), Ack(1))
        self.assertEqual(await c.step(conv, "m", 0, b"charged"), Ack(2))
        self.assertEqual(await c.step(conv, "m", 0, b"charged"), Ack(2, duplicate=True))
        self.assertEqual(await c.receive(conv, "m", with_steps=True),
                         Decision("resume", 1, steps=[Step(0, None, b"charged")]))
        self.assertEqual(await c.finish(conv, "m"), Ack(3))
        self.assertEqual(await c.receive(conv, "m"), Decision("skip"))

        st = await c.state(conv, "m")
        self.assertEqual((st.status, st.received_at, st.last_completed_step, st.output(0)),
                         ("finished", 1732672000000, 0, b"charged"))
        cs = await c.state(conv)
        self.assertEqual((cs.next_seq, cs.messages["finished"]), (4, 1))
        events, next_seq = await c.read(conv)
        self.assertEqual(([e.type for e in events], next_seq), ([
            "message_received", "processing_started", "step_completed", "processing_finished"],
            4))
        self.assertEqual([e.seq async for e in c.read_all(conv, from_seq=1)], [1, 2, 3])
        self.assertIn(liminald.ConversationInfo(conv, 4, 1), await c.conversations(limit=1000))
        self.assertGreaterEqual((await c.stats())["events"], 4)
        self.assertEqual((await c.request("ping")), {})

    async def test_errors(self):
        c, conv = self.client, self.conv()
        with self.assertRaises(UnknownMessage):
            await c.start(conv, "never")
        await c.receive(conv, "m")
        await c.start(conv, "m")
        await c.step(conv, "m", 0, b"one")
        with self.assertRaises(StepConflict):
            await c.step(conv, "m", 0, b"two")
        with self.assertRaises(SequenceConflict) as cm:
            await c.finish(conv, "m", expected_seq=0)
        self.assertEqual((cm.exception.expected, cm.exception.actual), (0, 3))
        with self.assertRaises(BadRequest) as cm:
            await c.read(conv, limit=0)
        self.assertEqual(cm.exception.field, "limit")
        with self.assertRaises(TypeError):
            await c.step(conv, "m", 1, "text")  # type: ignore[arg-type]
        await c.ping()  # the connection keeps working

    async def test_output_too_large_refused_before_sending(self):
        c, conv = self.client, self.conv()
        limit = (await c.hello()).max_output_bytes
        assert limit is not None
        await c.receive(conv, "m")
        await c.start(conv, "m")
        with self.assertRaises(OutputTooLarge) as cm:
            await c.step(conv, "m", 0, bytes(limit + 1))
        self.assertEqual((cm.exception.size, cm.exception.limit), (limit + 1, limit))
        self.assertEqual((await c.read(conv)).next_seq, 2)
        self.assertEqual(await c.step(conv, "m", 0, bytes(limit)), Ack(2))  # just fits

    async def test_protocol_2(self):
        c, conv = self.client, self.conv()
        await c.receive(conv, "m", fingerprint="sha256:aa")
        ack = await c.start(conv, "m", worker="w1", lease_ms=60_000)
        self.assertEqual((ack.seq, ack.token), (1, 1))
        d = await c.decide(conv, "m")
        self.assertEqual((d.action, d.worker, d.token), ("busy", "w1", 1))
        with self.assertRaises(Busy) as cm:
            await c.start(conv, "m", worker="w2", lease_ms=1000)
        self.assertEqual(cm.exception.worker, "w1")
        renewed = await c.renew(conv, "m", 1, 120_000)
        self.assertEqual(renewed.seq, 2)
        page = await c.messages(conv, status="leased")
        self.assertEqual([(i.message_id, i.worker) for i in page.messages], [("m", "w1")])
        x = await c.explain(conv, "m")
        self.assertEqual((x.rule, x.decision.action), ("leased", "busy"))
        self.assertEqual((await c.state(conv, "m")).fingerprint, "sha256:aa")

    async def test_lease_renews_and_finishes(self):
        c, conv = self.client, self.conv()
        await c.receive(conv, "m")
        async with c.subscribe(conv, from_seq=0, wait_timeout=IO_TIMEOUT) as events:
            async with c.lease(conv, "m", "w", 300) as lease:  # renewed every 100 ms
                self.assertEqual(lease.token, 1)
                # Two renewals, seen as they commit.
                renewals = 0
                async for e in events:
                    if e.type == "lease_renewed":
                        self.assertEqual((e.token, e.lease_ms), (1, 300))
                        renewals += 1
                        if renewals == 2:
                            break
                await lease.step(0, b"x")
                ack = await lease.finish()
            self.assertGreaterEqual(lease.renewals, 2)
            self.assertTrue(lease.held)
            self.assertTrue(lease._task is None or lease._task.done())  # renewals stopped
        types = [e.type for e in lease_events((await c.read(conv)).events)]
        self.assertEqual(types, ["message_received", "processing_started", "step_completed",
                                 "processing_finished"])
        self.assertEqual(ack.seq, (await c.read(conv)).next_seq - 1)

    async def test_lease_stops_on_fenced(self):
        c, conv = self.client, self.conv()
        await c.receive(conv, "m")
        # A lease of 1 ms renewed every 20 ms lapses between renewals, so
        # another worker takes it over; the next renewal is refused.
        lease = await c.lease(conv, "m", "a", 1, renew_every=0.02)
        async with AsyncClient(self.daemon.socket, timeout=IO_TIMEOUT) as other:
            deadline = time.monotonic() + IO_TIMEOUT
            while True:
                try:
                    taken = await other.start(conv, "m", worker="b", lease_ms=60_000)
                    break
                except Busy as e:  # caught between a renewal and its lapse
                    self.assertLess(time.monotonic(), deadline)
                    await asyncio.sleep(e.retry_after_ms / 1000)
        self.assertTrue(await lease.wait_lost(IO_TIMEOUT))
        assert lease.lost is not None
        self.assertEqual((lease.lost.token, lease.lost.current_token), (lease.token, taken.token))
        next_seq = (await c.read(conv)).next_seq
        with self.assertRaises(Fenced):
            lease.check()
        with self.assertRaises(Fenced):  # refused before it is sent
            await lease.step(0, b"late")
        await lease.stop()
        self.assertEqual((await c.read(conv)).next_seq, next_seq)

    async def test_subscribe(self):
        c, conv = self.client, self.conv()
        await c.receive(conv, "a")
        sub = await c.subscribe(conv, from_seq=0, wait_timeout=IO_TIMEOUT)
        got: List[str] = []

        async def follow() -> None:
            async for e in sub:
                got.append(e.message_id)
                if len(got) == 2:
                    seen.set()

        seen = asyncio.Event()
        task = asyncio.ensure_future(follow())
        await c.receive(conv, "b")
        await asyncio.wait_for(seen.wait(), IO_TIMEOUT)
        sub.close()  # ends the iteration in the other task
        await asyncio.wait_for(task, IO_TIMEOUT)
        self.assertEqual(got, ["a", "b"])

    async def test_shared_between_tasks(self):
        c, conv = self.client, self.conv()

        async def work(t: int) -> List[str]:
            actions = []
            for i in range(10):
                m = f"t{t}-{i}"
                actions.append((await c.receive(conv, m)).action)
                await c.start(conv, m)
                await c.step(conv, m, 0, m.encode())
                await c.finish(conv, m)
            return actions

        results = await asyncio.gather(*(work(t) for t in range(8)))
        self.assertEqual([a for r in results for a in r], ["start"] * 80)
        self.assertEqual((await c.state(conv)).messages["finished"], 80)

    async def test_socket_from_liminal_socket(self):
        old = os.environ.get("LIMINAL_SOCKET")
        os.environ["LIMINAL_SOCKET"] = self.daemon.socket
        try:
            async with AsyncClient() as c:
                self.assertEqual(c.socket_path, self.daemon.socket)
                await c.ping()
        finally:
            if old is None:
                del os.environ["LIMINAL_SOCKET"]
            else:
                os.environ["LIMINAL_SOCKET"] = old


class AsyncReconnectTest(unittest.IsolatedAsyncioTestCase):
    """Restarts of the daemon under the asyncio client."""

    def setUp(self) -> None:
        self.daemon = Daemon()
        self.addCleanup(self.daemon.remove)

    async def test_safe_call_after_a_restart(self):
        async with AsyncClient(self.daemon.socket, timeout=IO_TIMEOUT,
                               reconnect_timeout=IO_TIMEOUT) as c:
            await c.receive("c", "m")
            token = (await c.start("c", "m", worker="w", lease_ms=60_000)).token
            await blocking(self.daemon.restart)
            await c.ping()
            self.assertEqual(c.connects, 2)
            await blocking(self.daemon.restart)
            self.assertEqual(await c.step("c", "m", 0, b"x", token=token), Ack(2))
            await blocking(self.daemon.restart)
            self.assertEqual(await c.receive("c", "n"), Decision("start", 0, seq=3))

    async def test_waits_for_the_daemon(self):
        away = asyncio.Event()
        seen: List[Reconnect] = []

        def found(r: Reconnect) -> None:
            seen.append(r)
            away.set()

        async with AsyncClient(self.daemon.socket, timeout=IO_TIMEOUT,
                               reconnect_timeout=IO_TIMEOUT, on_reconnect=found) as c:
            await c.ping()
            self.assertEqual(await blocking(self.daemon.stop), 0)
            call = asyncio.ensure_future(c.receive("c", "m"))  # never sent: it waits
            await asyncio.wait_for(away.wait(), IO_TIMEOUT)
            await blocking(self.daemon.start)
            self.assertEqual(await asyncio.wait_for(call, IO_TIMEOUT), Decision("start", 0, seq=0))
            self.assertEqual((seen[0].socket, seen[0].op), (self.daemon.socket, "receive"))

    async def test_unsafe_write_lost_after_it_was_sent(self):
        async with AsyncClient(self.daemon.socket, timeout=IO_TIMEOUT,
                               reconnect_timeout=IO_TIMEOUT) as c:
            sent = asyncio.Event()
            perform = c._io.perform

            async def watched(action: Any) -> Any:  # a test seam on the client's I/O
                out = await perform(action)
                if type(action).__name__ == "Send":
                    sent.set()
                return out

            c._io.perform = watched  # type: ignore[method-assign]
            self.daemon.pause()
            call = asyncio.ensure_future(c.receive("c", "m"))
            await asyncio.wait_for(sent.wait(), IO_TIMEOUT)
            await blocking(self.daemon.kill)
            with self.assertRaises(Unavailable) as cm:
                await asyncio.wait_for(call, IO_TIMEOUT)
            e = cm.exception
            self.assertEqual((e.sent, e.op, e.socket), (True, "receive", self.daemon.socket))
            self.assertIn(self.daemon.socket, str(e))
            self.assertEqual(c.connects, 1)

    async def test_gives_up_and_times_out(self):
        async with AsyncClient(self.daemon.socket, timeout=IO_TIMEOUT,
                               reconnect_timeout=0.3) as c:
            await c.ping()
            self.daemon.pause()
            try:
                with self.assertRaises(Timeout) as cm:
                    await c.ping(timeout=0.2)
                self.assertEqual((cm.exception.sent, cm.exception.op), (True, "ping"))
            finally:
                self.daemon.resume()
            await c.ping()
            self.assertEqual(await blocking(self.daemon.stop), 0)
            with self.assertRaises(Unavailable) as cm2:
                await c.ping()
            self.assertEqual((cm2.exception.socket, cm2.exception.sent),
                             (self.daemon.socket, False))
            self.assertIsInstance(cm2.exception.__cause__, FileNotFoundError)

    async def test_subscription_resumes_across_a_restart(self):
        async with AsyncClient(self.daemon.socket, timeout=IO_TIMEOUT,
                               reconnect_timeout=IO_TIMEOUT) as c:
            await c.receive("c", "a")
            async with c.subscribe("c", from_seq=0, wait_timeout=IO_TIMEOUT) as sub:
                self.assertEqual((await sub.next()).message_id, "a")  # type: ignore[union-attr]
                await blocking(self.daemon.restart)
                await c.receive("c", "b")
                e = await sub.next(IO_TIMEOUT)
                self.assertEqual((e.seq, e.message_id), (1, "b"))  # type: ignore[union-attr]
                self.assertEqual(sub.resubscribes, 1)


if __name__ == "__main__":
    unittest.main()
