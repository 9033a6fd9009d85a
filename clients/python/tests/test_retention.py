"""Tests of retention against a real daemon: compacted messages and
tombstones, forgotten messages, and the worked example's policy for them."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import unittest

import liminald
from liminald import AlreadyFinished, Ack, Client, Decision, FingerprintMismatch

from harness import WORKER, DaemonTestCase, lease_events, load_worker, wait_until

worker = load_worker()


PRODUCED_AT = 1_732_672_000_000  # when the tests' messages were produced: long ago


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
