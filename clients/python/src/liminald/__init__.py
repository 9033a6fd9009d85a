"""A client for liminald, standard library only: blocking (:class:`Client`)
and asyncio (:class:`AsyncClient`).

liminald keeps a durable, per-conversation event log of how an application
processes messages, and tells a redelivered message whether to ``start``,
``resume`` (at a step) or ``skip``.  This package speaks its protocol (JSON
lines over a unix socket, docs/PROTOCOL.md in the liminald repository) with
one method per op::

    from liminald import Client

    with Client() as c:                       # the socket as the daemon finds it
        d = c.receive("orders", "m-17", with_steps=True)
        if d.action in ("start", "resume"):
            with c.lease("orders", "m-17", "worker-1", 30_000) as lease:
                lease.step(0, b"charged")     # refused (Fenced) once another
                lease.finish()                # worker took the message over

The client reconnects by itself when the daemon restarts, and sends again
what is safe to send again; it checks the daemon's ``hello`` before it uses
protocol 2, bounds every call with a timeout, and refuses a step output the
daemon could not take before sending it.  See :class:`Client`.

A failure reply raises a subclass of :class:`LiminalError` (also
``Error``), one per error code; a daemon that cannot be reached raises
:class:`Unavailable` naming the socket.
"""

from ._async import AsyncClient, AsyncLease, AsyncSubscription
from ._client import Client, Lease, Subscription
from ._errors import (
    AlreadyFinished, BadRequest, Busy, Error, Fenced, FingerprintMismatch, Forbidden, Internal,
    Lagged, LiminalError, LineTooLong, NotQuarantined, OutputTooLarge, ProtocolError,
    Quarantined, SequenceConflict, ShuttingDown, StepConflict, Timeout, Unavailable,
    UnknownMessage, UnknownOp,
)
from ._protocol import (
    DEFAULT_RECONNECT_TIMEOUT, DEFAULT_TIMEOUT, PROTOCOL, VERSION, default_socket_path,
    retry_safe,
)
from ._results import (
    Ack, ConversationInfo, ConversationState, Decision, Event, EventsPage, Explanation,
    MessageInfo, MessagesPage, MessageState, Reconnect, ServerInfo, Step,
)

__version__ = VERSION

__all__ = [
    "Client", "AsyncClient", "Lease", "AsyncLease", "Subscription", "AsyncSubscription",
    "Ack", "ConversationInfo", "ConversationState", "Decision", "Event", "EventsPage",
    "Explanation", "MessageInfo", "MessagesPage", "MessageState", "Reconnect", "ServerInfo",
    "Step",
    "LiminalError", "Error", "BadRequest", "OutputTooLarge", "LineTooLong", "UnknownOp",
    "UnknownMessage", "AlreadyFinished", "StepConflict", "SequenceConflict", "Forbidden",
    "Unavailable", "ShuttingDown", "Internal", "Busy", "Fenced", "Quarantined",
    "NotQuarantined", "FingerprintMismatch", "Timeout", "ProtocolError", "Lagged",
    "default_socket_path", "retry_safe", "PROTOCOL", "VERSION", "DEFAULT_TIMEOUT",
    "DEFAULT_RECONNECT_TIMEOUT", "__version__",
]
