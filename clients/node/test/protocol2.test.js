// Tests of protocol 2 through the liminald package, against a real daemon:
// leases, renewals, fencing, the Lease helper, withSteps, fingerprints,
// messages, explain, bad arguments, and the worked example's worker
// (examples/node/worker.js) under contention and quarantine.
//
// See helpers.js for the daemons they run.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';

import {
  errorFromWire, BadRequestError, UnknownMessageError, BusyError, FencedError, QuarantinedError,
  NotQuarantinedError, FingerprintMismatchError, LeaseExpiredError, Lease,
} from 'liminald';
import {
  TEST_TIMEOUT, setup, teardown, client, startDaemon, loadWorker, waitForDecision, withoutRenewals,
} from './helpers.js';

let processMessage;
let runStep;

before(async () => {
  await setup();
  ({ processMessage, runStep } = await loadWorker());
}, { timeout: 600_000 });
after(teardown);

// ------------------------------------------------------------------ protocol 2

test('every protocol-2 error code maps to its class, with its details', { timeout: TEST_TIMEOUT }, () => {
  const busy = errorFromWire({ code: 'busy', message: 'm', retryable: true, worker: 'w1', token: 4, retry_after_ms: 250 });
  assert.ok(busy instanceof BusyError);
  assert.deepEqual([busy.worker, busy.token, busy.retryAfterMs, busy.retryable], ['w1', 4, 250, true]);
  const fenced = errorFromWire({ code: 'fenced', message: 'm', retryable: false, token: 4, current_token: 9 });
  assert.ok(fenced instanceof FencedError);
  assert.deepEqual([fenced.token, fenced.currentToken], [4, 9]);
  assert.ok(errorFromWire({ code: 'quarantined', message: 'm' }) instanceof QuarantinedError);
  assert.ok(errorFromWire({ code: 'not_quarantined', message: 'm' }) instanceof NotQuarantinedError);
  const fm = errorFromWire({ code: 'fingerprint_mismatch', message: 'm', retryable: false, stored: 'sha256:ab' });
  assert.ok(fm instanceof FingerprintMismatchError);
  assert.equal(fm.stored, 'sha256:ab');
});

test('start with a lease: busy for others, a duplicate for its worker', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const conv = 'p2-lease';
  await c.receive(conv, 'm');
  const started = await c.start(conv, 'm', { worker: 'w1', leaseMs: 60_000 });
  assert.deepEqual([started.seq, started.token, started.duplicate], [1, 1, false]);
  assert.equal(typeof started.leaseExpiresAt, 'number');

  // While leased: deliveries are busy and append nothing.
  const busy = await c.receive(conv, 'm');
  assert.deepEqual([busy.decision, busy.worker, busy.token], ['busy', 'w1', 1]);
  assert.ok(busy.retryAfterMs > 0 && busy.retryAfterMs <= 60_000);
  assert.equal((await c.decide(conv, 'm')).decision, 'busy');
  assert.equal((await c.read(conv)).nextSeq, 2);

  assert.deepEqual(await c.start(conv, 'm', { worker: 'w1', leaseMs: 60_000 }),
    { seq: 1, duplicate: true, token: 1, leaseExpiresAt: started.leaseExpiresAt });
  for (const other of [{ worker: 'w2', leaseMs: 60_000 }, {}]) {
    await assert.rejects(c.start(conv, 'm', other), (err) => {
      assert.ok(err instanceof BusyError);
      assert.deepEqual([err.code, err.retryable, err.worker, err.token], ['busy', true, 'w1', 1]);
      assert.ok(err.retryAfterMs > 0 && err.retryAfterMs <= 60_000);
      return true;
    });
  }
  const st = await c.state(conv, 'm');
  assert.deepEqual([st.status, st.attempts, st.token, st.worker, st.leaseExpiresAt, st.quarantined],
    ['in_progress', 1, 1, 'w1', started.leaseExpiresAt, false]);
  const { events } = await c.read(conv);
  assert.deepEqual([events[1].type, events[1].worker, events[1].leaseMs], ['processing_started', 'w1', 60_000]);
});

test('renew extends a lease; a stale token is fenced', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const conv = 'p2-renew';
  await c.receive(conv, 'm');
  const { token } = await c.start(conv, 'm', { worker: 'w1', leaseMs: 60_000 });
  const renewed = await c.renew(conv, 'm', token, 120_000);
  assert.equal(renewed.seq, 2);
  const ev = (await c.read(conv)).events[2];
  assert.deepEqual([ev.type, ev.token, ev.leaseMs], ['lease_renewed', token, 120_000]);
  assert.equal(renewed.leaseExpiresAt, ev.ts + 120_000);
  assert.equal((await c.state(conv, 'm')).leaseExpiresAt, renewed.leaseExpiresAt);

  // Fencing: once a lease of 1 ms lapsed, another worker takes over, and
  // every write with the old token is refused.
  await c.receive(conv, 'f');
  const old = (await c.start(conv, 'f', { worker: 'w1', leaseMs: 1 })).token;
  await waitForDecision(c, conv, 'f', 'resume');
  const taken = await c.start(conv, 'f', { worker: 'w2', leaseMs: 60_000 });
  assert.equal(taken.duplicate, false); // a takeover appends
  assert.ok(taken.token > old);
  const stale = [
    () => c.step(conv, 'f', 0, 'x', { token: old }),
    () => c.finish(conv, 'f', { token: old }),
    () => c.fail(conv, 'f', 'late', { token: old }),
    () => c.renew(conv, 'f', old, 1000),
  ];
  for (const write of stale) {
    await assert.rejects(write(), (err) => {
      assert.ok(err instanceof FencedError);
      assert.deepEqual([err.code, err.retryable, err.token, err.currentToken], ['fenced', false, old, taken.token]);
      return true;
    });
  }
  assert.equal((await c.read(conv)).nextSeq, taken.seq + 1); // nothing appended
  assert.equal((await c.step(conv, 'f', 0, 'x', { token: taken.token })).seq, taken.seq + 1);
  assert.equal((await c.step(conv, 'f', 1, 'y')).seq, taken.seq + 2); // no token: no fencing
  assert.equal((await c.finish(conv, 'f', { token: taken.token })).seq, taken.seq + 3);
  await assert.rejects(c.renew(conv, 'f', taken.token, 1000), FencedError); // no longer in progress
  await assert.rejects(c.renew(conv, 'never', 1, 1000), UnknownMessageError);
});

test('a Lease renews itself, and aborts its signal when a renewal is fenced', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const other = await client(t);
  const conv = 'p2-lease-object';
  await c.receive(conv, 'm');
  // A lease of 1 ms renewed every 20 ms lapses between renewals, so another
  // worker can take it over, after which the next renewal is refused.
  const lease = await c.lease(conv, 'm', { worker: 'a', leaseMs: 1, renewEveryMs: 20 });
  t.after(() => lease.stop());
  assert.ok(lease instanceof Lease);
  assert.deepEqual([lease.worker, lease.leaseMs, lease.active, lease.lost, lease.signal.aborted], ['a', 1, true, null, false]);
  const aborted = once(lease.signal, 'abort');
  let taken;
  for (;;) {
    try {
      taken = await other.start(conv, 'm', { worker: 'b', leaseMs: 60_000 });
      break;
    } catch (err) {
      if (!(err instanceof BusyError)) throw err; // caught between a renewal and its lapse
      await delay(err.retryAfterMs);
    }
  }
  await aborted; // the timer's next renewal was fenced
  assert.ok(lease.signal.reason instanceof FencedError);
  assert.equal(lease.lost, lease.signal.reason);
  assert.deepEqual([lease.lost.token, lease.lost.currentToken], [lease.token, taken.token]);
  assert.equal(lease.active, false);
  const { nextSeq } = await c.read(conv);
  assert.throws(() => lease.check(), FencedError);
  await assert.rejects(lease.step(0, 'late'), FencedError); // refused before it is sent
  await assert.rejects(lease.finish(), FencedError);
  assert.equal((await c.read(conv)).nextSeq, nextSeq);
});

test('a Lease renews through work lasting several lease lengths, then stops on finish', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const conv = 'p2-lease-renews';
  await c.receive(conv, 'm');
  const lease = await c.lease(conv, 'm', { worker: 'a', leaseMs: 600 });
  t.after(() => lease.stop());
  // Wait, by the daemon's log, for renewals covering three lease lengths.
  const started = (await c.read(conv)).events[1];
  const renewed = [];
  const sub = await c.subscribe(conv, { fromSeq: 2 });
  for await (const e of sub) {
    assert.deepEqual([e.type, e.token, e.leaseMs], ['lease_renewed', lease.token, 600]);
    renewed.push(e);
    if (e.ts >= started.ts + 1800) break;
  }
  // Each renewal came before the lease it extended expired.
  let expires = started.ts + 600;
  for (const e of renewed) {
    assert.ok(e.ts < expires, `a renewal at ${e.ts} came after the lease lapsed at ${expires}`);
    expires = e.ts + 600;
  }
  assert.ok(lease.renewals >= renewed.length);
  assert.equal((await c.decide(conv, 'm')).decision, 'busy');
  assert.equal(lease.signal.aborted, false);
  // finish stops the renewals: nothing follows processing_finished.
  const { seq } = await lease.finish();
  assert.equal(lease.active, false);
  const after = await c.subscribe(conv, { fromSeq: seq });
  const { value } = await after.next();
  assert.deepEqual([value.seq, value.type], [seq, 'processing_finished']);
  // No event can say that none came: a window in which the timer would
  // have renewed three times, then a marker, which must come next.
  const more = after.next();
  await delay(700);
  await c.receive(conv, 'marker');
  assert.deepEqual([(await more).value.type, (await more).value.messageId], ['message_received', 'marker']);
  await after.close();
  assert.equal(lease.signal.aborted, false);
});

test('a Lease that no renewal gets through expires, and aborts its signal', { timeout: TEST_TIMEOUT }, async (t) => {
  // The daemon answers nothing while paused (SIGSTOP): the renewals time
  // out, and once the lease's length has passed since the last one that
  // got through, the lease is lost: another worker may have it.
  const d = await startDaemon('lease-expiry');
  t.after(async () => {
    await d.first.close();
    await d.stop();
  });
  const c = d.first;
  const conv = 'p2-lease-expiry';
  await c.receive(conv, 'm');
  const lease = await c.lease(conv, 'm', { worker: 'a', leaseMs: 600, renewEveryMs: 200 });
  t.after(() => lease.stop());
  const began = performance.now();
  await d.pause();
  try {
    await once(lease.signal, 'abort');
  } finally {
    d.resume();
  }
  assert.ok(performance.now() - began >= 590, `lost after ${performance.now() - began} ms`);
  const lost = lease.signal.reason;
  assert.ok(lost instanceof LeaseExpiredError);
  assert.deepEqual([lost.code, lost.retryable, lost.token], ['lease_expired', false, lease.token]);
  assert.ok(lost.cause, 'the renewal error that could not get through');
  assert.equal(lease.lost, lost);
  assert.equal(lease.active, false);
  assert.throws(() => lease.check(), LeaseExpiredError);
  await assert.rejects(lease.step(0, 'x'), LeaseExpiredError);
});

test('withSteps: a resume carries the completed steps', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const conv = 'p2-steps';
  assert.deepEqual(await c.receive(conv, 'm', { withSteps: true }), { decision: 'start', seq: 0 });
  await c.start(conv, 'm');
  await c.step(conv, 'm', 0, 'a');
  await c.step(conv, 'm', 2, Buffer.from([0, 255]));
  const resume = {
    decision: 'resume', resumeFrom: 3,
    steps: [{ stepIndex: 0, output: Buffer.from('a') }, { stepIndex: 2, output: Buffer.from([0, 255]) }],
  };
  assert.deepEqual(await c.receive(conv, 'm', { withSteps: true }), resume);
  assert.deepEqual(await c.decide(conv, 'm', { withSteps: true }), resume);
  assert.deepEqual(await c.receive(conv, 'm'), { decision: 'resume', resumeFrom: 3 }); // not asked
});

test('fingerprints: another payload under the same id is refused', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const conv = 'p2-fingerprint';
  assert.equal((await c.receive(conv, 'm', { fingerprint: 'sha256:aa' })).decision, 'start');
  assert.equal((await c.receive(conv, 'm', { fingerprint: 'sha256:aa' })).decision, 'resume');
  for (const call of [() => c.receive(conv, 'm', { fingerprint: 'sha256:bb' }), () => c.decide(conv, 'm', { fingerprint: 'sha256:bb' })]) {
    await assert.rejects(call(), (err) => {
      assert.ok(err instanceof FingerprintMismatchError);
      assert.deepEqual([err.code, err.retryable, err.stored], ['fingerprint_mismatch', false, 'sha256:aa']);
      return true;
    });
  }
  assert.equal((await c.receive(conv, 'm')).decision, 'resume'); // without one: no check
  assert.equal((await c.state(conv, 'm')).fingerprint, 'sha256:aa');
  assert.equal((await c.read(conv)).events[0].fingerprint, 'sha256:aa');

  // The worker refuses a payload that is not the one recorded, before any
  // side effect.
  const effects = [];
  await assert.rejects(processMessage(c, conv, 'm', {
    worker: 'w', fingerprint: 'sha256:bb', run: (i) => { effects.push(i); return Buffer.alloc(0); }, report: () => {},
  }), (err) => err instanceof FingerprintMismatchError && err.stored === 'sha256:aa');
  assert.deepEqual(effects, []);
  assert.equal((await c.read(conv)).nextSeq, 1);
});

test('messages and explain', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const conv = 'p2-messages';
  for (const m of ['a', 'b', 'c', 'd']) await c.receive(conv, m);
  await c.start(conv, 'b', { worker: 'w1', leaseMs: 60_000 });
  await c.start(conv, 'c');
  await c.fail(conv, 'c', 'boom');
  await c.finish(conv, 'd');

  let page = await c.messages(conv, { limit: 3 });
  assert.deepEqual(page.messages.map((m) => [m.messageId, m.status]), [['a', 'received'], ['b', 'in_progress'], ['c', 'errored']]);
  assert.equal(page.next, 'c');
  page = await c.messages(conv, { after: page.next });
  assert.deepEqual([page.messages.map((m) => m.messageId), page.next], [['d'], null]);
  const leased = await c.messages(conv, { status: 'leased' });
  assert.equal(leased.messages.length, 1);
  const b = leased.messages[0];
  assert.deepEqual([b.messageId, b.worker, b.attempts, b.quarantined, b.compacted], ['b', 'w1', 1, false, false]);
  assert.equal(typeof b.leaseExpiresAt, 'number');
  assert.ok(b.updatedAt >= b.receivedAt);
  assert.deepEqual(await c.messages(conv, { status: 'quarantined' }), { messages: [], next: null });

  const x = await c.explain(conv, 'b');
  assert.deepEqual([x.decision, x.worker, x.rule], ['busy', 'w1', 'leased']);
  assert.equal(typeof x.reason, 'string');
  assert.deepEqual(x.events.map((e) => e.type), ['message_received', 'processing_started']);
  assert.equal((await c.explain(conv, 'd')).rule, 'finished');
  const never = await c.explain(conv, 'zz');
  assert.deepEqual([never.decision, never.rule, never.events], ['start', 'never_seen', []]);
});

test('bad protocol-2 arguments are bad_request naming the field', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const conv = 'p2-bad';
  await c.receive(conv, 'm');
  const cases = [
    [() => c.start(conv, 'm', { worker: 'w', leaseMs: 0 }), 'lease_ms'],
    [() => c.start(conv, 'm', { worker: 'w', leaseMs: 86_400_001 }), 'lease_ms'],
    [() => c.start(conv, 'm', { worker: '', leaseMs: 1000 }), 'worker'],
    [() => c.renew(conv, 'm', 1, 0), 'lease_ms'],
    [() => c.request('renew', { conversation: conv, message_id: 'm', lease_ms: 10 }), 'token'],
    [() => c.step(conv, 'm', 0, '', { token: 'x' }), 'token'],
    [() => c.finish(conv, 'm', { token: -1 }), 'token'],
    [() => c.receive(conv, 'm', { fingerprint: '' }), 'fingerprint'],
    [() => c.decide(conv, 'm', { fingerprint: '' }), 'fingerprint'],
    [() => c.receive(conv, 'm', { sentAt: -1 }), 'sent_at'],
    [() => c.decide(conv, 'm', { sentAt: 1.5 }), 'sent_at'],
    [() => c.release(conv, 'm', { reason: '' }), 'reason'],
    [() => c.messages(conv, { status: 'bogus' }), 'status'],
    [() => c.messages(conv, { limit: 1001 }), 'limit'],
  ];
  for (const [call, field] of cases) {
    await assert.rejects(call(), (err) => {
      assert.ok(err instanceof BadRequestError, field);
      assert.equal(err.field, field);
      return true;
    });
  }
  assert.equal((await c.read(conv)).nextSeq, 1); // nothing appended
});

// A step's side effect that records itself in effects, and on its first
// call says so (entered resolves) and waits until the test calls go().
function gate(name, effects) {
  let signal;
  let go;
  const entered = new Promise((resolve) => { signal = resolve; });
  const released = new Promise((resolve) => { go = resolve; });
  let first = true;
  const run = async (index, input) => {
    effects.push([name, index]);
    if (first) {
      first = false;
      signal();
      await released;
    }
    return runStep(index, input);
  };
  return { run, entered, go };
}

// Runs processMessage of 3 steps as worker `name` on a connection of its
// own; resolves with { name, out (what it resolved or rejected with), log }.
async function spawnWorker(t, name, conv, msg, options) {
  const c = await client(t);
  const log = [];
  const out = await processMessage(c, conv, msg, { worker: name, report: (o) => log.push(o), ...options })
    .catch((err) => err);
  return { name, out, log };
}

test('two workers race one redelivery: exactly one runs it, the other is busy, then skips', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const conv = 'p2-race';
  const msg = 'm';
  // The first delivery's worker crashed after step 0, holding a lease of
  // 1 ms; the message is redelivered to two workers at once.
  await c.receive(conv, msg);
  const crashed = (await c.start(conv, msg, { worker: 'crashed', leaseMs: 1 })).token;
  await c.step(conv, msg, 0, runStep(0, Buffer.from(msg)), { token: crashed });
  await waitForDecision(c, conv, msg, 'resume');

  const effects = [];
  const gates = { A: gate('A', effects), B: gate('B', effects) };
  const logs = { A: [], B: [] };
  const [connA, connB] = [await client(t), await client(t)]; // a connection each
  const run = (name, conn) => processMessage(conn, conv, msg, {
    worker: name, leaseMs: 30_000, run: gates[name].run, report: (o) => logs[name].push(o),
  }).catch((err) => err).then((out) => ({ name, out }));
  const tasks = { A: run('A', connA), B: run('B', connB) };

  // No worker runs a side effect before its start succeeded, and the daemon
  // serializes the two starts: the first appends and takes a lease of 30 s
  // (renewed), the second finds it live and is refused with busy, or, if it
  // received after the first start, its receive is a busy decision. The
  // winner cannot finish (and turn the loser's answer into a skip) before
  // the loser returned: its first side effect waits until the test lets it
  // go, which the test does only once the loser has returned.
  const first = await Promise.race(Object.values(tasks));
  assert.equal(first.out, 'busy', JSON.stringify(logs[first.name]));
  const loser = first.name;
  const winner = loser === 'A' ? 'B' : 'A';
  await gates[winner].entered; // the winner is mid-work
  assert.deepEqual(effects, [[winner, 1]]);
  assert.equal((await c.decide(conv, msg)).decision, 'busy');
  gates[winner].go();
  const second = await tasks[winner];
  assert.equal(second.out, 'resume', JSON.stringify(logs[winner]));

  // The side effects ran once each, all in the winner.
  assert.deepEqual(effects, [[winner, 1], [winner, 2]]);
  assert.equal(logs[loser].at(-1).decision, 'busy');
  assert.equal(logs[loser].at(-1).worker, winner);
  const { events } = await c.read(conv);
  assert.deepEqual(withoutRenewals(events).map((e) => [e.type, e.stepIndex, e.worker]), [
    ['message_received', undefined, undefined],
    ['processing_started', undefined, 'crashed'],
    ['step_completed', 0, undefined],
    ['processing_started', undefined, winner],
    ['step_completed', 1, undefined],
    ['step_completed', 2, undefined],
    ['processing_finished', undefined, undefined],
  ]);

  // The loser's next delivery is skipped.
  const again = await spawnWorker(t, loser, conv, msg, { run: gates[loser].run });
  assert.equal(again.out, 'skip');
  assert.deepEqual(again.log, [{ decision: 'skip' }]);
  assert.equal(effects.length, 2);
});

test('a worker whose lease was taken over is fenced and stops', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const conv = 'p2-fenced';
  const msg = 'm';
  await c.receive(conv, msg);
  const effects = [];
  const a = gate('A', effects);
  const b = gate('B', effects);

  // A takes a lease of 1 ms and does not renew it, as a process that stalls
  // would not (a long GC pause, SIGSTOP), and is held inside step 0.
  const taskA = spawnWorker(t, 'A', conv, msg, { leaseMs: 1, renewEveryMs: 0, run: a.run });
  await a.entered;
  await waitForDecision(c, conv, msg, 'resume'); // A's lease lapsed

  // B takes the message over and is held inside its own step 0.
  const taskB = spawnWorker(t, 'B', conv, msg, { leaseMs: 30_000, run: b.run });
  await b.entered;
  assert.equal((await c.state(conv, msg)).worker, 'B');

  // A goes on: its step 0 write is fenced, and it stops.
  a.go();
  const resultA = await taskA;
  assert.equal(resultA.out, 'fenced', JSON.stringify(resultA.log));
  assert.deepEqual(resultA.log.at(-1), { fenced: true, token: 1, currentToken: 2 });
  assert.deepEqual(effects.filter(([n]) => n === 'A'), [['A', 0]]); // nothing after

  b.go();
  const resultB = await taskB;
  assert.equal(resultB.out, 'resume', JSON.stringify(resultB.log));
  assert.deepEqual(effects.filter(([n]) => n === 'A'), [['A', 0]]);
  assert.deepEqual(effects.filter(([n]) => n === 'B'), [['B', 0], ['B', 1], ['B', 2]]);
  const { events } = await c.read(conv);
  assert.deepEqual(withoutRenewals(events).map((e) => [e.type, e.stepIndex, e.worker]), [
    ['message_received', undefined, undefined],
    ['processing_started', undefined, 'A'],
    ['processing_started', undefined, 'B'],
    ['step_completed', 0, undefined],
    ['step_completed', 1, undefined],
    ['step_completed', 2, undefined],
    ['processing_finished', undefined, undefined],
  ]);
});

test('renewals keep a lease of 1200 ms through work lasting over 2.4 seconds', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const conv = 'p2-renewal';
  const msg = 'm';
  await c.receive(conv, msg);
  const effects = [];
  const w = gate('W', effects);
  // A lease of 1200 ms, renewed every 400 ms, while step 0 takes over 2.4
  // seconds: the test holds it until it has checked.
  const task = spawnWorker(t, 'W', conv, msg, { leaseMs: 1200, run: w.run });
  await w.entered;
  const started = (await c.read(conv)).events[1];
  assert.deepEqual([started.type, started.worker], ['processing_started', 'W']);

  // Wait (by the daemon's clock) until a renewal committed 2.4 seconds
  // after the start: the work has lasted two lease lengths.
  const deadline = Date.now() + TEST_TIMEOUT;
  while (((await c.state(conv, msg)).leaseExpiresAt ?? 0) < started.ts + 2400 + 1200) {
    assert.ok(Date.now() < deadline, 'no renewal 2.4 seconds after the start');
    await delay(50);
  }

  // W is still inside step 0, and the message is still its own.
  assert.deepEqual(effects, [['W', 0]]);
  const d = await c.decide(conv, msg);
  assert.deepEqual([d.decision, d.worker, d.token], ['busy', 'W', started.seq]);
  await assert.rejects(c.start(conv, msg, { worker: 'other', leaseMs: 300 }), (err) => err instanceof BusyError && err.worker === 'W');

  w.go();
  const result = await task;
  assert.equal(result.out, 'resume', JSON.stringify(result.log));
  assert.deepEqual(effects, [['W', 0], ['W', 1], ['W', 2]]);
  // Each renewal came before the lease it extended expired: the lease never
  // lapsed.
  const { events } = await c.read(conv);
  const renewals = events.filter((e) => e.type === 'lease_renewed');
  assert.ok(renewals.length >= 3, `${renewals.length} renewals`);
  let expires = started.ts + 1200;
  for (const e of renewals) {
    assert.deepEqual([e.token, e.leaseMs], [started.seq, 1200]);
    assert.ok(e.ts < expires, `a renewal at ${e.ts} came after the lease lapsed at ${expires}`);
    expires = e.ts + 1200;
  }
  assert.equal(events.at(-1).type, 'processing_finished');
});

test('max_attempts: a message failing twice is quarantined until released', { timeout: TEST_TIMEOUT }, async () => {
  const d = await startDaemon('quarantine', ['--max-attempts', '2']);
  const c = d.first;
  try {
    const conv = 'p2-quarantine';
    const msg = 'm';
    const effects = [];
    const broken = (i, input) => {
      effects.push(i);
      if (i === 1) throw new Error('boom');
      return runStep(i, input);
    };
    const quiet = { report: () => {} };
    await c.receive(conv, msg);
    // Two attempts fail at step 1; the failure is recorded with the token.
    for (const attempt of [1, 2]) {
      await assert.rejects(processMessage(c, conv, msg, { worker: `w${attempt}`, run: broken, ...quiet }), /boom/);
      assert.equal((await c.state(conv, msg)).attempts, attempt);
    }
    assert.deepEqual(effects, [0, 1, 1]);

    // The third delivery is quarantined: nothing runs or is appended.
    const { nextSeq } = await c.read(conv);
    assert.equal(await processMessage(c, conv, msg, { worker: 'w3', run: broken, ...quiet }), 'quarantined');
    assert.deepEqual(effects, [0, 1, 1]);
    assert.deepEqual(await c.decide(conv, msg), { decision: 'quarantined', attempts: 2, error: 'step 1: boom' });
    await assert.rejects(c.start(conv, msg, { worker: 'w3', leaseMs: 1000 }), (err) => {
      assert.ok(err instanceof QuarantinedError);
      assert.deepEqual([err.code, err.retryable], ['quarantined', false]);
      return true;
    });
    assert.equal((await c.read(conv)).nextSeq, nextSeq);
    const listed = await c.messages(conv, { status: 'quarantined' });
    assert.deepEqual(listed.messages.map((m) => [m.messageId, m.attempts, m.quarantined]), [[msg, 2, true]]);
    assert.equal((await c.state(conv, msg)).quarantined, true);
    assert.equal((await c.explain(conv, msg)).rule, 'quarantined');

    // Released, the next delivery resumes after step 0.
    assert.deepEqual(await c.release(conv, msg, { reason: 'fixed step 1' }), { seq: nextSeq, duplicate: false });
    const released = (await c.read(conv)).events.at(-1);
    assert.deepEqual([released.type, released.reason], ['message_released', 'fixed step 1']);
    assert.equal((await c.state(conv, msg)).attempts, 0);
    assert.deepEqual(await c.decide(conv, msg), { decision: 'resume', resumeFrom: 1 });
    await assert.rejects(c.release(conv, msg), (err) => err instanceof NotQuarantinedError && err.retryable === false);
    await assert.rejects(c.release(conv, 'never'), UnknownMessageError);
    assert.equal(await processMessage(c, conv, msg, { worker: 'w4', ...quiet }), 'resume');
    assert.equal((await c.decide(conv, msg)).decision, 'skip');

    // Starts whose leases lapsed, with no fail, count too.
    await c.receive(conv, 'crashy');
    await c.start(conv, 'crashy', { worker: 'w1', leaseMs: 1 });
    await waitForDecision(c, conv, 'crashy', 'resume');
    await c.start(conv, 'crashy', { worker: 'w2', leaseMs: 1 });
    assert.deepEqual(await waitForDecision(c, conv, 'crashy', 'quarantined'), { decision: 'quarantined', attempts: 2, error: null });
  } finally {
    await c.close();
    await d.stop();
  }
});

