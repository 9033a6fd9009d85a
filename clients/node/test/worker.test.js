// Tests of the worked example, examples/node/worker.js, as a program and as
// a function, against a real daemon: a crash mid-message and its resumption,
// a delivery while another worker holds the lease, and retention (compacted
// and forgotten messages).
//
// See helpers.js for the daemons they run.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

import { AlreadyFinishedError, FingerprintMismatchError } from 'liminald';
import {
  TEST_TIMEOUT, setup, teardown, client, startDaemon, loadWorker, runWorker, waitForDecision, waitUntil,
  withoutRenewals,
} from './helpers.js';

let processMessage;
let runStep;

before(async () => {
  await setup();
  ({ processMessage, runStep } = await loadWorker());
}, { timeout: 600_000 });
after(teardown);

// ------------------------------------------------------------------ the worked example

const sha256 = (...parts) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};

test('worked example: a worker crashes after step 1; the redelivery resumes at step 2', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const conv = 'worker-orders';
  const msg = 'order-1';

  // Run 1: dies by SIGKILL right after recording step 1 of 3, holding a
  // lease of 300 ms.
  const crashed = await runWorker(['--worker', 'crasher', '--lease-ms', '300', conv, msg, '3'], { CRASH_AFTER_STEP: '1' });
  assert.equal(crashed.signal, 'SIGKILL', `worker: ${crashed.stderr}`);
  assert.equal(crashed.code, null);
  assert.deepEqual(crashed.lines.map((l) => l.decision ?? l.step ?? (l.leased && 'leased')), ['start', 'leased', 0, 1]);
  assert.deepEqual(crashed.lines[1], { leased: true, worker: 'crasher', token: 1, leaseMs: 300 });
  const mid = await c.state(conv, msg);
  assert.equal(mid.status, 'in_progress');
  assert.equal(mid.lastCompletedStep, 1);
  assert.equal(mid.worker, 'crasher');

  // Once its lease lapsed, the redelivery takes it over, resumes at step 2
  // (step 1's output came with the receive), runs only it, and finishes.
  assert.deepEqual(await waitForDecision(c, conv, msg, 'resume'), { decision: 'resume', resumeFrom: 2 });
  const resumed = await runWorker(['--worker', 'second', conv, msg, '3']);
  assert.deepEqual([resumed.code, resumed.signal], [0, null], `worker: ${resumed.stderr}`);
  assert.deepEqual(resumed.lines[0], { decision: 'resume', resumeFrom: 2 });
  assert.deepEqual(resumed.lines.slice(1).map((l) => l.step ?? (l.leased && 'leased') ?? (l.finished && 'finished')), ['leased', 2, 'finished']);

  // The log: each step exactly once, a start per run, one finish.
  const { events, nextSeq } = await c.read(conv);
  assert.deepEqual(withoutRenewals(events).map((e) => [e.type, e.stepIndex, e.worker]), [
    ['message_received', undefined, undefined],
    ['processing_started', undefined, 'crasher'],
    ['step_completed', 0, undefined],
    ['step_completed', 1, undefined],
    ['processing_started', undefined, 'second'],
    ['step_completed', 2, undefined],
    ['processing_finished', undefined, undefined],
  ]);
  const steps = events.filter((e) => e.type === 'step_completed');
  assert.deepEqual(steps.map((e) => e.stepIndex), [0, 1, 2]);
  // Step 2 was computed from step 1's recorded output.
  const out0 = sha256('step 0:', msg);
  const out1 = sha256('step 1:', out0);
  const out2 = sha256('step 2:', out1);
  assert.deepEqual(steps.map((e) => e.output), [out0, out1, out2]);
  const done = await c.state(conv, msg);
  assert.deepEqual([done.status, done.attempts], ['finished', 2]);

  // Run 3, another redelivery: skip, and nothing is appended.
  const skipped = await runWorker([conv, msg, '3']);
  assert.deepEqual([skipped.code, skipped.signal], [0, null], `worker: ${skipped.stderr}`);
  assert.deepEqual(skipped.lines, [{ decision: 'skip' }]);
  assert.equal((await c.read(conv)).nextSeq, nextSeq);
});

test('worked example: a delivery while another worker holds the lease runs nothing', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const conv = 'worker-busy';
  await c.receive(conv, 'm');
  const lease = await c.lease(conv, 'm', { worker: 'holder', leaseMs: 60_000 });
  t.after(() => lease.stop());
  const { nextSeq } = await c.read(conv);
  const run = await runWorker(['--worker', 'latecomer', conv, 'm']);
  assert.deepEqual([run.code, run.signal], [0, null], `worker: ${run.stderr}`);
  assert.equal(run.lines.length, 1);
  const [line] = run.lines;
  assert.deepEqual([line.decision, line.worker, line.token], ['busy', 'holder', lease.token]);
  assert.ok(line.retryAfterMs > 0 && line.retryAfterMs <= 60_000);
  // Nothing since but the holder's renewals.
  assert.deepEqual(withoutRenewals((await c.read(conv, { fromSeq: nextSeq })).events), []);
});

// ------------------------------------------------------------------ retention

const PRODUCED_AT = 1_732_672_000_000; // when the tests' messages were produced: long ago

// Receives msg (sent at PRODUCED_AT), starts it, records a step and finishes it.
async function finishMessage(c, conv, msg) {
  await c.receive(conv, msg, { sentAt: PRODUCED_AT });
  await c.start(conv, msg, { worker: 'w', leaseMs: 60_000 });
  await c.step(conv, msg, 0, 'x');
  await c.finish(conv, msg);
}

// Finishes msgs and waits until their tombstones were dropped; resolves with
// the conversation's forgottenBefore.
async function forget(c, conv, ...msgs) {
  for (const msg of msgs) await finishMessage(c, conv, msg);
  await waitUntil('the tombstones dropped', async () => {
    const states = await Promise.all(msgs.map((msg) => c.state(conv, msg)));
    return states.every((st) => st.status === 'unknown');
  });
  const st = await c.state(conv);
  assert.deepEqual([st.compacted, st.messages.total], [msgs.length, 0]);
  assert.equal(typeof st.forgottenBefore, 'number');
  return st.forgottenBefore;
}

test('retention: a finished message is compacted, and its redeliveries skip it', { timeout: TEST_TIMEOUT }, async () => {
  // Compacted 1 ms after it finished; its tombstone is kept.
  const d = await startDaemon('compaction', ['--retain-finished', '1ms']);
  const c = d.first;
  try {
    const conv = 'ret-compact';
    const msg = 'done';
    // No horizon yet: a plain start.
    assert.deepEqual(await c.receive(conv, msg, { fingerprint: 'sha256:aa', sentAt: PRODUCED_AT }), { decision: 'start', seq: 0 });
    await c.start(conv, msg, { worker: 'w', leaseMs: 60_000 });
    await c.step(conv, msg, 0, 'charged');
    assert.deepEqual(await c.finish(conv, msg), { seq: 3, duplicate: false });
    await c.receive(conv, 'open'); // not finished: kept whole

    // Compaction runs in the background: the message's state says when.
    const st = await waitUntil('compaction of the finished message', async () => {
      const s = await c.state(conv, msg);
      return s.compacted && s;
    });
    assert.deepEqual(st, {
      status: 'finished', receivedAt: null, lastCompletedStep: null, steps: [], error: null, attempts: 1,
      token: null, worker: null, leaseExpiresAt: null, quarantined: false, fingerprint: 'sha256:aa', compacted: true,
    });
    assert.deepEqual(await c.state(conv), {
      nextSeq: 5, messages: { received: 1, inProgress: 0, errored: 0, finished: 1, total: 2 }, compacted: 1, forgottenBefore: null,
    });

    // Its redeliveries are skipped, with or without sentAt, and append nothing.
    const skip = { decision: 'skip', compacted: true };
    assert.deepEqual(await c.receive(conv, msg), skip);
    assert.deepEqual(await c.receive(conv, msg, { sentAt: PRODUCED_AT }), skip);
    assert.deepEqual(await c.decide(conv, msg, { sentAt: PRODUCED_AT }), skip);
    const x = await c.explain(conv, msg);
    assert.deepEqual([x.decision, x.compacted, x.rule, x.events], ['skip', true, 'compacted', []]);
    await assert.rejects(c.receive(conv, msg, { fingerprint: 'sha256:bb' }), FingerprintMismatchError); // the tombstone keeps it

    // Writes answer as for a finished message; its retried finish is a duplicate.
    assert.deepEqual(await c.finish(conv, msg, { expectedSeq: 3 }), { seq: 3, duplicate: true });
    await assert.rejects(c.start(conv, msg), AlreadyFinishedError);
    await assert.rejects(c.step(conv, msg, 1, ''), AlreadyFinishedError);
    await assert.rejects(c.fail(conv, msg, 'late'), AlreadyFinishedError);

    // Its events are gone: the log has a gap, and seqs are not reused.
    const { events, nextSeq } = await c.read(conv);
    assert.deepEqual([events.map((e) => [e.seq, e.messageId]), nextSeq], [[[4, 'open']], 5]);
    const listed = await c.messages(conv);
    assert.deepEqual(listed.messages.map((m) => [m.messageId, m.status, m.compacted]), [[msg, 'finished', true], ['open', 'received', false]]);
    const stats = await c.stats();
    assert.deepEqual([stats.compacted, stats.tombstones, stats.tombstonesDropped, stats.forgottenBefore], [1, 1, 0, null]);
    assert.ok(stats.compaction.passes >= 1);

    // The worker skips it, saying why.
    const log = [];
    assert.equal(await processMessage(c, conv, msg, { sentAt: PRODUCED_AT, report: (o) => log.push(o) }), 'skip');
    assert.deepEqual(log, [{ decision: 'skip', compacted: true }]);
    assert.equal((await c.state(conv)).nextSeq, 5);
  } finally {
    await c.close();
    await d.stop();
  }
});

// Compacted 1 ms after it finished, its tombstone dropped 200 ms after.
const FORGETTING = ['--retain-finished', '1ms', '--retain-tombstones', '200ms'];

test('retention: once its tombstone is dropped, a redelivery sent before the horizon is forgotten', { timeout: TEST_TIMEOUT }, async () => {
  const d = await startDaemon('forgetting', FORGETTING);
  const c = d.first;
  try {
    const conv = 'ret-forget';
    const msg = 'done';
    const before = Date.now();
    const fb = await forget(c, conv, msg);
    assert.ok(fb >= before, `forgottenBefore ${fb} is its finish time, after ${before}`);
    const stats = await c.stats();
    assert.deepEqual([stats.tombstonesDropped, stats.tombstones, stats.forgottenBefore], [1, 0, fb]);

    // A redelivery sent at or before the horizon is forgotten: nothing is
    // appended, the client chooses.
    const { nextSeq } = await c.state(conv);
    assert.equal(nextSeq, 4);
    const forgotten = { decision: 'forgotten', forgottenBefore: fb };
    assert.deepEqual(await c.receive(conv, msg, { sentAt: PRODUCED_AT }), forgotten);
    assert.deepEqual(await c.receive(conv, msg, { sentAt: fb }), forgotten);
    assert.deepEqual(await c.receive(conv, 'never-seen', { sentAt: PRODUCED_AT }), forgotten);
    assert.deepEqual(await c.decide(conv, msg, { sentAt: PRODUCED_AT }), forgotten);
    const x = await c.explain(conv, msg, { sentAt: PRODUCED_AT });
    assert.deepEqual([x.decision, x.forgottenBefore, x.rule, x.events], ['forgotten', fb, 'forgotten', []]);
    assert.equal((await c.state(conv)).nextSeq, nextSeq);
    assert.deepEqual((await c.read(conv)).events, []); // every event was compacted

    // Sent after the horizon, it is new for sure: a start, still carrying it.
    assert.deepEqual(await c.decide(conv, msg, { sentAt: fb + 1 }), { decision: 'start', forgottenBefore: fb });
    assert.equal((await c.explain(conv, msg)).rule, 'never_seen');
    // Without sentAt the daemon cannot tell: a start that appends, and
    // carries forgottenBefore for the client to judge.
    assert.deepEqual(await c.receive(conv, msg), { decision: 'start', seq: nextSeq, forgottenBefore: fb });
    assert.equal((await c.state(conv)).nextSeq, nextSeq + 1);
    assert.equal((await c.state(conv, msg)).status, 'received');
  } finally {
    await c.close();
    await d.stop();
  }
});

test('worked example: a forgotten message is skipped and reported, or processed again', { timeout: TEST_TIMEOUT }, async () => {
  const d = await startDaemon('forgetting-worker', FORGETTING);
  const c = d.first;
  try {
    const conv = 'ret-worker';
    const fb = await forget(c, conv, 'a', 'b', 'cli-a', 'cli-b');
    const { nextSeq } = await c.state(conv);
    const effects = [];
    const run = (i, input, messageId) => {
      effects.push([messageId, i]);
      return runStep(i, input);
    };

    // The default: skipped and reported, nothing run or appended.
    let log = [];
    assert.equal(await processMessage(c, conv, 'a', { sentAt: PRODUCED_AT, run, report: (o) => log.push(o) }), 'forgotten');
    assert.deepEqual(log, [{ decision: 'forgotten', sentAt: PRODUCED_AT, forgottenBefore: fb, onForgotten: 'skip' }]);
    assert.deepEqual(effects, []);
    assert.equal((await c.state(conv)).nextSeq, nextSeq);
    await assert.rejects(processMessage(c, conv, 'a', { onForgotten: 'retry', report: () => {} }), TypeError);

    // The command line, likewise.
    const env = { LIMINAL_SOCKET: d.socketPath };
    const skipped = await runWorker(['--sent-at', String(PRODUCED_AT), conv, 'cli-a'], env);
    assert.deepEqual([skipped.code, skipped.signal], [0, null], `worker: ${skipped.stderr}`);
    assert.deepEqual(skipped.lines, [{ decision: 'forgotten', sentAt: PRODUCED_AT, forgottenBefore: fb, onForgotten: 'skip' }]);
    assert.equal((await c.state(conv)).nextSeq, nextSeq);

    // onForgotten 'process': received again as new, and processed.
    log = [];
    assert.equal(await processMessage(c, conv, 'b', { sentAt: PRODUCED_AT, onForgotten: 'process', run, report: (o) => log.push(o) }), 'start');
    assert.deepEqual(log.slice(0, 2), [{ decision: 'forgotten', sentAt: PRODUCED_AT, forgottenBefore: fb, onForgotten: 'process' }, { decision: 'start' }]);
    assert.ok(log.at(-1).finished);
    assert.deepEqual(effects, [['b', 0], ['b', 1], ['b', 2]]);
    const { events } = await c.read(conv, { fromSeq: nextSeq });
    assert.deepEqual([events[0].type, events[0].messageId], ['message_received', 'b']);

    const processed = await runWorker(['--sent-at', String(PRODUCED_AT), '--on-forgotten', 'process', conv, 'cli-b', '2'], env);
    assert.deepEqual([processed.code, processed.signal], [0, null], `worker: ${processed.stderr}`);
    // ('b' finished just before: the horizon may have moved on to it.)
    const { forgottenBefore, ...said } = processed.lines[0];
    assert.deepEqual(said, { decision: 'forgotten', sentAt: PRODUCED_AT, onForgotten: 'process' });
    assert.ok(forgottenBefore >= fb);
    assert.deepEqual(processed.lines.map((l) => l.decision ?? l.step ?? (l.leased && 'leased') ?? (l.finished && 'finished')),
      ['forgotten', 'start', 'leased', 0, 1, 'finished']);
    const bad = await runWorker(['--on-forgotten', 'retry', conv, 'cli-b'], env);
    assert.equal(bad.code, 2);

    // Without sentAt it starts, and says the message may have run before.
    // (The horizon may have moved on since: 'b' finished, and is forgotten in turn.)
    log = [];
    assert.equal(await processMessage(c, conv, 'c', { steps: 1, run, report: (o) => log.push(o) }), 'start');
    assert.equal(log[0].decision, 'start');
    assert.ok(log[0].forgottenBefore >= fb, JSON.stringify(log[0]));
  } finally {
    await c.close();
    await d.stop();
  }
});

