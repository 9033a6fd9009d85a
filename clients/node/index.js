// liminald: a Node.js client for liminald, using only Node's standard library.
//
// The protocol (docs/PROTOCOL.md) is JSON lines on a unix socket. A Client
// keeps one connection at a time: requests are pipelined, each with an id
// of its own; the daemon answers them in request order, so the reader
// matches every reply to the oldest request waiting, and routes the lines
// pushed for subscriptions ({"sub": S, "event": ...}) to their Subscription.
//
//   import { connect } from 'liminald';
//   const client = await connect();          // the socket the daemon uses
//   const { decision, resumeFrom } = await client.receive('orders', 'm-17');
//   ...
//   await client.close();
//
// When the daemon restarts, the client dials again by itself, with backoff,
// for up to reconnectTimeoutMs; calls that are safe to send twice (reads,
// and writes the daemon answers as duplicates when they already landed:
// those with expectedSeq, and step, finish and fail with a token) are sent
// again on the new connection. Other calls whose request was sent before
// the connection broke reject with an UnavailableError naming the socket,
// as does every call while the daemon stays away. Every call has a
// timeout (callTimeoutMs, or its own timeoutMs).
//
// A worker holds a message under a lease (protocol 2):
//
//   const lease = await client.lease('orders', 'm-17', { worker: 'w1', leaseMs: 30_000 });
//   await doWork({ signal: lease.signal });  // aborted once the lease is lost
//   await lease.step(0, output);              // with the lease's token
//   await lease.finish();
//
// Results use camelCase names (message_id -> messageId, next_seq ->
// nextSeq); step outputs are Buffers (base64 on the wire). Integers are JS
// numbers: exact below 2^53, which seq, pos and epoch milliseconds are in
// practice. A failure rejects with a LiminaldError subclass; branch on the
// class or on err.code, never on err.message.

import net from 'node:net';
import path from 'node:path';
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';

// ---------------------------------------------------------------- errors

/**
 * Every error this client rejects with (but TypeErrors for arguments of
 * the wrong type): a failure reply of the daemon, with the `code`,
 * `retryable` and `details` (the error object's other fields) it carried,
 * or one the client found itself (codes `unavailable`, `timeout`,
 * `protocol`, `connection_closed`, `lagged`, `lease_expired`).
 */
export class LiminaldError extends Error {
  constructor(code, message, { retryable = false, details = {}, cause } = {}) {
    super(message || code, cause === undefined ? undefined : { cause });
    this.name = new.target.name;
    this.code = code;
    this.retryable = retryable;
    this.details = details;
  }
}

export class BadRequestError extends LiminaldError {
  /** The argument at fault, when the daemon named one. */
  get field() { return this.details.field; }
}
export class LineTooLongError extends LiminaldError {}
export class UnknownOpError extends LiminaldError {}
export class UnknownMessageError extends LiminaldError {}
export class AlreadyFinishedError extends LiminaldError {}
export class StepConflictError extends LiminaldError {}
export class SequenceConflictError extends LiminaldError {
  /** The expected_seq the request gave. */
  get expected() { return this.details.expected; }
  /** The conversation's next seq. */
  get actual() { return this.details.actual; }
}
export class ForbiddenError extends LiminaldError {}
/**
 * unavailable (retryable). From the daemon: its store cannot write now
 * (disk full, read-only, I/O error), or it refused a connection beyond
 * max_connections. From the client: the daemon at `socket` could not be
 * reached (down past the reconnect timeout, or the call's timeout), or
 * the connection was lost after the request was sent (`sent`) and the
 * call is not safe to send twice: it may or may not have taken effect.
 */
export class UnavailableError extends LiminaldError {
  /** The socket the client could not reach; undefined for the daemon's own unavailable. */
  get socket() { return this.details.socket; }
  /** The op of the call, for the client's own unavailable. */
  get op() { return this.details.op; }
  /** True when the request was sent before the connection was lost: it may have taken effect. */
  get sent() { return this.details.sent === true; }
}
export class ShuttingDownError extends LiminaldError {}
export class InternalError extends LiminaldError {}
/**
 * busy (retryable): another worker holds a live lease on the message. Try
 * again after retryAfterMs.
 */
export class BusyError extends LiminaldError {
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
export class FencedError extends LiminaldError {
  /** The token the request gave. */
  get token() { return this.details.token; }
  /** The message's current token (null if it has none). */
  get currentToken() { return this.details.current_token; }
}
/** quarantined: start of a message started max_attempts times without finishing. */
export class QuarantinedError extends LiminaldError {}
/** not_quarantined: release of a message that is not quarantined. */
export class NotQuarantinedError extends LiminaldError {}
/** fingerprint_mismatch: the message id was first received with another fingerprint. */
export class FingerprintMismatchError extends LiminaldError {
  /** The fingerprint the message was first received with. */
  get stored() { return this.details.stored; }
}

/**
 * A step output larger than the daemon's max_output_bytes (from hello),
 * refused before anything was sent: a bad_request naming the field
 * `output`, its `size` and the `limit`.
 */
export class OutputTooLargeError extends BadRequestError {
  constructor(size, limit, socket) {
    super('bad_request', `output is ${size} bytes, over the max_output_bytes of ${limit} of liminald at ${socket}; not sent`,
      { details: { field: 'output', size, limit, socket } });
  }

  /** The output's size in bytes. */
  get size() { return this.details.size; }
  /** The daemon's max_output_bytes. */
  get limit() { return this.details.limit; }
}

/**
 * A call that needs a newer protocol than the daemon at `socket` speaks
 * (its hello said `have`), refused before it was sent. A protocol-1
 * daemon ignores the fields it does not know: it would answer a start
 * with a lease ok, with no token and no lease.
 */
export class ProtocolError extends LiminaldError {
  constructor(feature, need, have, socket) {
    super('protocol', `${feature} needs protocol ${need}, but liminald at ${socket} speaks protocol ${have}; not sent`,
      { details: { feature, need, have, socket } });
  }

  /** What the call uses, such as 'start with worker, lease_ms'. */
  get feature() { return this.details.feature; }
  /** The protocol it needs. */
  get need() { return this.details.need; }
  /** The protocol the daemon's hello answered. */
  get have() { return this.details.have; }
}

/**
 * A call not answered within its timeout (retryable). `sent` tells whether
 * its request had been sent: a write that was may still take effect.
 */
export class TimeoutError extends LiminaldError {
  constructor(op, timeoutMs, sent, socket) {
    super('timeout', `${op}: no reply from liminald at ${socket} within ${timeoutMs} ms${sent ? ' (the request was sent, and may still take effect)' : ''}`,
      { retryable: true, details: { op, timeoutMs, sent, socket } });
  }

  get op() { return this.details.op; }
  get timeoutMs() { return this.details.timeoutMs; }
  get sent() { return this.details.sent; }
}

/**
 * The client was closed (close()), or, for a client that does not dial
 * again (reconnectTimeoutMs: 0) or a daemon that broke the protocol, its
 * connection ended.
 */
export class ConnectionClosedError extends LiminaldError {
  constructor(message = 'liminald connection closed', options = {}) {
    super('connection_closed', message, options);
  }
}

/**
 * A subscription ended because its reader fell behind (retryable).
 * Subscribe again from `nextPos` (or, for one conversation, `nextSeq`) to
 * miss nothing.
 */
export class LaggedError extends LiminaldError {
  constructor(sub, nextPos, nextSeq) {
    super('lagged', `subscription ${sub} lagged; subscribe again from pos ${nextPos}`,
      { retryable: true, details: { sub, nextPos, nextSeq } });
  }

  get sub() { return this.details.sub; }
  get nextPos() { return this.details.nextPos; }
  get nextSeq() { return this.details.nextSeq; }
}

/**
 * A Lease that could not be renewed before it expired (the daemon could
 * not be reached, or did not answer in time): another worker may have
 * taken the message over, so the work must stop.
 */
export class LeaseExpiredError extends LiminaldError {
  constructor(lease, cause) {
    super('lease_expired', `the lease of ${lease.worker ?? 'this worker'} on ${lease.messageId} (token ${lease.token}) `
      + `expired without a renewal${cause ? `: ${cause.message}` : ''}`,
    { details: { token: lease.token, conversation: lease.conversation, messageId: lease.messageId }, cause });
  }

  get token() { return this.details.token; }
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
 * its code, or a plain LiminaldError for a code this client does not know.
 */
export function errorFromWire(obj) {
  if (obj === null || typeof obj !== 'object') {
    return new InternalError('internal', 'failure reply without an error object', { retryable: true });
  }
  const { code, message, retryable, ...details } = obj;
  const Class = Object.hasOwn(ERROR_CLASSES, code) ? ERROR_CLASSES[code] : LiminaldError;
  return new Class(String(code), message, { retryable: retryable === true, details });
}

// ---------------------------------------------------------------- socket path

/**
 * The socket a client talks to when given none, found as the daemon finds
 * its own (SPEC §5): $LIMINAL_SOCKET, else
 * $XDG_RUNTIME_DIR/liminald/liminald.sock (an absolute XDG_RUNTIME_DIR
 * only), else /run/liminald/liminald.sock for root, else
 * /tmp/liminald-$UID/liminald.sock. An empty variable counts as unset.
 * (The daemon's config file is not read: pass socketPath if the socket is
 * set only there.)
 */
export function defaultSocketPath(env = process.env, uid = process.getuid()) {
  if (env.LIMINAL_SOCKET) return env.LIMINAL_SOCKET;
  const runtime = env.XDG_RUNTIME_DIR;
  if (runtime && path.isAbsolute(runtime)) return path.join(runtime, 'liminald', 'liminald.sock');
  if (uid === 0) return '/run/liminald/liminald.sock';
  return `/tmp/liminald-${uid}/liminald.sock`;
}

// ---------------------------------------------------------------- what may be sent again

const READ_OPS = new Set(['hello', 'ping', 'decide', 'state', 'read', 'messages', 'explain', 'conversations', 'stats', 'subscribe']);
const WRITE_OPS = new Set(['receive', 'start', 'step', 'finish', 'fail', 'renew', 'release']);
const PROTOCOL2_OPS = new Set(['renew', 'release', 'messages', 'explain']);
const PROTOCOL2_FIELDS = ['worker', 'lease_ms', 'token', 'fingerprint', 'with_steps', 'sent_at'];

const given = (v) => v !== undefined && v !== null && v !== false;

/**
 * Whether a request of op with these wire arguments may be sent again
 * after its connection was lost before the reply: a read, or a write the
 * daemon answers as a duplicate when it already landed (SPEC §2): one with
 * expected_seq, or a step, finish or fail with a token. A renew is not
 * (sent again, it renews again), nor an unsubscribe (its subscription
 * ended with its connection), nor an op this client does not know.
 */
export function retrySafe(op, args = {}) {
  if (READ_OPS.has(op)) return true;
  if (!WRITE_OPS.has(op)) return false;
  if (given(args.expected_seq)) return true;
  return given(args.token) && (op === 'step' || op === 'finish' || op === 'fail');
}

/** What a request uses of protocol 2, as a ProtocolError names it; '' for nothing. */
function protocol2Feature(op, args) {
  if (PROTOCOL2_OPS.has(op)) return op;
  const uses = PROTOCOL2_FIELDS.filter((f) => given(args[f]));
  return uses.length === 0 ? '' : `${op} with ${uses.join(', ')}`;
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

function toBuffer(output) {
  if (typeof output === 'string') return Buffer.from(output, 'utf8');
  if (output instanceof Uint8Array) return Buffer.from(output.buffer, output.byteOffset, output.byteLength);
  throw new TypeError('output must be a Buffer, a Uint8Array or a string');
}

// ---------------------------------------------------------------- subscriptions

const kPush = Symbol('push');
const kEnd = Symbol('end');
const kUnsubscribe = Symbol('unsubscribe');

/**
 * The events of a subscription, as an async iterator:
 *
 *   const sub = await client.subscribe('orders', { fromSeq: 0 });
 *   for await (const event of sub) { ... }   // break to unsubscribe
 *
 * The iteration ends when the subscription is unsubscribed or the client
 * closed. It throws, after the events received before it, a LaggedError
 * if the subscription lagged, or an UnavailableError if its connection was
 * lost (the daemon restarted): subscribe again from err.nextPos (or
 * err.nextSeq) to go on without a gap.
 */
export class Subscription {
  #client;
  #conn;
  #queue = [];
  #head = 0;
  #waiters = [];
  #ended = false;
  #error = null;
  #limit;
  #resolveClosed;

  constructor(client, conn, id, conversation, limit) {
    this.#client = client;
    this.#conn = conn;
    /** The subscription's number on its connection. */
    this.id = id;
    /** Its conversation, or undefined for every conversation. */
    this.conversation = conversation;
    /** The pos of the last event received, or undefined before the first. */
    this.lastPos = undefined;
    /** The seq of the last event received, or undefined before the first. */
    this.lastSeq = undefined;
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
    await this.#client.unsubscribe(this);
  }

  /** The position to subscribe again from: after the last event received. */
  #resumeDetails() {
    if (this.lastPos === undefined) return {};
    return { nextPos: this.lastPos + 1, ...(this.conversation !== undefined && { nextSeq: this.lastSeq + 1 }) };
  }

  /** Sends the unsubscribe on the subscription's connection; the client calls it. */
  [kUnsubscribe](send) {
    this[kEnd](null);
    return send(this.#conn);
  }

  /** Delivers a pushed event; the client's reader calls it. */
  [kPush](event) {
    if (this.#ended) return;
    this.lastPos = event.pos;
    this.lastSeq = event.seq;
    const waiter = this.#waiters.shift();
    if (waiter) {
      waiter.resolve({ value: event, done: false });
      return;
    }
    if (this.#limit > 0 && this.buffered >= this.#limit) {
      // The reader is too slow: end here, as the daemon would, from the first
      // event it misses, and unsubscribe in the background.
      this[kEnd](new LaggedError(this.id, event.pos, this.conversation === undefined ? undefined : event.seq));
      this.#client[kUnsubscribe](this.#conn, this.id).catch(() => {});
      return;
    }
    this.#queue.push(event);
  }

  /**
   * Ends the subscription, with err (thrown to the reader) or null. A lost
   * connection (lost set) becomes an UnavailableError telling where to
   * subscribe again from.
   */
  [kEnd](err, lost) {
    if (this.#ended) return;
    this.#ended = true;
    if (lost) {
      err = new UnavailableError('unavailable',
        `subscription ${this.id} ended with its connection to liminald at ${lost.socket}; subscribe again after the last event received`,
        { retryable: true, details: { socket: lost.socket, op: 'subscribe', sent: true, ...this.#resumeDetails() }, cause: lost.cause });
    }
    this.#conn.subs.delete(this.id);
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

// ---------------------------------------------------------------- one connection

/**
 * One connection of a Client, and what the client knows of it: the calls
 * sent on it and not yet answered, in order, its subscriptions, and the
 * daemon's hello once asked.
 */
class Conn {
  constructor(socket, hooks) {
    this.socket = socket;
    this.hooks = hooks; // { onReply, onClose }
    this.pending = []; // calls sent, not yet answered, in order
    this.subs = new Map(); // sub number -> Subscription
    this.partial = []; // the chunks of a line not yet ended by "\n"
    this.usable = true; // requests may be sent on it
    this.closedFlag = false;
    this.violation = null; // a ConnectionClosedError: the daemon broke the protocol
    this.serverError = null; // an error line the daemon sent unasked
    this.ioError = null;
    this.info = null; // the camelCased hello reply, once asked
    this.infoPromise = null;
    socket.on('data', (chunk) => this.onData(chunk));
    socket.on('error', (err) => { this.ioError ??= err; });
    // The daemon closed its end: nothing sent from now on would be read.
    socket.on('end', () => { this.usable = false; });
    socket.on('close', () => {
      this.usable = false;
      this.closedFlag = true;
      hooks.onClose(this);
    });
  }

  send(call) {
    call.sent = true;
    call.unsent = false;
    call.conn = this;
    this.pending.push(call);
    // The daemon reads at most 64 unanswered requests; Node buffers the rest.
    // A write that fails (EPIPE: the daemon closed the connection before
    // this client saw it) did not deliver the line whole, and the daemon
    // runs only whole lines: the call was not sent. Node calls this back
    // before the socket's 'close'.
    this.socket.write(call.line, (err) => {
      if (err) call.unsent = true;
    });
  }

  onData(chunk) {
    let start = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
      let line = chunk.subarray(start, nl);
      if (this.partial.length > 0) {
        this.partial.push(line);
        line = Buffer.concat(this.partial);
        this.partial = [];
      }
      start = nl + 1;
      this.onLine(line);
      if (this.violation) return;
    }
    if (start < chunk.length) this.partial.push(chunk.subarray(start));
  }

  onLine(bytes) {
    if (bytes.length === 0) return;
    let msg;
    try {
      msg = JSON.parse(bytes.toString('utf8'));
    } catch (err) {
      this.protocolError(`a line that is not JSON: ${err.message}`);
      return;
    }
    if (msg === null || typeof msg !== 'object') {
      this.protocolError('a line that is not a JSON object');
      return;
    }
    if (typeof msg.ok !== 'boolean') {
      if (typeof msg.sub !== 'number') {
        this.protocolError('a line that is neither a reply nor a push');
        return;
      }
      this.onPush(msg);
      return;
    }
    const call = this.pending[0];
    if (call === undefined) {
      // Sent unasked: a refused connection (forbidden, or unavailable with
      // too many connections); the daemon closes it next.
      if (msg.ok) this.protocolError('a reply to no request');
      else this.serverError = errorFromWire(msg.error);
      return;
    }
    // The id is echoed, or null when the daemon could not read the request's
    // (line_too_long, malformed JSON) or refused the connection before
    // reading it (forbidden, too many connections).
    if (!call.raw && msg.id !== null && msg.id !== call.id) {
      this.protocolError(`a reply with id ${JSON.stringify(msg.id)} to request ${call.id}`);
      return;
    }
    this.pending.shift();
    this.hooks.onReply(this, call, msg);
  }

  onPush(msg) {
    const sub = this.subs.get(msg.sub);
    if (sub === undefined) return; // unsubscribed, or opened with request()
    if (msg.lagged === true) {
      sub[kEnd](new LaggedError(msg.sub, msg.next_pos, msg.next_seq));
      return;
    }
    if (msg.event && typeof msg.event === 'object') sub[kPush](decodeEvent(msg.event));
  }

  protocolError(what) {
    this.violation = new ConnectionClosedError(`liminald client: the daemon sent ${what}`);
    this.usable = false;
    this.socket.destroy();
  }
}

// ---------------------------------------------------------------- client

/** The default number of unread events a Subscription holds before it lags. */
export const DEFAULT_SUBSCRIPTION_BUFFER = 65536;
/** How long, by default, a call waits for the daemon to come back once it is away. */
export const DEFAULT_RECONNECT_TIMEOUT_MS = 10_000;
/** How long, by default, a call waits for its reply. */
export const DEFAULT_CALL_TIMEOUT_MS = 60_000;
/** The bounds of the backoff between dials while the daemon is away. */
const MIN_BACKOFF_MS = 10;
const MAX_BACKOFF_MS = 1000;
/** Outputs up to this size are sent unchecked: no hello needed for them. */
const SMALL_OUTPUT = 64 << 10;

const noop = () => {};

/**
 * A Client of liminald: one connection at a time to its socket, dialled
 * again after the daemon restarts. Make it with connect(), or with
 * new Client(options), which connects on its first call.
 */
export class Client {
  #socketPath;
  #reconnectTimeoutMs;
  #callTimeoutMs;
  #subscriptionBuffer;
  #name;
  #conn = null; // the current connection, usable or not
  #conns = new Set(); // the connections not yet closed
  #retry = []; // calls to send again, in order, before the queue
  #queue = []; // calls not yet sent, in order
  #pumping = false;
  #closing = false;
  #ended = null; // why a client that does not dial again ended
  #dialError = null; // the error of the last dial
  #wake = null; // ends the backoff's sleep early
  #dialing = null; // the dial under way
  #connects = 0;
  #nextId = 1;
  #resolveClosed;

  /**
   * @param {object} [options]
   * @param {string} [options.socketPath] the daemon's socket (default: defaultSocketPath())
   * @param {number} [options.reconnectTimeoutMs] how long a call waits for the daemon to come back (0: never dial again)
   * @param {number} [options.callTimeoutMs] how long a call waits for its reply (0: no limit)
   * @param {number} [options.subscriptionBuffer] unread events a Subscription holds before it lags
   * @param {string} [options.clientName] the name the client gives in the hello it asks
   */
  constructor({
    socketPath = defaultSocketPath(), reconnectTimeoutMs = DEFAULT_RECONNECT_TIMEOUT_MS,
    callTimeoutMs = DEFAULT_CALL_TIMEOUT_MS, subscriptionBuffer = DEFAULT_SUBSCRIPTION_BUFFER,
    clientName = 'liminald-node',
  } = {}) {
    this.#socketPath = socketPath;
    this.#reconnectTimeoutMs = reconnectTimeoutMs;
    this.#callTimeoutMs = callTimeoutMs;
    this.#subscriptionBuffer = subscriptionBuffer;
    this.#name = clientName;
    /**
     * Resolves once the client has ended: with null after close(), else
     * (only for a client that does not dial again) with the error its
     * connection ended with, such as a ForbiddenError.
     */
    this.closed = new Promise((resolve) => { this.#resolveClosed = resolve; });
  }

  /** The daemon's socket. */
  get socketPath() { return this.#socketPath; }

  /** How many connections the client has made: 1 after connect(), more after restarts. */
  get connects() { return this.#connects; }

  /** True while the client holds a connection it can send on. */
  get connected() { return this.#usableConn() !== null; }

  // ------------------------------------------------------------ connections

  /**
   * Dials the socket once if the client holds no connection. Resolves with
   * the client; rejects with an UnavailableError naming the socket (its
   * cause: the connect error, such as ENOENT or ECONNREFUSED).
   */
  async connect() {
    if (this.#closing) throw new ConnectionClosedError('liminald client is closed');
    if (this.#usableConn() === null) {
      try {
        await this.#dial();
      } catch (err) {
        throw this.#unavailable('connect', err, false);
      }
    }
    return this;
  }

  #usableConn() {
    const conn = this.#conn;
    return conn !== null && conn.usable ? conn : null;
  }

  /** Dials once (or joins the dial under way); resolves with the new connection. */
  #dial() {
    if (this.#dialing) return this.#dialing;
    this.#dialing = new Promise((resolve, reject) => {
      const socket = net.createConnection({ path: this.#socketPath });
      const onError = (err) => {
        this.#dialError = err;
        reject(err);
      };
      socket.once('error', onError);
      socket.once('connect', () => {
        socket.off('error', onError);
        if (this.#closing) {
          socket.destroy();
          reject(new ConnectionClosedError('liminald client is closed'));
          return;
        }
        const conn = new Conn(socket, {
          onReply: (c, call, msg) => this.#onReply(c, call, msg),
          onClose: (c) => this.#onClose(c),
        });
        this.#conn = conn;
        this.#conns.add(conn);
        this.#connects += 1;
        this.#dialError = null;
        resolve(conn);
      });
    }).finally(() => { this.#dialing = null; });
    return this.#dialing;
  }

  #unavailable(op, cause, sent, why) {
    const what = why ?? (sent
      ? 'the connection was lost after the request was sent, so it may or may not have taken effect'
      : 'it cannot be reached');
    return new UnavailableError('unavailable',
      `${op}: liminald at ${this.#socketPath} unavailable: ${what}${cause ? `: ${cause.message}` : ''}`,
      { retryable: true, details: { socket: this.#socketPath, op, sent }, cause });
  }

  // ------------------------------------------------------------ calls

  /**
   * Sends {"id", "op", ...args} and resolves with the whole success reply
   * (its snake_case fields as they came); a failure reply rejects with its
   * LiminaldError. For ops this client has no method for. It is sent again
   * after a lost connection only when that is safe (retrySafe), and a
   * protocol-2 argument makes the client check the daemon's protocol first.
   */
  request(op, args = {}, { timeoutMs, signal } = {}) {
    return this.#call(op, args, null, { timeoutMs, signal });
  }

  /**
   * Sends line (one request, without its "\n") exactly as given, and
   * resolves with the reply it gets, success or failure, as an object. For
   * testing the daemon's handling of malformed input. Never sent twice.
   */
  requestLine(line, { timeoutMs, signal } = {}) {
    const bytes = Buffer.isBuffer(line) ? line : Buffer.from(String(line), 'utf8');
    if (bytes.includes(10)) return Promise.reject(new TypeError('a request line cannot contain "\\n"'));
    // The daemon ignores blank lines: one would get no reply.
    if (bytes.toString('latin1').trim() === '') return Promise.reject(new TypeError('a request line cannot be blank'));
    return this.#submit({
      op: 'request line', line: Buffer.concat([bytes, Buffer.from('\n')]), decode: (reply) => reply, raw: true,
      safe: false, feature: '', outputSize: 0,
    }, { timeoutMs, signal });
  }

  #call(op, args, decode, { timeoutMs, signal, outputSize = 0 } = {}) {
    const id = this.#nextId++;
    let line;
    try {
      line = JSON.stringify({ ...args, id, op }) + '\n';
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#submit({
      op, id, line, decode: decode ?? ((reply) => reply), raw: false,
      safe: retrySafe(op, args), feature: protocol2Feature(op, args), outputSize,
    }, { timeoutMs, signal });
  }

  #submit(call, { timeoutMs, signal }) {
    if (this.#closing || this.#ended) {
      return Promise.reject(this.#ended ?? new ConnectionClosedError('liminald client is closed'));
    }
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      call.resolve = resolve;
      call.reject = reject;
      call.settled = false;
      call.sent = false;
      call.conn = null;
      call.reconnectBy = undefined;
      call.onSettle = new Set();
      const limit = timeoutMs ?? this.#callTimeoutMs;
      if (limit > 0) {
        call.timer = setTimeout(() => this.#timedOut(call, limit), limit);
        call.timer.unref();
      }
      if (signal) {
        call.signal = signal;
        call.onAbort = () => this.#settle(call, signal.reason);
        signal.addEventListener('abort', call.onAbort, { once: true });
      }
      this.#enqueue(call);
    });
  }

  #needsInfo(call) {
    return call.feature !== '' || call.outputSize > SMALL_OUTPUT;
  }

  /** The error refusing call on a connection whose hello is info, or null. */
  #refusal(call, info) {
    const have = typeof info.protocol === 'number' ? info.protocol : 1;
    if (call.feature !== '' && have < 2) return new ProtocolError(call.feature, 2, have, this.#socketPath);
    const limit = info.limits?.maxOutputBytes;
    if (call.outputSize > SMALL_OUTPUT && typeof limit === 'number' && call.outputSize > limit) {
      return new OutputTooLargeError(call.outputSize, limit, this.#socketPath);
    }
    return null;
  }

  #enqueue(call) {
    if (!this.#pumping && this.#retry.length === 0 && this.#queue.length === 0) {
      // The common case: sent at once, so that calls made one after the
      // other without awaiting go out in that order.
      const conn = this.#usableConn();
      if (conn !== null && (!this.#needsInfo(call) || conn.info !== null)) {
        const refusal = this.#needsInfo(call) ? this.#refusal(call, conn.info) : null;
        if (refusal) this.#settle(call, refusal);
        else conn.send(call);
        return;
      }
    }
    this.#queue.push(call);
    this.#pump();
  }

  #settle(call, err, value) {
    if (call.settled) return;
    call.settled = true;
    if (call.timer) clearTimeout(call.timer);
    if (call.onAbort) call.signal.removeEventListener('abort', call.onAbort);
    for (const f of call.onSettle) f();
    if (err) call.reject(err);
    else call.resolve(value);
  }

  #timedOut(call, limit) {
    if (call.settled) return;
    if (!call.sent && this.#usableConn() === null && !this.#closing) {
      this.#settle(call, this.#unavailable(call.op, this.#dialError, false,
        `it could not be reached within the call's timeout of ${limit} ms`));
      return;
    }
    this.#settle(call, new TimeoutError(call.op, limit, call.sent, this.#socketPath));
  }

  /** The next call to send, first of the retries, then of the queue; settled ones are dropped. */
  #head() {
    for (const list of [this.#retry, this.#queue]) {
      while (list.length > 0 && list[0].settled) list.shift();
      if (list.length > 0) return list;
    }
    return null;
  }

  #waiting() {
    return [...this.#retry, ...this.#queue].filter((c) => !c.settled);
  }

  /**
   * Sends the queued calls in order, dialling again (with backoff) when the
   * client holds no connection, and asking hello first for a call that
   * needs it.
   */
  async #pump() {
    if (this.#pumping) return;
    this.#pumping = true;
    let backoff = 0;
    try {
      for (let list = this.#head(); list !== null; list = this.#head()) {
        const call = list[0];
        if (this.#closing || this.#ended) {
          const err = this.#ended ?? new ConnectionClosedError('liminald client is closed');
          for (const c of this.#waiting()) this.#settle(c, err);
          break;
        }
        let conn = this.#usableConn();
        if (conn === null) {
          if (this.#reconnectTimeoutMs <= 0 && this.#connects > 0) {
            // This client does not dial again: it ended with its connection.
            this.#end(this.#connEndError(this.#conn, null));
            continue;
          }
          const now = Date.now();
          for (const c of this.#waiting()) c.reconnectBy ??= now + Math.max(0, this.#reconnectTimeoutMs);
          try {
            conn = await this.#dial();
            backoff = 0;
          } catch (err) {
            if (err instanceof ConnectionClosedError) continue;
            const waiting = this.#waiting();
            const after = Date.now();
            for (const c of waiting) {
              if (after >= c.reconnectBy) {
                this.#settle(c, this.#unavailable(c.op, err, false,
                  `it could not be reached within the reconnect timeout of ${this.#reconnectTimeoutMs} ms`));
              }
            }
            const left = this.#waiting();
            if (left.length === 0) break;
            backoff = Math.min(Math.max(2 * backoff, MIN_BACKOFF_MS), MAX_BACKOFF_MS);
            const soonest = Math.min(...left.map((c) => c.reconnectBy)) - Date.now();
            await this.#sleep(Math.max(0, Math.min(backoff, soonest)));
            continue;
          }
        }
        if (this.#needsInfo(call)) {
          let info;
          try {
            info = await this.#raceSettled(call, this.#hello(conn));
          } catch (err) {
            if (err === kLost) continue; // the connection was lost: dial again
            list.shift();
            this.#settle(call, err);
            continue;
          }
          if (call.settled) continue;
          if (!conn.usable) continue;
          const refusal = this.#refusal(call, info);
          if (refusal) {
            list.shift();
            this.#settle(call, refusal);
            continue;
          }
          if (this.#head() !== list || list[0] !== call) continue; // a retry came first
        }
        list.shift();
        conn.send(call);
      }
    } finally {
      this.#pumping = false;
    }
    // Calls queued while the pump was finishing.
    if (this.#head() !== null && !this.#pumping) this.#pump();
  }

  /** Resolves with p, or (with undefined) once call settled first. */
  #raceSettled(call, p) {
    if (call.settled) return Promise.resolve(undefined);
    let done;
    const settled = new Promise((resolve) => { done = resolve; call.onSettle.add(resolve); });
    return Promise.race([p, settled]).finally(() => call.onSettle.delete(done));
  }

  #sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.#wake = null; resolve(); }, ms);
      this.#wake = () => {
        clearTimeout(timer);
        this.#wake = null;
        resolve();
      };
    });
  }

  /**
   * The daemon's hello on conn, asked once per connection (a restart may
   * bring another version). Rejects with kLost if the connection is lost.
   */
  #hello(conn) {
    if (conn.info !== null) return Promise.resolve(conn.info);
    conn.infoPromise ??= new Promise((resolve, reject) => {
      const id = this.#nextId++;
      const call = {
        op: 'hello', id, line: JSON.stringify({ id, op: 'hello', client: this.#name }) + '\n', raw: false,
        internal: true, settled: false, onSettle: new Set(),
        decode: (reply) => {
          conn.info = result(reply);
          return conn.info;
        },
        resolve, reject,
      };
      if (this.#callTimeoutMs > 0) {
        call.timer = setTimeout(() => this.#settle(call, new TimeoutError('hello', this.#callTimeoutMs, true, this.#socketPath)),
          this.#callTimeoutMs);
        call.timer.unref();
      }
      conn.send(call);
    });
    conn.infoPromise.catch(() => { if (conn.info === null) conn.infoPromise = null; });
    return conn.infoPromise;
  }

  #onReply(conn, call, msg) {
    this.#onReplyTo(conn, call, msg);
    // A connection no longer used (its daemon is stopping) is closed once
    // its last reply came.
    if (!conn.usable && conn.pending.length === 0 && !conn.socket.writableEnded) conn.socket.end();
  }

  #onReplyTo(conn, call, msg) {
    if (call.settled) return; // timed out or aborted: the reply has no taker
    if (call.raw) {
      this.#settle(call, null, msg);
      return;
    }
    if (!msg.ok) {
      const err = errorFromWire(msg.error);
      if (err.code === 'shutting_down' && this.#reconnectTimeoutMs > 0 && !this.#closing) {
        // The daemon is stopping: send nothing more on this connection, and
        // send the call to the next daemon if it may go twice.
        conn.usable = false;
        if (call.internal) {
          this.#settle(call, kLost);
          return;
        }
        if (call.safe) {
          this.#requeue(call);
          return;
        }
      }
      this.#settle(call, err);
      return;
    }
    let value;
    try {
      value = call.decode(msg, conn);
    } catch (err) {
      this.#settle(call, err);
      return;
    }
    this.#settle(call, null, value);
  }

  #requeue(call) {
    call.sent = false;
    call.conn = null;
    call.reconnectBy = undefined;
    this.#retry.push(call);
    this.#pump();
  }

  /** The error calls and subscriptions of conn end with when it closed and the client dials no more. */
  #connEndError(conn, cause) {
    if (conn?.violation) return conn.violation;
    if (conn?.serverError) return conn.serverError;
    cause ??= conn?.ioError ?? undefined;
    return new ConnectionClosedError(`liminald at ${this.#socketPath} closed the connection`, cause ? { cause } : {});
  }

  #onClose(conn) {
    this.#conns.delete(conn);
    const closing = this.#closing;
    const redial = this.#reconnectTimeoutMs > 0 && !closing;
    const pending = conn.pending.splice(0);
    const cause = conn.ioError ?? new Error('the connection was closed');
    for (const call of pending) {
      if (call.settled) continue;
      if (call.internal) {
        this.#settle(call, kLost);
      } else if (conn.violation) {
        this.#settle(call, conn.violation);
      } else if (closing) {
        this.#settle(call, new ConnectionClosedError('liminald client is closed'));
      } else if (!redial) {
        this.#settle(call, this.#connEndError(conn));
      } else if (call.safe || call.unsent) {
        this.#requeue(call);
      } else {
        this.#settle(call, this.#unavailable(call.op, cause, true));
      }
    }
    for (const sub of [...conn.subs.values()]) {
      if (closing) sub[kEnd](null);
      else if (redial && !conn.violation) sub[kEnd](null, { socket: this.#socketPath, cause });
      else sub[kEnd](this.#connEndError(conn));
    }
    conn.subs.clear();
    if (closing) {
      if (this.#conn === conn) this.#resolveClosed(null);
    } else if (!redial && this.#conn === conn) {
      this.#end(this.#connEndError(conn));
    }
  }

  /** Ends a client that does not dial again. */
  #end(err) {
    if (this.#ended) return;
    this.#ended = err;
    for (const c of this.#waiting()) this.#settle(c, err);
    this.#resolveClosed(err);
  }

  /**
   * Sends an unsubscribe on conn, the subscription's connection; resolves
   * at once if that connection is gone (its subscriptions ended with it).
   */
  [kUnsubscribe](conn, id, { timeoutMs, signal } = {}) {
    if (!conn.usable || this.#closing) return Promise.resolve(undefined);
    const callId = this.#nextId++;
    return new Promise((resolve, reject) => {
      const call = {
        op: 'unsubscribe', id: callId, line: JSON.stringify({ id: callId, op: 'unsubscribe', sub: id }) + '\n', raw: false,
        safe: false, settled: false, onSettle: new Set(), resolve, reject, decode: () => undefined,
      };
      const limit = timeoutMs ?? this.#callTimeoutMs;
      if (limit > 0) {
        call.timer = setTimeout(() => this.#timedOut(call, limit), limit);
        call.timer.unref();
      }
      if (signal) {
        call.signal = signal;
        call.onAbort = () => this.#settle(call, signal.reason);
        signal.addEventListener('abort', call.onAbort, { once: true });
      }
      conn.send(call);
    }).catch((err) => {
      // Lost with its connection, which ended the subscription anyway.
      if (err instanceof UnavailableError && err.socket !== undefined) return undefined;
      if (err instanceof ConnectionClosedError) return undefined;
      throw err;
    });
  }

  /**
   * Closes the client: calls not yet sent reject with
   * ConnectionClosedError, those in flight are answered, then the
   * connection closes and subscriptions end. Resolves once it is closed.
   */
  async close() {
    if (!this.#closing) {
      this.#closing = true;
      this.#wake?.();
      for (const c of this.#waiting()) this.#settle(c, new ConnectionClosedError('liminald client is closed'));
      const conn = this.#conn;
      for (const other of this.#conns) {
        if (other !== conn && !other.socket.writableEnded) other.socket.end();
      }
      if (this.#ended) {
        // Already ended (a client that does not dial again).
      } else if (conn === null || conn.closedFlag) {
        this.#resolveClosed(null);
      } else {
        conn.usable = false;
        conn.socket.end();
      }
    }
    await this.closed;
  }

  // ------------------------------------------------------------ ops

  /**
   * hello({ client }) or hello(client): { protocol, server: { name, version },
   * ops, limits: { maxLineBytes, maxOutputBytes, ... } }.
   */
  hello(options = {}) {
    const { client, timeoutMs, signal } = typeof options === 'string' ? { client: options } : options;
    return this.#call('hello', { client }, (reply, conn) => {
      conn.info = result(reply);
      return result(reply);
    }, { timeoutMs, signal });
  }

  /** Resolves once the daemon answered. */
  ping({ timeoutMs, signal } = {}) {
    return this.#call('ping', {}, () => undefined, { timeoutMs, signal });
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
   *
   * Without expectedSeq it is not sent twice: if the connection is lost
   * after it was sent, it rejects with UnavailableError (sent: true).
   */
  receive(conversation, messageId, { receivedAt, expectedSeq, fingerprint, sentAt, withSteps, timeoutMs, signal } = {}) {
    return this.#call('receive', {
      conversation, message_id: messageId, received_at: receivedAt, expected_seq: expectedSeq,
      fingerprint, sent_at: sentAt, with_steps: withSteps || undefined,
    }, decisionResult, { timeoutMs, signal });
  }

  /** The decision receive would give, without recording anything. */
  decide(conversation, messageId, { fingerprint, sentAt, withSteps, timeoutMs, signal } = {}) {
    return this.#call('decide', {
      conversation, message_id: messageId, fingerprint, sent_at: sentAt, with_steps: withSteps || undefined,
    }, decisionResult, { timeoutMs, signal });
  }

  /**
   * Records processing_started: { seq, duplicate, token }. With leaseMs it
   * takes a lease for worker, and also answers leaseExpiresAt: while it is
   * live, deliveries are busy and another worker's start rejects with
   * BusyError; once it lapsed, a start with a lease takes the message over.
   * lease() wraps this with renewals. worker and leaseMs need protocol 2:
   * against an older daemon it rejects with ProtocolError, unsent.
   */
  start(conversation, messageId, { expectedSeq, worker, leaseMs, timeoutMs, signal } = {}) {
    return this.#call('start', {
      conversation, message_id: messageId, expected_seq: expectedSeq, worker, lease_ms: leaseMs,
    }, writeResult, { timeoutMs, signal });
  }

  /**
   * Records step stepIndex with its output (Buffer, Uint8Array or string):
   * { seq, duplicate }. With token, rejects with FencedError unless it is
   * the message's current token (likewise finish and fail). An output over
   * the daemon's max_output_bytes rejects with OutputTooLargeError, unsent.
   */
  step(conversation, messageId, stepIndex, output, { expectedSeq, token, timeoutMs, signal } = {}) {
    let bytes;
    try {
      bytes = toBuffer(output);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#call('step', {
      conversation, message_id: messageId, step_index: stepIndex, output: bytes.toString('base64'),
      expected_seq: expectedSeq, token,
    }, writeResult, { timeoutMs, signal, outputSize: bytes.length });
  }

  /** Records processing_finished: { seq, duplicate }. */
  finish(conversation, messageId, { expectedSeq, token, timeoutMs, signal } = {}) {
    return this.#call('finish', { conversation, message_id: messageId, expected_seq: expectedSeq, token },
      writeResult, { timeoutMs, signal });
  }

  /** Records error_occurred with the error text: { seq, duplicate }. */
  fail(conversation, messageId, error, { expectedSeq, token, timeoutMs, signal } = {}) {
    return this.#call('fail', {
      conversation, message_id: messageId, error, expected_seq: expectedSeq, token,
    }, writeResult, { timeoutMs, signal });
  }

  /**
   * Extends the lease of token to leaseMs from now: { seq, duplicate,
   * leaseExpiresAt }. Rejects with FencedError when the token is not current
   * or the message is no longer in progress.
   */
  renew(conversation, messageId, token, leaseMs, { expectedSeq, timeoutMs, signal } = {}) {
    return this.#call('renew', {
      conversation, message_id: messageId, token, lease_ms: leaseMs, expected_seq: expectedSeq,
    }, writeResult, { timeoutMs, signal });
  }

  /**
   * Releases a quarantined message: its attempts start again from 0 and its
   * next delivery resumes it. { seq, duplicate }; NotQuarantinedError for
   * a message that is not quarantined.
   */
  release(conversation, messageId, { reason, expectedSeq, timeoutMs, signal } = {}) {
    return this.#call('release', {
      conversation, message_id: messageId, reason, expected_seq: expectedSeq,
    }, writeResult, { timeoutMs, signal });
  }

  /**
   * Starts messageId under a lease for worker, and resolves with the Lease,
   * which renews itself every renewEveryMs (default a third of leaseMs; 0
   * for never) and aborts its signal once the lease is lost. Rejects as
   * start does: BusyError while another worker holds it, QuarantinedError,
   * AlreadyFinishedError, UnknownMessageError, ProtocolError against a
   * protocol-1 daemon.
   */
  async lease(conversation, messageId, { worker, leaseMs, renewEveryMs, timeoutMs, signal } = {}) {
    const sentAt = performance.now();
    const started = await this.start(conversation, messageId, { worker, leaseMs, timeoutMs, signal });
    return new Lease(this, conversation, messageId, {
      worker, leaseMs, token: started.token, expiresAt: started.leaseExpiresAt, renewEveryMs, startedAt: sentAt,
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
  state(conversation, messageId, options = {}) {
    if (messageId !== null && typeof messageId === 'object') return this.state(conversation, undefined, messageId);
    const { timeoutMs, signal } = options;
    return this.#call('state', { conversation, message_id: messageId }, (reply) => {
      const state = result(reply);
      if (Array.isArray(state.steps)) {
        for (const s of state.steps) s.output = Buffer.from(s.output ?? '', 'base64');
      }
      return state;
    }, { timeoutMs, signal });
  }

  /** Up to limit events from fromSeq: { events, nextSeq } (read on from nextSeq). */
  read(conversation, { fromSeq, limit, timeoutMs, signal } = {}) {
    return this.#call('read', { conversation, from_seq: fromSeq, limit }, (reply) => ({
      events: reply.events.map(decodeEvent),
      nextSeq: reply.next_seq,
    }), { timeoutMs, signal });
  }

  /**
   * Subscribes to one conversation's events, or to every conversation's
   * when conversation is omitted; from fromSeq (one conversation) or
   * fromPos, else from now. Resolves, once the daemon confirmed, with a
   * Subscription: an async iterator of events. `buffer` bounds the events
   * received and not yet read; past it the subscription ends with a
   * LaggedError. A subscription ends with its connection.
   */
  subscribe(conversation, { fromSeq, fromPos, buffer = this.#subscriptionBuffer, timeoutMs, signal } = {}) {
    if (conversation !== null && typeof conversation === 'object') {
      return this.subscribe(undefined, conversation);
    }
    return this.#call('subscribe', { conversation, from_seq: fromSeq, from_pos: fromPos }, (reply, conn) => {
      // Registered in the reader, before it reads the next line: the pushes
      // follow the reply at once.
      const sub = new Subscription(this, conn, reply.sub, conversation ?? undefined, buffer);
      conn.subs.set(reply.sub, sub);
      return sub;
    }, { timeoutMs, signal });
  }

  /** Ends a subscription (a Subscription); no event follows. */
  unsubscribe(sub, options = {}) {
    if (!(sub instanceof Subscription)) {
      return Promise.reject(new TypeError('unsubscribe takes the Subscription that subscribe() resolved with'));
    }
    return sub[kUnsubscribe]((conn) => this[kUnsubscribe](conn, sub.id, options));
  }

  /**
   * Up to limit messages of a conversation, by id, after the id `after`,
   * filtered by status (received, in_progress, leased, errored, finished,
   * quarantined): { messages: [{ messageId, status, attempts,
   * lastCompletedStep, receivedAt, updatedAt, worker, leaseExpiresAt,
   * quarantined, compacted }], next } (next: the `after` of the next page,
   * or null).
   */
  messages(conversation, { status, after, limit, timeoutMs, signal } = {}) {
    return this.#call('messages', { conversation, status, after, limit }, result, { timeoutMs, signal });
  }

  /**
   * Why a delivery would get the decision it would: decide's fields
   * (decision, resumeFrom, worker, ...), rule (such as 'leased' or
   * 'quarantined'), reason (one English sentence) and events (the message's).
   */
  explain(conversation, messageId, { fingerprint, sentAt, withSteps, timeoutMs, signal } = {}) {
    return this.#call('explain', {
      conversation, message_id: messageId, fingerprint, sent_at: sentAt, with_steps: withSteps || undefined,
    }, (reply) => {
      const { events, ...rest } = reply;
      const out = decisionResult(rest);
      out.events = (events ?? []).map(decodeEvent);
      return out;
    }, { timeoutMs, signal });
  }

  /** Conversations by name after `after`: [{ conversation, nextSeq, messages }]. */
  conversations({ after, limit, timeoutMs, signal } = {}) {
    return this.#call('conversations', { after, limit }, (reply) => camelize(reply.conversations), { timeoutMs, signal });
  }

  /**
   * { conversations, messages, events, dbBytes, uptimeS, connections,
   * subscribers, commits: {...}, compacted, tombstones, tombstonesDropped,
   * forgottenBefore, compaction: { passes, failed, msTotal, msMax } }
   */
  stats({ timeoutMs, signal } = {}) {
    return this.#call('stats', {}, result, { timeoutMs, signal });
  }
}

/** The rejection of an internal call whose connection was lost. */
const kLost = Symbol('lost');

/**
 * Connects to the daemon at socketPath (default: defaultSocketPath()).
 * Resolves with a Client once connected; rejects with an UnavailableError
 * naming the socket, whose cause is the connect error (ENOENT,
 * ECONNREFUSED, ...). Options as for new Client().
 */
export function connect(options = {}) {
  return new Client(options).connect();
}

// ---------------------------------------------------------------- leases

/**
 * A live lease on one message, held by one worker: made by client.lease(),
 * which started the message.
 *
 * An unref'd timer renews it every renewEveryMs (default a third of the
 * lease), so it stays held however long the work takes, without keeping
 * the process alive. Every write through it (step, finish, fail) carries
 * its token, so the daemon refuses it with FencedError once another
 * worker took the message over.
 *
 * The lease is lost, and `signal` aborts with the reason, when a renewal
 * or a write is fenced (another worker took the message over), or, with
 * renewals on, when the lease expired without a renewal getting through
 * (LeaseExpiredError: the daemon could not be reached in time, so another
 * worker may have it). Hand `signal` to the work, and call check() before
 * each side effect, so that the work stops as soon as the loss is known.
 *
 * Renewal stops on finish(), fail(), stop(), once lost, or when the client
 * is closed. A renewal that fails for a passing reason (the daemon
 * restarting) is kept in renewError and tried again at the next tick.
 */
export class Lease {
  #client;
  #timer = null;
  #expiryTimer = null;
  #renewing = null;
  #stopped = false;
  #abort = new AbortController();
  #deadline; // performance.now() by which the lease surely expires unless renewed

  constructor(client, conversation, messageId, { worker, leaseMs, token, expiresAt, renewEveryMs, startedAt = performance.now() }) {
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
    /** The error that showed the lease lost (FencedError or LeaseExpiredError), or null. */
    this.lost = null;
    /** Aborts, with the error of `lost` as its reason, once the lease is lost. */
    this.signal = this.#abort.signal;
    // The daemon committed the start after it was sent: by this clock the
    // lease cannot expire before startedAt + leaseMs.
    this.#deadline = startedAt + leaseMs;
    const every = renewEveryMs ?? leaseMs / 3;
    if (every > 0) {
      this.#timer = setInterval(() => this.#tick(), Math.max(1, Math.floor(every)));
      this.#timer.unref();
      this.#armExpiry();
    }
  }

  /** Whether the lease is still renewed: neither finished, failed, stopped nor lost. */
  get active() { return !this.#stopped && this.lost === null; }

  /**
   * Watches the deadline: if it passes while the last renewal failed and
   * none is under way, one more renewal decides at once.
   */
  #armExpiry() {
    if (this.#expiryTimer !== null) clearTimeout(this.#expiryTimer);
    this.#expiryTimer = setTimeout(() => {
      this.#expiryTimer = null;
      if (this.active && this.renewError !== null) this.#tick();
    }, Math.max(0, Math.ceil(this.#deadline - performance.now())));
    this.#expiryTimer.unref();
  }

  #tick() {
    if (this.#renewing !== null || !this.active) return; // one renewal at a time
    this.#renewing = this.#renewInBackground().finally(() => { this.#renewing = null; });
  }

  async #renewInBackground() {
    // A renewal waits no longer than the lease has left, or, once that is
    // (nearly) past, a second: it then decides whether the lease was lost.
    const left = this.#deadline - performance.now();
    const timeoutMs = Math.max(Math.ceil(left), 1000);
    try {
      await this.renew({ timeoutMs });
    } catch (err) {
      if (err instanceof FencedError || err instanceof LeaseExpiredError) return; // lost: renew() recorded it
      this.renewError = err;
      if (err instanceof ConnectionClosedError) {
        this.stop(); // the client was closed
        return;
      }
      if (this.active && performance.now() >= this.#deadline) this.#lose(new LeaseExpiredError(this, err));
      else if (this.active) this.#armExpiry();
    }
  }

  /** Throws the error that showed the lease lost, if it is. */
  check() {
    if (this.lost) throw this.lost;
  }

  #lose(err) {
    if (this.lost === null) {
      this.lost = err;
      this.#abort.abort(err);
    }
    this.stop();
  }

  async #write(send) {
    this.check();
    try {
      return await send();
    } catch (err) {
      if (err instanceof FencedError) this.#lose(err);
      throw err;
    }
  }

  /**
   * Renews the lease now (the timer calls this): { seq, duplicate,
   * leaseExpiresAt }. A renewal is not sent twice: if the connection is
   * lost after it was sent, it rejects with UnavailableError.
   */
  async renew({ timeoutMs } = {}) {
    const sentAt = performance.now();
    const r = await this.#write(() => this.#client.renew(this.conversation, this.messageId, this.token, this.leaseMs, { timeoutMs }));
    this.expiresAt = r.leaseExpiresAt;
    this.renewals += 1;
    this.renewError = null;
    this.#deadline = Math.max(this.#deadline, sentAt + this.leaseMs);
    if (this.#timer !== null) this.#armExpiry();
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
   * Stops renewing (the lease then lapses after its length; the protocol
   * has no op to hand it back sooner: fail() makes the message free for
   * another start at once). A renewal already sent is answered before any
   * later request of the client.
   */
  stop() {
    this.#stopped = true;
    if (this.#timer !== null) {
      clearInterval(this.#timer);
      this.#timer = null;
    }
    if (this.#expiryTimer !== null) {
      clearTimeout(this.#expiryTimer);
      this.#expiryTimer = null;
    }
  }
}
