#!/usr/bin/env python3
"""A worker that processes messages in checkpointed steps, under a lease, with liminald.

It uses the liminald package (``pip install ./clients/python`` from the
liminald repository).

For each message id given, on a (re)delivery:

1. ``receive`` records the delivery and decides: ``skip`` (already finished:
   do nothing), ``start`` (new) or ``resume`` (started before, e.g. by a
   worker that crashed) from the first step not recorded.  It asks
   ``with_steps``, so a resume carries the outputs of the steps recorded.
   Two decisions mean "not now": ``busy`` (another worker holds a live lease
   on it: redeliver it after ``retry_after_ms``) and ``quarantined`` (it was
   started ``--max-attempts`` times without finishing: an operator releases
   it).  The worker runs nothing for either.  On a daemon that forgets
   (retention), ``receive`` is given the message's ``--sent-at`` (when it
   was produced: a broker's timestamp) and may answer ``forgotten``: the
   conversation does not know the message, but forgot messages finished
   after it was sent, so it may have been processed already.  The daemon
   cannot tell, so the worker follows ``--on-forgotten``: ``skip`` (the
   default) runs nothing and reports it, for an operator to judge (where a
   real worker would dead-letter it); ``process`` receives it again
   without ``sent_at``, which records it as new, and processes it;
2. ``start`` with this worker's name and a lease records that processing
   (re)starts and answers a token.  If another worker's start got there
   first, this one is refused with ``busy`` and runs nothing;
3. while it works, a background thread renews the lease at a third of its
   length, and every write carries the token.  If the lease was lost anyway
   (this process stalled past its lease, and another worker took the
   message over), the daemon answers ``fenced`` to a write or a renewal,
   and the worker stops at once, running no further step;
4. each step left runs and is recorded with ``step``, its output being the
   checkpoint the next step needs.  Here step 0 computes the sha256 of the
   message id and step i the sha256 of step i-1's output: deterministic, so
   a step redone after a crash records the same output (a duplicate, not a
   conflict);
5. ``finish`` records that the message is done.  A step that raises records
   the error with ``fail``; the next delivery resumes after the last step
   recorded.

liminald may restart under the worker (an upgrade, a crash).  The client
reconnects by itself and sends again what is safe to send again (the reads,
and the step, finish and fail that carry the lease's token: the daemon
answers them as duplicates if they already landed).  A ``receive`` or
``start`` lost with its connection may or may not have landed, so the
client raises :class:`liminald.Unavailable` for it, and the worker delivers
the message again (``deliver``), as its broker would: ``receive`` then says
where to resume, and a message still leased by this very worker (its own
interrupted delivery) is resumed under the same lease.  It gives up after
``--retry-for`` seconds.

To simulate a crash mid-message, ``--crash-after-step N`` (or the environment
variable CRASH_AFTER_STEP=N) makes the worker SIGKILL itself right after step
N is recorded.  Its lease then lapses after ``--lease-ms``; until then a
redelivery is ``busy``.

Usage:
    python3 worker.py [--socket PATH] [--conversation C] [--steps N]
                      [--worker NAME] [--lease-ms MS]
                      [--sent-at MS] [--on-forgotten {skip,process}]
                      [--retry-for SECONDS] [--crash-after-step N] MESSAGE_ID...

It prints one line per decision and per step, such as
``m-1: resume from 2`` or ``m-1: skip``, and one when it finds liminald
away (``liminald at PATH unavailable (...); reconnecting``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import sys
import time
from typing import Any, Callable, Optional

from liminald import (
    AlreadyFinished, Busy, Client, Decision, Fenced, Quarantined, Reconnect, ShuttingDown,
    Unavailable,
)

DEFAULT_LEASE_MS = 30_000
DEFAULT_RETRY_FOR = 60.0  # seconds deliver() keeps delivering while liminald is away

# What to do with a delivery the daemon answers "forgotten" (see
# process): set it aside and report it, or process it again.
ON_FORGOTTEN = ("skip", "process")


def default_worker_name() -> str:
    """A name no other live process uses: host and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


def run_step(index: int, message_id: str, previous: bytes | None) -> bytes:
    """Step ``index`` of a message: deterministic, from the previous output."""
    if index == 0:
        return hashlib.sha256(message_id.encode("utf-8")).digest()
    if previous is None:
        raise ValueError(f"step {index} needs the output of step {index - 1}")
    return hashlib.sha256(previous).digest()


def _print(line: str) -> None:
    print(line, flush=True)


def process(client: Client, conversation: str, message_id: str, steps: int,
            crash_after_step: int | None = None, *, worker: str | None = None,
            lease_ms: int = DEFAULT_LEASE_MS, renew_every: float | None = None,
            fingerprint: str | None = None, sent_at: int | None = None,
            on_forgotten: str = "skip",
            run: Callable[[int, str, Optional[bytes]], bytes] = run_step,
            log: Callable[[str], None] = _print) -> str:
    """Processes one delivery of a message.

    Returns the decision's action ("start" or "resume") once the message is
    finished, or why it ran nothing more: "skip", "busy", "quarantined",
    "forgotten" (set aside, see below), or "fenced" (the lease was lost
    mid-message; another worker has it).
    ``run(index, message_id, previous_output)`` is a step's work (its side
    effects); ``renew_every`` is passed to :meth:`Client.lease`.

    A "busy" decision whose lease this very worker holds (``worker``, or
    its default name) is a delivery of its own that liminald's restart
    interrupted (see :func:`deliver`): it is resumed under that lease.

    ``sent_at`` is when the message was produced (epoch ms, a broker's
    timestamp).  When the daemon answers "forgotten" (it does not know the
    message, and forgot messages finished after ``sent_at``, so this one
    may have been processed and forgotten), ``on_forgotten`` decides:
    "skip" runs nothing and logs it, for an operator to judge (a real
    worker would dead-letter it here); "process" receives it again without
    ``sent_at``, which records it as a new message, and processes it.
    """
    if on_forgotten not in ON_FORGOTTEN:
        raise ValueError(f"on_forgotten must be one of {ON_FORGOTTEN}, not {on_forgotten!r}")
    m = message_id
    me = worker or default_worker_name()
    decision = client.receive(conversation, m, fingerprint=fingerprint, sent_at=sent_at,
                              with_steps=True)
    again = False  # a forgotten message received again, to be processed
    if decision.action == "forgotten":
        what = (f"{m}: forgotten: sent at {sent_at}, at or before the conversation's "
                f"forgotten_before {decision.forgotten_before}, so it may have been processed")
        if on_forgotten == "skip":
            log(f"{what}; skipped, not processed (on_forgotten=skip)")
            return "forgotten"
        log(f"{what}; processing it again (on_forgotten=process)")
        decision = client.receive(conversation, m, fingerprint=fingerprint, with_steps=True)
        again = True
    if decision.action == "skip":
        log(f"{m}: skip (compacted)" if decision.compacted else f"{m}: skip")
        return "skip"
    if decision.action == "busy" and decision.worker == me:
        # The lease is this worker's own: a delivery of it that liminald's
        # restart interrupted (see deliver).  Resume it under that lease.
        st = client.state(conversation, m)
        resume_from = 0 if st.last_completed_step is None else st.last_completed_step + 1
        log(f"{m}: busy: this worker ({me}) holds it (token {decision.token}), "
            f"from an interrupted delivery")
        decision = Decision("resume", resume_from=resume_from, steps=st.steps)
    if decision.action == "busy":
        log(f"{m}: busy: worker {decision.worker} holds it (token {decision.token}); "
            f"retry in {decision.retry_after_ms} ms")
        return "busy"
    if decision.action == "quarantined":
        log(f"{m}: quarantined after {decision.attempts} attempts (last error: {decision.error})")
        return "quarantined"
    if decision.action not in ("start", "resume"):
        log(f"{m}: {decision.action}: not processed")
        return decision.action
    if decision.forgotten_before is not None and sent_at is None and not again:
        # Without sent_at the daemon could not tell: say so.
        log(f"{m}: {decision.action} from {decision.resume_from} (no sent_at, and the "
            f"conversation forgot messages finished up to {decision.forgotten_before}: "
            f"it may have been processed before)")
    else:
        log(f"{m}: {decision.action} from {decision.resume_from}")

    try:
        lease = client.lease(conversation, m, me, lease_ms, renew_every=renew_every)
    except Busy as e:  # another worker started it since our receive
        log(f"{m}: busy: worker {e.worker} holds it (token {e.token}); "
            f"retry in {e.retry_after_ms} ms")
        return "busy"
    except Quarantined:
        log(f"{m}: quarantined")
        return "quarantined"
    except AlreadyFinished:  # another worker finished it since our receive
        log(f"{m}: skip")
        return "skip"

    first = decision.resume_from or 0  # 0 for a start
    with lease:
        log(f"{m}: leased by {lease.worker} for {lease_ms} ms, token {lease.token}")
        # The checkpoint the next step needs came with the decision.
        previous = decision.output(first - 1) if first > 0 else None
        try:
            for index in range(first, steps):
                lease.check()  # the renewing thread may have found the lease lost
                try:
                    output = run(index, m, previous)
                except Exception as e:
                    lease.fail(f"step {index}: {e!r}")
                    raise
                ack = lease.step(index, output)
                log(f"{m}: step {index} seq {ack.seq}{' (duplicate)' if ack.duplicate else ''}")
                if crash_after_step is not None and index == crash_after_step:
                    log(f"{m}: crashing after step {index}")
                    os.kill(os.getpid(), signal.SIGKILL)
                previous = output
            ack = lease.finish()
        except Fenced as e:
            log(f"{m}: fenced: token {e.token} is no longer current "
                f"(now {e.current_token}); stopped")
            return "fenced"
    log(f"{m}: finished seq {ack.seq}")
    return decision.action


def deliver(client: Client, conversation: str, message_id: str, steps: int, *,
            retry_for: float = DEFAULT_RETRY_FOR, log: Callable[[str], None] = _print,
            **kwargs: Any) -> str:
    """:func:`process`, delivered again while liminald cannot be reached.

    The client reconnects by itself across a restart of liminald and sends
    again what is safe to; a ``receive`` or ``start`` lost with its
    connection raises :class:`Unavailable` (it may or may not have landed),
    and the daemon may answer ``shutting_down`` as it stops.  Either way
    the message is delivered again, as a broker would, after a short
    backoff, for up to ``retry_for`` seconds: ``receive`` then tells where
    to resume.  Returns what :func:`process` returns; raises the last
    error once ``retry_for`` is spent.
    """
    deadline = time.monotonic() + retry_for
    delay = 0.05
    while True:
        try:
            return process(client, conversation, message_id, steps, log=log, **kwargs)
        except (Unavailable, ShuttingDown) as e:
            if time.monotonic() + delay > deadline:
                raise
            log(f"{message_id}: {e}; delivering it again")
        time.sleep(delay)  # a backoff while liminald comes back, not a wait for an event
        delay = min(delay * 2, 1.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", help="the daemon's socket (default: as liminald finds it)")
    p.add_argument("--conversation", default="worker")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--worker", help="this worker's name (default: host-pid)")
    p.add_argument("--lease-ms", type=int, default=DEFAULT_LEASE_MS,
                   help=f"the lease's length, renewed at a third of it (default {DEFAULT_LEASE_MS})")
    p.add_argument("--sent-at", type=int, metavar="MS",
                   help="when the messages were produced, in epoch ms (a broker's timestamp), "
                        "passed to receive as sent_at")
    p.add_argument("--on-forgotten", choices=ON_FORGOTTEN, default="skip",
                   help="a message the daemon answers forgotten (it may have been processed "
                        "and forgotten): skip and report it (default), or process it again")
    p.add_argument("--retry-for", type=float, default=DEFAULT_RETRY_FOR, metavar="SECONDS",
                   help="deliver a message again for up to this long while liminald cannot be "
                        f"reached (default {DEFAULT_RETRY_FOR:g})")
    env_crash = os.environ.get("CRASH_AFTER_STEP")
    p.add_argument("--crash-after-step", type=int,
                   default=int(env_crash) if env_crash else None,
                   help="SIGKILL this process right after recording step N (env CRASH_AFTER_STEP)")
    p.add_argument("message_ids", nargs="+", metavar="MESSAGE_ID")
    args = p.parse_args(argv)

    def reconnecting(r: Reconnect) -> None:
        if r.attempt == 1:  # once for each wait, not for each try
            _print(f"liminald at {r.socket} unavailable ({type(r.error).__name__}: {r.error}); "
                   f"reconnecting")

    with Client(args.socket, on_reconnect=reconnecting) as client:
        for message_id in args.message_ids:
            deliver(client, args.conversation, message_id, args.steps,
                    crash_after_step=args.crash_after_step, worker=args.worker,
                    lease_ms=args.lease_ms, sent_at=args.sent_at,
                    on_forgotten=args.on_forgotten, retry_for=args.retry_for)
    return 0


if __name__ == "__main__":
    sys.exit(main())
