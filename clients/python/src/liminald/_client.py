"""The blocking client: the flows of :mod:`liminald._protocol` run on a
socket, under a lock, so that threads may share a client."""

from __future__ import annotations

import socket
import threading
import time
from typing import (
    Any, Callable, Dict, Iterator, List, Optional, TypeVar, Union, overload,
)

from . import _protocol as p
from ._errors import Fenced, LiminalError, Timeout
from ._lease import LeaseCore
from ._results import (
    Ack, ConversationInfo, ConversationState, Decision, Event, EventsPage, Explanation,
    MessageState, MessagesPage, Reconnect, ServerInfo,
)

T = TypeVar("T")
Bytes = Union[bytes, bytearray, memoryview]


class _SocketIO:
    """The actions of a flow, performed on a unix socket."""

    def __init__(self, path: str):
        self.path = path
        self.sock: Optional[socket.socket] = None
        self.buf = bytearray()
        self.scanned = 0  # bytes of buf known to hold no newline

    def perform(self, action: p.Action) -> Any:
        if isinstance(action, p.Recv):
            return self.recv(action.timeout)
        if isinstance(action, p.Send):
            self._socket().settimeout(action.timeout)
            try:
                self._socket().sendall(action.data)
            except socket.timeout:
                raise TimeoutError("timed out") from None
            return None
        if isinstance(action, p.Connect):
            self.close()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(action.timeout)
                sock.connect(self.path)
            except socket.timeout:
                sock.close()
                raise TimeoutError("timed out connecting") from None
            except BaseException:
                sock.close()
                raise
            self.sock = sock
            return None
        if isinstance(action, p.Sleep):
            time.sleep(action.seconds)
            return None
        if isinstance(action, p.Disconnect):
            self.close()
            return None
        raise TypeError(f"unknown action {action!r}")

    def _socket(self) -> socket.socket:
        if self.sock is None:
            raise ConnectionResetError("not connected")
        return self.sock

    def recv(self, timeout: Optional[float]) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            i = self.buf.find(b"\n", self.scanned)
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                self.scanned = 0
                return line
            self.scanned = len(self.buf)
            sock = self._socket()
            sock.settimeout(None if deadline is None else max(deadline - time.monotonic(), 0.0))
            try:
                chunk = sock.recv(1 << 16)
            except (socket.timeout, BlockingIOError):
                raise TimeoutError("timed out") from None
            if not chunk:
                rest = bytes(self.buf)
                self.buf.clear()
                self.scanned = 0
                return rest
            self.buf += chunk

    def close(self) -> None:
        sock, self.sock = self.sock, None
        self.buf.clear()
        self.scanned = 0
        if sock is not None:
            # shutdown first: it wakes a thread blocked reading, which close
            # alone does not.
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def _drive(io: _SocketIO, s: p.Session, flow: p.Flow[T]) -> T:
    """Runs a flow to its end, performing its actions on io."""
    value: Any = None
    error: Optional[BaseException] = None
    while True:
        try:
            action = flow.send(value) if error is None else flow.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        value, error = None, None
        try:
            value = io.perform(action)
        except OSError as e:
            error = e
        except BaseException:
            # Interrupted mid-exchange: the stream is in an unknown state.
            io.close()
            s.connected, s.info = False, None
            flow.close()
            raise


class Client:
    """A client of liminald, with one method per op.

    ``socket_path`` defaults to :func:`default_socket_path` (as the daemon
    finds its socket).  ``timeout`` (seconds, default 60; None for none)
    bounds each call, the wait for the daemon included; each method also
    takes ``timeout=`` for itself.

    The connection opens on first use (or :meth:`connect`).  When it is
    lost (the daemon restarted, or is stopped), a call connects again,
    trying at once, then after 10 ms doubling to 1 s, for up to
    ``reconnect_timeout`` seconds (default 10; 0 never waits), then raises
    :class:`Unavailable` naming the socket.  A call never sent is sent on
    the new connection.  One whose request was sent before the connection
    was lost is sent again only when that is safe: reads, and writes the
    daemon answers as duplicates when they already landed (any write with
    ``expected_seq``; a step, finish or fail with a ``token``).  Others
    raise :class:`Unavailable` with ``sent`` true: they may or may not have
    taken effect.  ``on_reconnect`` is called with a :class:`Reconnect`
    before each try.

    A Client may be shared between threads: each call is one round trip
    under a lock.  Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, socket_path: Optional[str] = None,
                 timeout: Optional[float] = p.DEFAULT_TIMEOUT, *,
                 reconnect_timeout: float = p.DEFAULT_RECONNECT_TIMEOUT,
                 on_reconnect: Optional[Callable[[Reconnect], None]] = None):
        self._session = p.Session(socket_path, timeout, reconnect_timeout, on_reconnect)
        self._io = _SocketIO(self._session.socket_path)
        self._lock = threading.Lock()

    @property
    def socket_path(self) -> str:
        """The daemon's socket."""
        return self._session.socket_path

    @property
    def timeout(self) -> Optional[float]:
        """The default timeout of a call, in seconds."""
        return self._session.timeout

    @property
    def reconnect_timeout(self) -> float:
        """How long a call waits for the daemon to come back, in seconds."""
        return self._session.reconnect_timeout

    @property
    def connects(self) -> int:
        """How many connections the client made."""
        return self._session.connects

    @property
    def server_info(self) -> Optional[ServerInfo]:
        """The daemon's hello on the current connection, once asked."""
        return self._session.info

    # -- running flows ------------------------------------------------------

    def _run(self, flow: Callable[[Optional[float]], p.Flow[T]], op: str,
             timeout: Optional[float]) -> T:
        deadline = self._session.deadline(timeout)
        wait = p.left(deadline)
        if not self._lock.acquire(timeout=-1 if wait is None else wait):
            raise Timeout(op, timeout or self._session.timeout, False,
                          socket=self.socket_path, waiting_for="another call on this client")
        try:
            return _drive(self._io, self._session, flow(deadline))
        finally:
            self._lock.release()

    def _call(self, call: p.Call[T], timeout: Optional[float]) -> T:
        return self._run(lambda deadline: p.call_flow(self._session, call, deadline), call.op,
                         timeout)

    # -- connection ---------------------------------------------------------

    def connect(self, *, timeout: Optional[float] = None) -> "Client":
        """Opens the connection now (it is otherwise opened on first use),
        waiting for the daemon as a call does."""
        self._run(lambda deadline: p.connect_flow(self._session, deadline), "connect", timeout)
        return self

    def close(self) -> None:
        """Closes the connection.  The client may still be used: it then
        connects again."""
        with self._lock:
            self._io.close()
            self._session.connected, self._session.info = False, None

    def __enter__(self) -> "Client":
        return self.connect()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def request(self, op: str, *, timeout: Optional[float] = None, **args: Any) -> Dict[str, Any]:
        """Sends one request and returns its success reply as a dict (without
        ``id`` and ``ok``), or raises the LiminalError of its failure.
        It sends ops this package has no method for; arguments that are
        None are left out.  It is sent again after a lost connection, and
        checked against the daemon's protocol, as the methods are."""
        return self._call(p.request(op, args), timeout)

    # -- ops ----------------------------------------------------------------

    def hello(self, client: Optional[str] = f"liminald-python/{p.VERSION}", *,
              timeout: Optional[float] = None) -> ServerInfo:
        """The daemon's protocol, name and version, ops and limits (kept as
        :attr:`server_info` for the connection)."""
        return self._call(p.hello(client), timeout)

    def ping(self, *, timeout: Optional[float] = None) -> None:
        """Raises unless the daemon answers."""
        self._call(p.ping(), timeout)

    def receive(self, conversation: str, message_id: str, received_at: Optional[int] = None,
                expected_seq: Optional[int] = None, *, fingerprint: Optional[str] = None,
                sent_at: Optional[int] = None, with_steps: bool = False,
                timeout: Optional[float] = None) -> Decision:
        """Records a delivery of a message and returns what to do with it.
        ``received_at`` is in epoch milliseconds (default: the daemon's now).
        ``fingerprint`` names the payload (e.g. its sha256): the first
        receive stores it, and a later one with another raises
        :class:`FingerprintMismatch`.  ``sent_at`` is when the message was
        first produced (epoch ms, e.g. its broker's timestamp): a message
        the conversation does not know, sent at or before its
        ``forgotten_before``, is decided "forgotten" and nothing is
        appended.  With ``with_steps``, a "resume" carries the completed
        steps' outputs.  Without ``expected_seq`` it is not sent again
        after a lost connection."""
        return self._call(p.receive(conversation, message_id, received_at, expected_seq,
                                    fingerprint, sent_at, with_steps), timeout)

    def decide(self, conversation: str, message_id: str, *, fingerprint: Optional[str] = None,
               sent_at: Optional[int] = None, with_steps: bool = False,
               timeout: Optional[float] = None) -> Decision:
        """The decision ``receive`` would give, without recording anything."""
        return self._call(p.decide(conversation, message_id, fingerprint, sent_at, with_steps),
                          timeout)

    def start(self, conversation: str, message_id: str, expected_seq: Optional[int] = None, *,
              worker: Optional[str] = None, lease_ms: Optional[int] = None,
              timeout: Optional[float] = None) -> Ack:
        """Records that processing (re)started; the Ack carries its
        ``token``.  With ``lease_ms`` (1 to 86,400,000) it takes a lease for
        ``worker``, answered with ``lease_expires_at``: while the lease is
        live, deliveries answer "busy" and a start by another worker raises
        :class:`Busy`; once it lapsed, a start with a lease takes the
        message over and fences the old token.  :meth:`lease` wraps this
        with renewals."""
        return self._call(p.start(conversation, message_id, expected_seq, worker, lease_ms),
                          timeout)

    def step(self, conversation: str, message_id: str, step_index: int, output: Bytes,
             expected_seq: Optional[int] = None, *, token: Optional[int] = None,
             timeout: Optional[float] = None) -> Ack:
        """Records a completed step and its output (bytes, may be empty; an
        output over the daemon's ``max_output_bytes`` raises
        :class:`OutputTooLarge` before anything is sent).  With ``token``,
        raises :class:`Fenced` unless it is the message's current token;
        likewise for finish and fail."""
        return self._call(p.step(conversation, message_id, step_index, output, expected_seq,
                                 token), timeout)

    def finish(self, conversation: str, message_id: str, expected_seq: Optional[int] = None, *,
               token: Optional[int] = None, timeout: Optional[float] = None) -> Ack:
        """Records that the message is fully processed."""
        return self._call(p.finish(conversation, message_id, expected_seq, token), timeout)

    def fail(self, conversation: str, message_id: str, error: str,
             expected_seq: Optional[int] = None, *, token: Optional[int] = None,
             timeout: Optional[float] = None) -> Ack:
        """Records that processing failed (it may be retried with ``start``)."""
        return self._call(p.fail(conversation, message_id, error, expected_seq, token), timeout)

    def renew(self, conversation: str, message_id: str, token: int, lease_ms: int,
              expected_seq: Optional[int] = None, *, timeout: Optional[float] = None) -> Ack:
        """Extends the lease of ``token`` to ``lease_ms`` from now (the Ack
        carries ``lease_expires_at``).  Raises :class:`Fenced` when the token
        is not current or the message is no longer in progress."""
        return self._call(p.renew(conversation, message_id, token, lease_ms, expected_seq),
                          timeout)

    def release(self, conversation: str, message_id: str, reason: Optional[str] = None,
                expected_seq: Optional[int] = None, *, timeout: Optional[float] = None) -> Ack:
        """Releases a quarantined message: its attempts start again from 0
        and its next delivery resumes it.  Raises :class:`NotQuarantined`
        for a message that is not quarantined."""
        return self._call(p.release(conversation, message_id, reason, expected_seq), timeout)

    def lease(self, conversation: str, message_id: str, worker: str, lease_ms: int, *,
              renew_every: Optional[float] = None) -> "Lease":
        """Starts a message with a lease for ``worker`` and returns the
        :class:`Lease`, which renews it in the background every
        ``renew_every`` seconds (default: a third of ``lease_ms``; 0 for
        never) until it is finished, failed, lost or stopped.  Raises
        :class:`ProtocolError` against a protocol-1 daemon, :class:`Busy`
        while another worker holds it, :class:`Quarantined`,
        :class:`AlreadyFinished` or :class:`UnknownMessage` as ``start``
        does."""
        lease = Lease(self, conversation, message_id, worker, lease_ms, renew_every=renew_every)
        lease._begin()
        return lease

    @overload
    def state(self, conversation: str, message_id: None = None, *,
              timeout: Optional[float] = None) -> ConversationState: ...

    @overload
    def state(self, conversation: str, message_id: str, *,
              timeout: Optional[float] = None) -> MessageState: ...

    def state(self, conversation: str, message_id: Optional[str] = None, *,
              timeout: Optional[float] = None) -> Union[MessageState, ConversationState]:
        """A :class:`MessageState` with ``message_id``, else a
        :class:`ConversationState`."""
        if message_id is None:
            conv: ConversationState = self._call(p.conversation_state(conversation), timeout)
            return conv
        msg: MessageState = self._call(p.message_state(conversation, message_id), timeout)
        return msg

    def read(self, conversation: str, from_seq: int = 0, limit: Optional[int] = None, *,
             timeout: Optional[float] = None) -> EventsPage:
        """Up to ``limit`` events (default 1000, at most 10000) of a
        conversation from ``from_seq``: an :class:`EventsPage`, which
        unpacks as ``events, next_seq`` (where to read on from)."""
        return self._call(p.read(conversation, from_seq, limit), timeout)

    def read_all(self, conversation: str, from_seq: int = 0) -> Iterator[Event]:
        """Every event of a conversation from ``from_seq``, page by page."""
        while True:
            page = self.read(conversation, from_seq)
            yield from page.events
            if not page.events:
                return
            from_seq = page.next_seq

    def subscribe(self, conversation: Optional[str] = None, from_seq: Optional[int] = None,
                  from_pos: Optional[int] = None, *, timeout: Optional[float] = None,
                  wait_timeout: Optional[float] = None, resume_on_lag: bool = True,
                  reconnect: bool = True) -> "Subscription":
        """Follows committed events on a connection of its own: see
        :class:`Subscription`.  ``timeout`` bounds the subscribe request
        (default: the client's), ``wait_timeout`` each wait for an event
        (default: none)."""
        return Subscription(self.socket_path, conversation, from_seq, from_pos,
                            timeout=self.timeout if timeout is None else timeout,
                            wait_timeout=wait_timeout, resume_on_lag=resume_on_lag,
                            reconnect=reconnect, reconnect_timeout=self.reconnect_timeout,
                            on_reconnect=self._session.on_reconnect)

    def messages(self, conversation: str, status: Optional[str] = None,
                 after: Optional[str] = None, limit: Optional[int] = None, *,
                 timeout: Optional[float] = None) -> MessagesPage:
        """Up to ``limit`` messages of a conversation (default 100, at most
        1000), by id, after the id ``after``; ``status`` filters them
        ("received", "in_progress", "leased", "errored", "finished",
        "quarantined").  Returns a :class:`MessagesPage`, which unpacks as
        ``messages, next`` (the ``after`` of the next page, None at the
        end)."""
        return self._call(p.messages(conversation, status, after, limit), timeout)

    def explain(self, conversation: str, message_id: str, *, fingerprint: Optional[str] = None,
                sent_at: Optional[int] = None, with_steps: bool = False,
                timeout: Optional[float] = None) -> Explanation:
        """Why a delivery of the message would get the decision it would:
        see :class:`Explanation`."""
        return self._call(p.explain(conversation, message_id, fingerprint, sent_at, with_steps),
                          timeout)

    def conversations(self, after: Optional[str] = None, limit: Optional[int] = None, *,
                      timeout: Optional[float] = None) -> List[ConversationInfo]:
        """Up to ``limit`` conversations (default 100, at most 1000), by
        name, after the name ``after``: a list of :class:`ConversationInfo`."""
        return self._call(p.conversations(after, limit), timeout)

    def stats(self, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """The daemon's figures: conversations, messages, events, db_bytes,
        uptime_s, connections, subscribers and commits, and retention's:
        compacted (messages ever compacted), tombstones (kept now),
        tombstones_dropped, forgotten_before (the newest of any
        conversation, or None) and compaction (passes, failed, ms_total,
        ms_max)."""
        return self._call(p.stats(), timeout)


class Lease(LeaseCore):
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
    either sees it, and does nothing more for the message;
    :meth:`wait_lost` waits for the loss.

    Renewal stops on :meth:`finish`, :meth:`fail`, :meth:`stop`, leaving a
    ``with`` block, or once lost.  A renewal that fails for another reason
    (the daemon restarting, ``unavailable``) is kept in ``renew_error`` and
    tried again at the next tick.  The client is shared with the renewing
    thread, which a :class:`Client` allows.
    """

    def __init__(self, client: Client, conversation: str, message_id: str, worker: str,
                 lease_ms: int, *, renew_every: Optional[float] = None):
        super().__init__(conversation, message_id, worker, lease_ms, renew_every)
        self.client = client
        self._stopped = threading.Event()
        self._lost_event = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _begin(self) -> None:
        ack = self.client.start(self.conversation, self.message_id, worker=self.worker,
                                lease_ms=self.lease_ms)
        self._started(ack, self.client.socket_path)
        if self.renew_every > 0:
            self._thread = threading.Thread(
                target=self._renew_loop, args=(self.renew_every,),
                name=f"liminald-lease-{self.message_id}", daemon=True)
            self._thread.start()

    def _renew_loop(self, every: float) -> None:
        while not self._stopped.wait(every):
            try:
                self.renew()
            except Fenced:
                return  # lost: renew() recorded it
            except LiminalError as e:
                self._renew_failed(e)  # tried again at the next tick

    def _fenced(self, e: Fenced) -> None:
        super()._fenced(e)
        self._stopped.set()
        self._lost_event.set()

    def wait_lost(self, timeout: Optional[float] = None) -> bool:
        """Waits until the lease is known to be lost (or ``timeout``
        seconds); returns whether it is."""
        return self._lost_event.wait(timeout)

    def renew(self) -> Ack:
        """Renews the lease now (the background thread calls this)."""
        self.check()
        try:
            ack = self.client.renew(self.conversation, self.message_id, self._token(),
                                    self.lease_ms)
        except Fenced as e:
            self._fenced(e)
            raise
        self._renewed(ack)
        return ack

    def _write(self, write: Callable[[int], Ack]) -> Ack:
        self.check()
        try:
            return write(self._token())
        except Fenced as e:
            self._fenced(e)
            raise

    def step(self, step_index: int, output: Bytes) -> Ack:
        """Records a completed step with this lease's token."""
        return self._write(lambda token: self.client.step(
            self.conversation, self.message_id, step_index, output, token=token))

    def finish(self) -> Ack:
        """Stops renewing and records that the message is done."""
        self.stop()
        return self._write(lambda token: self.client.finish(
            self.conversation, self.message_id, token=token))

    def fail(self, error: str) -> Ack:
        """Stops renewing and records that processing failed."""
        self.stop()
        return self._write(lambda token: self.client.fail(
            self.conversation, self.message_id, error, token=token))

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


class Subscription:
    """An iterator of the :class:`Event` objects committed to liminald, in
    ``seq`` order within a conversation and ``pos`` order overall, on a
    connection of its own.

    With ``conversation``, only its events, from ``from_seq`` (or
    ``from_pos``); without, every conversation's, from ``from_pos``.  With no
    position, only events committed after the subscription is set up (which
    it is when the constructor returns).  Iteration waits for the next event
    (for up to ``wait_timeout`` seconds, then :class:`Timeout`; by default
    for ever) and never ends by itself; call :meth:`close` (or leave its
    ``with`` block) to stop; close may be called from another thread, and
    ends the iteration there.

    A subscriber too slow to keep up is ended by the daemon; with
    ``resume_on_lag`` (the default) it subscribes again from where it
    stopped, without a gap or a duplicate (``lags`` counts how often).
    Without, iteration raises :class:`Lagged`.  Likewise when its
    connection is lost (the daemon restarted): with ``reconnect`` (the
    default) it connects again as a call does, and subscribes again from
    the position after the last event it handed out (``resubscribes``
    counts how often); it raises :class:`Unavailable` when it cannot, or
    when it knows no position to go on from (it was given none and has
    handed out no event yet).  Iterate from one thread at a time.
    """

    def __init__(self, socket_path: Optional[str] = None, conversation: Optional[str] = None,
                 from_seq: Optional[int] = None, from_pos: Optional[int] = None, *,
                 timeout: Optional[float] = p.DEFAULT_TIMEOUT,
                 wait_timeout: Optional[float] = None, resume_on_lag: bool = True,
                 reconnect: bool = True,
                 reconnect_timeout: float = p.DEFAULT_RECONNECT_TIMEOUT,
                 on_reconnect: Optional[Callable[[Reconnect], None]] = None):
        self._session = p.Session(socket_path, timeout, reconnect_timeout, on_reconnect)
        self._state = p.SubscriptionState(conversation, from_seq, from_pos, resume_on_lag,
                                          reconnect)
        self._io = _SocketIO(self._session.socket_path)
        self.wait_timeout = wait_timeout
        try:
            _drive(self._io, self._session,
                   p.subscribe_flow(self._session, self._state, self._session.deadline()))
        except BaseException:
            self.close()
            raise

    @property
    def conversation(self) -> Optional[str]:
        return self._state.conversation

    @property
    def sub(self) -> Optional[int]:
        """The subscription's number on its current connection."""
        return self._state.sub

    @property
    def lags(self) -> int:
        """How often it subscribed again after a lag."""
        return self._state.lags

    @property
    def resubscribes(self) -> int:
        """How often it subscribed again after a lost connection."""
        return self._state.resubscribes

    def __iter__(self) -> "Subscription":
        return self

    def __next__(self) -> Event:
        e = self.next(self.wait_timeout)
        if e is None:
            raise StopIteration
        return e

    def next(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event, waiting for up to ``timeout`` seconds (None: for
        ever) before it raises :class:`Timeout`; None once closed."""
        if self._state.closed:
            return None
        return _drive(self._io, self._session,
                      p.next_event_flow(self._session, self._state, timeout))

    def close(self) -> None:
        """Ends the subscription by closing its connection."""
        self._state.closed = True
        self._io.close()  # wakes a thread reading, which then sees it closed

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
