// Types of the liminald package (index.js), written by hand: the package has
// no build step. test/types.test.js checks that every export of index.js,
// and every public method of its classes, is declared here, and nothing
// that index.js lacks.

/// <reference types="node" />

import type { Buffer } from 'node:buffer';

// ---------------------------------------------------------------- errors

/** Details a failure carries beside code, message and retryable (snake_case, as on the wire). */
export type ErrorDetails = Record<string, unknown>;

export interface LiminaldErrorOptions {
  retryable?: boolean;
  details?: ErrorDetails;
  cause?: unknown;
}

/**
 * Every error this client rejects with (but TypeErrors for arguments of the
 * wrong type): a failure reply of the daemon, or one the client found
 * itself (codes `unavailable`, `timeout`, `protocol`, `connection_closed`,
 * `lagged`, `lease_expired`).
 */
export declare class LiminaldError extends Error {
  constructor(code: string, message?: string, options?: LiminaldErrorOptions);
  readonly code: string;
  readonly retryable: boolean;
  readonly details: ErrorDetails;
}

export declare class BadRequestError extends LiminaldError {
  /** The argument at fault, when the daemon named one. */
  get field(): string | undefined;
}
export declare class LineTooLongError extends LiminaldError {}
export declare class UnknownOpError extends LiminaldError {}
export declare class UnknownMessageError extends LiminaldError {}
export declare class AlreadyFinishedError extends LiminaldError {}
export declare class StepConflictError extends LiminaldError {}
export declare class SequenceConflictError extends LiminaldError {
  /** The expected_seq the request gave. */
  get expected(): number;
  /** The conversation's next seq. */
  get actual(): number;
}
export declare class ForbiddenError extends LiminaldError {}
/**
 * unavailable (retryable): the daemon's store cannot write, or it refused a
 * connection beyond max_connections; or, from the client, the daemon at
 * `socket` could not be reached, or the connection was lost after the
 * request was `sent` by a call not safe to send twice.
 */
export declare class UnavailableError extends LiminaldError {
  /** The socket the client could not reach; undefined for the daemon's own unavailable. */
  get socket(): string | undefined;
  /** The op of the call, for the client's own unavailable. */
  get op(): string | undefined;
  /** True when the request was sent before the connection was lost: it may have taken effect. */
  get sent(): boolean;
}
export declare class ShuttingDownError extends LiminaldError {}
export declare class InternalError extends LiminaldError {}
/** busy (retryable): another worker holds a live lease on the message. */
export declare class BusyError extends LiminaldError {
  get worker(): string | null;
  get token(): number;
  get retryAfterMs(): number;
}
/** fenced: a token that is no longer the message's current one. */
export declare class FencedError extends LiminaldError {
  get token(): number;
  get currentToken(): number | null;
}
export declare class QuarantinedError extends LiminaldError {}
export declare class NotQuarantinedError extends LiminaldError {}
export declare class FingerprintMismatchError extends LiminaldError {
  get stored(): string;
}
/** A step output over the daemon's max_output_bytes, refused before it was sent (code bad_request, field output). */
export declare class OutputTooLargeError extends BadRequestError {
  constructor(size: number, limit: number, socket: string);
  /** The output's size in bytes. */
  get size(): number;
  /** The daemon's max_output_bytes. */
  get limit(): number;
}
/** A call needing a newer protocol than the daemon speaks, refused before it was sent (code protocol). */
export declare class ProtocolError extends LiminaldError {
  constructor(feature: string, need: number, have: number, socket: string);
  get feature(): string;
  get need(): number;
  get have(): number;
}
/** A call not answered within its timeout (code timeout, retryable). */
export declare class TimeoutError extends LiminaldError {
  constructor(op: string, timeoutMs: number, sent: boolean, socket: string);
  get op(): string;
  get timeoutMs(): number;
  /** Whether the request had been sent: a write that was may still take effect. */
  get sent(): boolean;
}
/** The client was closed, or (without reconnection, or on a protocol violation) its connection ended. */
export declare class ConnectionClosedError extends LiminaldError {
  constructor(message?: string, options?: LiminaldErrorOptions);
}
/** A subscription whose reader fell behind (code lagged, retryable). */
export declare class LaggedError extends LiminaldError {
  constructor(sub: number, nextPos: number, nextSeq?: number);
  get sub(): number;
  get nextPos(): number;
  get nextSeq(): number | undefined;
}
/** A Lease no renewal got through before it expired (code lease_expired). */
export declare class LeaseExpiredError extends LiminaldError {
  constructor(lease: Lease, cause?: unknown);
  get token(): number;
}

export type ErrorCode =
  | 'bad_request' | 'line_too_long' | 'unknown_op' | 'unknown_message' | 'already_finished'
  | 'step_conflict' | 'sequence_conflict' | 'forbidden' | 'unavailable' | 'shutting_down'
  | 'internal' | 'busy' | 'fenced' | 'quarantined' | 'not_quarantined' | 'fingerprint_mismatch';

/** The class of each wire error code. */
export declare const ERROR_CLASSES: Readonly<Record<ErrorCode, new (code: string, message?: string, options?: LiminaldErrorOptions) => LiminaldError>>;

/** The error of a failure reply's `error` object. */
export declare function errorFromWire(obj: unknown): LiminaldError;

// ---------------------------------------------------------------- socket, safety

/**
 * The socket a client talks to when given none, found as the daemon finds
 * its own: $LIMINAL_SOCKET, else $XDG_RUNTIME_DIR/liminald/liminald.sock,
 * else /run/liminald/liminald.sock for root, else /tmp/liminald-$UID/liminald.sock.
 */
export declare function defaultSocketPath(env?: Record<string, string | undefined>, uid?: number): string;

/**
 * Whether a request of op with these wire (snake_case) arguments may be sent
 * again after its connection was lost before the reply.
 */
export declare function retrySafe(op: string, args?: Record<string, unknown>): boolean;

// ---------------------------------------------------------------- results

export interface Event {
  conversation: string;
  seq: number;
  pos: number;
  ts: number;
  type: 'message_received' | 'processing_started' | 'step_completed' | 'processing_finished'
    | 'error_occurred' | 'lease_renewed' | 'message_released';
  messageId: string;
  receivedAt?: number;
  fingerprint?: string;
  worker?: string;
  leaseMs?: number;
  token?: number;
  reason?: string;
  stepIndex?: number;
  output?: Buffer;
  error?: string;
}

/** An event object of the wire: camelCased, its output a Buffer. */
export declare function decodeEvent(wire: Record<string, unknown>): Event;

export interface StepOutput {
  stepIndex: number;
  output: Buffer;
}

export type Decision =
  | { decision: 'start'; seq?: number; duplicate?: boolean; forgottenBefore?: number }
  | { decision: 'resume'; resumeFrom: number; steps?: StepOutput[] }
  | { decision: 'skip'; compacted?: boolean }
  | { decision: 'busy'; worker: string | null; token: number; retryAfterMs: number }
  | { decision: 'quarantined'; attempts: number; error: string | null }
  | { decision: 'forgotten'; forgottenBefore: number };

export type Explanation = Decision & {
  rule: 'never_seen' | 'forgotten' | 'finished' | 'compacted' | 'leased' | 'quarantined'
    | 'in_progress' | 'received' | 'errored';
  reason: string;
  events: Event[];
};

export interface WriteResult {
  seq: number;
  duplicate: boolean;
  /** start: the token of its processing_started. */
  token?: number;
  /** start with a lease, renew: when the lease expires (epoch ms, the daemon's clock). */
  leaseExpiresAt?: number;
}

export interface Hello {
  protocol: number;
  server: { name: string; version: string };
  ops: string[];
  limits: {
    maxLineBytes: number;
    maxInflight?: number;
    maxNameBytes?: number;
    maxErrorBytes?: number;
    readLimitMax?: number;
    conversationsLimitMax?: number;
    messagesLimitMax?: number;
    maxLeaseMs?: number;
    maxOutputBytes?: number;
    [limit: string]: number | undefined;
  };
}

export interface MessageCounts {
  received: number;
  inProgress: number;
  errored: number;
  finished: number;
  total: number;
}

export interface ConversationState {
  nextSeq: number;
  messages: MessageCounts;
  compacted: number;
  forgottenBefore: number | null;
}

export type MessageStatus = 'unknown' | 'received' | 'in_progress' | 'errored' | 'finished';

export interface MessageState {
  status: MessageStatus;
  receivedAt: number | null;
  lastCompletedStep: number | null;
  steps: Array<{ stepIndex: number; seq: number; output: Buffer }>;
  error: string | null;
  attempts: number;
  token: number | null;
  worker: string | null;
  leaseExpiresAt: number | null;
  quarantined: boolean;
  fingerprint: string | null;
  compacted: boolean;
}

export interface MessageSummary {
  messageId: string;
  status: Exclude<MessageStatus, 'unknown'>;
  attempts: number;
  lastCompletedStep: number | null;
  receivedAt: number | null;
  updatedAt: number;
  worker: string | null;
  leaseExpiresAt: number | null;
  quarantined: boolean;
  compacted: boolean;
}

export interface ConversationSummary {
  conversation: string;
  nextSeq: number;
  messages: number;
}

export interface Stats {
  conversations: number;
  messages: number;
  events: number;
  dbBytes: number;
  uptimeS: number;
  connections: number;
  subscribers: number;
  commits: Record<string, number>;
  compacted: number;
  tombstones: number;
  tombstonesDropped: number;
  forgottenBefore: number | null;
  compaction: { passes: number; failed: number; msTotal: number; msMax: number };
  [figure: string]: unknown;
}

// ---------------------------------------------------------------- options

/** What every call takes: its own timeout (0: none), and a signal that abandons it. */
export interface CallOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface ClientOptions {
  /** The daemon's socket (default: defaultSocketPath()). */
  socketPath?: string;
  /** How long a call waits for the daemon to come back (default 10000; 0: never dial again). */
  reconnectTimeoutMs?: number;
  /** How long a call waits for its reply (default 60000; 0: no limit). */
  callTimeoutMs?: number;
  /** Unread events a Subscription holds before it lags (default 65536). */
  subscriptionBuffer?: number;
  /** The name the client gives in the hello it asks. */
  clientName?: string;
}

export type Output = Buffer | Uint8Array | string;

export interface DecideOptions extends CallOptions {
  fingerprint?: string;
  sentAt?: number;
  withSteps?: boolean;
}

export interface ReceiveOptions extends DecideOptions {
  receivedAt?: number;
  expectedSeq?: number;
}

export interface StartOptions extends CallOptions {
  expectedSeq?: number;
  worker?: string;
  leaseMs?: number;
}

export interface TokenWriteOptions extends CallOptions {
  expectedSeq?: number;
  token?: number;
}

export interface LeaseOptions extends CallOptions {
  worker: string;
  leaseMs: number;
  /** How often to renew (default a third of leaseMs; 0: never). */
  renewEveryMs?: number;
}

export interface SubscribeOptions extends CallOptions {
  fromSeq?: number;
  fromPos?: number;
  buffer?: number;
}

// ---------------------------------------------------------------- classes

/** The events of a subscription, as an async iterator. */
export declare class Subscription implements AsyncIterableIterator<Event> {
  private constructor();
  /** The subscription's number on its connection. */
  readonly id: number;
  /** Its conversation, or undefined for every conversation. */
  readonly conversation: string | undefined;
  /** The pos of the last event received, or undefined before the first. */
  readonly lastPos: number | undefined;
  /** The seq of the last event received, or undefined before the first. */
  readonly lastSeq: number | undefined;
  /** Resolves (with the error that ended it, or null) once the subscription ended. */
  readonly closed: Promise<LiminaldError | null>;
  /** How many events are received and not yet read. */
  get buffered(): number;
  [Symbol.asyncIterator](): this;
  next(): Promise<IteratorResult<Event, undefined>>;
  return(): Promise<IteratorResult<Event, undefined>>;
  /** Unsubscribes (the events already received can still be read). */
  close(): Promise<void>;
}

/** A live lease on one message, held by one worker: made by client.lease(). */
export declare class Lease {
  private constructor();
  readonly conversation: string;
  readonly messageId: string;
  readonly worker: string;
  readonly leaseMs: number;
  /** The token every write carries. */
  readonly token: number;
  /** When the lease expires unless renewed (epoch ms, the daemon's clock). */
  readonly expiresAt: number;
  /** How many renewals succeeded. */
  readonly renewals: number;
  /** The error of the last renewal, if it failed for a reason other than fencing. */
  readonly renewError: Error | null;
  /** The error that showed the lease lost, or null. */
  readonly lost: FencedError | LeaseExpiredError | null;
  /** Aborts, with `lost` as its reason, once the lease is lost. */
  readonly signal: AbortSignal;
  /** Whether it is still renewed: neither finished, failed, stopped nor lost. */
  get active(): boolean;
  /** Throws `lost` if the lease is lost. */
  check(): void;
  /** Renews the lease now (the timer calls this). */
  renew(options?: { timeoutMs?: number }): Promise<WriteResult & { leaseExpiresAt: number }>;
  /** Records a completed step with this lease's token. */
  step(stepIndex: number, output: Output): Promise<WriteResult>;
  /** Stops renewing and records that the message is done. */
  finish(): Promise<WriteResult>;
  /** Stops renewing and records that processing failed. */
  fail(error: string): Promise<WriteResult>;
  /** Stops renewing; the lease lapses after its length. */
  stop(): void;
}

/** A client of liminald: one connection at a time, dialled again after the daemon restarts. */
export declare class Client {
  /** A client that connects on its first call. */
  constructor(options?: ClientOptions);
  /** Resolves once the client has ended: null after close(), else (without reconnection) the error it ended with. */
  readonly closed: Promise<LiminaldError | null>;
  /** The daemon's socket. */
  get socketPath(): string;
  /** How many connections the client has made. */
  get connects(): number;
  /** True while the client holds a connection it can send on. */
  get connected(): boolean;
  /** Dials once if not connected; rejects with UnavailableError naming the socket. */
  connect(): Promise<this>;
  /** The raw success reply (snake_case) of any op. */
  request(op: string, args?: Record<string, unknown>, options?: CallOptions): Promise<Record<string, unknown>>;
  /** The raw reply (success or failure) to one line sent as is. */
  requestLine(line: string | Buffer, options?: CallOptions): Promise<Record<string, unknown>>;
  /** Ends the client; calls not yet sent reject with ConnectionClosedError, those in flight are answered. */
  close(): Promise<void>;

  hello(options?: string | ({ client?: string } & CallOptions)): Promise<Hello>;
  ping(options?: CallOptions): Promise<void>;
  receive(conversation: string, messageId: string, options?: ReceiveOptions): Promise<Decision>;
  decide(conversation: string, messageId: string, options?: DecideOptions): Promise<Decision>;
  start(conversation: string, messageId: string, options?: StartOptions): Promise<WriteResult & { token: number }>;
  step(conversation: string, messageId: string, stepIndex: number, output: Output, options?: TokenWriteOptions): Promise<WriteResult>;
  finish(conversation: string, messageId: string, options?: TokenWriteOptions): Promise<WriteResult>;
  fail(conversation: string, messageId: string, error: string, options?: TokenWriteOptions): Promise<WriteResult>;
  renew(conversation: string, messageId: string, token: number, leaseMs: number, options?: { expectedSeq?: number } & CallOptions): Promise<WriteResult & { leaseExpiresAt: number }>;
  release(conversation: string, messageId: string, options?: { reason?: string; expectedSeq?: number } & CallOptions): Promise<WriteResult>;
  lease(conversation: string, messageId: string, options: LeaseOptions): Promise<Lease>;
  state(conversation: string, options?: CallOptions): Promise<ConversationState>;
  state(conversation: string, messageId: undefined, options?: CallOptions): Promise<ConversationState>;
  state(conversation: string, messageId: string, options?: CallOptions): Promise<MessageState>;
  read(conversation: string, options?: { fromSeq?: number; limit?: number } & CallOptions): Promise<{ events: Event[]; nextSeq: number }>;
  subscribe(options?: SubscribeOptions): Promise<Subscription>;
  subscribe(conversation: string | undefined, options?: SubscribeOptions): Promise<Subscription>;
  unsubscribe(subscription: Subscription, options?: CallOptions): Promise<void>;
  messages(conversation: string, options?: {
    status?: 'received' | 'in_progress' | 'leased' | 'errored' | 'finished' | 'quarantined';
    after?: string;
    limit?: number;
  } & CallOptions): Promise<{ messages: MessageSummary[]; next: string | null }>;
  explain(conversation: string, messageId: string, options?: DecideOptions): Promise<Explanation>;
  conversations(options?: { after?: string; limit?: number } & CallOptions): Promise<ConversationSummary[]>;
  stats(options?: CallOptions): Promise<Stats>;
}

/** Connects to the daemon; rejects with an UnavailableError naming the socket. */
export declare function connect(options?: ClientOptions): Promise<Client>;

/** The default number of unread events a Subscription holds before it lags. */
export declare const DEFAULT_SUBSCRIPTION_BUFFER: number;
/** How long, by default, a call waits for the daemon to come back. */
export declare const DEFAULT_RECONNECT_TIMEOUT_MS: number;
/** How long, by default, a call waits for its reply. */
export declare const DEFAULT_CALL_TIMEOUT_MS: number;
