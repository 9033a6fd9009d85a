"""Tests of the worked example, examples/python/worker.py, against a real
daemon: crash mid-message, redelivery once the crashed run's lease lapsed,
skip; workers racing under leases; quarantine."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import unittest

from liminald import Busy, Client, Decision, NotQuarantined, Quarantined, UnknownMessage

from harness import (
    IO_TIMEOUT, WORKER, DaemonTestCase, Gate, expected_outputs, lease_events, load_worker,
    wait_for_decision,
)

worker = load_worker()


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



class InterruptedDeliveryTest(DaemonTestCase):
    """A delivery that liminald's restart interrupted after the worker's
    start landed leaves the message leased by that very worker: its next
    delivery resumes it under the same lease, rather than finding it busy."""

    def test_resumes_its_own_lease(self):
        c, conv, m = self.client, self.conv(), "m"
        c.receive(conv, m)
        token = c.start(conv, m, worker="W", lease_ms=60_000).token
        c.step(conv, m, 0, worker.run_step(0, m, None), token=token)
        log: list = []
        self.assertEqual(worker.process(c, conv, m, 3, worker="W", log=log.append), "resume")
        self.assertEqual(log[:2], [f"{m}: busy: this worker (W) holds it (token {token}), "
                                   f"from an interrupted delivery", f"{m}: resume from 1"])
        events = lease_events(c.read(conv).events)
        self.assertEqual([(e.type, e.step_index) for e in events], [
            ("message_received", None), ("processing_started", None), ("step_completed", 0),
            ("step_completed", 1), ("step_completed", 2), ("processing_finished", None)])
        self.assertEqual([e.output for e in events if e.type == "step_completed"],
                         expected_outputs(m, 3))

    def test_another_worker_is_still_busy(self):
        c, conv, m = self.client, self.conv(), "m"
        c.receive(conv, m)
        c.start(conv, m, worker="W", lease_ms=60_000)
        self.assertEqual(worker.process(c, conv, m, 3, worker="V", log=lambda line: None), "busy")


if __name__ == "__main__":
    unittest.main()
