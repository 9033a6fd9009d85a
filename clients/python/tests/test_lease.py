"""The lease helper, Client.lease: renewals in the background, seen as they
commit, and the work it stops once the lease is fenced."""

from __future__ import annotations

import time
import unittest

from liminald import Ack, Busy, Client, Fenced

from harness import IO_TIMEOUT, DaemonTestCase, lease_events


class LeaseHelperTest(DaemonTestCase):

    def test_renews_in_the_background(self):
        c, conv = self.client, self.conv()
        c.receive(conv, "m")
        with c.subscribe(conv, from_seq=0, wait_timeout=IO_TIMEOUT) as events:
            with c.lease(conv, "m", "w", 300) as lease:  # renewed every 100 ms
                self.assertEqual((lease.token, lease.renew_every), (1, 0.1))
                first_expiry = lease.expires_at
                renewals = []
                for e in events:  # each renewal as it commits
                    if e.type == "lease_renewed":
                        renewals.append(e)
                        if len(renewals) == 2:
                            break
                self.assertEqual([(e.token, e.lease_ms) for e in renewals], [(1, 300)] * 2)
                lease.step(0, b"x")
                ack = lease.finish()
            assert lease._thread is not None
            self.assertFalse(lease._thread.is_alive())  # renewals stopped with finish
        self.assertGreaterEqual(lease.renewals, 2)
        self.assertGreater(lease.expires_at, first_expiry)
        self.assertIsNone(lease.renew_error)
        self.assertTrue(lease.held)
        events_left = lease_events(c.read(conv).events)
        self.assertEqual([e.type for e in events_left], [
            "message_received", "processing_started", "step_completed", "processing_finished"])
        self.assertEqual(ack, Ack(events_left[-1].seq))

    def test_leaving_the_block_stops_renewing(self):
        c, conv = self.client, self.conv()
        c.receive(conv, "m")
        with c.lease(conv, "m", "w", 60_000) as lease:
            assert lease._thread is not None
            self.assertTrue(lease._thread.is_alive())
        self.assertFalse(lease._thread.is_alive())
        # The lease is still held until it lapses: another worker is busy.
        with self.assertRaises(Busy):
            c.start(conv, "m", worker="other", lease_ms=1000)

    def test_fenced_stops_the_work(self):
        c, conv = self.client, self.conv()
        c.receive(conv, "m")
        # Not renewed, as in a stalled process: 1 ms, then another worker
        # takes the message over.
        lease = c.lease(conv, "m", "a", 1, renew_every=0)
        with lease, Client(self.daemon.socket, timeout=IO_TIMEOUT) as other:
            deadline = time.monotonic() + IO_TIMEOUT
            while True:
                try:
                    taken = other.start(conv, "m", worker="b", lease_ms=60_000)
                    break
                except Busy as e:  # the daemon's clock: wait out the lease
                    self.assertLess(time.monotonic(), deadline)
                    time.sleep(e.retry_after_ms / 1000)
            self.assertTrue(lease.held)  # nobody told it yet
            with self.assertRaises(Fenced) as cm:
                lease.step(0, b"late")
            self.assertEqual((cm.exception.token, cm.exception.current_token),
                             (lease.token, taken.token))
            self.assertFalse(lease.held)
            self.assertTrue(lease.wait_lost(0))
            next_seq = c.read(conv).next_seq
            for work in (lease.check, lambda: lease.step(1, b"x"), lease.finish,
                         lambda: lease.fail("e"), lease.renew):
                with self.assertRaises(Fenced):  # refused before anything is sent
                    work()
            self.assertEqual(c.read(conv).next_seq, next_seq)

    def test_renew_every_must_not_be_negative(self):
        with self.assertRaises(ValueError):
            self.client.lease(self.conv(), "m", "w", 1000, renew_every=-1)


if __name__ == "__main__":
    unittest.main()
