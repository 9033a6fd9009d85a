#!/usr/bin/env node
// A worker that processes one message in deterministic steps under a lease,
// checkpointing each step in liminald, so that a redelivery after a crash
// resumes where the crashed run stopped instead of redoing the work, and
// two workers handed the same message never both run it.
//
//   node worker.js [--worker NAME] [--lease-ms MS] [--sent-at MS] [--on-forgotten skip|process]
//                  CONVERSATION MESSAGE_ID [STEPS]
//
// STEPS defaults to 3, NAME to host-pid, MS to 30000. It finds the daemon at
// $LIMINAL_SOCKET (else the default socket). Step i computes
// sha256("step i:" + input), where the input of step 0 is the message id
// and that of step i the output of step i-1 (on a resume, from the receive
// reply, asked with_steps). With CRASH_AFTER_STEP=N it kills itself with
// SIGKILL right after step N is recorded, to simulate a crash mid-message;
// its lease then lapses after MS, and until then a redelivery is busy. With
// PAUSE_AFTER_STEP=N it prints {"paused":N} right after step N is recorded
// and waits for a line on its standard input before it goes on (the tests
// restart the daemon there).
//
// The client (the package in clients/node, imported as 'liminald') dials
// the daemon again by itself when it restarts: the worker's writes carry
// its lease's token, so they are sent again safely, and the worker goes on.
// A daemon away for longer than the client's reconnect timeout (10 s) makes
// it exit 1 with an UnavailableError naming the socket.
//
// On busy (another worker holds a live lease) or quarantined it runs
// nothing. Otherwise it starts the message under a lease, renewed every
// third of its length, and records each step with the lease's token; if a
// write or renewal is fenced (its lease lapsed and another worker took the
// message over), or the lease expired while no renewal got through, it
// stops at once.
//
// --sent-at MS is when the message was produced (epoch ms; a broker's
// timestamp), passed to receive as sent_at. On a daemon that forgets
// (retention), the answer may be forgotten: the conversation does not know
// the message, but forgot messages finished after it was sent, so it may
// have been processed already; the daemon cannot tell. --on-forgotten
// decides: skip (the default) runs nothing and reports it, for an operator
// to judge (where a real worker would dead-letter it); process receives it
// again without sent_at, which records it as new, and processes it.
//
// It prints one JSON object per line of what it did:
//   {"decision":"start"} / {"decision":"resume","resumeFrom":2} / {"decision":"skip"}
//   {"decision":"busy","worker":"w1","token":1,"retryAfterMs":812} / {"decision":"quarantined",...}
//   {"decision":"skip","compacted":true} (its events were compacted away)
//   {"decision":"forgotten","sentAt":1732672000000,"forgottenBefore":1796002637621,"onForgotten":"skip"}
//   {"decision":"start","forgottenBefore":1796002637621} (without --sent-at: it may have run before)
//   {"leased":true,"worker":"w2","token":4,"leaseMs":30000}
//   {"step":2,"seq":5,"duplicate":false,"output":"<hex>"}
//   {"finished":true,"seq":6} / {"fenced":true,"token":1,"currentToken":4}
//   {"leaseExpired":true,"token":1} (no renewal got through in time)

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import {
  connect, AlreadyFinishedError, BusyError, FencedError, LeaseExpiredError, QuarantinedError,
} from 'liminald';

export const DEFAULT_LEASE_MS = 30_000;

/**
 * What processMessage may do with a delivery the daemon answers forgotten:
 * set it aside and report it (the default), or process it again.
 */
export const ON_FORGOTTEN = Object.freeze(['skip', 'process']);

/** Step index of the work: deterministic, so a re-run records the same output. */
export function runStep(index, input) {
  return createHash('sha256').update(`step ${index}:`).update(input).digest();
}

/** A name no other live process uses: host and pid. */
export function defaultWorkerName() {
  return `${os.hostname()}-${process.pid}`;
}

function printReport(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

/** Resolves with the next line of standard input (or once it ends). */
function nextLine() {
  return new Promise((resolve) => {
    const rl = createInterface({ input: process.stdin });
    const done = () => {
      rl.close();
      resolve();
    };
    rl.once('line', done);
    rl.once('close', resolve);
  });
}

/**
 * Processes one delivery of messageId. Resolves with the decision ('start'
 * or 'resume') once the message is finished, or with why it ran nothing
 * more: 'skip', 'busy', 'quarantined', 'forgotten' (set aside, see below),
 * 'fenced' (the lease was lost mid-message; another worker has it), or
 * 'leaseExpired' (no renewal got through before the lease expired: another
 * worker may have it).
 *
 * run(index, input, messageId, { signal }) is a step's work (its side
 * effects; it may return a promise); signal is the lease's, aborted once
 * the lease is lost, for work that can stop midway. report(obj) receives
 * what the worker did; renewEveryMs is passed to client.lease();
 * pauseAfter(index) is awaited after step index is recorded.
 *
 * sentAt is when the message was produced (epoch ms, a broker's
 * timestamp). When the daemon answers forgotten (it does not know the
 * message, and forgot messages finished after sentAt, so this one may have
 * been processed and forgotten), onForgotten decides: 'skip' runs nothing
 * and reports it, for an operator to judge (a real worker would
 * dead-letter it here); 'process' receives it again without sentAt, which
 * records it as a new message, and processes it.
 */
export async function processMessage(client, conversation, messageId, {
  steps = 3, worker = defaultWorkerName(), leaseMs = DEFAULT_LEASE_MS, renewEveryMs,
  fingerprint, sentAt, onForgotten = 'skip', run = runStep, crashAfter = -1, report = printReport,
  pauseAfter,
} = {}) {
  if (!ON_FORGOTTEN.includes(onForgotten)) {
    throw new TypeError(`onForgotten must be one of ${ON_FORGOTTEN.join(', ')}, not ${JSON.stringify(onForgotten)}`);
  }
  let delivery = await client.receive(conversation, messageId, { fingerprint, sentAt, withSteps: true });
  let again = false; // a forgotten message received again, to be processed
  if (delivery.decision === 'forgotten') {
    report({ decision: 'forgotten', sentAt, forgottenBefore: delivery.forgottenBefore, onForgotten });
    if (onForgotten === 'skip') return 'forgotten';
    delivery = await client.receive(conversation, messageId, { fingerprint, withSteps: true });
    again = true;
  }
  const { decision } = delivery;
  switch (decision) {
    case 'skip': // already fully processed
      report({ decision, ...(delivery.compacted && { compacted: true }) });
      return decision;
    case 'busy': // another worker holds a live lease: redeliver later
      report({ decision, worker: delivery.worker, token: delivery.token, retryAfterMs: delivery.retryAfterMs });
      return decision;
    case 'quarantined': // started max_attempts times without finishing
      report({ decision, attempts: delivery.attempts, error: delivery.error });
      return decision;
    case 'start':
    case 'resume':
      break;
    default:
      report({ decision });
      return decision;
  }
  const from = decision === 'resume' ? delivery.resumeFrom : 0;
  report({
    decision,
    ...(decision === 'resume' && { resumeFrom: from }),
    // Without sentAt the daemon could not tell whether it was forgotten: say so.
    ...(delivery.forgottenBefore != null && sentAt === undefined && !again && { forgottenBefore: delivery.forgottenBefore }),
  });

  let lease;
  try {
    lease = await client.lease(conversation, messageId, { worker, leaseMs, renewEveryMs });
  } catch (err) {
    if (err instanceof BusyError) { // another worker started it since our receive
      report({ decision: 'busy', worker: err.worker, token: err.token, retryAfterMs: err.retryAfterMs });
      return 'busy';
    }
    if (err instanceof QuarantinedError) {
      report({ decision: 'quarantined' });
      return 'quarantined';
    }
    if (err instanceof AlreadyFinishedError) { // another worker finished it since our receive
      report({ decision: 'skip' });
      return 'skip';
    }
    throw err;
  }
  report({ leased: true, worker, token: lease.token, leaseMs });

  try {
    // The input of the first step to run: the message, or the checkpointed
    // output of the step before it, which came with the decision.
    let input = Buffer.from(messageId, 'utf8');
    if (from > 0) {
      const previous = delivery.steps.find((s) => s.stepIndex === from - 1);
      if (previous === undefined) throw new Error(`step ${from - 1} has no recorded output`);
      input = previous.output;
    }

    for (let i = from; i < steps; i++) {
      lease.check(); // a renewal may have found the lease lost
      let output;
      try {
        output = await run(i, input, messageId, { signal: lease.signal });
      } catch (err) {
        lease.check(); // stopped because the lease was lost: record nothing
        // The work failed: record it, so that a redelivery retries it.
        await lease.fail(`step ${i}: ${err.message}`);
        throw err;
      }
      const { seq, duplicate } = await lease.step(i, output);
      report({ step: i, seq, duplicate, output: Buffer.from(output).toString('hex') });
      if (i === crashAfter) process.kill(process.pid, 'SIGKILL'); // the simulated crash
      if (pauseAfter) await pauseAfter(i);
      input = output;
    }

    const { seq } = await lease.finish();
    report({ finished: true, seq });
    return decision;
  } catch (err) {
    if (err instanceof FencedError) {
      report({ fenced: true, token: err.token, currentToken: err.currentToken });
      return 'fenced';
    }
    if (err instanceof LeaseExpiredError) {
      report({ leaseExpired: true, token: err.token });
      return 'leaseExpired';
    }
    throw err;
  } finally {
    lease.stop();
  }
}

async function main() {
  const { values, positionals } = parseArgs({
    options: {
      worker: { type: 'string' }, 'lease-ms': { type: 'string' },
      'sent-at': { type: 'string' }, 'on-forgotten': { type: 'string' },
    },
    allowPositionals: true,
  });
  const [conversation, messageId, stepsArg = '3'] = positionals;
  const steps = Number(stepsArg);
  const leaseMs = Number(values['lease-ms'] ?? DEFAULT_LEASE_MS);
  const sentAt = values['sent-at'] === undefined ? undefined : Number(values['sent-at']);
  const onForgotten = values['on-forgotten'] ?? 'skip';
  if (!conversation || !messageId || !Number.isInteger(steps) || steps < 1 || !Number.isInteger(leaseMs)
    || (sentAt !== undefined && !Number.isInteger(sentAt)) || !ON_FORGOTTEN.includes(onForgotten)) {
    process.stderr.write('usage: node worker.js [--worker NAME] [--lease-ms MS] [--sent-at MS] '
      + '[--on-forgotten skip|process] CONVERSATION MESSAGE_ID [STEPS]\n');
    process.exitCode = 2;
    return;
  }
  const crash = process.env.CRASH_AFTER_STEP;
  const crashAfter = crash === undefined || crash === '' ? -1 : Number(crash);
  const pause = process.env.PAUSE_AFTER_STEP;
  const pauseAt = pause === undefined || pause === '' ? -1 : Number(pause);
  const pauseAfter = async (i) => {
    if (i !== pauseAt) return;
    printReport({ paused: i });
    await nextLine();
  };

  const client = await connect();
  try {
    await processMessage(client, conversation, messageId, {
      steps, worker: values.worker ?? defaultWorkerName(), leaseMs, sentAt, onForgotten, crashAfter, pauseAfter,
    });
  } finally {
    await client.close();
  }
}

// Run as a program, not when imported (the tests import processMessage).
if (process.argv[1] && import.meta.url === pathToFileURL(fs.realpathSync(process.argv[1])).href) {
  main().catch((err) => {
    process.stderr.write(`worker: ${err.name}${err.code ? ` (${err.code})` : ''}: ${err.message}\n`);
    process.exitCode = 1;
  });
}
