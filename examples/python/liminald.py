"""A small Python client for liminald, standard library only.

liminald keeps a durable, per-conversation event log of how an application
processes messages, and tells a redelivered message whether to ``start``,
``resume`` (at a step) or ``skip``.  This module speaks its protocol (JSON
lines over a unix socket, see docs/PROTOCOL.md) with one method per op::

    from liminald import Client

    with Client() as c:                       # the daemon's default socket
        d = c.receive("orders", "m-17")
        if d.action in ("start", "resume"):
            with c.lease("orders", "m-17", "worker-1", 30_000) as lease:
                lease.step(0, b"charged")     # refused (Fenced) once another
                lease.finish()                # worker took the message over

A :class:`Lease` (protocol 2) holds a message for one worker: it is renewed
from a background thread at a third of its length, and its token goes with
every write, so that a worker whose lease lapsed and was taken over is
refused (:class:`Fenced`) instead of writing over its successor.  Protocol-1
use (``start``, ``step``, ``finish`` without a worker or token) works as
before.

A failure reply raises a subclass of :class:`LiminalError`, one per error
code.  Socket-level failures (no daemon, the connection broke) raise
:class:`OSError` (``ConnectionError``, ``FileNotFoundError``...); the client
then reconnects on its next call.  The client never retries a request on its
own: write with ``expected_seq`` and retry yourself when ``err.retryable``.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

__all__ = [
    "Client", "Lease", "Subscription", "Lagged", "Decision", "Ack", "Event", "Step",
    "MessageState", "ConversationState", "ConversationInfo", "MessageInfo",
    "Explanation", "default_socket_path",
    "LiminalError", "BadRequest", "LineTooLong", "UnknownOp", "UnknownMessage",
    "AlreadyFinished", "StepConflict", "SequenceConflict", "Forbidden",
    "Unavailable", "ShuttingDown", "Internal", "Busy", "Fenced", "Quarantined",
    "NotQuarantined", "FingerprintMismatch",
]


# --------------------------------------------------------------------------
# Errors


class LiminalError(Exception):
    """A failure reply from liminald.

    ``code`` is the stable wire code (branch on it, or on the subclass, never
    on ``message``); ``retryable`` says whether the same request may succeed
    if sent again; ``details`` holds the error object's other fields (such as
    ``field`` for bad_request, ``expected`` and ``actual`` for
    sequence_conflict).  A code this module does not know raises a plain
    LiminalError.
    """

    code: Optional[str] = None  # the code of a subclass

    def __init__(self, code: str, message: str, retryable: bool = False,
                 details: Optional[dict] = None):
        super().__init__(code, message, retryable, details or {})
        self.code = code
        self.message = message
        self.retryable = bool(retryable)
        self.details = dict(details or {})

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    @classmethod
    def from_wire(cls, err: Any) -> "LiminalError":
        """Builds the exception for the "error" object of a failure reply."""
        if not isinstance(err, dict):
            return Internal("internal", f"malformed error object: {err!r}", False, {})
        err = dict(err)
        code = str(err.pop("code", ""))
        message = str(err.pop("message", ""))
        retryable = bool(err.pop("retryable", False))
        return _ERRORS.get(code, LiminalError)(code, message, retryable, err)


class BadRequest(LiminalError):
    """bad_request: malformed JSON, or a missing or invalid argument."""
    code = "bad_request"

    @property
    def field(self) -> Optional[str]:
        """The argument at fault, when the daemon names one."""
        return self.details.get("field")


class LineTooLong(LiminalError):
    """line_too_long: a request line over the daemon's limit."""
    code = "line_too_long"


class UnknownOp(LiminalError):
    """unknown_op: no such op."""
    code = "unknown_op"


class UnknownMessage(LiminalError):
    """unknown_message: start, step, finish or fail for a message never received."""
    code = "unknown_message"


class AlreadyFinished(LiminalError):
    """already_finished: start, step or fail after finish."""
    code = "already_finished"


class StepConflict(LiminalError):
    """step_conflict: a completed step recorded again with other output."""
    code = "step_conflict"


class SequenceConflict(LiminalError):
    """sequence_conflict: expected_seq is not the conversation's next seq."""
    code = "sequence_conflict"

    @property
    def expected(self) -> Optional[int]:
        """The expected_seq the request gave."""
        return self.details.get("expected")

    @property
    def actual(self) -> Optional[int]:
        """The conversation's next seq."""
        return self.details.get("actual")


class Forbidden(LiminalError):
    """forbidden: this peer is not allowed; the daemon closed the connection."""
    code = "forbidden"


class Unavailable(LiminalError):
    """unavailable (retryable): the store cannot write now, or too many connections."""
    code = "unavailable"


class ShuttingDown(LiminalError):
    """shutting_down (retryable): the daemon is stopping."""
    code = "shutting_down"


class Internal(LiminalError):
    """internal (retryable): a bug in the daemon, or a reply this client cannot read."""
    code = "internal"


class Busy(LiminalError):
    """busy (retryable): another worker holds a live lease on the message
    (a ``start`` by another or no worker).  Try again after
    ``retry_after_ms``, when the lease may have lapsed."""
    code = "busy"

    @property
    def worker(self) -> Optional[str]:
        """The worker holding the lease (None if it gave no name)."""
        return self.details.get("worker")

    @property
    def token(self) -> Optional[int]:
        """The token of the lease held."""
        return self.details.get("token")

    @property
    def retry_after_ms(self) -> Optional[int]:
        """Milliseconds until the lease expires, unless it is renewed."""
        return self.details.get("retry_after_ms")


class Fenced(LiminalError):
    """fenced: a write or renew with a token that is no longer the message's
    current one: another worker took the message over after this lease
    lapsed (or the message is no longer in progress, for renew).  The worker
    holding ``token`` must stop, with no further side effects."""
    code = "fenced"

    @property
    def token(self) -> Optional[int]:
        """The token the request gave."""
        return self.details.get("token")

    @property
    def current_token(self) -> Optional[int]:
        """The message's current token (None if it has none)."""
        return self.details.get("current_token")


class Quarantined(LiminalError):
    """quarantined: ``start`` of a message started max_attempts times
    without finishing; it stays out of the way until it is released."""
    code = "quarantined"


class NotQuarantined(LiminalError):
    """not_quarantined: ``release`` of a message that is not quarantined."""
    code = "not_quarantined"


class FingerprintMismatch(LiminalError):
    """fingerprint_mismatch: the message id was first received with another
    fingerprint, so it names another payload."""
    code = "fingerprint_mismatch"

    @property
    def stored(self) -> Optional[str]:
        """The fingerprint the message was first received with."""
        return self.details.get("stored")


_ERRORS = {cls.code: cls for cls in (
    BadRequest, LineTooLong, UnknownOp, UnknownMessage, AlreadyFinished,
    StepConflict, SequenceConflict, Forbidden, Unavailable, ShuttingDown,
    Internal, Busy, Fenced, Quarantined, NotQuarantined, FingerprintMismatch)}


# --------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Step:
    """A completed step of a message: its index, the seq of its event (None
    in a decision's ``steps``) and its output."""
    step_index: int
    seq: Optional[int]
    output: bytes


def _output(steps: list, step_index: int) -> Optional[bytes]:
    for s in steps or ():
        if s.step_index == step_index:
            return s.output
    return None


@dataclass(frozen=True)
class Decision:
    """The redelivery decision of ``receive`` (or ``decide``).

    ``action`` is "start" (new message: run every step), "resume" (seen
    before, not finished: run the steps from ``resume_from``) or "skip"
    (finished: do nothing).  ``resume_from`` is 0 for "start" and None for
    "skip", so ``range(d.resume_from, n)`` is the steps left to run.  ``seq``
    is the seq of the recorded ``message_received`` for a "start" from
    ``receive`` (None from ``decide``); ``duplicate`` is true when a retried
    receive with ``expected_seq`` found its event already stored.

    Protocol 2 adds two actions that mean "do not run it now": "busy"
    (another worker holds a live lease: ``worker``, ``token``, and
    ``retry_after_ms`` until it expires) and "quarantined" (started
    max_attempts times without finishing: ``attempts`` and the last
    ``error``; release it to try again).  A "resume" asked ``with_steps``
    carries ``steps``, the completed steps (:class:`Step`, seq None), so
    the worker needs no second round trip: see :meth:`output`.

    Retention (a daemon run with ``--retain-finished`` and
    ``--retain-tombstones``) adds ``compacted``, true for a "skip" of a
    message whose events were compacted into a tombstone, and one more
    action, "forgotten": the conversation does not know the message, and
    the ``sent_at`` the delivery gave is at or before the conversation's
    ``forgotten_before`` (epoch ms), the finish time of the newest
    tombstone it dropped.  It may have been processed and forgotten, so
    nothing was appended and the caller chooses: process it again
    (``receive`` it without ``sent_at``, which starts it) or set it
    aside.  A "start" carries ``forgotten_before`` too when the
    conversation has one, so a caller that gave no ``sent_at`` can judge.
    """
    action: str
    resume_from: Optional[int] = None
    seq: Optional[int] = None
    duplicate: bool = False
    worker: Optional[str] = None
    token: Optional[int] = None
    retry_after_ms: Optional[int] = None
    attempts: Optional[int] = None
    error: Optional[str] = None
    steps: Optional[list] = None
    compacted: bool = False
    forgotten_before: Optional[int] = None

    def output(self, step_index: int) -> Optional[bytes]:
        """The output of a completed step, from ``steps``, or None."""
        return _output(self.steps, step_index)


@dataclass(frozen=True)
class Ack:
    """The reply to a write: the seq of its event, and whether the write was
    a duplicate (acknowledged, not appended: ``seq`` is the original's).
    ``start`` also answers the ``token`` of the processing_started it
    appended or duplicates; ``start`` with a lease and ``renew`` answer
    ``lease_expires_at`` (epoch ms, the daemon's clock).  Equality compares
    ``seq`` and ``duplicate`` only: a start's token is its seq, and an
    expiry is a time."""
    seq: int
    duplicate: bool = False
    token: Optional[int] = field(default=None, compare=False)
    lease_expires_at: Optional[int] = field(default=None, compare=False)


@dataclass(frozen=True)
class Event:
    """An event of the log.  Only the fields of its ``type`` are set:
    message_received has ``received_at`` (and ``fingerprint`` when given),
    processing_started ``worker`` and ``lease_ms`` when given,
    lease_renewed ``token`` and ``lease_ms``, message_released ``reason``
    when given, step_completed ``step_index`` and ``output`` (bytes),
    error_occurred ``error``."""
    conversation: str
    seq: int
    pos: int
    ts: int
    type: str
    message_id: str
    received_at: Optional[int] = None
    step_index: Optional[int] = None
    output: Optional[bytes] = None
    error: Optional[str] = None
    fingerprint: Optional[str] = None
    worker: Optional[str] = None
    lease_ms: Optional[int] = None
    token: Optional[int] = None
    reason: Optional[str] = None

    @classmethod
    def from_wire(cls, obj: dict) -> "Event":
        out = obj.get("output")
        return cls(
            conversation=obj["conversation"], seq=obj["seq"], pos=obj["pos"],
            ts=obj["ts"], type=obj["type"], message_id=obj["message_id"],
            received_at=obj.get("received_at"), step_index=obj.get("step_index"),
            output=None if out is None else base64.b64decode(out),
            error=obj.get("error"), fingerprint=obj.get("fingerprint"),
            worker=obj.get("worker"), lease_ms=obj.get("lease_ms"),
            token=obj.get("token"), reason=obj.get("reason"))


@dataclass(frozen=True)
class MessageState:
    """The state of one message (``state(conversation, message_id)``).

    ``status`` is "unknown", "received", "in_progress", "errored" or
    "finished"; ``error`` is the latest error text, kept after a retry.
    Protocol 2 adds ``attempts`` (starts since it was received or
    released), ``token`` (of its latest start, None if never started),
    ``worker``, ``lease_expires_at`` (None unless leased now),
    ``quarantined`` and ``fingerprint``.  With retention, ``compacted`` is
    true for a tombstone: "finished", its events gone, so no steps and no
    ``received_at``."""
    status: str
    received_at: Optional[int]
    last_completed_step: Optional[int]
    steps: list = field(default_factory=list)  # of Step, by step_index
    error: Optional[str] = None
    attempts: int = 0
    token: Optional[int] = None
    worker: Optional[str] = None
    lease_expires_at: Optional[int] = None
    quarantined: bool = False
    fingerprint: Optional[str] = None
    compacted: bool = False

    def output(self, step_index: int) -> Optional[bytes]:
        """The output of a completed step, or None."""
        return _output(self.steps, step_index)


@dataclass(frozen=True)
class MessageInfo:
    """An entry of ``messages()``: a message's stored ``status``
    ("received", "in_progress", "errored", "finished"), its ``attempts``,
    ``last_completed_step``, ``received_at``, ``updated_at`` (the ts of its
    latest event), ``worker``, ``lease_expires_at`` (None unless leased),
    ``quarantined`` and ``compacted``."""
    message_id: str
    status: str
    attempts: int
    last_completed_step: Optional[int]
    received_at: Optional[int]
    updated_at: Optional[int]
    worker: Optional[str]
    lease_expires_at: Optional[int]
    quarantined: bool
    compacted: bool

    @classmethod
    def from_wire(cls, obj: dict) -> "MessageInfo":
        return cls(**{f: obj.get(f) for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Explanation:
    """The answer of ``explain``: the ``decision`` ``decide`` would give,
    the ``rule`` behind it (such as "leased" or "quarantined"), ``reason``
    (one English sentence), and the message's ``events``."""
    decision: Decision
    rule: str
    reason: str
    events: list  # of Event


@dataclass(frozen=True)
class ConversationState:
    """The state of a conversation (``state(conversation)``): its next seq,
    its messages counted by status (with "total"; a tombstone counts as
    finished), how many of its messages were ``compacted``, and its
    ``forgotten_before`` (epoch ms: the finish time of the newest tombstone
    it dropped; None when none was)."""
    next_seq: int
    messages: dict
    compacted: int = 0
    forgotten_before: Optional[int] = None


@dataclass(frozen=True)
class ConversationInfo:
    """An entry of ``conversations()``."""
    conversation: str
    next_seq: int
    messages: int


# --------------------------------------------------------------------------
# The connection


def default_socket_path(env: Optional[dict] = None, uid: Optional[int] = None) -> str:
    """The socket the daemon listens on by default: $LIMINAL_SOCKET, else
    $XDG_RUNTIME_DIR/liminald/liminald.sock (an absolute XDG_RUNTIME_DIR
    only), else /run/liminald/liminald.sock for root, else
    /tmp/liminald-$UID/liminald.sock.  (The daemon's config file, which may
    also name a socket, is not read.)"""
    env = os.environ if env is None else env
    if env.get("LIMINAL_SOCKET"):
        return env["LIMINAL_SOCKET"]
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime):
        return os.path.join(runtime, "liminald", "liminald.sock")
    uid = os.getuid() if uid is None else uid
    if uid == 0:
        return "/run/liminald/liminald.sock"
    return f"/tmp/liminald-{uid}/liminald.sock"


def _encode(request: dict) -> bytes:
    # Compact, UTF-8; a str that cannot be UTF-8 (a lone surrogate) fails
    # here rather than reaching the daemon mangled.
    return json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def _args(**kwargs: Any) -> dict:
    """The arguments that are given: None means absent."""
    return {k: v for k, v in kwargs.items() if v is not None}


def _b64(output: Any) -> str:
    if isinstance(output, str):
        raise TypeError("output must be bytes, not str (encode it first)")
    return base64.b64encode(bytes(output)).decode("ascii")


class _Conn:
    """One socket and its buffered reader."""

    def __init__(self, path: str, timeout: Optional[float]):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.reader = sock.makefile("rb")

    def send(self, line: bytes) -> None:
        self.sock.sendall(line)

    def recv(self) -> dict:
        """The next line from the daemon, decoded."""
        line = self.reader.readline()
        if not line:
            raise ConnectionError("liminald closed the connection")
        if not line.endswith(b"\n"):
            raise ConnectionError("liminald closed the connection mid-line")
        try:
            msg = json.loads(line)
        except ValueError as e:
            raise Internal("internal", f"unreadable line from liminald: {e}", False, {}) from None
        if not isinstance(msg, dict):
            raise Internal("internal", "a line from liminald is not a JSON object", False, {})
        return msg

    def close(self) -> None:
        # shutdown first: it wakes a thread blocked reading, which close
        # alone does not.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.reader.close()
        finally:
            self.sock.close()


class Client:
    """A connection to liminald, with one method per op.

    ``socket_path`` defaults to :func:`default_socket_path`; ``timeout``
    (seconds, default none) bounds each socket operation.  The connection is
    opened on first use (or by :meth:`connect`), and again after it broke.
    A Client is safe to share between threads: each request is one round
    trip under a lock.  Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, socket_path: Optional[str] = None, timeout: Optional[float] = None):
        self.socket_path = socket_path or default_socket_path()
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conn: Optional[_Conn] = None
        self._ids = itertools.count(1)

    # -- connection ---------------------------------------------------------

    def connect(self) -> "Client":
        """Opens the connection now (it is otherwise opened on first use)."""
        with self._lock:
            self._connected()
        return self

    def close(self) -> None:
        """Closes the connection.  The client may still be used: it then
        connects again."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "Client":
        return self.connect()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _connected(self) -> _Conn:
        if self._conn is None:
            self._conn = _Conn(self.socket_path, self.timeout)
        return self._conn

    def request(self, op: str, **args: Any) -> dict:
        """Sends one request and returns its success reply as a dict (without
        ``id`` and ``ok``), or raises the LiminalError of its failure.

        The methods below are built on it; it also sends ops this module has
        no method for.  Arguments that are None are left out.
        """
        with self._lock:
            req_id = next(self._ids)
            line = _encode({"id": req_id, "op": op, **_args(**args)})
            conn = self._connected()
            try:
                try:
                    conn.send(line)
                except (BrokenPipeError, ConnectionResetError):
                    # A refused peer (forbidden, or too many connections) is
                    # sent one line and closed, maybe before this request
                    # arrived: that line says why.
                    refusal = _refusal(conn)
                    if refusal is None:
                        raise
                    reply = refusal
                else:
                    reply = None
                while reply is None:
                    reply = conn.recv()
                    rid = reply.get("id")
                    # With one request in flight, "id": null is the answer to
                    # it when the daemon could not read its id (line_too_long,
                    # bad JSON), or the one line a refused peer gets.
                    if not ("ok" in reply and (rid == req_id or rid is None)):
                        reply = None  # a stale reply or a stray push: skip it
            except BaseException:
                # The stream is in an unknown state (a timeout, a broken
                # connection, an interrupt): start over on the next call.
                self._conn = None
                conn.close()
                raise
        if reply.get("ok") is True:
            reply.pop("id", None)
            reply.pop("ok", None)
            return reply
        err = LiminalError.from_wire(reply.get("error"))
        if err.code == "forbidden" or (err.code == "unavailable" and reply.get("id") is None):
            # Sent once, then the daemon closes the connection.
            self.close()
        raise err

    # -- ops ----------------------------------------------------------------

    def hello(self, client: Optional[str] = "liminald.py") -> dict:
        """The daemon's protocol version, name and version, ops and limits."""
        return self.request("hello", client=client)

    def ping(self) -> None:
        """Raises unless the daemon answers."""
        self.request("ping")

    def receive(self, conversation: str, message_id: str, received_at: Optional[int] = None,
                expected_seq: Optional[int] = None, *, fingerprint: Optional[str] = None,
                sent_at: Optional[int] = None, with_steps: bool = False) -> Decision:
        """Records a delivery of a message and returns what to do with it.
        ``received_at`` is in epoch milliseconds (default: the daemon's now).
        ``fingerprint`` names the payload (e.g. its sha256): the first
        receive stores it, and a later one with another raises
        :class:`FingerprintMismatch`.  ``sent_at`` is when the message was
        first produced (epoch ms, e.g. its broker's timestamp): a message
        the conversation does not know, sent at or before its
        ``forgotten_before``, is decided "forgotten" and nothing is
        appended.  With ``with_steps``, a "resume" carries the completed
        steps' outputs."""
        return _decision(self.request("receive", conversation=conversation, message_id=message_id,
                                      received_at=received_at, expected_seq=expected_seq,
                                      fingerprint=fingerprint, sent_at=sent_at,
                                      with_steps=with_steps or None))

    def decide(self, conversation: str, message_id: str, *, fingerprint: Optional[str] = None,
               sent_at: Optional[int] = None, with_steps: bool = False) -> Decision:
        """The decision ``receive`` would give, without recording anything."""
        return _decision(self.request("decide", conversation=conversation, message_id=message_id,
                                      fingerprint=fingerprint, sent_at=sent_at,
                                      with_steps=with_steps or None))

    def start(self, conversation: str, message_id: str, expected_seq: Optional[int] = None, *,
              worker: Optional[str] = None, lease_ms: Optional[int] = None) -> Ack:
        """Records that processing (re)started; the Ack carries its
        ``token``.  With ``lease_ms`` (1 to 86,400,000) it takes a lease for
        ``worker``, answered with ``lease_expires_at``: while the lease is
        live, deliveries answer "busy" and a start by another worker raises
        :class:`Busy`; once it lapsed, a start with a lease takes the
        message over and fences the old token.  :meth:`lease` wraps this
        with renewals."""
        return _ack(self.request("start", conversation=conversation, message_id=message_id,
                                 expected_seq=expected_seq, worker=worker, lease_ms=lease_ms))

    def step(self, conversation: str, message_id: str, step_index: int, output: bytes,
             expected_seq: Optional[int] = None, *, token: Optional[int] = None) -> Ack:
        """Records a completed step and its output (bytes, may be empty).
        With ``token``, raises :class:`Fenced` unless it is the message's
        current token; likewise for finish and fail."""
        return _ack(self.request("step", conversation=conversation, message_id=message_id,
                                 step_index=step_index, output=_b64(output),
                                 expected_seq=expected_seq, token=token))

    def finish(self, conversation: str, message_id: str, expected_seq: Optional[int] = None, *,
               token: Optional[int] = None) -> Ack:
        """Records that the message is fully processed."""
        return _ack(self.request("finish", conversation=conversation, message_id=message_id,
                                 expected_seq=expected_seq, token=token))

    def fail(self, conversation: str, message_id: str, error: str,
             expected_seq: Optional[int] = None, *, token: Optional[int] = None) -> Ack:
        """Records that processing failed (it may be retried with ``start``)."""
        return _ack(self.request("fail", conversation=conversation, message_id=message_id,
                                 error=error, expected_seq=expected_seq, token=token))

    def renew(self, conversation: str, message_id: str, token: int, lease_ms: int,
              expected_seq: Optional[int] = None) -> Ack:
        """Extends the lease of ``token`` to ``lease_ms`` from now (the Ack
        carries ``lease_expires_at``).  Raises :class:`Fenced` when the token
        is not current or the message is no longer in progress."""
        return _ack(self.request("renew", conversation=conversation, message_id=message_id,
                                 token=token, lease_ms=lease_ms, expected_seq=expected_seq))

    def release(self, conversation: str, message_id: str, reason: Optional[str] = None,
                expected_seq: Optional[int] = None) -> Ack:
        """Releases a quarantined message: its attempts start again from 0
        and its next delivery resumes it.  Raises :class:`NotQuarantined`
        for a message that is not quarantined."""
        return _ack(self.request("release", conversation=conversation, message_id=message_id,
                                 reason=reason, expected_seq=expected_seq))

    def lease(self, conversation: str, message_id: str, worker: str, lease_ms: int, *,
              renew_every: Optional[float] = None) -> "Lease":
        """Starts a message with a lease for ``worker`` and returns the
        :class:`Lease`, which renews it in the background every
        ``renew_every`` seconds (default: a third of ``lease_ms``; 0 for
        never) until it is finished, failed, lost or stopped.  Raises
        :class:`Busy` while another worker holds it, :class:`Quarantined`,
        :class:`AlreadyFinished` or :class:`UnknownMessage` as ``start``
        does."""
        ack = self.start(conversation, message_id, worker=worker, lease_ms=lease_ms)
        return Lease(self, conversation, message_id, worker, lease_ms, ack,
                     renew_every=renew_every)

    def state(self, conversation: str, message_id: Optional[str] = None):
        """A :class:`MessageState` with ``message_id``, else a
        :class:`ConversationState`."""
        r = self.request("state", conversation=conversation, message_id=message_id)
        if message_id is None:
            return ConversationState(next_seq=r["next_seq"], messages=r["messages"],
                                     compacted=r.get("compacted", 0),
                                     forgotten_before=r.get("forgotten_before"))
        return MessageState(
            status=r["status"], received_at=r.get("received_at"),
            last_completed_step=r.get("last_completed_step"),
            steps=_steps(r) or [],
            error=r.get("error"), attempts=r.get("attempts", 0), token=r.get("token"),
            worker=r.get("worker"), lease_expires_at=r.get("lease_expires_at"),
            quarantined=bool(r.get("quarantined", False)), fingerprint=r.get("fingerprint"),
            compacted=bool(r.get("compacted", False)))

    def read(self, conversation: str, from_seq: int = 0, limit: Optional[int] = None):
        """Up to ``limit`` events (default 1000, at most 10000) of a
        conversation from ``from_seq``: returns ``(events, next_seq)``, where
        ``next_seq`` is where to read on from."""
        r = self.request("read", conversation=conversation, from_seq=from_seq, limit=limit)
        return [Event.from_wire(e) for e in r["events"]], r["next_seq"]

    def read_all(self, conversation: str, from_seq: int = 0) -> Iterator[Event]:
        """Every event of a conversation from ``from_seq``, page by page."""
        while True:
            events, next_seq = self.read(conversation, from_seq)
            yield from events
            if not events:
                return
            from_seq = next_seq

    def subscribe(self, conversation: Optional[str] = None, from_seq: Optional[int] = None,
                  from_pos: Optional[int] = None, *, timeout: Optional[float] = None,
                  resume_on_lag: bool = True) -> "Subscription":
        """Follows committed events on a connection of its own: see
        :class:`Subscription`.  ``timeout`` defaults to the client's."""
        return Subscription(self.socket_path, conversation, from_seq, from_pos,
                            timeout=self.timeout if timeout is None else timeout,
                            resume_on_lag=resume_on_lag)

    def messages(self, conversation: str, status: Optional[str] = None,
                 after: Optional[str] = None, limit: Optional[int] = None):
        """Up to ``limit`` messages of a conversation (default 100, at most
        1000), by id, after the id ``after``; ``status`` filters them
        ("received", "in_progress", "leased", "errored", "finished",
        "quarantined").  Returns ``(messages, next)``: a list of
        :class:`MessageInfo`, and the ``after`` of the next page (None at
        the end)."""
        r = self.request("messages", conversation=conversation, status=status, after=after,
                         limit=limit)
        return [MessageInfo.from_wire(m) for m in r["messages"]], r.get("next")

    def explain(self, conversation: str, message_id: str, *, fingerprint: Optional[str] = None,
                sent_at: Optional[int] = None, with_steps: bool = False) -> Explanation:
        """Why a delivery of the message would get the decision it would:
        see :class:`Explanation`."""
        r = self.request("explain", conversation=conversation, message_id=message_id,
                         fingerprint=fingerprint, sent_at=sent_at, with_steps=with_steps or None)
        return Explanation(decision=_decision(r), rule=r["rule"], reason=r["reason"],
                           events=[Event.from_wire(e) for e in r.get("events") or []])

    def conversations(self, after: Optional[str] = None, limit: Optional[int] = None) -> list:
        """Up to ``limit`` conversations (default 100, at most 1000), by
        name, after the name ``after``: a list of :class:`ConversationInfo`."""
        r = self.request("conversations", after=after, limit=limit)
        return [ConversationInfo(c["conversation"], c["next_seq"], c["messages"])
                for c in r["conversations"]]

    def stats(self) -> dict:
        """The daemon's figures: conversations, messages, events, db_bytes,
        uptime_s, connections, subscribers and commits, and retention's:
        compacted (messages ever compacted), tombstones (kept now),
        tombstones_dropped, forgotten_before (the newest of any
        conversation, or None) and compaction (passes, failed, ms_total,
        ms_max)."""
        return self.request("stats")


class Lease:
    """A live lease on one message, held by one worker: made by
    :meth:`Client.lease`, which started the message.

    A background thread renews it every ``renew_every`` seconds (default a
    third of the lease), so it stays held however long the work takes.
    Every write through it (:meth:`step`, :meth:`finish`, :meth:`fail`)
    carries its ``token``.  If the lease lapsed anyway (the process stalled,
    the renewals could not get through) and another worker took the
    message over, the daemon refuses the old token: the write or renewal
    raises :class:`Fenced`, and the lease is ``lost``.  A worker calls
    :meth:`check` before each side effect, so that it stops as soon as
    either sees it, and does nothing more for the message.

    Renewal stops on :meth:`finish`, :meth:`fail`, :meth:`stop`, leaving a
    ``with`` block, or once lost.  A renewal that fails for another reason
    (a broken connection, ``unavailable``) is kept in ``renew_error`` and
    tried again at the next tick.  The client is shared with the renewing
    thread, which a :class:`Client` allows.
    """

    def __init__(self, client: "Client", conversation: str, message_id: str, worker: str,
                 lease_ms: int, ack: Ack, *, renew_every: Optional[float] = None):
        self.client = client
        self.conversation = conversation
        self.message_id = message_id
        self.worker = worker
        self.lease_ms = lease_ms
        self.token: int = ack.token
        self.expires_at: Optional[int] = ack.lease_expires_at
        self.renewals = 0
        self.renew_error: Optional[BaseException] = None
        self.lost: Optional[Fenced] = None
        self._stopped = threading.Event()
        self._thread: Optional[threading.Thread] = None
        every = lease_ms / 3000 if renew_every is None else renew_every
        if every > 0:
            self._thread = threading.Thread(
                target=self._renew_loop, args=(max(every, 0.001),),
                name=f"liminald-lease-{message_id}", daemon=True)
            self._thread.start()

    def _renew_loop(self, every: float) -> None:
        while not self._stopped.wait(every):
            try:
                self.renew()
            except Fenced:
                return  # lost: renew() recorded it
            except (LiminalError, OSError) as e:
                self.renew_error = e  # tried again at the next tick

    def _fenced(self, e: Fenced) -> None:
        if self.lost is None:
            self.lost = e
        self._stopped.set()

    def check(self) -> None:
        """Raises :class:`Fenced` if the lease is known to be lost."""
        if self.lost is not None:
            raise self.lost

    def renew(self) -> Ack:
        """Renews the lease now (the background thread calls this)."""
        self.check()
        try:
            ack = self.client.renew(self.conversation, self.message_id, self.token, self.lease_ms)
        except Fenced as e:
            self._fenced(e)
            raise
        self.expires_at = ack.lease_expires_at
        self.renewals += 1
        self.renew_error = None
        return ack

    def _write(self, op: str, *args: Any) -> Ack:
        self.check()
        try:
            return getattr(self.client, op)(self.conversation, self.message_id, *args,
                                            token=self.token)
        except Fenced as e:
            self._fenced(e)
            raise

    def step(self, step_index: int, output: bytes) -> Ack:
        """Records a completed step with this lease's token."""
        return self._write("step", step_index, output)

    def finish(self) -> Ack:
        """Stops renewing and records that the message is done."""
        self.stop()
        return self._write("finish")

    def fail(self, error: str) -> Ack:
        """Stops renewing and records that processing failed."""
        self.stop()
        return self._write("fail", error)

    def stop(self) -> None:
        """Stops renewing (the lease then lapses after its length)."""
        self._stopped.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join()

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _refusal(conn: _Conn) -> Optional[dict]:
    """The failure line a closed connection was sent, if any."""
    try:
        reply = conn.recv()
    except (OSError, LiminalError):
        return None
    if reply.get("ok") is False and reply.get("id") is None:
        return reply
    return None


def _steps(r: dict) -> Optional[list]:
    if "steps" not in r:
        return None
    return [Step(s["step_index"], s.get("seq"), base64.b64decode(s["output"]))
            for s in r["steps"] or []]


def _decision(r: dict) -> Decision:
    action = r["decision"]
    resume_from = r.get("resume_from")
    if action == "start":
        resume_from = 0
    return Decision(action=action, resume_from=resume_from, seq=r.get("seq"),
                    duplicate=bool(r.get("duplicate", False)), worker=r.get("worker"),
                    token=r.get("token"), retry_after_ms=r.get("retry_after_ms"),
                    attempts=r.get("attempts"), error=r.get("error"), steps=_steps(r),
                    compacted=bool(r.get("compacted", False)),
                    forgotten_before=r.get("forgotten_before"))


def _ack(r: dict) -> Ack:
    return Ack(seq=r["seq"], duplicate=bool(r.get("duplicate", False)), token=r.get("token"),
               lease_expires_at=r.get("lease_expires_at"))


class Subscription:
    """An iterator of the :class:`Event` objects committed to liminald, in
    ``seq`` order within a conversation and ``pos`` order overall.

    With ``conversation``, only its events, from ``from_seq`` (or
    ``from_pos``); without, every conversation's, from ``from_pos``.  With no
    position, only events committed after the subscription is set up (which
    it is when the constructor returns).  Iteration waits for the next event
    and never ends by itself; call :meth:`close` (or leave its ``with``
    block) to stop; close may be called from another thread, and ends
    the iteration there.

    A subscriber too slow to keep up is ended by the daemon; with
    ``resume_on_lag`` (the default) it subscribes again from where it
    stopped, without a gap or a duplicate (``lags`` counts how often).
    Without, iteration raises :class:`Lagged`.  Iterate from one thread at a
    time.
    """

    def __init__(self, socket_path: str, conversation: Optional[str] = None,
                 from_seq: Optional[int] = None, from_pos: Optional[int] = None,
                 *, timeout: Optional[float] = None, resume_on_lag: bool = True):
        self.conversation = conversation
        self.resume_on_lag = resume_on_lag
        self.lags = 0
        self.sub: Optional[int] = None
        self._ids = itertools.count(1)
        self._conn = _Conn(socket_path, timeout)
        try:
            self._subscribe(from_seq, from_pos)
        except BaseException:
            self.close()
            raise

    def _subscribe(self, from_seq: Optional[int], from_pos: Optional[int]) -> None:
        conn = self._conn
        if conn is None:
            raise ValueError("subscription closed")
        req_id = next(self._ids)
        conn.send(_encode({"id": req_id, "op": "subscribe", **_args(
            conversation=self.conversation, from_seq=from_seq, from_pos=from_pos)}))
        while True:
            reply = conn.recv()
            # Pushes of an earlier (lagged, ended) subscription may precede it.
            if "ok" in reply and reply.get("id") in (req_id, None):
                break
        if reply["ok"] is not True:
            raise LiminalError.from_wire(reply.get("error"))
        self.sub = reply["sub"]

    def __iter__(self) -> "Subscription":
        return self

    def __next__(self) -> Event:
        while True:
            conn = self._conn
            if conn is None:
                raise StopIteration
            try:
                msg = conn.recv()
                if msg.get("sub") != self.sub:
                    continue
                if "event" in msg:
                    return Event.from_wire(msg["event"])
                if msg.get("lagged"):
                    next_pos, next_seq = msg.get("next_pos"), msg.get("next_seq")
                    if not self.resume_on_lag:
                        raise Lagged(self.sub, next_pos, next_seq)
                    self.lags += 1
                    if self.conversation is not None and next_seq is not None:
                        self._subscribe(next_seq, None)
                    else:
                        self._subscribe(None, next_pos)
            except (OSError, ValueError):
                if self._conn is None:  # closed meanwhile, by another thread
                    raise StopIteration from None
                raise

    def close(self) -> None:
        """Ends the subscription by closing its connection."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Lagged(Exception):
    """A subscription fell behind and was ended by the daemon; subscribe
    again from ``next_pos`` (or, for one conversation, ``next_seq`` when it
    is not None) to go on without a gap."""

    def __init__(self, sub: int, next_pos: int, next_seq: Optional[int]):
        super().__init__(f"subscription {sub} lagged; subscribe again from pos {next_pos}")
        self.sub, self.next_pos, self.next_seq = sub, next_pos, next_seq
