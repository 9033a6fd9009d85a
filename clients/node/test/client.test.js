// Tests of the liminald package against a real daemon: every op, the
// errors, pipelining, subscriptions, closing, refused connections, and a
// scripted server for what the daemon cannot be made to send.
//
//   node --test clients/node/test/*.test.js     (from the repository root)
//
// See helpers.js for the daemons they run.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';

import {
  connect, defaultSocketPath, errorFromWire, LiminaldError, BadRequestError, LineTooLongError,
  UnknownOpError, UnknownMessageError, AlreadyFinishedError, StepConflictError,
  SequenceConflictError, ForbiddenError, UnavailableError, ShuttingDownError, InternalError,
  ConnectionClosedError, LaggedError, OutputTooLargeError,
} from 'liminald';
import {
  TEST_TIMEOUT, setup, teardown, client, mainDaemon, startDaemon, tmpDir,
} from './helpers.js';

before(setup, { timeout: 600_000 });
after(teardown);

// ------------------------------------------------------------------ units

test('defaultSocketPath resolves the socket as the daemon does', { timeout: TEST_TIMEOUT }, async () => {
  assert.equal(defaultSocketPath({ LIMINAL_SOCKET: '/e/l.sock', XDG_RUNTIME_DIR: '/run/user/7' }, 7), '/e/l.sock');
  assert.equal(defaultSocketPath({ XDG_RUNTIME_DIR: '/run/user/1000' }, 1000), '/run/user/1000/liminald/liminald.sock');
  assert.equal(defaultSocketPath({ XDG_RUNTIME_DIR: '/run/user/0' }, 0), '/run/user/0/liminald/liminald.sock');
  assert.equal(defaultSocketPath({}, 0), '/run/liminald/liminald.sock');
  assert.equal(defaultSocketPath({}, 1000), '/tmp/liminald-1000/liminald.sock');
  assert.equal(defaultSocketPath({ XDG_RUNTIME_DIR: 'run' }, 1000), '/tmp/liminald-1000/liminald.sock');
  assert.equal(defaultSocketPath({ TMPDIR: '/var/tmp' }, 42), '/tmp/liminald-42/liminald.sock');

  // connect() with no socketPath uses $LIMINAL_SOCKET.
  const saved = process.env.LIMINAL_SOCKET;
  process.env.LIMINAL_SOCKET = mainDaemon().socketPath;
  try {
    const c = await connect();
    await c.ping();
    await c.close();
  } finally {
    if (saved === undefined) delete process.env.LIMINAL_SOCKET;
    else process.env.LIMINAL_SOCKET = saved;
  }
  // An empty LIMINAL_SOCKET counts as unset, as for the daemon.
  assert.equal(defaultSocketPath({ LIMINAL_SOCKET: '', XDG_RUNTIME_DIR: '/run/user/7' }, 7), '/run/user/7/liminald/liminald.sock');

  // No daemon there: an UnavailableError naming the socket, not a bare ENOENT.
  const nobody = path.join(tmpDir(), 'nobody.sock');
  await assert.rejects(connect({ socketPath: nobody }), (err) => {
    assert.ok(err instanceof UnavailableError && err instanceof LiminaldError);
    assert.deepEqual([err.code, err.retryable, err.socket, err.op, err.sent], ['unavailable', true, nobody, 'connect', false]);
    assert.equal(err.cause.code, 'ENOENT');
    assert.ok(err.message.includes(nobody), err.message);
    return true;
  });
});

test('every error code maps to its class', { timeout: TEST_TIMEOUT }, () => {
  const table = [
    ['bad_request', BadRequestError, false],
    ['line_too_long', LineTooLongError, false],
    ['unknown_op', UnknownOpError, false],
    ['unknown_message', UnknownMessageError, false],
    ['already_finished', AlreadyFinishedError, false],
    ['step_conflict', StepConflictError, false],
    ['sequence_conflict', SequenceConflictError, false],
    ['forbidden', ForbiddenError, false],
    ['unavailable', UnavailableError, true],
    ['shutting_down', ShuttingDownError, true],
    ['internal', InternalError, true],
  ];
  for (const [code, Class, retryable] of table) {
    const err = errorFromWire({ code, message: `a ${code}`, retryable, extra: 1 });
    assert.ok(err instanceof Class, code);
    assert.ok(err instanceof LiminaldError && err instanceof Error, code);
    assert.equal(err.name, Class.name);
    assert.equal(err.code, code);
    assert.equal(err.message, `a ${code}`);
    assert.equal(err.retryable, retryable);
    assert.deepEqual(err.details, { extra: 1 });
  }
  const conflict = errorFromWire({ code: 'sequence_conflict', message: 'm', retryable: false, expected: 9, actual: 5 });
  assert.equal(conflict.expected, 9);
  assert.equal(conflict.actual, 5);
  assert.equal(errorFromWire({ code: 'bad_request', message: 'm', retryable: false, field: 'sub' }).field, 'sub');
  const unknown = errorFromWire({ code: 'lease_lost', message: 'm', retryable: true });
  assert.equal(unknown.constructor, LiminaldError);
  assert.equal(unknown.code, 'lease_lost');
  assert.equal(unknown.retryable, true);
});

// ------------------------------------------------------------------ the daemon

test('hello and ping', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const hello = await c.hello({ client: 'node-test' });
  assert.equal(hello.protocol, 2);
  assert.equal(hello.server.name, 'liminald');
  for (const op of ['subscribe', 'renew', 'release', 'messages', 'explain']) assert.ok(hello.ops.includes(op), op);
  assert.equal(hello.limits.maxLeaseMs, 86_400_000);
  assert.equal(hello.limits.maxLineBytes, 1048576);
  assert.equal(hello.limits.maxInflight, 64);
  assert.equal(await c.ping(), undefined);
});

test('a full lifecycle', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const conv = 'life';
  assert.deepEqual(await c.receive(conv, 'm-1', { receivedAt: 1732672000000 }), { decision: 'start', seq: 0 });
  assert.deepEqual(await c.receive(conv, 'm-1'), { decision: 'resume', resumeFrom: 0 });
  assert.deepEqual(await c.decide(conv, 'm-1'), { decision: 'resume', resumeFrom: 0 });
  assert.deepEqual(await c.decide(conv, 'm-404'), { decision: 'start' });
  assert.deepEqual(await c.start(conv, 'm-1'), { seq: 1, duplicate: false, token: 1 });
  assert.deepEqual(await c.step(conv, 'm-1', 0, 'charged'), { seq: 2, duplicate: false });
  assert.deepEqual(await c.step(conv, 'm-1', 1, Buffer.from([0, 255, 1])), { seq: 3, duplicate: false });
  assert.deepEqual(await c.decide(conv, 'm-1'), { decision: 'resume', resumeFrom: 2 });
  assert.deepEqual(await c.fail(conv, 'm-1', 'shipping API timed out'), { seq: 4, duplicate: false });
  assert.equal((await c.state(conv, 'm-1')).status, 'errored');
  assert.deepEqual(await c.start(conv, 'm-1'), { seq: 5, duplicate: false, token: 5 }); // a retry
  assert.deepEqual(await c.step(conv, 'm-1', 2, new Uint8Array([7, 7])), { seq: 6, duplicate: false });
  assert.deepEqual(await c.finish(conv, 'm-1'), { seq: 7, duplicate: false });
  assert.deepEqual(await c.receive(conv, 'm-1'), { decision: 'skip' });

  assert.deepEqual(await c.state(conv, 'm-1'), {
    status: 'finished',
    receivedAt: 1732672000000,
    lastCompletedStep: 2,
    steps: [
      { stepIndex: 0, seq: 2, output: Buffer.from('charged') },
      { stepIndex: 1, seq: 3, output: Buffer.from([0, 255, 1]) },
      { stepIndex: 2, seq: 6, output: Buffer.from([7, 7]) },
    ],
    error: 'shipping API timed out',
    attempts: 2,
    token: 5,
    worker: null,
    leaseExpiresAt: null,
    quarantined: false,
    fingerprint: null,
    compacted: false,
  });
  const { events, nextSeq } = await c.read(conv);
  assert.equal(nextSeq, 8);
  assert.deepEqual(events.map((e) => e.type), [
    'message_received', 'processing_started', 'step_completed', 'step_completed',
    'error_occurred', 'processing_started', 'step_completed', 'processing_finished',
  ]);
});

test('each error code a client can provoke rejects with its class', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const conv = 'errors';
  await c.receive(conv, 'm');
  await c.start(conv, 'm');
  await c.step(conv, 'm', 0, 'a');
  const next = 3;

  await t.test('unknown_message', async () => {
    await assert.rejects(c.start(conv, 'never-received'), (err) => {
      assert.ok(err instanceof UnknownMessageError);
      assert.equal(err.code, 'unknown_message');
      assert.equal(err.retryable, false);
      return true;
    });
  });

  await t.test('step_conflict', async () => {
    await assert.rejects(c.step(conv, 'm', 0, 'b'), StepConflictError);
  });

  await t.test('sequence_conflict carries expected and actual', async () => {
    await assert.rejects(c.step(conv, 'm', 1, '', { expectedSeq: 9 }), (err) => {
      assert.ok(err instanceof SequenceConflictError);
      assert.equal(err.code, 'sequence_conflict');
      assert.equal(err.expected, 9);
      assert.equal(err.actual, next);
      assert.deepEqual(err.details, { expected: 9, actual: next });
      return true;
    });
  });

  await t.test('bad_request names the field', async () => {
    await assert.rejects(c.step(conv, 'm', 'one', ''), (err) => {
      assert.ok(err instanceof BadRequestError);
      assert.equal(err.field, 'step_index');
      return true;
    });
    await assert.rejects(c.receive('', 'm'), { name: 'BadRequestError', field: 'conversation' });
    await assert.rejects(c.read(conv, { limit: 0 }), { name: 'BadRequestError', field: 'limit' });
    // Malformed JSON is answered with "id": null; the connection keeps working.
    const reply = await c.requestLine('{"op":');
    assert.equal(reply.id, null);
    assert.equal(reply.ok, false);
    assert.ok(errorFromWire(reply.error) instanceof BadRequestError);
    await c.ping();
  });

  await t.test('unknown_op', async () => {
    await assert.rejects(c.request('frobnicate'), (err) => {
      assert.ok(err instanceof UnknownOpError);
      assert.equal(err.code, 'unknown_op');
      return true;
    });
  });

  await t.test('line_too_long, and the connection keeps working', async () => {
    const { limits } = await c.hello();
    const pad = 'x'.repeat(limits.maxLineBytes);
    const before = c.ping();
    const long = c.request('ping', { pad });
    const afterLong = c.decide(conv, 'm');
    await before;
    await assert.rejects(long, (err) => {
      assert.ok(err instanceof LineTooLongError);
      assert.equal(err.code, 'line_too_long');
      assert.equal(err.retryable, false);
      return true;
    });
    assert.deepEqual(await afterLong, { decision: 'resume', resumeFrom: 1 });
    // An output too big for one line is refused before it is sent, naming
    // both sizes (see reconnect.test.js for one the line could still carry);
    // sent as it is, it gets line_too_long.
    await assert.rejects(c.step(conv, 'm', 5, Buffer.alloc(limits.maxLineBytes)), (err) => {
      assert.ok(err instanceof OutputTooLargeError && err instanceof BadRequestError);
      assert.deepEqual([err.code, err.field, err.size, err.limit], ['bad_request', 'output', limits.maxLineBytes, limits.maxOutputBytes]);
      assert.ok(err.message.includes(String(limits.maxLineBytes)) && err.message.includes(String(limits.maxOutputBytes)), err.message);
      return true;
    });
    await assert.rejects(c.request('step', {
      conversation: conv, message_id: 'm', step_index: 5, output: Buffer.alloc(limits.maxLineBytes).toString('base64'),
    }), LineTooLongError);
  });

  await t.test('already_finished', async () => {
    await c.finish(conv, 'm');
    await assert.rejects(c.step(conv, 'm', 1, 'x'), AlreadyFinishedError);
    await assert.rejects(c.start(conv, 'm'), AlreadyFinishedError);
    await assert.rejects(c.fail(conv, 'm', 'late'), { name: 'AlreadyFinishedError', code: 'already_finished' });
  });

  // Nothing rejected was appended.
  assert.equal((await c.read(conv)).nextSeq, next + 1);
});

test('duplicates are acknowledged with the original seq and not appended', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const conv = 'dups';
  assert.deepEqual(await c.receive(conv, 'm'), { decision: 'start', seq: 0 });
  assert.deepEqual(await c.start(conv, 'm'), { seq: 1, duplicate: false, token: 1 });
  assert.deepEqual(await c.start(conv, 'm'), { seq: 1, duplicate: true, token: 1 });
  assert.deepEqual(await c.step(conv, 'm', 0, Buffer.from('out')), { seq: 2, duplicate: false });
  assert.deepEqual(await c.step(conv, 'm', 0, 'out'), { seq: 2, duplicate: true });
  assert.deepEqual(await c.fail(conv, 'm', 'boom'), { seq: 3, duplicate: false });
  assert.deepEqual(await c.fail(conv, 'm', 'boom'), { seq: 3, duplicate: true });
  assert.deepEqual(await c.start(conv, 'm', { expectedSeq: 4 }), { seq: 4, duplicate: false, token: 4 });
  // A retry of a write that landed at expected_seq.
  assert.deepEqual(await c.start(conv, 'm', { expectedSeq: 4 }), { seq: 4, duplicate: true, token: 4 });
  assert.deepEqual(await c.finish(conv, 'm'), { seq: 5, duplicate: false });
  assert.deepEqual(await c.finish(conv, 'm'), { seq: 5, duplicate: true });
  assert.deepEqual(await c.receive(conv, 'n', { receivedAt: 5, expectedSeq: 6 }), { decision: 'start', seq: 6 });
  assert.deepEqual(await c.receive(conv, 'n', { receivedAt: 5, expectedSeq: 6 }), { decision: 'start', seq: 6, duplicate: true });
  assert.equal((await c.read(conv)).nextSeq, 7);
});

test('pipelining: 100 concurrent requests on one client resolve correctly', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const n = 100;
  // 100 receives over 4 conversations, all in flight at once: requests for
  // one conversation run in request order, so each gets the next seq.
  const received = await Promise.all(Array.from({ length: n }, (_, i) => c.receive(`pipe-${i % 4}`, `m-${i}`)));
  received.forEach((r, i) => assert.deepEqual(r, { decision: 'start', seq: Math.floor(i / 4) }, `receive ${i}`));

  // 100 messages started, stepped with outputs of their own and finished,
  // mixed with reads: 500 requests in flight.
  const all = [];
  for (let i = 0; i < n; i++) {
    const conv = `pipe-${i % 4}`;
    all.push(c.start(conv, `m-${i}`), c.step(conv, `m-${i}`, i, `out-${i}`), c.finish(conv, `m-${i}`),
      c.state(conv, `m-${i}`), c.ping());
  }
  const replies = await Promise.all(all);
  for (let i = 0; i < n; i++) {
    const [start, step, finish, state, ping] = replies.slice(5 * i, 5 * i + 5);
    assert.equal(start.duplicate, false);
    assert.equal(step.seq, start.seq + 1);
    assert.equal(finish.seq, start.seq + 2);
    assert.equal(state.status, 'finished');
    assert.deepEqual(state.steps, [{ stepIndex: i, seq: step.seq, output: Buffer.from(`out-${i}`) }]);
    assert.equal(ping, undefined);
  }
  const states = await Promise.all([0, 1, 2, 3].map((k) => c.state(`pipe-${k}`)));
  for (const s of states) assert.deepEqual(s.messages, { received: 0, inProgress: 0, errored: 0, finished: 25, total: 25 });
});

test('state, read, conversations and stats', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const conv = 'list-sr';
  assert.deepEqual(await c.state(conv), {
    nextSeq: 0, messages: { received: 0, inProgress: 0, errored: 0, finished: 0, total: 0 }, compacted: 0, forgottenBefore: null,
  });
  const bytes = Buffer.from([0xff, 0xfe, 0x00, 0x80, 0x0a]); // not UTF-8, with a newline
  await c.receive(conv, 'a', { receivedAt: 1000 });
  await c.start(conv, 'a');
  await c.step(conv, 'a', 0, bytes);
  await c.step(conv, 'a', 3, Buffer.alloc(0));
  await c.finish(conv, 'a');
  await c.receive(conv, 'b');
  await c.start(conv, 'b');
  await c.receive(conv, 'c');
  await c.receive(conv, 'd');
  await c.fail(conv, 'd', 'bad input');

  assert.deepEqual(await c.state(conv), {
    nextSeq: 10, messages: { received: 1, inProgress: 1, errored: 1, finished: 1, total: 4 }, compacted: 0, forgottenBefore: null,
  });
  const a = await c.state(conv, 'a');
  assert.equal(a.status, 'finished');
  assert.equal(a.receivedAt, 1000);
  assert.equal(a.lastCompletedStep, 3);
  assert.deepEqual(a.steps, [{ stepIndex: 0, seq: 2, output: bytes }, { stepIndex: 3, seq: 3, output: Buffer.alloc(0) }]);
  assert.equal(a.error, null);
  assert.equal((await c.state(conv, 'b')).status, 'in_progress');
  assert.equal((await c.state(conv, 'c')).status, 'received');
  const noLease = { worker: null, leaseExpiresAt: null, quarantined: false, fingerprint: null, compacted: false };
  assert.deepEqual(await c.state(conv, 'd'), {
    status: 'errored', receivedAt: (await c.state(conv, 'd')).receivedAt, lastCompletedStep: null, steps: [], error: 'bad input',
    attempts: 0, token: null, ...noLease,
  });
  assert.deepEqual(await c.state(conv, 'nope'), {
    status: 'unknown', receivedAt: null, lastCompletedStep: null, steps: [], error: null, attempts: 0, token: null, ...noLease,
  });
  assert.deepEqual(await c.decide(conv, 'a'), { decision: 'skip' });
  assert.deepEqual(await c.decide(conv, 'b'), { decision: 'resume', resumeFrom: 0 });

  // read, page by page.
  const whole = await c.read(conv);
  assert.equal(whole.events.length, 10);
  assert.equal(whole.nextSeq, 10);
  const paged = [];
  let from = 0;
  for (;;) {
    const page = await c.read(conv, { fromSeq: from, limit: 3 });
    if (page.events.length === 0) {
      assert.equal(page.nextSeq, from);
      break;
    }
    assert.ok(page.events.length <= 3);
    paged.push(...page.events);
    from = page.nextSeq;
  }
  assert.deepEqual(paged, whole.events);
  whole.events.forEach((e, i) => {
    assert.equal(e.conversation, conv);
    assert.equal(e.seq, i);
    assert.equal(typeof e.ts, 'number');
    if (i > 0) assert.ok(e.pos > whole.events[i - 1].pos);
  });
  const [received, started, step0, step3] = whole.events;
  assert.deepEqual(Object.keys(received).sort(), ['conversation', 'messageId', 'pos', 'receivedAt', 'seq', 'ts', 'type']);
  assert.equal(received.type, 'message_received');
  assert.equal(received.receivedAt, 1000);
  assert.equal(started.type, 'processing_started');
  assert.equal(started.messageId, 'a');
  assert.deepEqual([step0.type, step0.stepIndex, step0.output], ['step_completed', 0, bytes]);
  assert.deepEqual([step3.stepIndex, step3.output], [3, Buffer.alloc(0)]);
  assert.equal(whole.events[9].error, 'bad input');
  assert.deepEqual(await c.read(conv, { fromSeq: 1000 }), { events: [], nextSeq: 1000 });

  // conversations, by name, after a name.
  await c.receive('list-x', 'm');
  await c.receive('list-y', 'm');
  assert.deepEqual(await c.conversations({ after: 'list-', limit: 2 }), [
    { conversation: 'list-sr', nextSeq: 10, messages: 4 },
    { conversation: 'list-x', nextSeq: 1, messages: 1 },
  ]);
  assert.deepEqual(await c.conversations({ after: 'list-x', limit: 1 }), [{ conversation: 'list-y', nextSeq: 1, messages: 1 }]);
  const names = (await c.conversations({ limit: 1000 })).map((x) => x.conversation);
  assert.deepEqual(names, [...names].sort());

  const stats = await c.stats();
  assert.ok(stats.conversations >= 3);
  assert.ok(stats.events >= 12);
  assert.ok(stats.connections >= 1);
  assert.equal(typeof stats.dbBytes, 'number');
  assert.equal(typeof stats.uptimeS, 'number');
  assert.equal(typeof stats.commits.count, 'number');
  assert.equal(typeof stats.commits.commitMsAvg, 'number');
  // Retention's figures: this daemon keeps everything.
  assert.deepEqual([stats.compacted, stats.tombstones, stats.tombstonesDropped, stats.forgottenBefore], [0, 0, 0, null]);
  assert.deepEqual(Object.keys(stats.compaction).sort(), ['failed', 'msMax', 'msTotal', 'passes']);
});

test('subscribe receives live events, catches up, and ends', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const w = await client(t);
  const conv = 'sub-live';

  await t.test('live events of one conversation', async () => {
    const sub = await c.subscribe(conv);
    assert.equal(typeof sub.id, 'number');
    assert.equal(sub.conversation, conv);
    await w.receive(conv, 'm');
    await w.start(conv, 'm');
    await w.step(conv, 'm', 0, Buffer.from([1, 2, 3]));
    await w.finish(conv, 'm');
    const got = [];
    for await (const e of sub) {
      got.push(e);
      if (got.length === 4) break; // unsubscribes
    }
    assert.deepEqual(got.map((e) => [e.seq, e.type, e.messageId]), [
      [0, 'message_received', 'm'], [1, 'processing_started', 'm'], [2, 'step_completed', 'm'], [3, 'processing_finished', 'm'],
    ]);
    assert.deepEqual(got[2].output, Buffer.from([1, 2, 3]));
    assert.deepEqual(got, (await c.read(conv)).events);
    assert.equal(await sub.closed, null);
    assert.deepEqual(await sub.next(), { value: undefined, done: true });
  });

  await t.test('catch-up from a seq, then live', async () => {
    const sub = await c.subscribe(conv, { fromSeq: 2 });
    const first = await sub.next();
    const second = await sub.next();
    assert.deepEqual([first.value.seq, second.value.seq], [2, 3]);
    const pending = sub.next();
    await w.receive(conv, 'n');
    const live = await pending;
    assert.deepEqual([live.value.seq, live.value.type, live.value.messageId], [4, 'message_received', 'n']);
    // unsubscribe ends the iteration.
    const waiting = sub.next();
    await c.unsubscribe(sub);
    assert.deepEqual(await waiting, { value: undefined, done: true });
    await c.ping();
  });

  await t.test('every conversation, from a pos and from now', async () => {
    const { events } = await c.read(conv);
    const sub = await c.subscribe({ fromPos: events[1].pos });
    const got = [];
    for await (const e of sub) {
      got.push(e);
      if (got.length === 3) break;
    }
    assert.deepEqual(got, events.slice(1, 4));

    const now = await c.subscribe();
    assert.equal(now.conversation, undefined);
    await w.receive('sub-other', 'x');
    const { value } = await now.next();
    assert.deepEqual([value.conversation, value.seq, value.messageId], ['sub-other', 0, 'x']);
    await now.close();
  });

  await t.test('a reader that falls behind its buffer gets a LaggedError', async () => {
    const lagConv = 'sub-lag';
    for (let i = 0; i < 10; i++) await w.receive(lagConv, `m-${i}`);
    const { events } = await c.read(lagConv);
    const sub = await c.subscribe(lagConv, { fromSeq: 0, buffer: 3 });
    const reason = await sub.closed; // the catch-up overflows the buffer of 3
    assert.ok(reason instanceof LaggedError);
    assert.equal(reason.nextSeq, 3);
    assert.equal(reason.nextPos, events[3].pos);
    const got = [];
    await assert.rejects(async () => {
      for await (const e of sub) got.push(e.seq);
    }, LaggedError);
    assert.deepEqual(got, [0, 1, 2]);
    // Subscribing again from where it lagged misses nothing.
    const again = await c.subscribe(lagConv, { fromSeq: reason.nextSeq });
    const rest = [];
    for await (const e of again) {
      rest.push(e.seq);
      if (rest.length === 7) break;
    }
    assert.deepEqual(rest, [3, 4, 5, 6, 7, 8, 9]);
  });

  await t.test('close() ends subscriptions', async () => {
    const c2 = await connect({ socketPath: mainDaemon().socketPath });
    const sub = await c2.subscribe(conv);
    const waiting = sub.next();
    await c2.close();
    assert.deepEqual(await waiting, { value: undefined, done: true });
    assert.equal(await sub.closed, null);
  });
});

test('close() answers the requests in flight, then refuses new ones', { timeout: TEST_TIMEOUT }, async () => {
  const c = await connect({ socketPath: mainDaemon().socketPath });
  const ping = c.ping();
  const receive = c.receive('closing', 'm');
  const closed = c.close();
  await assert.rejects(c.ping(), ConnectionClosedError);
  assert.equal(await closed, undefined);
  assert.equal(await ping, undefined);
  assert.deepEqual(await receive, { decision: 'start', seq: 0 });
  assert.equal(await c.closed, null);
  await assert.rejects(c.stats(), ConnectionClosedError);
});

test('forbidden: a peer outside the allow-lists', { timeout: TEST_TIMEOUT }, async () => {
  const d = await startDaemon('forbidden', ['--allow-uid', String(process.getuid() + 1)]);
  try {
    // The daemon sends one forbidden line and closes. A client that dials
    // again gets it for each call: each connection is refused likewise.
    const c = d.first;
    for (let i = 0; i < 2; i++) {
      await assert.rejects(c.ping(), (err) => {
        assert.ok(err instanceof ForbiddenError);
        assert.deepEqual([err.code, err.retryable], ['forbidden', false]);
        return true;
      });
    }
    await c.close();

    // A client that does not dial again ends with it.
    const once = await connect({ socketPath: d.socketPath, reconnectTimeoutMs: 0 });
    const reason = await once.closed;
    assert.ok(reason instanceof ForbiddenError);
    await assert.rejects(once.ping(), ForbiddenError);
  } finally {
    await d.stop();
  }
});

test('unavailable: a connection beyond max_connections', { timeout: TEST_TIMEOUT }, async () => {
  const d = await startDaemon('maxconn', ['--max-connections', '1']);
  try {
    const first = d.first;
    await first.ping(); // the one connection allowed is in use
    // The daemon's own unavailable: it names no socket.
    const second = await connect({ socketPath: d.socketPath });
    await assert.rejects(second.ping(), (err) => {
      assert.ok(err instanceof UnavailableError);
      assert.deepEqual([err.retryable, err.socket], [true, undefined]);
      return true;
    });
    await second.close();
    const third = await connect({ socketPath: d.socketPath, reconnectTimeoutMs: 0 });
    const reason = await third.closed;
    assert.ok(reason instanceof UnavailableError);
    assert.equal(reason.retryable, true);
    await assert.rejects(third.ping(), UnavailableError);
    await first.ping();
    await first.close();
  } finally {
    await d.stop();
  }
});

test('pushes, lag and codes the daemon cannot be made to send, from a scripted server', { timeout: TEST_TIMEOUT }, async (t) => {
  // A stand-in daemon speaking the protocol: it answers "subscribe" with a
  // push and a lagged line, "fail-with" with the error code asked for, and
  // "bad-id" with another request's id.
  const socketPath = path.join(tmpDir(), 'scripted.sock');
  const server = net.createServer((sock) => {
    let buf = '';
    sock.on('data', (chunk) => {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const req = JSON.parse(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        const out = [];
        if (req.op === 'subscribe') {
          out.push({ id: req.id, ok: true, sub: 7 });
          out.push({ sub: 7, event: { conversation: 'c', seq: 2, pos: 40, ts: 1, type: 'step_completed', message_id: 'm', step_index: 0, output: 'aGk=' } });
          out.push({ sub: 99, event: { conversation: 'c', seq: 3, pos: 41, ts: 1, type: 'processing_started', message_id: 'm' } });
          out.push({ sub: 7, lagged: true, next_pos: 41, next_seq: 3 });
        } else if (req.op === 'fail-with') {
          out.push({ id: req.id, ok: false, error: { code: req.code, message: `scripted ${req.code}`, retryable: true, hint: 'h' } });
        } else if (req.op === 'bad-id') {
          out.push({ id: 'someone-else', ok: true });
        } else {
          out.push({ id: req.id, ok: true });
        }
        sock.write(out.map((o) => JSON.stringify(o) + '\n').join(''));
      }
    });
  });
  server.listen(socketPath);
  await once(server, 'listening');
  t.after(() => new Promise((resolve) => server.close(resolve)));

  const c = await connect({ socketPath, reconnectTimeoutMs: 0 }); // the connection's end is the client's
  const sub = await c.subscribe('c', { fromSeq: 2 });
  assert.equal(sub.id, 7);
  const { value } = await sub.next();
  assert.deepEqual(value, { conversation: 'c', seq: 2, pos: 40, ts: 1, type: 'step_completed', messageId: 'm', stepIndex: 0, output: Buffer.from('hi') });
  await assert.rejects(sub.next(), (err) => {
    assert.ok(err instanceof LaggedError);
    assert.deepEqual([err.sub, err.nextPos, err.nextSeq], [7, 41, 3]);
    return true;
  });
  assert.deepEqual(await sub.next(), { value: undefined, done: true });

  for (const [code, Class] of [['shutting_down', ShuttingDownError], ['internal', InternalError], ['unavailable', UnavailableError], ['brand_new', LiminaldError]]) {
    await assert.rejects(c.request('fail-with', { code }), (err) => {
      assert.equal(err.constructor, Class);
      assert.equal(err.code, code);
      assert.equal(err.retryable, true);
      assert.deepEqual(err.details, { hint: 'h' });
      return true;
    });
  }

  // A reply that answers another request ends the connection.
  const wrong = c.request('bad-id');
  const queued = c.ping();
  await assert.rejects(wrong, ConnectionClosedError);
  await assert.rejects(queued, ConnectionClosedError);
  assert.ok((await c.closed) instanceof ConnectionClosedError);
});

