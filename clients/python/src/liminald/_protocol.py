"""The protocol, once, for the blocking and the asyncio client alike.

Nothing here does I/O.  Each op is a :class:`Call`: its arguments, how its
reply decodes, whether it is safe to send again after a lost connection,
and what it needs of the daemon (protocol 2, room for its output).  A call
runs as a *flow*: a generator that yields the I/O it needs (:class:`Connect`,
:class:`Send`, :class:`Recv`, :class:`Sleep`, :class:`Disconnect`) and is
sent back the results, or thrown the ``OSError`` the I/O raised.  The
blocking client performs those actions on a socket, the asyncio client on
a stream; the rules (reconnecting with backoff and a deadline, what to send
again, the hello check, the size check, reading the one line a refused
peer gets) live in the flows alone.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import time
from typing import (
    Any, Callable, Dict, Generator, Generic, List, Mapping, NamedTuple, Optional, TypeVar, Union,
)

from ._errors import (
    Internal, Lagged, LiminalError, OutputTooLarge, ProtocolError, Timeout, Unavailable,
)
from ._results import (
    Ack, ConversationInfo, ConversationState, Decision, Event, EventsPage, Explanation,
    MessageState, MessagesPage, Reconnect, ServerInfo,
)

T = TypeVar("T")

#: This package's version: its major number is the protocol it speaks.
VERSION = "2.0.0"

#: The protocol this package speaks (SPEC §7): a daemon that answers
#: ``hello`` with a lower one is refused the calls that need it.
PROTOCOL = 2

#: The client's default timeout for one call, in seconds.
DEFAULT_TIMEOUT = 60.0
#: How long a call waits for the daemon to come back, in seconds.
DEFAULT_RECONNECT_TIMEOUT = 10.0
# The backoff between tries while the daemon is away: at once, then 10 ms
# doubling to 1 s.
_MIN_BACKOFF = 0.01
_MAX_BACKOFF = 1.0
# How long to wait for the line a refused peer is sent, once a write
# failed.
_REFUSAL_WAIT = 1.0


def default_socket_path(env: Optional[Mapping[str, str]] = None, uid: Optional[int] = None) -> str:
    """The socket a client talks to when it is given none, found as the
    daemon finds its own (SPEC §5): $LIMINAL_SOCKET, else
    $XDG_RUNTIME_DIR/liminald/liminald.sock (an absolute XDG_RUNTIME_DIR
    only), else /run/liminald/liminald.sock for root, else
    /tmp/liminald-$UID/liminald.sock.  An empty variable counts as unset;
    TMPDIR is not consulted.  (The daemon's config file, which may also name
    a socket, is not read.)"""
    env = os.environ if env is None else env
    named = env.get("LIMINAL_SOCKET")
    if named:
        return named
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime):
        return os.path.join(runtime, "liminald", "liminald.sock")
    uid = os.getuid() if uid is None else uid
    if uid == 0:
        return "/run/liminald/liminald.sock"
    return f"/tmp/liminald-{uid}/liminald.sock"


# --------------------------------------------------------------------------
# Calls


# The ops that change nothing: safe to send again.
_READS = frozenset({"hello", "ping", "decide", "state", "read", "messages", "explain",
                    "conversations", "stats", "subscribe"})
# The writes, safe to send again only with expected_seq (any of them) or a
# token (step, finish, fail): the daemon answers a write that already landed
# as a duplicate (SPEC §2 rule 1, §7).  A renew with a token is not: sent
# again, it renews again.
_WRITES = frozenset({"receive", "start", "step", "finish", "fail", "renew", "release"})
_TOKEN_DUPLICATES = frozenset({"step", "finish", "fail"})
# What protocol 2 (SPEC §7, §8) adds: ops of its own, and arguments that
# ops of protocol 1 take beside theirs, which a protocol-1 daemon ignores.
_PROTOCOL_2_OPS = frozenset({"renew", "release", "messages", "explain"})
_PROTOCOL_2_FIELDS = ("worker", "lease_ms", "token", "fingerprint", "with_steps", "sent_at")


def retry_safe(op: str, args: Mapping[str, Any]) -> bool:
    """Whether a request may be sent again after its connection was lost
    before the reply: a read, or a write the daemon answers as a duplicate
    when it already landed (one with ``expected_seq``, or a step, finish or
    fail with a ``token``).  Unknown ops and ``unsubscribe`` are not."""
    if op in _READS:
        return True
    if op in _WRITES:
        return (args.get("expected_seq") is not None
                or (op in _TOKEN_DUPLICATES and args.get("token") is not None))
    return False


def protocol_2_feature(op: str, args: Mapping[str, Any]) -> Optional[str]:
    """What a request uses of protocol 2, as :class:`ProtocolError` names
    it ("renew", "start with worker, lease_ms"), or None."""
    if op in _PROTOCOL_2_OPS:
        return op
    uses = [f for f in _PROTOCOL_2_FIELDS if args.get(f) is not None and args.get(f) is not False]
    return f"{op} with {', '.join(uses)}" if uses else None


def encode(request: Mapping[str, Any]) -> bytes:
    """One request line: compact UTF-8 JSON and a newline.  A str that
    cannot be UTF-8 (a lone surrogate) fails here rather than reaching the
    daemon mangled."""
    return json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def b64(output: Union[bytes, bytearray, memoryview]) -> str:
    """A step's output as the wire carries it."""
    if isinstance(output, str):
        raise TypeError("output must be bytes, not str (encode it first)")
    return base64.b64encode(bytes(output)).decode("ascii")


def _result(r: Dict[str, Any]) -> Dict[str, Any]:
    r.pop("id", None)
    r.pop("ok", None)
    return r


class Call(Generic[T]):
    """One request: its ``op`` and ``args`` (None values left out), how its
    success reply decodes (``parse``), whether it is ``safe`` to send again,
    the protocol-2 ``feature`` it uses, and the size of a step's output."""

    __slots__ = ("op", "args", "parse", "safe", "feature", "output_size")

    def __init__(self, op: str, args: Mapping[str, Any], parse: Callable[[Dict[str, Any]], T],
                 output_size: Optional[int] = None):
        self.op = op
        self.args = {k: v for k, v in args.items() if v is not None}
        self.parse = parse
        self.safe = retry_safe(op, self.args)
        self.feature = protocol_2_feature(op, self.args)
        self.output_size = output_size

    @property
    def needs_hello(self) -> bool:
        """Whether the daemon's hello must be known before it is sent: for
        a protocol-2 feature, and for a step's output size."""
        return self.feature is not None or self.output_size is not None

    def line(self, request_id: int) -> bytes:
        return encode({"id": request_id, "op": self.op, **self.args})

    def check(self, info: ServerInfo, socket: str) -> None:
        """Raises what the daemon would refuse, before it is sent."""
        if self.feature is not None and info.protocol < PROTOCOL:
            raise ProtocolError(self.feature, PROTOCOL, info.protocol, socket=socket)
        limit = info.max_output_bytes
        if self.output_size is not None and limit is not None and self.output_size > limit:
            raise OutputTooLarge(self.output_size, limit, socket=socket)


def _none(r: Dict[str, Any]) -> None:
    return None


def _ack(r: Dict[str, Any]) -> Ack:
    return Ack.from_wire(r)


def _decision(r: Dict[str, Any]) -> Decision:
    return Decision.from_wire(r)


# One builder per op.  The clients' methods are these, run.


def hello(client: Optional[str]) -> Call[ServerInfo]:
    return Call("hello", {"client": client}, ServerInfo.from_wire)


def ping() -> Call[None]:
    return Call("ping", {}, _none)


def receive(conversation: str, message_id: str, received_at: Optional[int],
            expected_seq: Optional[int], fingerprint: Optional[str], sent_at: Optional[int],
            with_steps: bool) -> Call[Decision]:
    return Call("receive", {"conversation": conversation, "message_id": message_id,
                            "received_at": received_at, "expected_seq": expected_seq,
                            "fingerprint": fingerprint, "sent_at": sent_at,
                            "with_steps": with_steps or None}, _decision)


def decide(conversation: str, message_id: str, fingerprint: Optional[str],
           sent_at: Optional[int], with_steps: bool) -> Call[Decision]:
    return Call("decide", {"conversation": conversation, "message_id": message_id,
                           "fingerprint": fingerprint, "sent_at": sent_at,
                           "with_steps": with_steps or None}, _decision)


def start(conversation: str, message_id: str, expected_seq: Optional[int], worker: Optional[str],
          lease_ms: Optional[int]) -> Call[Ack]:
    return Call("start", {"conversation": conversation, "message_id": message_id,
                          "expected_seq": expected_seq, "worker": worker, "lease_ms": lease_ms},
                _ack)


def step(conversation: str, message_id: str, step_index: int,
         output: Union[bytes, bytearray, memoryview], expected_seq: Optional[int],
         token: Optional[int]) -> Call[Ack]:
    if isinstance(output, str):
        raise TypeError("output must be bytes, not str (encode it first)")
    data = bytes(output)
    return Call("step", {"conversation": conversation, "message_id": message_id,
                         "step_index": step_index, "output": b64(data),
                         "expected_seq": expected_seq, "token": token}, _ack,
                output_size=len(data))


def finish(conversation: str, message_id: str, expected_seq: Optional[int],
           token: Optional[int]) -> Call[Ack]:
    return Call("finish", {"conversation": conversation, "message_id": message_id,
                           "expected_seq": expected_seq, "token": token}, _ack)


def fail(conversation: str, message_id: str, error: str, expected_seq: Optional[int],
         token: Optional[int]) -> Call[Ack]:
    return Call("fail", {"conversation": conversation, "message_id": message_id, "error": error,
                         "expected_seq": expected_seq, "token": token}, _ack)


def renew(conversation: str, message_id: str, token: int, lease_ms: int,
          expected_seq: Optional[int]) -> Call[Ack]:
    return Call("renew", {"conversation": conversation, "message_id": message_id, "token": token,
                          "lease_ms": lease_ms, "expected_seq": expected_seq}, _ack)


def release(conversation: str, message_id: str, reason: Optional[str],
            expected_seq: Optional[int]) -> Call[Ack]:
    return Call("release", {"conversation": conversation, "message_id": message_id,
                            "reason": reason, "expected_seq": expected_seq}, _ack)


def message_state(conversation: str, message_id: str) -> Call[MessageState]:
    return Call("state", {"conversation": conversation, "message_id": message_id},
                MessageState.from_wire)


def conversation_state(conversation: str) -> Call[ConversationState]:
    return Call("state", {"conversation": conversation}, ConversationState.from_wire)


def read(conversation: str, from_seq: int, limit: Optional[int]) -> Call[EventsPage]:
    return Call("read", {"conversation": conversation, "from_seq": from_seq, "limit": limit},
                EventsPage.from_wire)


def messages(conversation: str, status: Optional[str], after: Optional[str],
             limit: Optional[int]) -> Call[MessagesPage]:
    return Call("messages", {"conversation": conversation, "status": status, "after": after,
                             "limit": limit}, MessagesPage.from_wire)


def explain(conversation: str, message_id: str, fingerprint: Optional[str],
            sent_at: Optional[int], with_steps: bool) -> Call[Explanation]:
    return Call("explain", {"conversation": conversation, "message_id": message_id,
                            "fingerprint": fingerprint, "sent_at": sent_at,
                            "with_steps": with_steps or None}, Explanation.from_wire)


def _conversation_infos(r: Dict[str, Any]) -> List[ConversationInfo]:
    return [ConversationInfo.from_wire(c) for c in r["conversations"]]


def conversations(after: Optional[str], limit: Optional[int]) -> Call[List[ConversationInfo]]:
    return Call("conversations", {"after": after, "limit": limit}, _conversation_infos)


def stats() -> Call[Dict[str, Any]]:
    return Call("stats", {}, _result)


def request(op: str, args: Mapping[str, Any]) -> Call[Dict[str, Any]]:
    """Any request; its success reply as a dict without ``id`` and ``ok``."""
    return Call(op, args, _result)


# --------------------------------------------------------------------------
# Flows


class Connect(NamedTuple):
    """Open a connection to the socket (closing any other); raise OSError."""
    timeout: Optional[float]


class Send(NamedTuple):
    """Write all of data; raise OSError (TimeoutError on timeout)."""
    data: bytes
    timeout: Optional[float]


class Recv(NamedTuple):
    """Return the next line, with its newline; at the end of the stream,
    what is left (b"" or a line cut short).  Raise OSError (TimeoutError
    on timeout, keeping what was read for the next Recv)."""
    timeout: Optional[float]


class Sleep(NamedTuple):
    seconds: float


class Disconnect(NamedTuple):
    """Close the connection, quietly."""


Action = Union[Connect, Send, Recv, Sleep, Disconnect]
Flow = Generator[Action, Any, T]


class Session:
    """What a client knows of its connection: whether it is open, the
    daemon's hello on it, the ids of its requests, and the settings that
    rule a call (the socket, the timeouts, ``on_reconnect``)."""

    def __init__(self, socket_path: Optional[str], timeout: Optional[float],
                 reconnect_timeout: float, on_reconnect: Optional[Callable[[Reconnect], None]]):
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive or None, not {timeout!r}")
        self.socket_path = socket_path or default_socket_path()
        self.timeout = timeout
        self.reconnect_timeout = float(reconnect_timeout)
        self.on_reconnect = on_reconnect
        self.connected = False
        self.info: Optional[ServerInfo] = None
        self.connects = 0
        self.call_timeout: Optional[float] = timeout
        self._ids = itertools.count(1)

    def deadline(self, timeout: Optional[float] = None) -> Optional[float]:
        """The deadline of a call starting now: ``timeout`` seconds (the
        session's when None; ``math.inf`` for none)."""
        t = self.timeout if timeout is None else timeout
        self.call_timeout = t  # for a Timeout's message (calls run one at a time)
        if t is None or t == float("inf"):
            return None
        if t <= 0:
            raise ValueError(f"timeout must be positive, not {t!r}")
        return time.monotonic() + t

    def next_id(self) -> int:
        return next(self._ids)


def left(deadline: Optional[float]) -> Optional[float]:
    """Seconds until deadline (None for none), at least 0."""
    if deadline is None:
        return None
    return max(deadline - time.monotonic(), 0.0)


class _Lost(Exception):
    """The connection was lost during an exchange; ``sent`` says whether
    the request had been sent whole."""

    def __init__(self, cause: BaseException, sent: bool):
        super().__init__(str(cause))
        self.cause = cause
        self.sent = sent


class _Wait:
    """How one call waits for the daemon: tries again at once, then after
    10 ms doubling to 1 s, until ``reconnect_timeout`` after it first found
    the daemon away, or the call's own deadline, whichever comes first."""

    def __init__(self, s: Session, op: Optional[str], call_deadline: Optional[float]):
        self.s, self.op = s, op
        self.began = time.monotonic()
        end = self.began + max(s.reconnect_timeout, 0.0)
        self.end = end if call_deadline is None else min(end, call_deadline)
        self.attempt = 0
        self.delay = 0.0

    def connect_timeout(self) -> float:
        # A unix socket connects at once, or waits while the daemon's
        # backlog is full: give it until the end, and at least a second.
        return max(self.end - time.monotonic(), 1.0)

    def failed(self, err: BaseException) -> float:
        """The delay before the next try, or raises :class:`Unavailable`
        naming the socket once the time is up."""
        now = time.monotonic()
        if now >= self.end:
            raise Unavailable.unreachable(self.s.socket_path, self.op, err,
                                          now - self.began) from err
        self.attempt += 1
        delay = min(self.delay, self.end - now)
        self.delay = min(max(self.delay * 2, _MIN_BACKOFF), _MAX_BACKOFF)
        if self.s.on_reconnect is not None:
            self.s.on_reconnect(Reconnect(self.s.socket_path, self.op, self.attempt, delay, err))
        return delay


def _decode(raw: bytes) -> Dict[str, Any]:
    try:
        msg = json.loads(raw)
    except ValueError as e:
        raise Internal("internal", f"unreadable line from liminald: {e}", False) from None
    if not isinstance(msg, dict):
        raise Internal("internal", "a line from liminald is not a JSON object", False)
    return msg


def _connect(s: Session, wait: _Wait) -> Flow[None]:
    """Connects, trying again with backoff until ``wait`` gives up."""
    while not s.connected:
        try:
            yield Connect(wait.connect_timeout())
        except OSError as e:
            delay = wait.failed(e)
            if delay > 0:
                yield Sleep(delay)
            continue
        s.connected, s.info = True, None
        s.connects += 1


def _disconnect(s: Session) -> Flow[None]:
    if s.connected:
        s.connected, s.info = False, None
    yield Disconnect()


def _refusal() -> Flow[Optional[Dict[str, Any]]]:
    """The one failure line a refused peer (forbidden, too many
    connections) is sent before the daemon closes the connection, if it
    was: read once a write failed."""
    try:
        raw = yield Recv(_REFUSAL_WAIT)
    except OSError:
        return None
    if not raw.endswith(b"\n"):
        return None
    try:
        msg = json.loads(raw)
    except ValueError:
        return None
    if isinstance(msg, dict) and msg.get("ok") is False and msg.get("id") is None:
        return msg
    return None


def _exchange(s: Session, call: Call[Any], deadline: Optional[float]) -> Flow[Dict[str, Any]]:
    """Sends call on the open connection and returns its reply, success or
    failure.  Raises :class:`_Lost` when the connection breaks, with
    ``sent`` false when the daemon cannot have read the request (a unix
    socket refuses a write, EPIPE, once its peer closed: the line did not
    reach it whole); :class:`Timeout` (the connection closed) when the
    deadline passes."""
    request_id = s.next_id()
    try:
        yield Send(call.line(request_id), left(deadline))
    except TimeoutError:
        yield from _disconnect(s)
        raise Timeout(call.op, s.call_timeout, True, socket=s.socket_path,
                      waiting_for="the daemon to read the request") from None
    except OSError as e:
        refusal = yield from _refusal()
        if refusal is not None:
            return refusal
        raise _Lost(e, sent=False) from None
    while True:
        remaining = left(deadline)
        try:
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            raw = yield Recv(remaining)
        except TimeoutError:
            yield from _disconnect(s)
            raise Timeout(call.op, s.call_timeout, True, socket=s.socket_path) from None
        except OSError as e:
            raise _Lost(e, sent=True) from None
        if not raw.endswith(b"\n"):
            why = "mid-line" if raw else "before replying"
            raise _Lost(ConnectionResetError(f"liminald closed the connection {why}"), sent=True)
        try:
            msg = _decode(raw)
        except Internal as e:
            yield from _disconnect(s)
            e.socket = s.socket_path
            raise
        # With one request in flight, "id": null answers it when the daemon
        # could not read its id (line_too_long, bad JSON), or is the line a
        # refused peer gets.  Anything else (a push) is skipped.
        if "ok" in msg and msg.get("id") in (request_id, None):
            return msg


def connect_flow(s: Session, deadline: Optional[float]) -> Flow[None]:
    """Opens the connection if it is not open, waiting for the daemon as a
    call does."""
    if not s.connected:
        yield from _connect(s, _Wait(s, "connect", deadline))


def call_flow(s: Session, call: Call[T], deadline: Optional[float]) -> Flow[T]:
    """Runs one call to its result, or raises its error.

    The connection is opened when it is not (after a loss, or at first);
    while the daemon cannot be reached the call tries again with backoff
    until the reconnect timeout, then raises :class:`Unavailable` naming
    the socket.  A call whose connection is lost before its reply is sent
    again on a new connection when it was never sent, or when it is
    ``safe``; otherwise it raises :class:`Unavailable` with ``sent`` set.
    A ``shutting_down`` answer to a safe call is taken as the daemon going
    away: the call goes to the next daemon.  A protocol-2 call, or a step,
    first asks ``hello`` once per connection, and is refused before it is
    sent (:class:`ProtocolError`, :class:`OutputTooLarge`) when the daemon
    could not serve it.
    """
    wait: Optional[_Wait] = None
    while True:
        if not s.connected:
            if wait is None:
                wait = _Wait(s, call.op, deadline)
            yield from _connect(s, wait)
        try:
            if call.needs_hello and s.info is None:
                try:
                    greeting = yield from _exchange(s, hello(f"liminald-python/{VERSION}"),
                                                    deadline)
                except _Lost as lost:
                    raise _Lost(lost.cause, sent=False) from None  # the call was not sent
                except Timeout:
                    raise Timeout(call.op, s.call_timeout, False, socket=s.socket_path,
                                  waiting_for="the daemon's hello") from None
                if greeting.get("ok") is not True:
                    err = LiminalError.from_wire(greeting.get("error"), s.socket_path)
                    if err.code == "shutting_down":
                        raise _Lost(err, sent=False)  # the call itself was not sent
                    yield from _refused(s, greeting, err)
                    raise err
                s.info = ServerInfo.from_wire(greeting)
            if s.info is not None:
                call.check(s.info, s.socket_path)
            reply = yield from _exchange(s, call, deadline)
            if reply.get("ok") is not True:
                err = LiminalError.from_wire(reply.get("error"), s.socket_path)
                if err.code == "shutting_down":
                    yield from _disconnect(s)
                    if call.safe and s.reconnect_timeout > 0:
                        raise _Lost(err, sent=True)
                yield from _refused(s, reply, err)
                raise err
        except _Lost as lost:
            yield from _disconnect(s)
            if lost.sent and not call.safe:
                raise Unavailable.lost(s.socket_path, call.op, lost.cause) from lost.cause
            if wait is None:
                wait = _Wait(s, call.op, deadline)
            delay = wait.failed(lost.cause)
            if delay > 0:
                yield Sleep(delay)
            continue
        result = call.parse(_result(reply))
        if isinstance(result, ServerInfo):
            s.info = result
        return result


def _refused(s: Session, reply: Mapping[str, Any], err: LiminalError) -> Flow[None]:
    """Closes the connection the daemon closes after a failure: forbidden,
    or unavailable with "id": null (too many connections)."""
    if err.code == "forbidden" or (err.code == "unavailable" and reply.get("id") is None):
        yield from _disconnect(s)


# --------------------------------------------------------------------------
# Subscriptions


class SubscriptionState:
    """Where a subscription is: its ``sub`` on the current connection
    (None when it must subscribe again), and the position to subscribe
    again from after a lag or a lost connection (after the last event
    handed out), with no gap and no duplicate."""

    def __init__(self, conversation: Optional[str], from_seq: Optional[int],
                 from_pos: Optional[int], resume_on_lag: bool, reconnect: bool):
        self.conversation = conversation
        self.from_seq = from_seq
        self.from_pos = from_pos
        self.resume_on_lag = resume_on_lag
        self.reconnect = reconnect
        self.sub: Optional[int] = None
        self.lags = 0
        self.resubscribes = 0
        self.closed = False

    def subscribe(self) -> Call[int]:
        return Call("subscribe", {"conversation": self.conversation, "from_seq": self.from_seq,
                                  "from_pos": self.from_pos}, lambda r: int(r["sub"]))

    @property
    def resumable(self) -> bool:
        """Whether it knows where to subscribe again from: it was given a
        position, or handed out an event."""
        return self.from_seq is not None or self.from_pos is not None

    def advance(self, e: Event) -> None:
        if self.conversation is not None:
            self.from_seq, self.from_pos = e.seq + 1, None
        else:
            self.from_pos = e.pos + 1

    def lagged(self, next_pos: Optional[int], next_seq: Optional[int]) -> None:
        if self.conversation is not None and next_seq is not None:
            self.from_seq, self.from_pos = next_seq, None
        elif next_pos is not None:
            self.from_seq, self.from_pos = None, next_pos
        self.sub = None


def subscribe_flow(s: Session, st: SubscriptionState, deadline: Optional[float]) -> Flow[None]:
    st.sub = yield from call_flow(s, st.subscribe(), deadline)


def next_event_flow(s: Session, st: SubscriptionState,
                    wait_timeout: Optional[float]) -> Flow[Optional[Event]]:
    """The subscription's next event, or None once it was closed.

    After a lag it subscribes again (with ``resume_on_lag``; else raises
    :class:`Lagged`); after a lost connection it reconnects and subscribes
    again from the position after the last event (with ``reconnect``, when
    it knows one; else raises :class:`Unavailable`).  ``wait_timeout``
    bounds the wait for the event (:class:`Timeout`; the subscription
    stays usable)."""
    deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
    while True:
        if st.closed:
            return None
        if st.sub is None:
            yield from subscribe_flow(s, st, s.deadline())
            continue
        remaining = left(deadline)
        lost: Optional[BaseException] = None
        try:
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            raw = yield Recv(remaining)
        except TimeoutError:
            if st.closed:
                return None
            raise Timeout("subscribe", wait_timeout, False, socket=s.socket_path,
                          waiting_for="the next event") from None
        except OSError as e:
            lost = e
        else:
            if raw.endswith(b"\n"):
                try:
                    msg = _decode(raw)
                except Internal as e:
                    yield from _disconnect(s)
                    st.sub = None
                    e.socket = s.socket_path
                    raise
                if msg.get("sub") != st.sub:
                    continue  # a push of an earlier subscription, or a stray reply
                if "event" in msg:
                    event = Event.from_wire(msg["event"])
                    st.advance(event)
                    return event
                if msg.get("lagged"):
                    sub = st.sub
                    next_pos, next_seq = msg.get("next_pos"), msg.get("next_seq")
                    st.lagged(next_pos, next_seq)
                    if not st.resume_on_lag:
                        st.closed = True
                        yield from _disconnect(s)
                        raise Lagged(sub, next_pos, next_seq)
                    st.lags += 1
                continue
            lost = ConnectionResetError("liminald closed the connection")
        if st.closed:
            return None
        yield from _disconnect(s)
        st.sub = None
        if not (st.reconnect and st.resumable and s.reconnect_timeout > 0):
            st.closed = True
            where = ("it knows no position to subscribe again from (give from_seq or from_pos)"
                     if not st.resumable else "reconnecting is off")
            raise Unavailable(
                "unavailable", f"subscribe: liminald at {s.socket_path} is unavailable: the "
                f"subscription ended with its connection ({lost}), and {where}", True,
                socket=s.socket_path, op="subscribe") from lost
        st.resubscribes += 1
