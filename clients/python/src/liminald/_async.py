"""The asyncio client: the flows of :mod:`liminald._protocol` run on an
asyncio stream, under a lock, so that tasks may share a client.  Every
method is the blocking :class:`~liminald.Client`'s, awaited."""

from __future__ import annotations

import asyncio
from typing import (
    Any, AsyncIterator, Callable, Dict, Generator, List, Optional, TypeVar, Union, overload,
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

# The longest line a stream reads: replies are bounded by the daemon (a
# read stops near 4 MiB), not by this.
_LINE_LIMIT = 1 << 30


async def _timed(aw: Any, timeout: Optional[float]) -> Any:
    if timeout is None:
        return await aw
    try:
        return await asyncio.wait_for(aw, timeout)
    except asyncio.TimeoutError:  # not TimeoutError before Python 3.11
        raise TimeoutError("timed out") from None


class _StreamIO:
    """The actions of a flow, performed on an asyncio unix stream."""

    def __init__(self, path: str):
        self.path = path
        self.reader: Optional[asyncio.StreamReader] = None
        self.writer: Optional[asyncio.StreamWriter] = None

    async def perform(self, action: p.Action) -> Any:
        if isinstance(action, p.Recv):
            return await self.recv(action.timeout)
        if isinstance(action, p.Send):
            reader, writer = self.reader, self.writer
            if reader is None or writer is None or writer.is_closing():
                raise ConnectionResetError("not connected")
            if reader.at_eof():
                # The daemon closed the connection: it reads nothing more.
                raise BrokenPipeError("liminald closed the connection")
            writer.write(action.data)
            await _timed(writer.drain(), action.timeout)
            return None
        if isinstance(action, p.Connect):
            self.close()
            self.reader, self.writer = await _timed(
                asyncio.open_unix_connection(self.path, limit=_LINE_LIMIT), action.timeout)
            return None
        if isinstance(action, p.Sleep):
            await asyncio.sleep(action.seconds)
            return None
        if isinstance(action, p.Disconnect):
            self.close()
            return None
        raise TypeError(f"unknown action {action!r}")

    async def recv(self, timeout: Optional[float]) -> bytes:
        reader = self.reader
        if reader is None:
            raise ConnectionResetError("not connected")
        try:
            line: bytes = await _timed(reader.readuntil(b"\n"), timeout)
            return line
        except asyncio.IncompleteReadError as e:
            return e.partial
        except asyncio.LimitOverrunError as e:
            raise ConnectionError(f"a line from liminald over {_LINE_LIMIT} bytes") from e

    def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()


async def _drive(io: _StreamIO, s: p.Session, flow: p.Flow[T]) -> T:
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
            value = await io.perform(action)
        except OSError as e:
            error = e
        except BaseException:
            # Cancelled mid-exchange: the stream is in an unknown state.
            io.close()
            s.connected, s.info = False, None
            flow.close()
            raise


class AsyncClient:
    """The asyncio twin of :class:`~liminald.Client`: the same settings,
    methods and rules (reconnecting, what is sent again, the hello check,
    timeouts), each method a coroutine.  Tasks may share it: each call is
    one round trip under a lock.  Use it as an async context manager, or
    call :meth:`close`."""

    def __init__(self, socket_path: Optional[str] = None,
                 timeout: Optional[float] = p.DEFAULT_TIMEOUT, *,
                 reconnect_timeout: float = p.DEFAULT_RECONNECT_TIMEOUT,
                 on_reconnect: Optional[Callable[[Reconnect], None]] = None):
        self._session = p.Session(socket_path, timeout, reconnect_timeout, on_reconnect)
        self._io = _StreamIO(self._session.socket_path)
        self._lock: Optional[asyncio.Lock] = None  # made in the loop that uses it

    @property
    def socket_path(self) -> str:
        return self._session.socket_path

    @property
    def timeout(self) -> Optional[float]:
        return self._session.timeout

    @property
    def reconnect_timeout(self) -> float:
        return self._session.reconnect_timeout

    @property
    def connects(self) -> int:
        return self._session.connects

    @property
    def server_info(self) -> Optional[ServerInfo]:
        return self._session.info

    async def _run(self, flow: Callable[[Optional[float]], p.Flow[T]], op: str,
                   timeout: Optional[float]) -> T:
        deadline = self._session.deadline(timeout)
        if self._lock is None:
            self._lock = asyncio.Lock()
        try:
            await _timed(self._lock.acquire(), p.left(deadline))
        except TimeoutError:
            raise Timeout(op, timeout or self._session.timeout, False, socket=self.socket_path,
                          waiting_for="another call on this client") from None
        try:
            return await _drive(self._io, self._session, flow(deadline))
        finally:
            self._lock.release()

    async def _call(self, call: p.Call[T], timeout: Optional[float]) -> T:
        return await self._run(lambda deadline: p.call_flow(self._session, call, deadline),
                               call.op, timeout)

    async def connect(self, *, timeout: Optional[float] = None) -> "AsyncClient":
        """Opens the connection now, waiting for the daemon as a call does."""
        await self._run(lambda deadline: p.connect_flow(self._session, deadline), "connect",
                        timeout)
        return self

    async def close(self) -> None:
        """Closes the connection; the client may still be used."""
        self._io.close()
        self._session.connected, self._session.info = False, None

    async def __aenter__(self) -> "AsyncClient":
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def request(self, op: str, *, timeout: Optional[float] = None,
                      **args: Any) -> Dict[str, Any]:
        """As :meth:`Client.request`."""
        return await self._call(p.request(op, args), timeout)

    async def hello(self, client: Optional[str] = f"liminald-python/{p.VERSION}", *,
                    timeout: Optional[float] = None) -> ServerInfo:
        """As :meth:`Client.hello`."""
        return await self._call(p.hello(client), timeout)

    async def ping(self, *, timeout: Optional[float] = None) -> None:
        """As :meth:`Client.ping`."""
        await self._call(p.ping(), timeout)

    async def receive(self, conversation: str, message_id: str,
                      received_at: Optional[int] = None, expected_seq: Optional[int] = None, *,
                      fingerprint: Optional[str] = None, sent_at: Optional[int] = None,
                      with_steps: bool = False, timeout: Optional[float] = None) -> Decision:
        """As :meth:`Client.receive`."""
        return await self._call(p.receive(conversation, message_id, received_at, expected_seq,
                                          fingerprint, sent_at, with_steps), timeout)

    async def decide(self, conversation: str, message_id: str, *,
                     fingerprint: Optional[str] = None, sent_at: Optional[int] = None,
                     with_steps: bool = False, timeout: Optional[float] = None) -> Decision:
        """As :meth:`Client.decide`."""
        return await self._call(p.decide(conversation, message_id, fingerprint, sent_at,
                                         with_steps), timeout)

    async def start(self, conversation: str, message_id: str,
                    expected_seq: Optional[int] = None, *, worker: Optional[str] = None,
                    lease_ms: Optional[int] = None, timeout: Optional[float] = None) -> Ack:
        """As :meth:`Client.start`."""
        return await self._call(p.start(conversation, message_id, expected_seq, worker,
                                        lease_ms), timeout)

    async def step(self, conversation: str, message_id: str, step_index: int, output: Bytes,
                   expected_seq: Optional[int] = None, *, token: Optional[int] = None,
                   timeout: Optional[float] = None) -> Ack:
        """As :meth:`Client.step`."""
        return await self._call(p.step(conversation, message_id, step_index, output,
                                       expected_seq, token), timeout)

    async def finish(self, conversation: str, message_id: str,
                     expected_seq: Optional[int] = None, *, token: Optional[int] = None,
                     timeout: Optional[float] = None) -> Ack:
        """As :meth:`Client.finish`."""
        return await self._call(p.finish(conversation, message_id, expected_seq, token), timeout)

    async def fail(self, conversation: str, message_id: str, error: str,
                   expected_seq: Optional[int] = None, *, token: Optional[int] = None,
                   timeout: Optional[float] = None) -> Ack:
        """As :meth:`Client.fail`."""
        return await self._call(p.fail(conversation, message_id, error, expected_seq, token),
                                timeout)

    async def renew(self, conversation: str, message_id: str, token: int, lease_ms: int,
                    expected_seq: Optional[int] = None, *,
                    timeout: Optional[float] = None) -> Ack:
        """As :meth:`Client.renew`."""
        return await self._call(p.renew(conversation, message_id, token, lease_ms, expected_seq),
                                timeout)

    async def release(self, conversation: str, message_id: str, reason: Optional[str] = None,
                      expected_seq: Optional[int] = None, *,
                      timeout: Optional[float] = None) -> Ack:
        """As :meth:`Client.release`."""
        return await self._call(p.release(conversation, message_id, reason, expected_seq),
                                timeout)

    def lease(self, conversation: str, message_id: str, worker: str, lease_ms: int, *,
              renew_every: Optional[float] = None) -> "AsyncLease":
        """An :class:`AsyncLease` on the message for ``worker``, started
        (as :meth:`Client.lease` starts it) when it is awaited or entered:
        ``async with client.lease(...) as lease:`` or
        ``lease = await client.lease(...)``."""
        return AsyncLease(self, conversation, message_id, worker, lease_ms,
                          renew_every=renew_every)

    @overload
    async def state(self, conversation: str, message_id: None = None, *,
                    timeout: Optional[float] = None) -> ConversationState: ...

    @overload
    async def state(self, conversation: str, message_id: str, *,
                    timeout: Optional[float] = None) -> MessageState: ...

    async def state(self, conversation: str, message_id: Optional[str] = None, *,
                    timeout: Optional[float] = None) -> Union[MessageState, ConversationState]:
        """As :meth:`Client.state`."""
        if message_id is None:
            conv: ConversationState = await self._call(p.conversation_state(conversation), timeout)
            return conv
        msg: MessageState = await self._call(p.message_state(conversation, message_id), timeout)
        return msg

    async def read(self, conversation: str, from_seq: int = 0, limit: Optional[int] = None, *,
                   timeout: Optional[float] = None) -> EventsPage:
        """As :meth:`Client.read`."""
        return await self._call(p.read(conversation, from_seq, limit), timeout)

    async def read_all(self, conversation: str, from_seq: int = 0) -> AsyncIterator[Event]:
        """Every event of a conversation from ``from_seq``, page by page."""
        while True:
            page = await self.read(conversation, from_seq)
            for e in page.events:
                yield e
            if not page.events:
                return
            from_seq = page.next_seq

    def subscribe(self, conversation: Optional[str] = None, from_seq: Optional[int] = None,
                  from_pos: Optional[int] = None, *, timeout: Optional[float] = None,
                  wait_timeout: Optional[float] = None, resume_on_lag: bool = True,
                  reconnect: bool = True) -> "AsyncSubscription":
        """An :class:`AsyncSubscription`, subscribed when it is awaited or
        entered: ``async with client.subscribe("orders", from_seq=0) as
        events: async for e in events: ...``."""
        return AsyncSubscription(self.socket_path, conversation, from_seq, from_pos,
                                 timeout=self.timeout if timeout is None else timeout,
                                 wait_timeout=wait_timeout, resume_on_lag=resume_on_lag,
                                 reconnect=reconnect, reconnect_timeout=self.reconnect_timeout,
                                 on_reconnect=self._session.on_reconnect)

    async def messages(self, conversation: str, status: Optional[str] = None,
                       after: Optional[str] = None, limit: Optional[int] = None, *,
                       timeout: Optional[float] = None) -> MessagesPage:
        """As :meth:`Client.messages`."""
        return await self._call(p.messages(conversation, status, after, limit), timeout)

    async def explain(self, conversation: str, message_id: str, *,
                      fingerprint: Optional[str] = None, sent_at: Optional[int] = None,
                      with_steps: bool = False,
                      timeout: Optional[float] = None) -> Explanation:
        """As :meth:`Client.explain`."""
        return await self._call(p.explain(conversation, message_id, fingerprint, sent_at,
                                          with_steps), timeout)

    async def conversations(self, after: Optional[str] = None, limit: Optional[int] = None, *,
                            timeout: Optional[float] = None) -> List[ConversationInfo]:
        """As :meth:`Client.conversations`."""
        return await self._call(p.conversations(after, limit), timeout)

    async def stats(self, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """As :meth:`Client.stats`."""
        return await self._call(p.stats(), timeout)


class AsyncLease(LeaseCore):
    """The asyncio twin of :class:`~liminald.Lease`: made by
    :meth:`AsyncClient.lease`, started when awaited or entered, renewed by
    a task of its own every ``renew_every`` seconds (default a third of the
    lease).  ``await lease.step(i, output)``, ``finish()`` and ``fail()``
    write with its token; once a write or a renewal is answered
    :class:`Fenced`, the lease is ``lost`` and :meth:`check` raises it;
    ``await lease.wait_lost()`` waits for that."""

    def __init__(self, client: AsyncClient, conversation: str, message_id: str, worker: str,
                 lease_ms: int, *, renew_every: Optional[float] = None):
        super().__init__(conversation, message_id, worker, lease_ms, renew_every)
        self.client = client
        self._task: Optional["asyncio.Task[None]"] = None
        self._stopped: Optional[asyncio.Event] = None
        self._lost_event: Optional[asyncio.Event] = None

    def _events(self) -> "tuple[asyncio.Event, asyncio.Event]":
        if self._stopped is None or self._lost_event is None:
            self._stopped, self._lost_event = asyncio.Event(), asyncio.Event()
        return self._stopped, self._lost_event

    async def start(self) -> "AsyncLease":
        """Starts the message with the lease (once), and the renewals."""
        if self.token is not None:
            return self
        stopped, _ = self._events()
        ack = await self.client.start(self.conversation, self.message_id, worker=self.worker,
                                      lease_ms=self.lease_ms)
        self._started(ack, self.client.socket_path)
        if self.renew_every > 0 and not stopped.is_set():
            self._task = asyncio.ensure_future(self._renew_loop(self.renew_every))
        return self

    def __await__(self) -> Generator[Any, None, "AsyncLease"]:
        return self.start().__await__()

    async def __aenter__(self) -> "AsyncLease":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def _renew_loop(self, every: float) -> None:
        stopped, _ = self._events()
        while True:
            try:
                await asyncio.wait_for(stopped.wait(), every)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await self.renew()
            except Fenced:
                return  # lost: renew() recorded it
            except LiminalError as e:
                self._renew_failed(e)  # tried again at the next tick

    def _fenced(self, e: Fenced) -> None:
        super()._fenced(e)
        stopped, lost = self._events()
        stopped.set()
        lost.set()

    async def wait_lost(self, timeout: Optional[float] = None) -> bool:
        """Waits until the lease is known to be lost (or ``timeout``
        seconds); returns whether it is."""
        _, lost = self._events()
        try:
            await _timed(lost.wait(), timeout)
        except TimeoutError:
            pass
        return lost.is_set()

    async def renew(self) -> Ack:
        """Renews the lease now (the renewing task calls this)."""
        self.check()
        try:
            ack = await self.client.renew(self.conversation, self.message_id, self._token(),
                                          self.lease_ms)
        except Fenced as e:
            self._fenced(e)
            raise
        self._renewed(ack)
        return ack

    async def _write(self, write: Callable[[int], Any]) -> Ack:
        self.check()
        try:
            ack: Ack = await write(self._token())
            return ack
        except Fenced as e:
            self._fenced(e)
            raise

    async def step(self, step_index: int, output: Bytes) -> Ack:
        """Records a completed step with this lease's token."""
        return await self._write(lambda token: self.client.step(
            self.conversation, self.message_id, step_index, output, token=token))

    async def finish(self) -> Ack:
        """Stops renewing and records that the message is done."""
        await self.stop()
        return await self._write(lambda token: self.client.finish(
            self.conversation, self.message_id, token=token))

    async def fail(self, error: str) -> Ack:
        """Stops renewing and records that processing failed."""
        await self.stop()
        return await self._write(lambda token: self.client.fail(
            self.conversation, self.message_id, error, token=token))

    async def stop(self) -> None:
        """Stops renewing (a renewal under way ends first)."""
        stopped, _ = self._events()
        stopped.set()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            await task


class AsyncSubscription:
    """The asyncio twin of :class:`~liminald.Subscription`: subscribed when
    awaited or entered, then ``async for e in sub``; :meth:`close` ends
    it (from another task too)."""

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
        self._io = _StreamIO(self._session.socket_path)
        self._opened = False
        self.wait_timeout = wait_timeout

    @property
    def conversation(self) -> Optional[str]:
        return self._state.conversation

    @property
    def sub(self) -> Optional[int]:
        return self._state.sub

    @property
    def lags(self) -> int:
        return self._state.lags

    @property
    def resubscribes(self) -> int:
        return self._state.resubscribes

    async def open(self) -> "AsyncSubscription":
        """Subscribes (once)."""
        if not self._opened:
            self._opened = True
            try:
                await _drive(self._io, self._session,
                             p.subscribe_flow(self._session, self._state,
                                              self._session.deadline()))
            except BaseException:
                self.close()
                raise
        return self

    def __await__(self) -> Generator[Any, None, "AsyncSubscription"]:
        return self.open().__await__()

    async def __aenter__(self) -> "AsyncSubscription":
        return await self.open()

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    def __aiter__(self) -> "AsyncSubscription":
        return self

    async def __anext__(self) -> Event:
        e = await self.next(self.wait_timeout)
        if e is None:
            raise StopAsyncIteration
        return e

    async def next(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event, waiting for up to ``timeout`` seconds (None: for
        ever) before it raises :class:`Timeout`; None once closed."""
        await self.open()
        if self._state.closed:
            return None
        return await _drive(self._io, self._session,
                            p.next_event_flow(self._session, self._state, timeout))

    def close(self) -> None:
        """Ends the subscription by closing its connection."""
        self._state.closed = True
        self._io.close()

    async def aclose(self) -> None:
        self.close()
