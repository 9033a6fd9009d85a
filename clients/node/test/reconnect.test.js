// Tests of what the liminald package does when the daemon goes away, and of
// what it checks before it sends: the real daemon restarted, crashed,
// paused and stopped under running clients and workers; a stand-in daemon
// speaking protocol 1, and one shutting down; timeouts; the daemon's
// max_output_bytes; the socket found as the daemon finds it.
//
// See helpers.js for the daemons they run.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

import {
  Client, connect, defaultSocketPath, retrySafe, BadRequestError, ConnectionClosedError, LiminaldError,
  OutputTooLargeError, ProtocolError, ShuttingDownError, TimeoutError, UnavailableError,
} from 'liminald';
import {
  TEST_TIMEOUT, setup, teardown, startDaemon, loadWorker, runWorker, tmpDir, daemonBin, cleanEnv,
  withoutRenewals,
} from './helpers.js';

let processMessage;
let runStep;

before(async () => {
  await setup();
  ({ processMessage, runStep } = await loadWorker());
}, { timeout: 600_000 });
after(teardown);

/** A daemon of the test's own, stopped (and its first client closed) when the test ends. */
async function ownDaemon(t, name, args = [], clientOptions = {}) {
  const d = await startDaemon(name, args, clientOptions);
  t.after(async () => {
    await d.first.close();
    if (d.child !== null) d.resume?.();
    await d.stop();
  });
  return d;
}

/** Asserts err is the client's own UnavailableError for socket and op. */
function isUnavailable(err, socket, op, sent) {
  assert.ok(err instanceof UnavailableError && err instanceof LiminaldError, String(err));
  assert.deepEqual([err.code, err.retryable, err.socket, err.op, err.sent], ['unavailable', true, socket, op, sent]);
  assert.ok(err.message.includes(socket), err.message);
  return true;
}

// ------------------------------------------------------------------ restarts

test('retrySafe: reads, and writes with expected_seq or (step, finish, fail) a token', () => {
  for (const op of ['hello', 'ping', 'decide', 'state', 'read', 'messages', 'explain', 'conversations', 'stats', 'subscribe']) {
    assert.equal(retrySafe(op, {}), true, op);
  }
  for (const op of ['receive', 'start', 'step', 'finish', 'fail', 'renew', 'release']) {
    assert.equal(retrySafe(op, {}), false, op);
    assert.equal(retrySafe(op, { expected_seq: 0 }), true, op);
  }
  for (const op of ['step', 'finish', 'fail']) assert.equal(retrySafe(op, { token: 4 }), true, op);
  for (const op of ['receive', 'start', 'renew', 'release']) assert.equal(retrySafe(op, { token: 4 }), false, op);
  assert.equal(retrySafe('unsubscribe', { sub: 1 }), false);
  assert.equal(retrySafe('frobnicate', { expected_seq: 1 }), false);
});

test('a worker keeps going across a daemon restart; safe calls made meanwhile succeed after it', { timeout: TEST_TIMEOUT }, async (t) => {
  const d = await ownDaemon(t, 'restart');
  const c = d.first;
  const conv = 'restart';
  const msg = 'm';

  // The worker (the worked example's processMessage) stops inside step 1,
  // after step 0 is recorded, until the test lets it go.
  let entered;
  let go;
  const inside = new Promise((resolve) => { entered = resolve; });
  const released = new Promise((resolve) => { go = resolve; });
  const effects = [];
  const log = [];
  const run = async (i, input) => {
    effects.push(i);
    if (i === 1) {
      entered();
      await released;
    }
    return runStep(i, input);
  };
  const task = processMessage(c, conv, msg, { worker: 'W', leaseMs: 30_000, run, report: (o) => log.push(o) });
  await inside;
  assert.equal(c.connects, 1);

  // The daemon stops (SIGTERM, exit 0) under the worker; a read made while
  // it is away waits for it.
  await d.stop();
  const whileDown = c.state(conv, msg);
  await d.start();
  const st = await whileDown;
  assert.deepEqual([st.status, st.lastCompletedStep, st.worker], ['in_progress', 0, 'W']);

  // The worker goes on: its writes carry its lease's token, so they go
  // to the new daemon, and it finishes.
  go();
  assert.equal(await task, 'start', JSON.stringify(log));
  assert.deepEqual(effects, [0, 1, 2]);
  assert.ok(log.at(-1).finished, JSON.stringify(log));
  assert.equal(c.connects, 2);
  const { events } = await c.read(conv);
  assert.deepEqual(withoutRenewals(events).map((e) => [e.type, e.stepIndex, e.worker]), [
    ['message_received', undefined, undefined],
    ['processing_started', undefined, 'W'],
    ['step_completed', 0, undefined],
    ['step_completed', 1, undefined],
    ['step_completed', 2, undefined],
    ['processing_finished', undefined, undefined],
  ]);
});

test('the worked example as a program keeps going across a daemon restart', { timeout: TEST_TIMEOUT }, async (t) => {
  const d = await ownDaemon(t, 'restart-cli');
  const c = d.first;
  const conv = 'restart-cli';
  // The worker prints {"paused":0} after step 0 and waits for a line on
  // its standard input: the daemon restarts meanwhile.
  let restarted;
  const run = runWorker(['--worker', 'cli', conv, 'order-1', '3'], { LIMINAL_SOCKET: d.socketPath, PAUSE_AFTER_STEP: '0' }, (line, child) => {
    if (line.paused !== 0) return;
    restarted = (async () => {
      await d.stop();
      await d.start();
      child.stdin.end('go on\n');
    })();
  });
  const out = await run;
  await restarted;
  assert.deepEqual([out.code, out.signal], [0, null], `worker: ${out.stderr}`);
  assert.deepEqual(out.lines.map((l) => l.decision ?? l.step ?? ('paused' in l ? 'paused' : undefined) ?? (l.leased && 'leased') ?? (l.finished && 'finished')),
    ['start', 'leased', 0, 'paused', 1, 2, 'finished']);
  const { events } = await c.read(conv);
  assert.deepEqual(withoutRenewals(events).map((e) => e.type), [
    'message_received', 'processing_started', 'step_completed', 'step_completed', 'step_completed', 'processing_finished',
  ]);
});

test('a daemon crash with calls in flight: safe ones are sent again, an unsafe write rejects with Unavailable naming the socket', { timeout: TEST_TIMEOUT }, async (t) => {
  const d = await ownDaemon(t, 'crash');
  const c = d.first;
  const conv = 'crash';
  await c.receive(conv, 'leased');
  const { token } = await c.start(conv, 'leased', { worker: 'W', leaseMs: 60_000 });

  // Paused (SIGSTOP), the daemon reads nothing: these requests are sent
  // and wait unanswered, until it is killed (SIGKILL) and started again.
  await d.pause();
  const unsafe = c.receive(conv, 'unsafe'); // without expectedSeq: not sent twice
  const read = c.decide(conv, 'unsafe');
  const step = c.step(conv, 'leased', 0, 'out', { token }); // with the token: sent again
  const expected = c.receive(conv, 'with-seq', { expectedSeq: 3 }); // with expectedSeq: sent again
  const unsafeError = unsafe.catch((err) => err); // rejects while the daemon is away
  await d.kill();
  isUnavailable(await unsafeError, d.socketPath, 'receive', true);
  assert.match((await unsafeError).message, /may or may not have taken effect/);

  await d.start();
  assert.deepEqual(await read, { decision: 'start' }); // here it had not: the daemon never read it
  assert.deepEqual(await step, { seq: 2, duplicate: false });
  assert.deepEqual(await expected, { decision: 'start', seq: 3 });
  // At least one connection more. The first dial after the crash may still
  // reach the dying daemon's listening socket, whose backlog the kernel
  // resets an instant later: the calls are then sent again on a third.
  assert.ok(c.connects >= 2, `${c.connects} connections`);
  // Each landed once.
  const { events } = await c.read(conv);
  assert.deepEqual(events.map((e) => [e.seq, e.type, e.messageId]), [
    [0, 'message_received', 'leased'], [1, 'processing_started', 'leased'], [2, 'step_completed', 'leased'],
    [3, 'message_received', 'with-seq'],
  ]);
});

test('a write made while the daemon is away is sent once it is back', { timeout: TEST_TIMEOUT }, async (t) => {
  const d = await ownDaemon(t, 'away');
  const c = d.first;
  await c.ping();
  await d.stop();
  // Not sent while the daemon is away, so safe to send to the next one,
  // whatever it is; and in the order made.
  const receive = c.receive('away', 'm');
  const start = c.start('away', 'm');
  await d.start();
  assert.deepEqual(await receive, { decision: 'start', seq: 0 });
  assert.deepEqual(await start, { seq: 1, duplicate: false, token: 1 });
});

test('while the daemon stays down past the reconnect timeout, calls reject with Unavailable naming the socket', { timeout: TEST_TIMEOUT }, async (t) => {
  const d = await ownDaemon(t, 'down', [], { reconnectTimeoutMs: 300 });
  const c = d.first;
  await c.ping();
  await d.stop();
  for (const [call, op] of [[() => c.ping(), 'ping'], [() => c.receive('down', 'm'), 'receive']]) {
    const began = Date.now();
    await assert.rejects(call(), (err) => {
      isUnavailable(err, d.socketPath, op, false);
      assert.ok(['ENOENT', 'ECONNREFUSED'].includes(err.cause?.code), String(err.cause));
      assert.match(err.message, /reconnect timeout of 300 ms/);
      return true;
    });
    const took = Date.now() - began;
    assert.ok(took >= 290 && took < 5000, `gave up after ${took} ms`);
  }
  // The call's own timeout, when shorter, ends the wait sooner, likewise.
  await assert.rejects(c.stats({ timeoutMs: 50 }), (err) => isUnavailable(err, d.socketPath, 'stats', false));

  // Once the daemon is back, the same client works again.
  await d.start();
  assert.equal(await c.ping(), undefined);
  // A client that does not dial again ends with its connection.
  const single = await connect({ socketPath: d.socketPath, reconnectTimeoutMs: 0 });
  await d.stop();
  assert.ok((await single.closed) instanceof ConnectionClosedError);
  await assert.rejects(single.ping(), ConnectionClosedError);
  await d.start();
});

test('a subscription ends with its connection, saying where to subscribe again from', { timeout: TEST_TIMEOUT }, async (t) => {
  const d = await ownDaemon(t, 'sub-restart');
  const c = d.first;
  const w = await connect({ socketPath: d.socketPath });
  t.after(() => w.close());
  const conv = 'sub-restart';
  await w.receive(conv, 'a');
  await w.receive(conv, 'b');
  const sub = await c.subscribe(conv, { fromSeq: 0 });
  const got = [];
  for await (const e of sub) {
    got.push(e.seq);
    if (got.length === 2) break;
  }
  const again = await c.subscribe(conv, { fromSeq: 2 });
  const waiting = again.next().catch((err) => { throw err; });
  const ended = waiting.catch(() => {}); // rejects while the daemon stops
  await d.stop();
  await ended;
  await assert.rejects(waiting, (err) => {
    isUnavailable(err, d.socketPath, 'subscribe', true);
    assert.equal(err.details.nextSeq, undefined); // it had received nothing
    return true;
  });
  await d.start();
  await w.receive(conv, 'c');
  const resumed = await c.subscribe(conv, { fromSeq: 2 });
  const { value } = await resumed.next();
  assert.deepEqual([value.seq, value.messageId], [2, 'c']);
  // The events received before the connection was lost are read first.
  const sub2 = await c.subscribe(conv, { fromSeq: 0 });
  const first = await sub2.next();
  await d.stop();
  const err = await sub2.closed;
  isUnavailable(err, d.socketPath, 'subscribe', true);
  const rest = [];
  await assert.rejects(async () => {
    for await (const e of sub2) rest.push(e.seq);
  }, (thrown) => thrown === err);
  assert.deepEqual([first.value.seq, ...rest], [0, 1, 2]);
  assert.deepEqual([err.details.nextSeq, err.details.nextPos], [3, sub2.lastPos + 1]);
  await d.start();
});

// ------------------------------------------------------------------ stand-in daemons

/**
 * A stand-in daemon on a socket of its own: answer(req, n) returns (or
 * resolves with) the reply objects to a request on its n-th connection
 * (from 1), which it sends in request order, as the daemon does.
 * Resolves with { socketPath, requests, connections }.
 */
async function standIn(t, name, answer) {
  const socketPath = path.join(tmpDir(), `${name}.sock`);
  const requests = [];
  const sockets = new Set();
  let connections = 0;
  const server = net.createServer((sock) => {
    const n = ++connections;
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    let buf = '';
    let replies = Promise.resolve();
    sock.on('data', (chunk) => {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const req = JSON.parse(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        requests.push({ ...req, connection: n });
        replies = replies.then(async () => {
          const out = await answer(req, n);
          if (!sock.destroyed) sock.write(out.map((o) => JSON.stringify(o) + '\n').join(''));
        });
      }
    });
  });
  server.listen(socketPath);
  await once(server, 'listening');
  t.after(() => new Promise((resolve) => {
    server.close(resolve);
    for (const sock of sockets) sock.destroy();
  }));
  return { socketPath, requests, get connections() { return connections; } };
}

test('a protocol-1 daemon: protocol-2 calls are refused before they are sent, a lease start clearly', { timeout: TEST_TIMEOUT }, async (t) => {
  // As a protocol-1 daemon would, it ignores the fields it does not know:
  // it would answer a start with a lease ok, with no token.
  const old = await standIn(t, 'protocol1', (req) => {
    if (req.op === 'hello') {
      return [{ id: req.id, ok: true, protocol: 1, server: { name: 'liminald', version: '0.9' }, ops: ['hello', 'start'], limits: { max_line_bytes: 1048576 } }];
    }
    if (req.op === 'start') return [{ id: req.id, ok: true, seq: 1 }];
    return [{ id: req.id, ok: true }];
  });
  const c = await connect({ socketPath: old.socketPath });
  t.after(() => c.close());

  await assert.rejects(c.lease('orders', 'm', { worker: 'w1', leaseMs: 30_000 }), (err) => {
    assert.ok(err instanceof ProtocolError && err instanceof LiminaldError);
    assert.deepEqual([err.code, err.retryable, err.feature, err.need, err.have], ['protocol', false, 'start with worker, lease_ms', 2, 1]);
    assert.equal(err.message, `start with worker, lease_ms needs protocol 2, but liminald at ${old.socketPath} speaks protocol 1; not sent`);
    return true;
  });
  for (const call of [
    () => c.step('orders', 'm', 0, 'x', { token: 1 }),
    () => c.receive('orders', 'm', { sentAt: 1 }),
    () => c.decide('orders', 'm', { withSteps: true }),
    () => c.renew('orders', 'm', 1, 1000),
    () => c.messages('orders'),
    () => c.request('release', { conversation: 'orders', message_id: 'm' }),
  ]) {
    await assert.rejects(call(), ProtocolError);
  }
  // What protocol 1 has is sent: a start without a lease.
  assert.deepEqual(await c.start('orders', 'm'), { seq: 1, duplicate: false });
  // One hello on the connection, and none of the refused calls.
  assert.deepEqual(old.requests.map((r) => r.op), ['hello', 'start']);
});

test('shutting_down: safe calls go to the next daemon, others reject with it', { timeout: TEST_TIMEOUT }, async (t) => {
  // The first connection answers everything with shutting_down, as a
  // stopping daemon does; the next ones answer ok.
  const d = await standIn(t, 'stopping', (req, n) => (n === 1
    ? [{ id: req.id, ok: false, error: { code: 'shutting_down', message: 'the daemon is shutting down', retryable: true } }]
    : [{ id: req.id, ok: true, decision: 'start', seq: 0 }]));
  const c = await connect({ socketPath: d.socketPath });
  t.after(() => c.close());
  const read = c.decide('c', 'm');
  const write = c.receive('c', 'm');
  await assert.rejects(write, (err) => err instanceof ShuttingDownError && err.retryable);
  assert.deepEqual(await read, { decision: 'start', seq: 0 });
  assert.deepEqual(d.requests.map((r) => [r.op, r.connection]), [['decide', 1], ['receive', 1], ['decide', 2]]);
});

test('timeouts: a call not answered in time rejects, and the client goes on', { timeout: TEST_TIMEOUT }, async (t) => {
  // The stand-in answers "hang" after 300 ms, and the rest at once (in
  // order: after the hangs before them).
  const d = await standIn(t, 'slow', async (req) => {
    if (req.op === 'hang') await delay(300);
    return [{ id: req.id, ok: true }];
  });
  const c = await connect({ socketPath: d.socketPath, callTimeoutMs: 100 });
  t.after(() => c.close());
  for (const call of [() => c.request('hang'), () => c.request('hang', {}, { timeoutMs: 30 })]) {
    await assert.rejects(call(), (err) => {
      assert.ok(err instanceof TimeoutError && err instanceof LiminaldError);
      assert.deepEqual([err.code, err.retryable, err.op, err.sent], ['timeout', true, 'hang', true]);
      return true;
    });
  }
  // An AbortSignal ends a call too.
  const ac = new AbortController();
  const aborted = c.request('hang', {}, { signal: ac.signal, timeoutMs: 0 });
  ac.abort(new Error('no longer needed'));
  await assert.rejects(aborted, /no longer needed/);
  // The late replies are dropped, and the next call gets its own (after
  // them: the stand-in answers in order).
  assert.equal(await c.ping({ timeoutMs: 5000 }), undefined);
  assert.deepEqual(d.requests.map((r) => r.op), ['hang', 'hang', 'hang', 'ping']);
});

// ------------------------------------------------------------------ checked before sending

test('an output over the daemon\'s max_output_bytes is refused before it is sent, naming both sizes', { timeout: TEST_TIMEOUT }, async (t) => {
  // With lines of 200000 bytes, hello reports max_output_bytes 146928: an
  // output one byte over it would still fit the line, so the daemon would
  // take it if the client sent it.
  const d = await ownDaemon(t, 'small-lines', ['--max-line-bytes', '200000']);
  const c = d.first;
  const { limits } = await c.hello();
  assert.equal(limits.maxOutputBytes, 146928);
  const conv = 'big';
  await c.receive(conv, 'm');
  await c.start(conv, 'm');
  const { nextSeq } = await c.state(conv);
  await assert.rejects(c.step(conv, 'm', 0, Buffer.alloc(146929)), (err) => {
    assert.ok(err instanceof OutputTooLargeError && err instanceof BadRequestError);
    assert.deepEqual([err.code, err.retryable, err.field, err.size, err.limit], ['bad_request', false, 'output', 146929, 146928]);
    assert.ok(err.message.includes('146929') && err.message.includes('146928'), err.message);
    return true;
  });
  assert.equal((await c.state(conv)).nextSeq, nextSeq); // nothing was sent
  assert.deepEqual(await c.step(conv, 'm', 0, Buffer.alloc(146928)), { seq: nextSeq, duplicate: false });
  // On a new connection (a new client), the check asks hello itself.
  const fresh = await connect({ socketPath: d.socketPath });
  t.after(() => fresh.close());
  await assert.rejects(fresh.step(conv, 'm', 1, new Uint8Array(200_000)), OutputTooLargeError);
});

// ------------------------------------------------------------------ the socket

test('the socket is found as the daemon finds it: LIMINAL_SOCKET, else XDG_RUNTIME_DIR', { timeout: TEST_TIMEOUT }, async (t) => {
  // A daemon started with no --socket, in an environment of its own,
  // binds $XDG_RUNTIME_DIR/liminald/liminald.sock.
  const runtime = path.join(tmpDir(), 'xdg-runtime');
  await fsp.mkdir(runtime, { mode: 0o700 });
  const env = cleanEnv({ XDG_RUNTIME_DIR: runtime });
  const child = spawn(daemonBin(), ['serve', '--db', path.join(runtime, 'liminald.db')], { env, stdio: 'ignore' });
  const exited = once(child, 'exit');
  t.after(async () => {
    child.kill('SIGTERM');
    assert.deepEqual(await exited, [0, null]);
  });
  const expected = path.join(runtime, 'liminald', 'liminald.sock');
  assert.equal(defaultSocketPath(env), expected);

  // A client given no socket, in that environment, finds it (and waits
  // for the daemon to listen: it dials again while it cannot connect).
  const saved = { LIMINAL_SOCKET: process.env.LIMINAL_SOCKET, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR };
  const restore = () => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  t.after(restore);
  delete process.env.LIMINAL_SOCKET;
  process.env.XDG_RUNTIME_DIR = runtime;
  const byRuntime = new Client();
  t.after(() => byRuntime.close());
  assert.equal(byRuntime.socketPath, expected);
  assert.equal((await byRuntime.hello()).protocol, 2);

  // LIMINAL_SOCKET comes first: pointing elsewhere, it is used.
  process.env.LIMINAL_SOCKET = path.join(tmpDir(), 'elsewhere.sock');
  const byEnv = new Client({ reconnectTimeoutMs: 50 });
  assert.equal(byEnv.socketPath, process.env.LIMINAL_SOCKET);
  await assert.rejects(byEnv.ping(), (err) => isUnavailable(err, process.env.LIMINAL_SOCKET, 'ping', false));
  process.env.LIMINAL_SOCKET = expected;
  const byEnv2 = await connect();
  t.after(() => byEnv2.close());
  assert.equal(await byEnv2.ping(), undefined);
  restore();
});
