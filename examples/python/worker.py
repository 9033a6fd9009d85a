#!/usr/bin/env python3
"""A worker that processes messages in checkpointed steps with liminald.

For each message id given, on a (re)delivery:

1. ``receive`` records the delivery and decides: ``skip`` (already finished:
   do nothing), ``start`` (new) or ``resume`` (started before, e.g. by a
   worker that crashed) from the first step not recorded;
2. ``start`` records that processing (re)starts;
3. each step left runs and is recorded with ``step``, its output being the
   checkpoint the next step needs.  Here step 0 computes the sha256 of the
   message id and step i the sha256 of step i-1's output: deterministic, so
   a step redone after a crash records the same output (a duplicate, not a
   conflict).  On resume, the previous step's output is read back from the
   daemon with ``state``;
4. ``finish`` records that the message is done.  A step that raises records
   the error with ``fail``; the next delivery resumes after the last step
   recorded.

To simulate a crash mid-message, ``--crash-after-step N`` (or the environment
variable CRASH_AFTER_STEP=N) makes the worker SIGKILL itself right after step
N is recorded.

Usage:
    python3 worker.py [--socket PATH] [--conversation C] [--steps N]
                      [--crash-after-step N] MESSAGE_ID...

It prints one line per decision and per step, such as
``m-1: resume from 2`` or ``m-1: skip``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from liminald import Client  # noqa: E402


def run_step(index: int, message_id: str, previous: bytes | None) -> bytes:
    """Step ``index`` of a message: deterministic, from the previous output."""
    data = message_id.encode("utf-8") if index == 0 else previous
    return hashlib.sha256(data).digest()


def process(client: Client, conversation: str, message_id: str, steps: int,
            crash_after_step: int | None = None) -> str:
    """Processes one delivery of a message; returns the decision's action."""
    decision = client.receive(conversation, message_id)
    if decision.action == "skip":
        print(f"{message_id}: skip", flush=True)
        return "skip"
    print(f"{message_id}: {decision.action} from {decision.resume_from}", flush=True)

    client.start(conversation, message_id)  # a duplicate if already in progress

    previous = None
    if decision.resume_from > 0:
        # The checkpoint the next step needs: the last recorded output.
        state = client.state(conversation, message_id)
        previous = state.output(decision.resume_from - 1)

    for index in range(decision.resume_from, steps):
        try:
            output = run_step(index, message_id, previous)
        except Exception as e:
            client.fail(conversation, message_id, f"step {index}: {e!r}")
            raise
        ack = client.step(conversation, message_id, index, output)
        print(f"{message_id}: step {index} seq {ack.seq}{' (duplicate)' if ack.duplicate else ''}",
              flush=True)
        if crash_after_step is not None and index == crash_after_step:
            print(f"{message_id}: crashing after step {index}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        previous = output

    ack = client.finish(conversation, message_id)
    print(f"{message_id}: finished seq {ack.seq}", flush=True)
    return decision.action


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", help="the daemon's socket (default: as liminald finds it)")
    p.add_argument("--conversation", default="worker")
    p.add_argument("--steps", type=int, default=3)
    env_crash = os.environ.get("CRASH_AFTER_STEP")
    p.add_argument("--crash-after-step", type=int,
                   default=int(env_crash) if env_crash else None,
                   help="SIGKILL this process right after recording step N (env CRASH_AFTER_STEP)")
    p.add_argument("message_ids", nargs="+", metavar="MESSAGE_ID")
    args = p.parse_args(argv)

    with Client(args.socket) as client:
        for message_id in args.message_ids:
            process(client, args.conversation, message_id, args.steps, args.crash_after_step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
