"""The typed results of the ops, decoded from their replies."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence


@dataclass(frozen=True)
class ServerInfo:
    """The answer of ``hello``: the daemon's ``protocol`` (1, or 2 with
    leases, fencing, attempts, fingerprints and explain), its ``name`` and
    ``version``, the ``ops`` it serves and its ``limits`` (such as
    ``max_line_bytes`` and ``max_output_bytes``)."""
    protocol: int
    name: str
    version: str
    ops: List[str]
    limits: Dict[str, Any]

    @property
    def max_output_bytes(self) -> Optional[int]:
        """The largest step output a request line can carry (None when the
        daemon does not say)."""
        v = self.limits.get("max_output_bytes")
        return v if isinstance(v, int) else None

    @classmethod
    def from_wire(cls, r: Mapping[str, Any]) -> "ServerInfo":
        server = r.get("server") or {}
        protocol = r.get("protocol")
        return cls(protocol=protocol if isinstance(protocol, int) else 1,
                   name=str(server.get("name", "")), version=str(server.get("version", "")),
                   ops=list(r.get("ops") or []), limits=dict(r.get("limits") or {}))


@dataclass(frozen=True)
class Step:
    """A completed step of a message: its index, the seq of its event (None
    in a decision's ``steps``) and its output."""
    step_index: int
    seq: Optional[int]
    output: bytes


def _output(steps: Optional[Sequence[Step]], step_index: int) -> Optional[bytes]:
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
    steps: Optional[List[Step]] = None
    compacted: bool = False
    forgotten_before: Optional[int] = None

    def output(self, step_index: int) -> Optional[bytes]:
        """The output of a completed step, from ``steps``, or None."""
        return _output(self.steps, step_index)

    @classmethod
    def from_wire(cls, r: Mapping[str, Any]) -> "Decision":
        action = r["decision"]
        resume_from = r.get("resume_from")
        if action == "start":
            resume_from = 0
        return cls(action=action, resume_from=resume_from, seq=r.get("seq"),
                   duplicate=bool(r.get("duplicate", False)), worker=r.get("worker"),
                   token=r.get("token"), retry_after_ms=r.get("retry_after_ms"),
                   attempts=r.get("attempts"), error=r.get("error"), steps=_steps(r),
                   compacted=bool(r.get("compacted", False)),
                   forgotten_before=r.get("forgotten_before"))


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

    @classmethod
    def from_wire(cls, r: Mapping[str, Any]) -> "Ack":
        return cls(seq=r["seq"], duplicate=bool(r.get("duplicate", False)), token=r.get("token"),
                   lease_expires_at=r.get("lease_expires_at"))


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
    def from_wire(cls, obj: Mapping[str, Any]) -> "Event":
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
class EventsPage:
    """The answer of ``read``: up to ``limit`` ``events`` and ``next_seq``,
    the seq to read on from.  It also unpacks and indexes as the pair
    ``(events, next_seq)``: ``events, next_seq = client.read(conversation)``."""
    events: List[Event]
    next_seq: int

    def __iter__(self) -> Iterator[Any]:
        return iter((self.events, self.next_seq))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> Any:
        return (self.events, self.next_seq)[i]

    @classmethod
    def from_wire(cls, r: Mapping[str, Any]) -> "EventsPage":
        return cls([Event.from_wire(e) for e in r["events"]], r["next_seq"])


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
    steps: List[Step] = field(default_factory=list)  # by step_index
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

    @classmethod
    def from_wire(cls, r: Mapping[str, Any]) -> "MessageState":
        return cls(
            status=r["status"], received_at=r.get("received_at"),
            last_completed_step=r.get("last_completed_step"), steps=_steps(r) or [],
            error=r.get("error"), attempts=r.get("attempts", 0), token=r.get("token"),
            worker=r.get("worker"), lease_expires_at=r.get("lease_expires_at"),
            quarantined=bool(r.get("quarantined", False)), fingerprint=r.get("fingerprint"),
            compacted=bool(r.get("compacted", False)))


@dataclass(frozen=True)
class ConversationState:
    """The state of a conversation (``state(conversation)``): its next seq,
    its messages counted by status (with "total"; a tombstone counts as
    finished), how many of its messages were ``compacted``, and its
    ``forgotten_before`` (epoch ms: the finish time of the newest tombstone
    it dropped; None when none was)."""
    next_seq: int
    messages: Dict[str, int]
    compacted: int = 0
    forgotten_before: Optional[int] = None

    @classmethod
    def from_wire(cls, r: Mapping[str, Any]) -> "ConversationState":
        return cls(next_seq=r["next_seq"], messages=dict(r["messages"]),
                   compacted=r.get("compacted", 0), forgotten_before=r.get("forgotten_before"))


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
    def from_wire(cls, obj: Mapping[str, Any]) -> "MessageInfo":
        return cls(message_id=obj["message_id"], status=obj["status"],
                   attempts=obj.get("attempts") or 0,
                   last_completed_step=obj.get("last_completed_step"),
                   received_at=obj.get("received_at"), updated_at=obj.get("updated_at"),
                   worker=obj.get("worker"), lease_expires_at=obj.get("lease_expires_at"),
                   quarantined=bool(obj.get("quarantined")), compacted=bool(obj.get("compacted")))


@dataclass(frozen=True)
class MessagesPage:
    """The answer of ``messages``: a page of :class:`MessageInfo`, and
    ``next``, the ``after`` of the next page (None at the end).  It also
    unpacks and indexes as the pair ``(messages, next)``:
    ``messages, next = client.messages(conversation)``."""
    messages: List[MessageInfo]
    next: Optional[str]

    def __iter__(self) -> Iterator[Any]:
        return iter((self.messages, self.next))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> Any:
        return (self.messages, self.next)[i]

    @classmethod
    def from_wire(cls, r: Mapping[str, Any]) -> "MessagesPage":
        return cls([MessageInfo.from_wire(m) for m in r["messages"]], r.get("next"))


@dataclass(frozen=True)
class Explanation:
    """The answer of ``explain``: the ``decision`` ``decide`` would give,
    the ``rule`` behind it (such as "leased" or "quarantined"), ``reason``
    (one English sentence), and the message's ``events``."""
    decision: Decision
    rule: str
    reason: str
    events: List[Event]

    @classmethod
    def from_wire(cls, r: Mapping[str, Any]) -> "Explanation":
        return cls(decision=Decision.from_wire(r), rule=r["rule"], reason=r["reason"],
                   events=[Event.from_wire(e) for e in r.get("events") or []])


@dataclass(frozen=True)
class ConversationInfo:
    """An entry of ``conversations()``."""
    conversation: str
    next_seq: int
    messages: int

    @classmethod
    def from_wire(cls, c: Mapping[str, Any]) -> "ConversationInfo":
        return cls(c["conversation"], c["next_seq"], c["messages"])


@dataclass(frozen=True)
class Reconnect:
    """What the client tells ``on_reconnect`` each time it is about to try
    the daemon again: the ``socket``, the ``op`` of the call waiting, the
    ``attempt`` (1 for the first try after the connection was found lost or
    could not be made), the ``delay`` before it in seconds, and the
    ``error`` that made it try again."""
    socket: str
    op: Optional[str]
    attempt: int
    delay: float
    error: BaseException


def _steps(r: Mapping[str, Any]) -> Optional[List[Step]]:
    if "steps" not in r:
        return None
    return [Step(s["step_index"], s.get("seq"), base64.b64decode(s["output"]))
            for s in r["steps"] or []]
