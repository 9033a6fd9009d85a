// A Node.js client for liminald, using only Node's standard library.
//
// The protocol (docs/PROTOCOL.md) is JSON lines on a unix socket. One
// Client is one connection: requests are pipelined, each with an id of its
// own; the daemon answers them in request order, so the reader matches
// every reply to the oldest request waiting, and routes the lines pushed
// for subscriptions ({"sub": S, "event": ...}) to their Subscription.
//
//   import { connect } from './liminald.js';
//   const client = await connect();          // the daemon's default socket
//   const { decision, resumeFrom } = await client.receive('orders', 'm-17');
//   ...
//   await client.close();
//
// A worker holds a message under a lease (protocol 2):
//
//   const lease = await client.lease('orders', 'm-17', { worker: 'w1', leaseMs: 30_000 });
//   await lease.step(0, output);   // with the lease's token; FencedError once taken over
//   await lease.finish();
//
// The Lease renews itself every third of its length (an unref'd
// setInterval) until it is finished, failed, stopped or lost.
//
// Results use camelCase names (message_id -> messageId, next_seq ->
// nextSeq); step outputs are Buffers (base64 on the wire). Integers are JS
// numbers: exact below 2^53, which seq, pos and epoch milliseconds are in
// practice. A failure reply rejects with the LiminalError subclass of its
// code; branch on the class or on err.code, never on err.message.

import net from 'node:net';
import path from 'node:path';
import { Buffer } from 'node:buffer';

// ---------------------------------------------------------------- errors

/** A failure reply of the daemon: `code`, `retryable` and the `details` it carried. */
export class LiminalError extends Error {
  constructor(code, message, { retryable = false, details = {} } = {}) {
    super(message || code);
    this.name = new.target.name;
    this.code = code;
    this.retryable = retryable;
    this.details = details;
  }
}

export class BadRequestError extends LiminalError {
  /** The argument at fault, when the daemon named one. */
  get field() { return this.details.field; }
}
export class LineTooLongError extends LiminalError {}
export class UnknownOpError extends LiminalError {}
export class UnknownMessageError extends LiminalError {}
export class AlreadyFinishedError extends LiminalError {}
export class StepConflictError extends LiminalError {}
export class SequenceConflictError extends LiminalError {
  /** The expected_seq the request gave. */
  get expected() { return this.details.expected; }
  /** The conversation's next seq. */
  get actual() { return this.details.actual; }
}
export class ForbiddenError extends LiminalError {}
export class UnavailableError extends LiminalError {}
export class ShuttingDownError extends LiminalError {}
export class InternalError extends LiminalError {}
/**
 * busy (retryable): another worker holds a live lease on the message. Try
 * again after retryAfterMs.
 */
export class BusyError extends LiminalError {
  /** The worker holding the lease (null if it gave no name). */
  get worker() { return this.details.worker; }
  /** The token of the lease held. */
  get token() { return this.details.token; }
  /** Milliseconds until the lease expires, unless it is renewed. */
  get retryAfterMs() { return this.details.retry_after_ms; }
}
/**
 * fenced: a write or renew with a token that is no longer the message's
 * current one (another worker took it over), or a renew of a message no
 * longer in progress. The worker holding `token` must stop.
 */
export class FencedError extends LiminalError {
  /** The token the request gave. */
  get token() { return this.details.token; }
  /** The message's current token (null if it has none). */
  get currentToken() { return this.details.current_token; }
}
/** quarantined: start of a message started max_attempts times without finishing. */
export class QuarantinedError extends LiminalError {}
/** not_quarantined: release of a message that is not quarantined. */
export class NotQuarantinedError extends LiminalError {}
/** fingerprint_mismatch: the message id was first received with another fingerprint. */
export class FingerprintMismatchError extends LiminalError {
  /** The fingerprint the message was first received with. */
  get stored() { return this.details.stored; }
}

/** The class of each wire error code. */
export const ERROR_CLASSES = Object.freeze({
  bad_request: BadRequestError,
  line_too_long: LineTooLongError,
  unknown_op: UnknownOpError,
  unknown_message: UnknownMessageError,
  already_finished: AlreadyFinishedError,
  step_conflict: StepConflictError,
  sequence_conflict: SequenceConflictError,
  forbidden: ForbiddenError,
  unavailable: UnavailableError,
  shutting_down: ShuttingDownError,
  internal: InternalError,
  busy: BusyError,
  fenced: FencedError,
  quarantined: QuarantinedError,
  not_quarantined: NotQuarantinedError,
  fingerprint_mismatch: FingerprintMismatchError,
});

/**
 * The error of a failure reply's `error` object: an instance of the class of
 * its code, or a plain LiminalError for a code this client does not know.
 */
export function errorFromWire(obj) {
  if (obj === null || typeof obj !== 'object') {
    return new InternalError('internal', 'failure reply without an error object', { retryable: true });
  }
  const { code, message, retryable, ...details } = obj;
  const Class = Object.hasOwn(ERROR_CLASSES, code) ? ERROR_CLASSES[code] : LiminalError;
  return new Class(String(code), message, { retryable: retryable === true, details });
}

/** The connection ended (closed by the client, the daemon, or an I/O error). */
export class ConnectionClosedError extends Error {
  constructor(message = 'liminald connection closed', options) {
    super(message, options);
    this.name = 'ConnectionClosedError';
  }
}

/**
 * A subscription ended because its reader fell behind. Subscribe again from
 * `nextPos` (or, for one conversation, `nextSeq`) to miss nothing.
 */
export class LaggedError extends Error {
  constructor(sub, nextPos, nextSeq) {
    super(`subscription ${sub} lagged; subscribe again from pos ${nextPos}`);
    this.name = 'LaggedError';
    this.sub = sub;
    this.nextPos = nextPos;
    this.nextSeq = nextSeq;
  }
}

// ---------------------------------------------------------------- socket path

/**
 * The socket the daemon listens on when none is configured, resolved as the
 * daemon does: $LIMINAL_SOCKET, else $XDG_RUNTIME_DIR/liminald/liminald.sock
 * (an absolute XDG_RUNTIME_DIR only), else /run/liminald/liminald.sock for
 * root, else /tmp/liminald-$UID/liminald.sock. (The daemon's config file is
 * not read: pass socketPath if the socket is set there.)
 */
export function defaultSocketPath(env = process.env, uid = process.getuid()) {
  if (env.LIMINAL_SOCKET) return env.LIMINAL_SOCKET;
  const runtime = env.XDG_RUNTIME_DIR;
  if (runtime && path.isAbsolute(runtime)) return path.join(runtime, 'liminald', 'liminald.sock');
  if (uid === 0) return '/run/liminald/liminald.sock';
  return `/tmp/liminald-${uid}/liminald.sock`;
}

/**
 * Connects to the daemon. Resolves with a Client once the socket is
 * connected; rejects with the connect error (ENOENT, ECONNREFUSED, ...).
 */
export function connect({ socketPath = defaultSocketPath(), subscriptionBuffer } = {}) {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ path: socketPath });
    const onError = (err) => reject(err);
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(new Client(socket, { subscriptionBuffer }));
    });
  });
}

// ---------------------------------------------------------------- decoding

const camel = (key) => key.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());

/** obj with its keys in camelCase, recursively. */
function camelize(value) {
  if (Array.isArray(value)) return value.map(camelize);
  if (value === null || typeof value !== 'object') return value;
  const out = {};
  for (const [k, v] of Object.entries(value)) out[camel(k)] = camelize(v);
  return out;
}

/** A success reply without its id and ok, camelCased. */
function result(reply) {
  const { id, ok, ...rest } = reply;
  return camelize(rest);
}

/** An event object of the wire: camelCased, its output a Buffer. */
export function decodeEvent(wire) {
  const event = camelize(wire);
  if (typeof event.output === 'string') event.output = Buffer.from(event.output, 'base64');
  return event;
}

/**
 * A write's reply: { seq, duplicate }, with start's token, and the
 * leaseExpiresAt of a start with a lease or a renew.
 */
function writeResult(reply) {
  const r = { seq: reply.seq, duplicate: reply.duplicate === true };
  if (reply.token !== undefined) r.token = reply.token;
  if (reply.lease_expires_at !== undefined) r.leaseExpiresAt = reply.lease_expires_at;
  return r;
}

/** steps [{ stepIndex, output (base64) }] of a result, their outputs as Buffers. */
function decodeSteps(value) {
  if (Array.isArray(value.steps)) {
    for (const s of value.steps) s.output = Buffer.from(s.output ?? '', 'base64');
  }
  return value;
}

/** A decision (receive, decide): camelCased, the outputs of its steps as Buffers. */
function decisionResult(reply) {
  return decodeSteps(result(reply));
}

function toBase64(output) {
  if (typeof output === 'string') return Buffer.from(output, 'utf8').toString('base64');
  if (output instanceof Uint8Array) return Buffer.from(output.buffer, output.byteOffset, output.byteLength).toString('base64');
  throw new TypeError('output must be a Buffer, a Uint8Array or a string');
}

// ---------------------------------------------------------------- subscriptions

const kPush = Symbol('push');
const kEnd = Symbol('end');

/**
 * The events of a subscription, as an async iterator:
 *
 *   const sub = await client.subscribe('orders', { fromSeq: 0 });
 *   for await (const event of sub) { ... }   // break to unsubscribe
 *
 * The iteration ends when the subscription is unsubscribed or the client
 * closed; it throws a LaggedError if the subscription lagged (after the
 * events received before it), or a ConnectionClosedError if the connection
 * broke.
 */
export class Subscription {
  #client;
  #queue = [];
  #head = 0;
  #waiters = [];
  #ended = false;
  #error = null;
  #limit;
  #resolveClosed;

  constructor(client, id, conversation, limit) {
    this.#client = client;
    /** The subscription's number on its connection. */
    this.id = id;
    /** Its conversation, or undefined for every conversation. */
    this.conversation = conversation;
    this.#limit = limit;
    /** Resolves (with the error that ended it, or null) once the subscription ended. */
    this.closed = new Promise((resolve) => { this.#resolveClosed = resolve; });
  }

  /** How many events are received and not yet read. */
  get buffered() { return this.#queue.length - this.#head; }

  [Symbol.asyncIterator]() { return this; }

  next() {
    if (this.#head < this.#queue.length) {
      const value = this.#queue[this.#head];
      this.#queue[this.#head++] = undefined;
      if (this.#head === this.#queue.length) {
        this.#queue = [];
        this.#head = 0;
      } else if (this.#head >= 1024 && this.#head * 2 >= this.#queue.length) {
        this.#queue = this.#queue.slice(this.#head);
        this.#head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.#error) {
      const err = this.#error;
      this.#error = null; // thrown once; the iteration is done after it
      return Promise.reject(err);
    }
    if (this.#ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** Called by for-await on break: unsubscribes. */
  async return() {
    await this.close();
    return { value: undefined, done: true };
  }

  /** Unsubscribes (the events already received can still be read). */
  async close() {
    if (this.#ended) return;
    await this.#client.unsubscribe(this).catch((err) => {
      if (!(err instanceof ConnectionClosedError)) throw err;
    });
  }

  /** Delivers a pushed event; the client's reader calls it. */
  [kPush](event) {
    if (this.#ended) return;
    const waiter = this.#waiters.shift();
    if (waiter) {
      waiter.resolve({ value: event, done: false });
      return;
    }
    if (this.#limit > 0 && this.buffered >= this.#limit) {
      // The reader is too slow: end here, as the daemon would, from the first
      // event it misses, and unsubscribe in the background.
      this[kEnd](new LaggedError(this.id, event.pos, this.conversation === undefined ? undefined : event.seq));
      this.#client.unsubscribe(this.id).catch(() => {});
      return;
    }
    this.#queue.push(event);
  }

  /** Ends the subscription, with err (thrown to the reader) or null. */
  [kEnd](err) {
    if (this.#ended) return;
    this.#ended = true;
    this.#client[kForget](this.id, this);
    if (err && this.#waiters.length > 0) {
      // Nothing is queued when someone waits: the first waiter gets err.
      this.#waiters.shift().reject(err);
      err = null;
    }
    this.#error = err;
    for (const w of this.#waiters.splice(0)) w.resolve({ value: undefined, done: true });
    this.#resolveClosed(err ?? null);
  }
}

const kForget = Symbol('forget');

// ---------------------------------------------------------------- client

/** The default number of unread events a Subscription holds before it lags. */
export const DEFAULT_SUBSCRIPTION_BUFFER = 65536;

/** One connection to liminald. Make it with connect(). */
export class Client {
  #socket;
  #pending = []; // requests sent, not yet answered, in order: { id, resolve, reject, decode }
  #subs = new Map(); // sub number -> Subscription
  #nextId = 1;
  #partial = []; // the chunks of a line not yet ended by "\n"
  #closing = false; // close() was called
  #ended = null; // why the connection ended, once it did
  #serverError = null; // an error line the daemon sent unasked (forbidden, unavailable)
  #ioError = null;
  #subscriptionBuffer;
  #resolveClosed;

  constructor(socket, { subscriptionBuffer = DEFAULT_SUBSCRIPTION_BUFFER } = {}) {
    this.#socket = socket;
    this.#subscriptionBuffer = subscriptionBuffer;
    /**
     * Resolves once the connection has ended: with null after close(), else
     * with the error that ended it (a LiminalError the daemon sent, such as
     * ForbiddenError, or a ConnectionClosedError).
     */
    this.closed = new Promise((resolve) => { this.#resolveClosed = resolve; });
    socket.on('data', (chunk) => this.#onData(chunk));
    socket.on('error', (err) => { this.#ioError ??= err; });
    socket.on('close', () => this.#onClose());
  }

  // ------------------------------------------------------------ plumbing

  /**
   * Sends {"id", "op", ...args} and resolves with the whole success reply
   * (its snake_case fields as they came); a failure reply rejects with its
   * LiminalError. For ops this client has no method for.
   */
  request(op, args = {}) {
    return this.#send(op, args, null);
  }

  /**
   * Sends line (one request, without its "\n") exactly as given, and
   * resolves with the reply it gets, success or failure, as an object. For
   * testing the daemon's handling of malformed input.
   */
  requestLine(line) {
    const bytes = Buffer.isBuffer(line) ? line : Buffer.from(String(line), 'utf8');
    if (bytes.includes(10)) return Promise.reject(new TypeError('a request line cannot contain "\\n"'));
    // The daemon ignores blank lines: one would get no reply.
    if (bytes.toString('latin1').trim() === '') return Promise.reject(new TypeError('a request line cannot be blank'));
    return this.#write(Buffer.concat([bytes, Buffer.from('\n')]), undefined, (reply) => reply, true);
  }

  #send(op, args, decode) {
    const id = this.#nextId++;
    let line;
    try {
      line = JSON.stringify({ ...args, id, op }) + '\n';
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#write(line, id, decode ?? ((reply) => reply), false);
  }

  #write(data, id, decode, raw) {
    if (this.#ended || this.#closing) {
      return Promise.reject(this.#ended ?? new ConnectionClosedError('liminald client is closed'));
    }
    return new Promise((resolve, reject) => {
      this.#pending.push({ id, resolve, reject, decode, raw });
      // The daemon reads at most 64 unanswered requests; Node buffers the rest.
      this.#socket.write(data);
    });
  }

  #onData(chunk) {
    let start = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
      let line = chunk.subarray(start, nl);
      if (this.#partial.length > 0) {
        this.#partial.push(line);
        line = Buffer.concat(this.#partial);
        this.#partial = [];
      }
      start = nl + 1;
      this.#onLine(line);
      if (this.#ended) return;
    }
    if (start < chunk.length) this.#partial.push(chunk.subarray(start));
  }

  #onLine(bytes) {
    if (bytes.length === 0) return;
    let msg;
    try {
      msg = JSON.parse(bytes.toString('utf8'));
    } catch (err) {
      this.#protocolError(`a line that is not JSON: ${err.message}`);
      return;
    }
    if (msg === null || typeof msg !== 'object') {
      this.#protocolError('a line that is not a JSON object');
      return;
    }
    if (typeof msg.ok !== 'boolean') {
      if (typeof msg.sub !== 'number') {
        this.#protocolError('a line that is neither a reply nor a push');
        return;
      }
      this.#onPush(msg);
      return;
    }
    const req = this.#pending.shift();
    if (req === undefined) {
      // Sent unasked: a refused connection (forbidden, or unavailable with
      // too many connections); the daemon closes it next.
      if (msg.ok) this.#protocolError('a reply to no request');
      else this.#serverError = errorFromWire(msg.error);
      return;
    }
    // The id is echoed, or null when the daemon could not read the request's
    // (line_too_long, malformed JSON).
    if (!req.raw && msg.id !== null && msg.id !== req.id) {
      this.#pending.unshift(req);
      this.#protocolError(`a reply with id ${JSON.stringify(msg.id)} to request ${req.id}`);
      return;
    }
    if (req.raw) req.resolve(msg);
    else if (!msg.ok) req.reject(errorFromWire(msg.error));
    else {
      let value;
      try {
        value = req.decode(msg);
      } catch (err) {
        req.reject(err);
        return;
      }
      req.resolve(value);
    }
  }

  #onPush(msg) {
    const sub = this.#subs.get(msg.sub);
    if (sub === undefined) return; // unsubscribed, or opened with request()
    if (msg.lagged === true) {
      sub[kEnd](new LaggedError(msg.sub, msg.next_pos, msg.next_seq));
      return;
    }
    if (msg.event && typeof msg.event === 'object') sub[kPush](decodeEvent(msg.event));
  }

  #protocolError(what) {
    this.#ended = new ConnectionClosedError(`liminald client: the daemon sent ${what}`);
    this.#socket.destroy();
  }

  #onClose() {
    let err = this.#ended ?? this.#serverError;
    const graceful = err === null && this.#closing;
    if (err === null) {
      err = graceful
        ? new ConnectionClosedError('liminald client is closed')
        : new ConnectionClosedError('liminald closed the connection', this.#ioError ? { cause: this.#ioError } : undefined);
    }
    this.#ended = err;
    for (const req of this.#pending.splice(0)) req.reject(err);
    for (const sub of [...this.#subs.values()]) sub[kEnd](graceful ? null : err);
    this.#subs.clear();
    this.#resolveClosed(graceful ? null : err);
  }

  [kForget](id, sub) {
    if (this.#subs.get(id) === sub) this.#subs.delete(id);
  }

  /**
   * Closes the connection: no new request is accepted, those in flight are
   * answered, then the daemon closes its end and subscriptions end. Resolves
   * once the connection is closed.
   */
  async close() {
    if (!this.#closing && !this.#ended) {
      this.#closing = true;
      this.#socket.end();
    }
    await this.closed;
  }

  // ------------------------------------------------------------ ops

  /** hello({ client }) or hello(client): { protocol, server: { name, version }, ops, limits: { maxLineBytes, ... } } */
  hello(options = {}) {
    const client = typeof options === 'string' ? options : options.client;
    return this.#send('hello', { client }, result);
  }

  /** Resolves once the daemon answered. */
  ping() {
    return this.#send('ping', {}, () => undefined);
  }

  /**
   * Records a delivery of messageId and tells what to do with it:
   * { decision: 'start', seq } (new; its message_received is at seq),
   * { decision: 'resume', resumeFrom } or { decision: 'skip' }. A retried
   * receive with expectedSeq that already landed is { decision: 'start',
   * seq, duplicate: true }. Protocol 2 adds { decision: 'busy', worker,
   * token, retryAfterMs } (another worker holds a live lease) and
   * { decision: 'quarantined', attempts, error }: run nothing for either.
   * fingerprint names the payload (stored by the first receive; another one
   * later rejects with FingerprintMismatchError); with withSteps, a resume
   * carries steps: [{ stepIndex, output }], the completed steps.
   *
   * Retention (a daemon run with --retain-finished and --retain-tombstones)
   * adds { decision: 'skip', compacted: true } for a message whose events
   * were compacted into a tombstone, and { decision: 'forgotten',
   * forgottenBefore }: the conversation does not know the message, and
   * sentAt (when it was first produced, epoch ms, such as the broker's
   * timestamp) is at or before the conversation's forgottenBefore, the
   * finish time of the newest tombstone it dropped. It may have been
   * processed and forgotten: nothing is appended, and the caller chooses
   * (receive it again without sentAt to start it, or set it aside). A
   * start carries forgottenBefore too when the conversation has one.
   */
  receive(conversation, messageId, { receivedAt, expectedSeq, fingerprint, sentAt, withSteps } = {}) {
    return this.#send('receive', {
      conversation, message_id: messageId, received_at: receivedAt, expected_seq: expectedSeq,
      fingerprint, sent_at: sentAt, with_steps: withSteps || undefined,
    }, decisionResult);
  }

  /** The decision receive would give, without recording anything. */
  decide(conversation, messageId, { fingerprint, sentAt, withSteps } = {}) {
    return this.#send('decide', {
      conversation, message_id: messageId, fingerprint, sent_at: sentAt, with_steps: withSteps || undefined,
    }, decisionResult);
  }

  /**
   * Records processing_started: { seq, duplicate, token }. With leaseMs it
   * takes a lease for worker, and also answers leaseExpiresAt: while it is
   * live, deliveries are busy and another worker's start rejects with
   * BusyError; once it lapsed, a start with a lease takes the message over.
   * lease() wraps this with renewals.
   */
  start(conversation, messageId, { expectedSeq, worker, leaseMs } = {}) {
    return this.#send('start', {
      conversation, message_id: messageId, expected_seq: expectedSeq, worker, lease_ms: leaseMs,
    }, writeResult);
  }

  /**
   * Records step stepIndex with its output (Buffer, Uint8Array or string):
   * { seq, duplicate }. With token, rejects with FencedError unless it is
   * the message's current token (likewise finish and fail).
   */
  step(conversation, messageId, stepIndex, output, { expectedSeq, token } = {}) {
    let b64;
    try {
      b64 = toBase64(output);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#send('step', {
      conversation, message_id: messageId, step_index: stepIndex, output: b64, expected_seq: expectedSeq, token,
    }, writeResult);
  }

  /** Records processing_finished: { seq, duplicate }. */
  finish(conversation, messageId, { expectedSeq, token } = {}) {
    return this.#send('finish', { conversation, message_id: messageId, expected_seq: expectedSeq, token }, writeResult);
  }

  /** Records error_occurred with the error text: { seq, duplicate }. */
  fail(conversation, messageId, error, { expectedSeq, token } = {}) {
    return this.#send('fail', {
      conversation, message_id: messageId, error, expected_seq: expectedSeq, token,
    }, writeResult);
  }

  /**
   * Extends the lease of token to leaseMs from now: { seq, duplicate,
   * leaseExpiresAt }. Rejects with FencedError when the token is not current
   * or the message is no longer in progress.
   */
  renew(conversation, messageId, token, leaseMs, { expectedSeq } = {}) {
    return this.#send('renew', {
      conversation, message_id: messageId, token, lease_ms: leaseMs, expected_seq: expectedSeq,
    }, writeResult);
  }

  /**
   * Releases a quarantined message: its attempts start again from 0 and its
   * next delivery resumes it. { seq, duplicate }; NotQuarantinedError for
   * a message that is not quarantined.
   */
  release(conversation, messageId, { reason, expectedSeq } = {}) {
    return this.#send('release', {
      conversation, message_id: messageId, reason, expected_seq: expectedSeq,
    }, writeResult);
  }

  /**
   * Starts messageId under a lease for worker, and resolves with the Lease,
   * which renews itself every renewEveryMs (default a third of leaseMs; 0
   * for never). Rejects as start does: BusyError while another worker holds
   * it, QuarantinedError, AlreadyFinishedError, UnknownMessageError.
   */
  async lease(conversation, messageId, { worker, leaseMs, renewEveryMs } = {}) {
    const started = await this.start(conversation, messageId, { worker, leaseMs });
    return new Lease(this, conversation, messageId, {
      worker, leaseMs, token: started.token, expiresAt: started.leaseExpiresAt, renewEveryMs,
    });
  }

  /**
   * Without messageId: { nextSeq, messages: { received, inProgress, errored,
   * finished, total }, compacted, forgottenBefore } (the messages it
   * compacted; the finish time of the newest tombstone it dropped, or
   * null). With it: { status, receivedAt, lastCompletedStep, steps:
   * [{ stepIndex, seq, output: Buffer }], error, attempts, token, worker,
   * leaseExpiresAt, quarantined, fingerprint, compacted } (compacted: a
   * tombstone, finished, with no steps and a null receivedAt).
   */
  state(conversation, messageId) {
    return this.#send('state', { conversation, message_id: messageId }, (reply) => {
      const state = result(reply);
      if (Array.isArray(state.steps)) {
        for (const s of state.steps) s.output = Buffer.from(s.output ?? '', 'base64');
      }
      return state;
    });
  }

  /** Up to limit events from fromSeq: { events, nextSeq } (read on from nextSeq). */
  read(conversation, { fromSeq, limit } = {}) {
    return this.#send('read', { conversation, from_seq: fromSeq, limit }, (reply) => ({
      events: reply.events.map(decodeEvent),
      nextSeq: reply.next_seq,
    }));
  }

  /**
   * Subscribes to one conversation's events, or to every conversation's
   * when conversation is omitted; from fromSeq (one conversation) or
   * fromPos, else from now. Resolves, once the daemon confirmed, with a
   * Subscription: an async iterator of events. `buffer` bounds the events
   * received and not yet read; past it the subscription ends with a
   * LaggedError.
   */
  subscribe(conversation, { fromSeq, fromPos, buffer = this.#subscriptionBuffer } = {}) {
    if (conversation !== null && typeof conversation === 'object') {
      return this.subscribe(undefined, conversation);
    }
    return this.#send('subscribe', { conversation, from_seq: fromSeq, from_pos: fromPos }, (reply) => {
      // Registered in the reader, before it reads the next line: the pushes
      // follow the reply at once.
      const sub = new Subscription(this, reply.sub, conversation ?? undefined, buffer);
      this.#subs.set(reply.sub, sub);
      return sub;
    });
  }

  /** Ends a subscription (a Subscription or its number); no event follows. */
  unsubscribe(sub) {
    const id = sub instanceof Subscription ? sub.id : sub;
    const s = this.#subs.get(id);
    if (s !== undefined) s[kEnd](null);
    return this.#send('unsubscribe', { sub: id }, () => undefined);
  }

  /**
   * Up to limit messages of a conversation, by id, after the id `after`,
   * filtered by status (received, in_progress, leased, errored, finished,
   * quarantined): { messages: [{ messageId, status, attempts,
   * lastCompletedStep, receivedAt, updatedAt, worker, leaseExpiresAt,
   * quarantined, compacted }], next } (next: the `after` of the next page,
   * or null).
   */
  messages(conversation, { status, after, limit } = {}) {
    return this.#send('messages', { conversation, status, after, limit }, result);
  }

  /**
   * Why a delivery would get the decision it would: decide's fields
   * (decision, resumeFrom, worker, ...), rule (such as 'leased' or
   * 'quarantined'), reason (one English sentence) and events (the message's).
   */
  explain(conversation, messageId, { fingerprint, sentAt, withSteps } = {}) {
    return this.#send('explain', {
      conversation, message_id: messageId, fingerprint, sent_at: sentAt, with_steps: withSteps || undefined,
    }, (reply) => {
      const { events, ...rest } = reply;
      const out = decisionResult(rest);
      out.events = (events ?? []).map(decodeEvent);
      return out;
    });
  }

  /** Conversations by name after `after`: [{ conversation, nextSeq, messages }]. */
  conversations({ after, limit } = {}) {
    return this.#send('conversations', { after, limit }, (reply) => camelize(reply.conversations));
  }

  /**
   * { conversations, messages, events, dbBytes, uptimeS, connections,
   * subscribers, commits: {...}, compacted, tombstones, tombstonesDropped,
   * forgottenBefore, compaction: { passes, failed, msTotal, msMax } }
   */
  stats() {
    return this.#send('stats', {}, result);
  }
}

// ---------------------------------------------------------------- leases

/**
 * A live lease on one message, held by one worker: made by client.lease(),
 * which started the message.
 *
 * An unref'd setInterval renews it every renewEveryMs (default a third of
 * the lease), so it stays held however long the work takes, without
 * keeping the process alive. Every write through it (step, finish, fail)
 * carries its token. If the lease lapsed anyway (the process stalled, the
 * renewals could not get through) and another worker took the message
 * over, the daemon refuses the old token: the write or renewal rejects
 * with FencedError and the lease is `lost`. A worker calls check() before
 * each side effect, so that it stops as soon as either sees it.
 *
 * Renewal stops on finish(), fail(), stop(), once lost, or when the
 * connection closed. A renewal that fails for another reason is kept in
 * renewError and tried again at the next tick.
 */
export class Lease {
  #client;
  #timer = null;
  #renewing = false;

  constructor(client, conversation, messageId, { worker, leaseMs, token, expiresAt, renewEveryMs }) {
    this.#client = client;
    this.conversation = conversation;
    this.messageId = messageId;
    this.worker = worker;
    this.leaseMs = leaseMs;
    /** The token every write carries. */
    this.token = token;
    /** When the lease expires unless renewed (epoch ms, the daemon's clock). */
    this.expiresAt = expiresAt;
    /** How many renewals succeeded. */
    this.renewals = 0;
    /** The error of the last renewal, if it failed for a reason other than fencing. */
    this.renewError = null;
    /** The FencedError that showed the lease lost, or null. */
    this.lost = null;
    const every = renewEveryMs ?? leaseMs / 3;
    if (every > 0) {
      this.#timer = setInterval(() => this.#tick(), Math.max(1, Math.floor(every)));
      this.#timer.unref();
    }
  }

  #tick() {
    if (this.#renewing) return; // one renewal at a time
    this.#renewing = true;
    this.renew().catch((err) => {
      if (err instanceof FencedError) return; // lost: renew() recorded it
      this.renewError = err;
      if (err instanceof ConnectionClosedError) this.stop(); // this client cannot reconnect
    }).finally(() => { this.#renewing = false; });
  }

  /** Throws the FencedError if the lease is known to be lost. */
  check() {
    if (this.lost) throw this.lost;
  }

  #fenced(err) {
    this.lost ??= err;
    this.stop();
  }

  async #write(send) {
    this.check();
    try {
      return await send();
    } catch (err) {
      if (err instanceof FencedError) this.#fenced(err);
      throw err;
    }
  }

  /** Renews the lease now (the interval calls this): { seq, duplicate, leaseExpiresAt }. */
  async renew() {
    const r = await this.#write(() => this.#client.renew(this.conversation, this.messageId, this.token, this.leaseMs));
    this.expiresAt = r.leaseExpiresAt;
    this.renewals += 1;
    this.renewError = null;
    return r;
  }

  /** Records a completed step with this lease's token. */
  step(stepIndex, output) {
    return this.#write(() => this.#client.step(this.conversation, this.messageId, stepIndex, output, { token: this.token }));
  }

  /** Stops renewing and records that the message is done. */
  finish() {
    this.stop();
    return this.#write(() => this.#client.finish(this.conversation, this.messageId, { token: this.token }));
  }

  /** Stops renewing and records that processing failed. */
  fail(error) {
    this.stop();
    return this.#write(() => this.#client.fail(this.conversation, this.messageId, error, { token: this.token }));
  }

  /**
   * Stops renewing (the lease then lapses after its length). A renewal
   * already sent is answered before any later request of the client.
   */
  stop() {
    if (this.#timer !== null) {
      clearInterval(this.#timer);
      this.#timer = null;
    }
  }
}
