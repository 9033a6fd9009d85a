"""The exceptions of the client: one class per error code of the protocol,
and the failures the client finds itself (the daemon cannot be reached, a
call timed out, a feature the daemon does not speak, an output too large)."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple, Type


class LiminalError(Exception):
    """A failure reply from liminald, or a failure of the client to get one.

    ``code`` is the stable wire code (branch on it, or on the subclass, never
    on ``message``); ``retryable`` says whether the same request may succeed
    if sent again; ``details`` holds the error object's other fields (such as
    ``field`` for bad_request, ``expected`` and ``actual`` for
    sequence_conflict); ``socket`` is the socket of the daemon the client
    talked to.  A code this package does not know raises a plain
    LiminalError (also importable as ``Error``).

    The client's own failures use codes no daemon sends: ``timeout``
    (:class:`Timeout`) and ``protocol`` (:class:`ProtocolError`); a daemon
    that cannot be reached is :class:`Unavailable`, code ``unavailable``,
    like the daemon's own answer that it cannot write now: both are
    retryable.
    """

    code: str = ""  # the code of a subclass

    def __init__(self, code: str, message: str, retryable: bool = False,
                 details: Optional[Mapping[str, Any]] = None, *, socket: Optional[str] = None):
        super().__init__(code, message, retryable, dict(details or {}))
        self.code = code
        self.message = message
        self.retryable = bool(retryable)
        self.details: Dict[str, Any] = dict(details or {})
        self.socket = socket

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __reduce__(self) -> Any:
        # The subclasses' constructors differ: rebuild from the attributes.
        return _rebuild, (type(self), self.args, dict(self.__dict__))

    @classmethod
    def from_wire(cls, err: Any, socket: Optional[str] = None) -> "LiminalError":
        """Builds the exception for the "error" object of a failure reply."""
        if not isinstance(err, dict):
            return Internal("internal", f"malformed error object from liminald: {err!r}", False,
                            socket=socket)
        err = dict(err)
        code = str(err.pop("code", ""))
        message = str(err.pop("message", ""))
        retryable = bool(err.pop("retryable", False))
        return _ERRORS.get(code, LiminalError)(code, message, retryable, err, socket=socket)


Error = LiminalError


class BadRequest(LiminalError):
    """bad_request: malformed JSON, or a missing or invalid argument."""
    code = "bad_request"

    @property
    def field(self) -> Optional[str]:
        """The argument at fault, when the daemon names one."""
        return self.details.get("field")


class OutputTooLarge(BadRequest):
    """A step's output over the daemon's ``max_output_bytes`` (``hello``
    reports it): refused by the client before anything was sent.  Its code
    is bad_request, with ``field`` "output", ``size`` and ``limit``."""

    def __init__(self, size: int, limit: int, *, socket: Optional[str] = None):
        super().__init__(
            "bad_request",
            f"output is {size} bytes, over the daemon's max_output_bytes of {limit} "
            f"(its max_line_bytes, less the rest of the request, in base64); not sent",
            False, {"field": "output", "size": size, "limit": limit}, socket=socket)

    @property
    def size(self) -> int:
        """The output's size in bytes."""
        return int(self.details["size"])

    @property
    def limit(self) -> int:
        """The daemon's max_output_bytes."""
        return int(self.details["limit"])


class LineTooLong(LiminalError):
    """line_too_long: a request line over the daemon's limit."""
    code = "line_too_long"


class UnknownOp(LiminalError):
    """unknown_op: no such op."""
    code = "unknown_op"


class UnknownMessage(LiminalError):
    """unknown_message: a write for a message never received."""
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
    """unavailable (retryable).

    From the daemon: its store cannot write now (disk full, read-only, an
    I/O error; reads keep working), or it refused a connection over its
    ``max_connections``.

    From the client: the daemon at ``socket`` could not be reached.  Either
    it stayed away past the client's ``reconnect_timeout`` (``sent`` is
    false: the request was never sent), or the connection was lost after a
    request that is not safe to send twice was sent (``sent`` is true: it
    may or may not have taken effect; ``decide`` or ``state`` tells).
    ``op`` is the call's op; the cause (``FileNotFoundError``,
    ``ConnectionRefusedError``, ``BrokenPipeError``...) is chained as
    ``__cause__``.
    """
    code = "unavailable"

    def __init__(self, code: str, message: str, retryable: bool = True,
                 details: Optional[Mapping[str, Any]] = None, *, socket: Optional[str] = None,
                 op: Optional[str] = None, sent: bool = False):
        super().__init__(code, message, retryable, details, socket=socket)
        self.op = op
        self.sent = sent

    @classmethod
    def unreachable(cls, socket: str, op: Optional[str], cause: BaseException,
                    waited: float) -> "Unavailable":
        """The daemon could not be reached within the reconnect timeout."""
        what = f"{op}: " if op else ""
        return cls("unavailable",
                   f"{what}liminald at {socket} is unavailable: {_describe(cause)} "
                   f"(gave up after {waited:.1f} s)", True, socket=socket, op=op)

    @classmethod
    def lost(cls, socket: str, op: Optional[str], cause: BaseException) -> "Unavailable":
        """The connection was lost after a request not safe to resend was sent."""
        what = f"{op}: " if op else ""
        return cls("unavailable",
                   f"{what}liminald at {socket} is unavailable: the connection was lost after "
                   f"the request was sent, so it may or may not have taken effect: "
                   f"{_describe(cause)}", True, socket=socket, op=op, sent=True)


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


class Timeout(LiminalError):
    """timeout (retryable), the client's own: the daemon did not answer
    within the call's timeout.  ``sent`` says whether the request was sent
    (then it may still take effect).  The connection is closed; the next
    call opens another."""
    code = "timeout"

    def __init__(self, op: Optional[str], seconds: Optional[float], sent: bool, *,
                 socket: Optional[str] = None, waiting_for: str = "the reply"):
        what = f"{op}: " if op else ""
        after = f" within {seconds:g} s" if seconds is not None else ""
        super().__init__("timeout", f"{what}liminald at {socket} did not answer{after} "
                         f"(waiting for {waiting_for})", True, socket=socket)
        self.op = op
        self.seconds = seconds
        self.sent = sent


class ProtocolError(LiminalError):
    """protocol, the client's own: a call that needs a newer protocol than
    the daemon speaks (``hello``), refused before it was sent.  A
    protocol-1 daemon ignores the fields it does not know: it would answer
    a start with a lease ok, with no token and no lease.  ``feature`` names
    what the call uses, ``need`` and ``have`` the protocols."""
    code = "protocol"

    def __init__(self, feature: str, need: int, have: int, *, socket: Optional[str] = None):
        super().__init__("protocol", f"{feature} needs protocol {need}, but liminald at {socket} "
                         f"speaks protocol {have}; not sent", False,
                         {"feature": feature, "need": need, "have": have}, socket=socket)
        self.feature = feature
        self.need = need
        self.have = have


class Lagged(Exception):
    """A subscription fell behind and was ended by the daemon; subscribe
    again from ``next_pos`` (or, for one conversation, ``next_seq`` when it
    is not None) to go on without a gap."""

    def __init__(self, sub: Optional[int], next_pos: Optional[int], next_seq: Optional[int]):
        super().__init__(f"subscription {sub} lagged; subscribe again from pos {next_pos}")
        self.sub, self.next_pos, self.next_seq = sub, next_pos, next_seq

    def __reduce__(self) -> Any:
        return Lagged, (self.sub, self.next_pos, self.next_seq)


def _rebuild(cls: Type[LiminalError], args: Any, state: Dict[str, Any]) -> LiminalError:
    e = cls.__new__(cls)
    Exception.__init__(e, *args)
    e.__dict__.update(state)
    return e


def _describe(cause: BaseException) -> str:
    text = str(cause)
    name = type(cause).__name__
    return f"{name}: {text}" if text else name


_WIRE_ERRORS: Tuple[Type[LiminalError], ...] = (
    BadRequest, LineTooLong, UnknownOp, UnknownMessage, AlreadyFinished,
    StepConflict, SequenceConflict, Forbidden, Unavailable, ShuttingDown,
    Internal, Busy, Fenced, Quarantined, NotQuarantined, FingerprintMismatch)
_ERRORS: Dict[str, Type[LiminalError]] = {cls.code: cls for cls in _WIRE_ERRORS}
