// Tests of the Node.js client against a real liminald.
//
//   node --test examples/node/          (from the repository root)
//
// The daemon is $LIMINALD_BIN if set, else built with `go build` into a
// temporary directory. Each daemon runs in a temporary directory of its own,
// with its own socket and database, and is stopped with SIGTERM (which must
// exit 0).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import {
  connect, defaultSocketPath, errorFromWire, LiminalError, BadRequestError, LineTooLongError,
  UnknownOpError, UnknownMessageError, AlreadyFinishedError, StepConflictError,
  SequenceConflictError, ForbiddenError, UnavailableError, ShuttingDownError, InternalError,
  ConnectionClosedError, LaggedError, BusyError, FencedError, QuarantinedError, NotQuarantinedError,
  FingerprintMismatchError,
} from './liminald.js';
import { processMessage, runStep } from './worker.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..');
const workerPath = path.join(here, 'worker.js');

const TEST_TIMEOUT = 60_000;

let tmp; // this run's temporary directory
let bin; // the liminald binary
let daemon; // the daemon most tests use

// An environment without the LIMINAL_* settings (and CRASH_AFTER_STEP) of
// whoever runs the tests, and without their config file.
function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('LIMINAL_') && k !== 'CRASH_AFTER_STEP') env[k] = v;
  }
  return { ...env, XDG_CONFIG_HOME: path.join(tmp, 'config'), ...extra };
}

async function buildDaemon(dir) {
  const out = path.join(dir, 'liminald');
  await promisify(execFile)('go', ['build', '-o', out, './cmd/liminald'], { cwd: repoRoot });
  return out;
}

// Connects to socketPath, retrying while the daemon has not bound or is not
// yet listening, until it accepts or deadlineMs pass.
async function connectWithDeadline(socketPath, exited, deadlineMs = 10_000) {
  const deadline = Date.now() + deadlineMs;
  let exit = null;
  exited.then((e) => { exit = e; });
  for (;;) {
    try {
      return await connect({ socketPath });
    } catch (err) {
      if (err.code !== 'ENOENT' && err.code !== 'ECONNREFUSED') throw err;
      if (exit) throw new Error(`liminald exited before accepting: ${JSON.stringify(exit)}`);
      if (Date.now() > deadline) throw new Error(`liminald did not accept on ${socketPath} within ${deadlineMs} ms`);
      await delay(10);
    }
  }
}

// Starts `liminald serve` in tmp/name with args; resolves once its socket
// accepts, with the daemon and the first client connected to it.
async function startDaemon(name, args = []) {
  const dir = path.join(tmp, name);
  await fsp.mkdir(dir);
  const socketPath = path.join(dir, 'liminald.sock');
  const logPath = path.join(dir, 'liminald.log');
  const log = fs.openSync(logPath, 'w');
  const child = spawn(bin, ['serve', '--socket', socketPath, '--db', path.join(dir, 'liminald.db'), ...args], {
    stdio: ['ignore', 'ignore', log],
    env: cleanEnv(),
  });
  fs.closeSync(log);
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (error) => resolve({ error: error.message }));
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const status = await exited;
    assert.deepEqual(status, { code: 0, signal: null }, `liminald ${name} did not stop cleanly; see ${logPath}`);
  };
  let first;
  try {
    first = await connectWithDeadline(socketPath, exited);
  } catch (err) {
    child.kill('SIGKILL');
    err.message += `\n${await fsp.readFile(logPath, 'utf8').catch(() => '')}`;
    throw err;
  }
  return { name, socketPath, child, exited, stop, first };
}

// A client of the main daemon, closed when the test ends.
async function client(t) {
  const c = await connect({ socketPath: daemon.socketPath });
  t.after(() => c.close());
  return c;
}

before(async () => {
  let base = os.tmpdir();
  if (base.length > 60) base = '/tmp'; // keep the socket path under 108 bytes
  tmp = await fsp.mkdtemp(path.join(base, 'liminald-node-'));
  bin = process.env.LIMINALD_BIN || (await buildDaemon(tmp));
  daemon = await startDaemon('main');
  await daemon.first.close();
}, { timeout: 600_000 });

after(async () => {
  if (daemon) await daemon.stop();
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
});

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
  process.env.LIMINAL_SOCKET = daemon.socketPath;
  try {
    const c = await connect();
    await c.ping();
    await c.close();
  } finally {
    if (saved === undefined) delete process.env.LIMINAL_SOCKET;
    else process.env.LIMINAL_SOCKET = saved;
  }
  await assert.rejects(connect({ socketPath: path.join(tmp, 'nobody.sock') }), { code: 'ENOENT' });
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
    assert.ok(err instanceof LiminalError && err instanceof Error, code);
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
  assert.equal(unknown.constructor, LiminalError);
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
    // An output too big for one line is the same error.
    await assert.rejects(c.step(conv, 'm', 5, Buffer.alloc(limits.maxLineBytes)), LineTooLongError);
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
    const c2 = await connect({ socketPath: daemon.socketPath });
    const sub = await c2.subscribe(conv);
    const waiting = sub.next();
    await c2.close();
    assert.deepEqual(await waiting, { value: undefined, done: true });
    assert.equal(await sub.closed, null);
  });
});

test('close() answers the requests in flight, then refuses new ones', { timeout: TEST_TIMEOUT }, async () => {
  const c = await connect({ socketPath: daemon.socketPath });
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
    const c = d.first;
    const reason = await c.closed; // the daemon sends one forbidden line and closes
    assert.ok(reason instanceof ForbiddenError);
    assert.equal(reason.code, 'forbidden');
    assert.equal(reason.retryable, false);
    await assert.rejects(c.ping(), ForbiddenError);
  } finally {
    await d.stop();
  }
});

test('unavailable: a connection beyond max_connections', { timeout: TEST_TIMEOUT }, async () => {
  const d = await startDaemon('maxconn', ['--max-connections', '1']);
  try {
    const first = d.first;
    await first.ping(); // the one connection allowed is in use
    const second = await connect({ socketPath: d.socketPath });
    const reason = await second.closed;
    assert.ok(reason instanceof UnavailableError);
    assert.equal(reason.retryable, true);
    await assert.rejects(second.ping(), UnavailableError);
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
  const socketPath = path.join(tmp, 'scripted.sock');
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

  const c = await connect({ socketPath });
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

  for (const [code, Class] of [['shutting_down', ShuttingDownError], ['internal', InternalError], ['unavailable', UnavailableError], ['brand_new', LiminalError]]) {
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

// ------------------------------------------------------------------ the worked example

function runWorker(args, env = {}) {
  const child = spawn(process.execPath, [workerPath, ...args], {
    env: cleanEnv({ LIMINAL_SOCKET: daemon.socketPath, ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s) => { stdout += s; });
  child.stderr.setEncoding('utf8').on('data', (s) => { stderr += s; });
  return once(child, 'close').then(([code, signal]) => ({
    code, signal, stderr, lines: stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l)),
  }));
}

const sha256 = (...parts) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};

// Polls decide until it answers `action`, sleeping between polls for the
// retryAfterMs a busy decision gives (a lease's remaining time), for
// TEST_TIMEOUT at most in all.
async function waitForDecision(c, conv, msg, action) {
  const deadline = Date.now() + TEST_TIMEOUT;
  for (;;) {
    const d = await c.decide(conv, msg);
    if (d.decision === action) return d;
    if (Date.now() > deadline) throw new Error(`decide of ${msg} still answers ${JSON.stringify(d)}`);
    await delay(Math.min(d.retryAfterMs ?? 1, 100));
  }
}

// The events without lease_renewed: how many renewals a run made depends on
// how long it took.
const withoutRenewals = (events) => events.filter((e) => e.type !== 'lease_renewed');

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

test('a Lease renews itself, and notices when a renewal is fenced', { timeout: TEST_TIMEOUT }, async (t) => {
  const c = await client(t);
  const other = await client(t);
  const conv = 'p2-lease-object';
  await c.receive(conv, 'm');
  // A lease of 1 ms renewed every 20 ms lapses between renewals, so another
  // worker can take it over, after which the next renewal is refused.
  const lease = await c.lease(conv, 'm', { worker: 'a', leaseMs: 1, renewEveryMs: 20 });
  t.after(() => lease.stop());
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
  while (lease.lost === null) await delay(10); // the interval's next renewal
  assert.deepEqual([lease.lost.token, lease.lost.currentToken], [lease.token, taken.token]);
  const { nextSeq } = await c.read(conv);
  assert.throws(() => lease.check(), FencedError);
  await assert.rejects(lease.step(0, 'late'), FencedError); // refused before it is sent
  assert.equal((await c.read(conv)).nextSeq, nextSeq);
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

// ------------------------------------------------------------------ retention

const PRODUCED_AT = 1_732_672_000_000; // when the tests' messages were produced: long ago

// Polls probe() until it resolves with something truthy, and returns that;
// fails after half of TEST_TIMEOUT.
async function waitUntil(what, probe) {
  const deadline = Date.now() + TEST_TIMEOUT / 2;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${TEST_TIMEOUT / 2} ms`);
    await delay(20);
  }
}

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
