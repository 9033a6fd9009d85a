"""Restarts of the real daemon under a running client and worker: the
client reconnects by itself, sends again what is safe to send again,
raises Unavailable naming the socket for the rest, and gives up after its
reconnect timeout.

Each test has a daemon of its own, which it stops (SIGTERM: the socket
file is removed), kills (SIGKILL: the file stays, connecting is refused),
pauses (SIGSTOP: it reads nothing) and starts again on the same socket and
database.  The signals a test waits for are the client's own: its
on_reconnect callback (it found the daemon away), and, where a test must
know that a request left the client, its I/O seen through a wrapper.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import unittest
from typing import Any, List

from liminald import (
    Ack, Client, Decision, Reconnect, Timeout, Unavailable,
)

from harness import (
    IO_TIMEOUT, WORKER, Gate, OwnDaemonTestCase, expected_outputs, lease_events, load_worker,
    stop_child,
)

worker = load_worker()


class Found:
    """An on_reconnect callback that records each Reconnect and sets an
    event once the client found the daemon away, and another once a try to
    connect again was refused."""

    def __init__(self) -> None:
        self.away = threading.Event()
        self.refused = threading.Event()
        self.seen: List[Reconnect] = []

    def __call__(self, r: Reconnect) -> None:
        self.seen.append(r)
        self.away.set()
        if isinstance(r.error, ConnectionRefusedError):
            self.refused.set()


def signal_sends(client: Client) -> threading.Event:
    """An event set once the client has written a request whole: a test
    seam on the client's private I/O, for the tests that must know a
    request left the client before the daemon goes away."""
    sent = threading.Event()
    perform = client._io.perform

    def watched(action: Any) -> Any:
        out = perform(action)
        if type(action).__name__ == "Send":
            sent.set()
        return out

    client._io.perform = watched  # type: ignore[method-assign]
    return sent


class InThread:
    """Runs fn in a thread; result() returns what it returned or raises
    what it raised."""

    def __init__(self, fn: Any):
        self._q: "queue.Queue[Any]" = queue.Queue()

        def run() -> None:
            try:
                self._q.put((True, fn()))
            except BaseException as e:  # handed to the test
                self._q.put((False, e))

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self) -> Any:
        ok, value = self._q.get(timeout=IO_TIMEOUT * 2)
        if not ok:
            raise value
        return value


class ReconnectTest(OwnDaemonTestCase):

    def client(self, **kwargs: Any) -> Client:
        kwargs.setdefault("timeout", IO_TIMEOUT)
        kwargs.setdefault("reconnect_timeout", IO_TIMEOUT)
        c = Client(self.daemon.socket, **kwargs)
        self.addCleanup(c.close)
        return c

    def test_safe_calls_after_a_restart(self):
        c, conv = self.client(), self.conv()
        c.receive(conv, "m")
        token = c.start(conv, "m", worker="w", lease_ms=60_000).token
        self.assertEqual(c.connects, 1)

        self.daemon.restart()
        # The old connection is gone: the first call finds it broken (a
        # write to it fails, EPIPE), connects again and is sent there.
        c.ping()
        self.assertEqual(c.connects, 2)
        self.assertEqual(c.state(conv, "m").status, "in_progress")
        self.assertEqual(c.step(conv, "m", 0, b"x", token=token), Ack(2))

        self.daemon.restart()
        self.assertEqual(c.finish(conv, "m", token=token), Ack(3))  # safe: a token
        self.daemon.restart()
        self.assertEqual(c.receive(conv, "n"), Decision("start", 0, seq=4))  # never sent before
        self.assertEqual(c.connects, 4)
        self.assertEqual([e.type for e in c.read(conv).events], [
            "message_received", "processing_started", "step_completed", "processing_finished",
            "message_received"])

    def test_calls_wait_for_the_daemon_during_an_outage(self):
        found = Found()
        c, conv = self.client(on_reconnect=found), self.conv()
        c.receive(conv, "a")
        self.assertEqual(self.daemon.stop(), 0)

        # A read and a write that was never sent both wait for the daemon,
        # and are sent once it is back.
        def calls() -> Any:
            return c.state(conv).next_seq, c.receive(conv, "b")

        call = InThread(calls)
        self.assertTrue(found.away.wait(IO_TIMEOUT), "the call never found the daemon away")
        self.daemon.start()
        self.assertEqual(call.result(), (1, Decision("start", 0, seq=1)))
        first = found.seen[0]
        self.assertEqual((first.socket, first.op, first.attempt), (self.daemon.socket, "state", 1))
        self.assertEqual(found.seen[0].delay, 0.0)  # the first try again is at once
        # Then 10 ms doubling, to 1 s at most.
        delays = [r.delay for r in found.seen[1:]]
        self.assertEqual(delays, sorted(delays))
        self.assertTrue(all(d <= 1.0 for d in delays))
        self.assertEqual(len(c.read(conv).events), 2)  # "b" received once

    def test_unsafe_write_lost_after_it_was_sent(self):
        c, conv = self.client(), self.conv()
        c.hello()  # known for the connection: the next request sent is the call's
        sent = signal_sends(c)
        # The daemon reads nothing while paused; the receive is written to
        # its socket, then the daemon dies: the connection is lost after
        # the request was sent, and a receive without expected_seq may not
        # be sent twice.
        self.daemon.pause()
        call = InThread(lambda: c.receive(conv, "m"))
        self.assertTrue(sent.wait(IO_TIMEOUT))
        self.daemon.kill()
        with self.assertRaises(Unavailable) as cm:
            call.result()
        e = cm.exception
        self.assertEqual((e.code, e.retryable, e.sent, e.op, e.socket),
                         ("unavailable", True, True, "receive", self.daemon.socket))
        self.assertIn(self.daemon.socket, str(e))
        self.assertIn("may or may not have taken effect", str(e))
        self.assertIsInstance(e.__cause__, ConnectionError)
        self.assertEqual(c.connects, 1)  # it was not sent again

        # Decide tells whether it landed: here it never reached the daemon.
        self.daemon.start()
        self.assertEqual(c.decide(conv, "m"), Decision("start", 0))

    def test_safe_write_lost_after_it_was_sent_is_sent_again(self):
        found = Found()
        c, conv = self.client(on_reconnect=found), self.conv()
        c.hello()  # known for the connection: the next request sent is the call's
        sent = signal_sends(c)
        self.daemon.pause()
        call = InThread(lambda: c.receive(conv, "m", expected_seq=0))
        self.assertTrue(sent.wait(IO_TIMEOUT))
        self.daemon.kill()  # the socket file stays: connecting is refused
        # The lost connection is found first; wait for a refused try too,
        # so that the daemon comes back only once the client redials.
        self.assertTrue(found.refused.wait(IO_TIMEOUT))
        self.daemon.start()
        self.assertEqual(call.result(), Decision("start", 0, seq=0))
        errors = {type(r.error) for r in found.seen}
        # The new daemon replaces the stale socket file: a redial between
        # its unlink and its bind finds no file.
        self.assertLessEqual(errors, {ConnectionResetError, ConnectionRefusedError,
                                      BrokenPipeError, FileNotFoundError})
        self.assertIn(ConnectionRefusedError, errors)
        self.assertEqual(len(c.read(conv).events), 1)

    def test_gives_up_after_the_reconnect_timeout(self):
        found = Found()
        c = self.client(reconnect_timeout=0.3, on_reconnect=found)
        c.ping()
        self.assertEqual(self.daemon.stop(), 0)  # the socket file is removed
        began = time.monotonic()
        with self.assertRaises(Unavailable) as cm:
            c.ping()
        self.assertGreaterEqual(time.monotonic() - began, 0.3)
        e = cm.exception
        self.assertEqual((e.code, e.retryable, e.sent, e.op, e.socket),
                         ("unavailable", True, False, "ping", self.daemon.socket))
        self.assertIn(f"liminald at {self.daemon.socket} is unavailable", str(e))
        self.assertIsInstance(e.__cause__, FileNotFoundError)
        self.assertGreaterEqual(len(found.seen), 3)  # it tried several times

        # A write too, and a client that never connected.
        with self.assertRaises(Unavailable) as cm:
            c.receive(self.conv(), "m")
        self.assertIn(self.daemon.socket, str(cm.exception))
        fresh = self.client(reconnect_timeout=0)
        with self.assertRaises(Unavailable) as cm:
            fresh.ping()
        self.assertIsInstance(cm.exception.__cause__, FileNotFoundError)

        # A daemon killed leaves its socket file: connecting is refused.
        self.daemon.start()
        c.ping()
        self.daemon.kill()
        with self.assertRaises(Unavailable) as cm:
            c.stats()
        self.assertIsInstance(cm.exception.__cause__, ConnectionRefusedError)
        self.assertIn(self.daemon.socket, str(cm.exception))

        # Once it is back, the same client works.
        self.daemon.start()
        self.assertIsNone(c.ping())

    def test_call_timeout(self):
        c = self.client(timeout=IO_TIMEOUT)
        c.ping()
        self.daemon.pause()
        try:
            began = time.monotonic()
            with self.assertRaises(Timeout) as cm:
                c.ping(timeout=0.2)
            self.assertGreaterEqual(time.monotonic() - began, 0.2)
            e = cm.exception
            self.assertEqual((e.code, e.retryable, e.sent, e.op, e.socket),
                             ("timeout", True, True, "ping", self.daemon.socket))
        finally:
            self.daemon.resume()
        c.ping()  # on a new connection: the old one's stream was in doubt
        self.assertEqual(c.connects, 2)

        # The client's own timeout bounds every call the same way.
        short = self.client(timeout=0.2)
        short.ping()
        self.daemon.pause()
        try:
            with self.assertRaises(Timeout):
                short.state(self.conv())
        finally:
            self.daemon.resume()

    def test_subscription_resumes_across_a_restart(self):
        c, conv = self.client(), self.conv()
        c.receive(conv, "a")
        with c.subscribe(conv, from_seq=0, wait_timeout=IO_TIMEOUT) as sub, \
                c.subscribe(conv, wait_timeout=IO_TIMEOUT) as from_now:
            self.assertEqual(next(sub).message_id, "a")
            self.daemon.restart()
            c.receive(conv, "b")
            c.receive(conv, "c")
            # It subscribed again from seq 1: no gap, no duplicate.
            self.assertEqual([next(sub).message_id for _ in range(2)], ["b", "c"])
            self.assertEqual(sub.resubscribes, 1)
            # One that had no position and handed out no event cannot know
            # where to go on from: it says so.
            with self.assertRaises(Unavailable) as cm:
                next(from_now)
            self.assertIn(self.daemon.socket, str(cm.exception))
            self.assertIn("no position", str(cm.exception))

    def test_leased_worker_keeps_going_across_a_restart(self):
        # A worker in a step's side effect, holding a lease, while the
        # daemon restarts: its step and finish carry the token, so they are
        # sent on the new connection, and the message is finished once.
        c, conv, m = self.client(), self.conv(), "m"
        effects: list = []
        gate = Gate("W", effects)
        log: list = []
        with Client(self.daemon.socket, timeout=IO_TIMEOUT, reconnect_timeout=IO_TIMEOUT) as wc:
            run = InThread(lambda: worker.deliver(wc, conv, m, 3, worker="W", run=gate,
                                                  log=log.append))
            self.assertTrue(gate.entered.wait(IO_TIMEOUT))
            self.daemon.restart()
            gate.go.set()
            self.assertEqual(run.result(), "start", log)
        self.assertEqual(effects, [("W", 0), ("W", 1), ("W", 2)])
        events = lease_events(c.read(conv).events)
        self.assertEqual([(e.type, e.step_index) for e in events], [
            ("message_received", None), ("processing_started", None), ("step_completed", 0),
            ("step_completed", 1), ("step_completed", 2), ("processing_finished", None)])
        self.assertEqual([e.output for e in events if e.type == "step_completed"],
                         expected_outputs(m, 3))


    def test_worker_delivers_again_after_a_lost_receive(self):
        # The worker's receive is lost with its connection after it was
        # sent: the client raises Unavailable, and deliver() delivers the
        # message again once the daemon is back.
        found = Found()
        conv, log = self.conv(), []
        wc = self.client(on_reconnect=found)
        wc.hello()  # known for the connection: the next request sent is the receive
        sent = signal_sends(wc)
        self.daemon.pause()
        run = InThread(lambda: worker.deliver(wc, conv, "m", 3, worker="W", log=log.append))
        self.assertTrue(sent.wait(IO_TIMEOUT))
        self.daemon.kill()
        self.assertTrue(found.away.wait(IO_TIMEOUT))  # the second delivery waits for it
        self.daemon.start()
        self.assertEqual(run.result(), "start", log)
        self.assertRegex(log[0], r"^m: unavailable: receive: liminald at .* is unavailable: the "
                                 r"connection was lost after the request was sent.*; "
                                 r"delivering it again$")
        self.assertEqual(log[1], "m: start from 0")
        self.assertEqual(self.client().state(conv, "m").status, "finished")

class WorkerRestartTest(OwnDaemonTestCase):
    """examples/python/worker.py, a process processing many messages, while
    the daemon is stopped under it and started again."""

    def test_worker_keeps_going(self):
        conv, n = self.conv(), 30
        ids = [f"m-{i}" for i in range(n)]
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), "--socket", self.daemon.socket, "--conversation", conv,
             "--steps", "3", "--worker", "w1", *ids],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def cleanup() -> None:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for f in (proc.stdout, proc.stderr):
                if f is not None:
                    f.close()

        self.addCleanup(cleanup)
        lines: "queue.Queue[str]" = queue.Queue()
        out: List[str] = []

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line.rstrip("\n"))

        threading.Thread(target=read, daemon=True).start()

        def until(what: str) -> None:
            while True:
                try:
                    line = lines.get(timeout=IO_TIMEOUT)
                except queue.Empty:
                    err = ""
                    if proc.poll() is not None and proc.stderr is not None:
                        err = f"\nthe worker exited {proc.returncode}:\n{proc.stderr.read()}"
                    raise AssertionError(f"no line with {what!r}; so far:\n" + "\n".join(out)
                                         + err) from None
                out.append(line)
                if what in line:
                    return

        # The worker has finished a few messages and is working on more.
        until("m-3: finished seq")
        # Stop it where it is, stop the daemon, and let the worker go on
        # while the daemon is away: it finds it away, and waits.
        stop_child(proc.pid)
        try:
            self.assertEqual(self.daemon.stop(), 0)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        until(f"liminald at {self.daemon.socket} unavailable")
        self.daemon.start()
        until(f"{ids[-1]}: finished seq")
        self.assertEqual(proc.wait(timeout=IO_TIMEOUT), 0, proc.stderr.read() if proc.stderr else "")
        while not lines.empty():
            out.append(lines.get())

        # Every message was finished, each step recorded once with the
        # output the worker computes.
        with Client(self.daemon.socket, timeout=IO_TIMEOUT) as c:
            for m in ids:
                st = c.state(conv, m)
                self.assertEqual((m, st.status, st.last_completed_step), (m, "finished", 2))
                self.assertEqual([s.output for s in st.steps], expected_outputs(m, 3))
            events = list(c.read_all(conv))
        by_type: dict = {}
        for e in events:
            by_type.setdefault(e.type, []).append(e.message_id)
        self.assertEqual(sorted(by_type["message_received"]), sorted(ids))
        self.assertEqual(sorted(by_type["processing_finished"]), sorted(ids))
        self.assertEqual(len(by_type["step_completed"]), 3 * n)
        self.assertIn(f"{ids[-1]}: finished seq", "\n".join(out))


if __name__ == "__main__":
    unittest.main()
