// What the tests share: a real liminald per test file (and more for the
// tests that need their own), clients of it, and the worked example of
// examples/node, set up to import the very package the tests import.
//
// The package is imported by its name, 'liminald': from the repository,
// that is clients/node itself (a package may import itself by its name);
// from a project that installed it (as .ci/run does, with npm pack and npm
// install), it is the installed copy.
//
// The daemon is $LIMINALD_BIN if set, else built with `go build` from the
// repository into a temporary directory. Each daemon runs in a temporary
// directory of its own, with its own socket and database, and is stopped
// with SIGTERM (which must exit 0).

import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

import { connect } from 'liminald';

const here = path.dirname(fileURLToPath(import.meta.url));

export const TEST_TIMEOUT = 60_000;

/** The directory of the package under test: clients/node, or the installed copy. */
export const packageDir = path.dirname(fileURLToPath(import.meta.resolve('liminald')));

/**
 * examples/node/worker.js: beside this test directory when the tests were
 * copied into a copy of examples/node (as .ci/run does), else in the
 * repository.
 */
function workerSource() {
  const candidates = [path.join(here, '..', 'worker.js'), path.join(here, '..', '..', '..', 'examples', 'node', 'worker.js')];
  const found = candidates.find((p) => fs.existsSync(p));
  if (!found) throw new Error(`the worked example worker.js is in none of ${candidates.join(', ')}`);
  return found;
}

let tmp; // this file's temporary directory
let bin; // the liminald binary

export function tmpDir() { return tmp; }
export function daemonBin() { return bin; }

// An environment without the LIMINAL_* settings (and the worker's test
// hooks) of whoever runs the tests, and without their config file.
export function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('LIMINAL_') && k !== 'CRASH_AFTER_STEP' && k !== 'PAUSE_AFTER_STEP') env[k] = v;
  }
  return { ...env, XDG_CONFIG_HOME: path.join(tmp, 'config'), ...extra };
}

async function buildDaemon(dir) {
  const repoRoot = path.resolve(here, '..', '..', '..');
  const out = path.join(dir, 'liminald');
  await promisify(execFile)('go', ['build', '-o', out, './cmd/liminald'], { cwd: repoRoot });
  return out;
}

/** Connects to socketPath once: resolves with null, or the connect error. */
function probe(socketPath) {
  return new Promise((resolve) => {
    const s = net.createConnection({ path: socketPath });
    s.once('connect', () => { s.destroy(); resolve(null); });
    s.once('error', resolve);
  });
}

/**
 * Calls attempt() until it resolves with no error (null) or an error other
 * than ENOENT or ECONNREFUSED (the daemon has not bound its socket, or not
 * yet listens); rejects if exited resolves first or after deadlineMs.
 */
async function waitForSocket(socketPath, exited, attempt = () => probe(socketPath), deadlineMs = 10_000) {
  const deadline = Date.now() + deadlineMs;
  let exit = null;
  exited.then((e) => { exit = e; });
  for (;;) {
    const err = await attempt();
    if (err === null) return;
    const code = err.cause?.code ?? err.code;
    if (code !== 'ENOENT' && code !== 'ECONNREFUSED') throw err;
    if (exit) throw new Error(`liminald exited before accepting: ${JSON.stringify(exit)}`);
    if (Date.now() > deadline) throw new Error(`liminald did not accept on ${socketPath} within ${deadlineMs} ms`);
    await delay(10);
  }
}

/**
 * A liminald serving tmp/name with args, which the tests can stop, kill,
 * pause and start again on the same socket and database.
 */
export class Daemon {
  constructor(name, args) {
    this.name = name;
    this.args = args;
    this.dir = path.join(tmp, name);
    this.socketPath = path.join(this.dir, 'liminald.sock');
    this.logPath = path.join(this.dir, 'liminald.log');
    this.child = null;
    this.exited = null;
  }

  /**
   * Starts it; resolves once its socket accepts: once attempt() (by default
   * a connection closed at once) resolves with null.
   */
  async start(attempt) {
    await fsp.mkdir(this.dir, { recursive: true });
    const log = fs.openSync(this.logPath, 'a');
    const child = spawn(bin, ['serve', '--socket', this.socketPath, '--db', path.join(this.dir, 'liminald.db'), ...this.args], {
      stdio: ['ignore', 'ignore', log],
      env: cleanEnv(),
    });
    fs.closeSync(log);
    this.child = child;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', (error) => resolve({ error: error.message }));
    });
    try {
      await waitForSocket(this.socketPath, this.exited, attempt);
    } catch (err) {
      child.kill('SIGKILL');
      err.message += `\n${await fsp.readFile(this.logPath, 'utf8').catch(() => '')}`;
      throw err;
    }
    return this;
  }

  get running() {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Stops it with SIGTERM, which must exit 0. */
  async stop() {
    if (this.child === null) return;
    if (this.running) this.child.kill('SIGTERM');
    const status = await this.exited;
    this.child = null;
    assert.deepEqual(status, { code: 0, signal: null }, `liminald ${this.name} did not stop cleanly; see ${this.logPath}`);
  }

  /** Kills it with SIGKILL (a crash), even while paused. */
  async kill() {
    if (this.child === null) return;
    if (this.running) this.child.kill('SIGKILL');
    await this.exited;
    this.child = null;
  }

  /**
   * Stops it with SIGSTOP: it holds its connections and answers nothing.
   * Resolves once every thread of it is stopped (read from /proc, on
   * Linux): a request sent after that is not read until resume().
   */
  async pause() {
    this.child.kill('SIGSTOP');
    const tasks = `/proc/${this.child.pid}/task`;
    if (!fs.existsSync(tasks)) return;
    const deadline = Date.now() + 10_000;
    for (;;) {
      const states = await Promise.all((await fsp.readdir(tasks)).map(async (tid) => {
        const stat = await fsp.readFile(path.join(tasks, tid, 'stat'), 'utf8').catch(() => ') T');
        return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      }));
      if (states.every((st) => st === 'T' || st === 't')) return;
      if (Date.now() > deadline) throw new Error(`liminald ${this.name} did not stop: ${states.join('')}`);
      await delay(1);
    }
  }

  /** SIGCONT after pause(). */
  resume() { this.child.kill('SIGCONT'); }
}

/**
 * Starts `liminald serve` in tmp/name with args; resolves, once its socket
 * accepts, with the Daemon and `first`, a client connected to it.
 */
export async function startDaemon(name, args = [], clientOptions = {}) {
  const d = new Daemon(name, args);
  // The first client is the probe: a probe of its own could still count
  // against --max-connections when the first client connects.
  await d.start(() => connect({ socketPath: d.socketPath, ...clientOptions }).then((c) => {
    d.first = c;
    return null;
  }, (err) => err));
  return d;
}

let daemon; // the daemon most tests of a file use

/** The daemon most tests of this file use. */
export function mainDaemon() { return daemon; }

/**
 * Sets up this test file: its temporary directory, the binary, the main
 * daemon. Call it from before(); teardown() from after().
 */
export async function setup() {
  let base = os.tmpdir();
  if (base.length > 60) base = '/tmp'; // keep the socket path under 108 bytes
  tmp = await fsp.mkdtemp(path.join(base, 'liminald-node-'));
  bin = process.env.LIMINALD_BIN || (await buildDaemon(tmp));
  daemon = await new Daemon('main', []).start();
}

export async function teardown() {
  if (daemon) await daemon.stop();
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
}

/** A client of the main daemon, closed when the test ends. */
export async function client(t, options = {}) {
  const c = await connect({ socketPath: daemon.socketPath, ...options });
  t.after(() => c.close());
  return c;
}

// Polls decide until it answers `action`, sleeping between polls for the
// retryAfterMs a busy decision gives (a lease's remaining time), for
// TEST_TIMEOUT at most in all.
export async function waitForDecision(c, conv, msg, action) {
  const deadline = Date.now() + TEST_TIMEOUT;
  for (;;) {
    const d = await c.decide(conv, msg);
    if (d.decision === action) return d;
    if (Date.now() > deadline) throw new Error(`decide of ${msg} still answers ${JSON.stringify(d)}`);
    await delay(Math.min(d.retryAfterMs ?? 1, 100));
  }
}

// Polls probe() until it resolves with something truthy, and returns that;
// fails after half of TEST_TIMEOUT. For what the daemon does in the
// background (compaction), which it signals to no one.
export async function waitUntil(what, probe) {
  const deadline = Date.now() + TEST_TIMEOUT / 2;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${TEST_TIMEOUT / 2} ms`);
    await delay(20);
  }
}

// The events without lease_renewed: how many renewals a run made depends on
// how long it took.
export const withoutRenewals = (events) => events.filter((e) => e.type !== 'lease_renewed');

// ------------------------------------------------------------------ the worked example

let workerApp; // a project holding worker.js, whose 'liminald' is the package under test

/**
 * The worked example as a project of its own in tmp: worker.js, and a
 * node_modules/liminald linked to the package the tests import. Resolves
 * with the path of its worker.js.
 */
export async function workerPath() {
  if (workerApp === undefined) {
    const dir = path.join(tmp, 'worker-app');
    await fsp.mkdir(path.join(dir, 'node_modules'), { recursive: true });
    await fsp.writeFile(path.join(dir, 'package.json'), JSON.stringify({ name: 'worker-app', private: true, type: 'module' }));
    await fsp.symlink(packageDir, path.join(dir, 'node_modules', 'liminald'), 'dir');
    await fsp.copyFile(workerSource(), path.join(dir, 'worker.js'));
    workerApp = path.join(dir, 'worker.js');
  }
  return workerApp;
}

/** The worked example's module: processMessage, runStep and the rest. */
export async function loadWorker() {
  return import(pathToFileURL(await workerPath()).href);
}

/**
 * Runs `node worker.js args` against the main daemon (or env's
 * LIMINAL_SOCKET); resolves with its exit, stderr and the JSON lines it
 * printed. With onLine, each line is handed to it as it comes, with the
 * child (to write to its stdin).
 */
export async function runWorker(args, env = {}, onLine) {
  const child = spawn(process.execPath, [await workerPath(), ...args], {
    env: cleanEnv({ LIMINAL_SOCKET: daemon.socketPath, ...env }),
    stdio: [onLine ? 'pipe' : 'ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const lines = [];
  child.stdout.setEncoding('utf8').on('data', (s) => {
    stdout += s;
    let nl;
    while ((nl = stdout.indexOf('\n')) !== -1) {
      const line = JSON.parse(stdout.slice(0, nl));
      stdout = stdout.slice(nl + 1);
      lines.push(line);
      if (onLine) onLine(line, child);
    }
  });
  child.stderr.setEncoding('utf8').on('data', (s) => { stderr += s; });
  const [code, signal] = await once(child, 'close');
  return { code, signal, stderr, lines };
}
