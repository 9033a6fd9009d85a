"""What the blocking and the asyncio lease share: the token, the renewals'
bookkeeping, and what a fenced answer means."""

from __future__ import annotations

from typing import Optional

from ._errors import Fenced, ProtocolError
from ._results import Ack


class LeaseCore:
    """A lease on one message for one worker, once its start answered:
    ``token`` (written with every step, finish and fail), ``expires_at``
    (epoch ms, the daemon's clock), ``renewals`` made, the last
    ``renew_error`` (a renewal that failed for a passing reason, tried again
    at the next tick; None after one succeeds), and ``lost``: the
    :class:`Fenced` answer once the daemon refused the token (another
    worker took the message over after the lease lapsed), or None."""

    def __init__(self, conversation: str, message_id: str, worker: str, lease_ms: int,
                 renew_every: Optional[float]):
        if renew_every is not None and renew_every < 0:
            raise ValueError(f"renew_every must be 0 (never) or positive, not {renew_every!r}")
        self.conversation = conversation
        self.message_id = message_id
        self.worker = worker
        self.lease_ms = lease_ms
        self.token: Optional[int] = None
        self.expires_at: Optional[int] = None
        self.renewals = 0
        self.renew_error: Optional[BaseException] = None
        self.lost: Optional[Fenced] = None
        #: Seconds between renewals: a third of the lease unless given; 0
        #: for none.
        self.renew_every = lease_ms / 3000 if renew_every is None else renew_every

    def _started(self, ack: Ack, socket: Optional[str]) -> None:
        if ack.token is None:
            # Only a daemon that ignored worker and lease_ms answers so.
            raise ProtocolError("start with worker, lease_ms (answered with no token)", 2, 1,
                                socket=socket)
        self.token = ack.token
        self.expires_at = ack.lease_expires_at

    def _renewed(self, ack: Ack) -> None:
        self.expires_at = ack.lease_expires_at
        self.renewals += 1
        self.renew_error = None

    def _fenced(self, e: Fenced) -> None:
        if self.lost is None:
            self.lost = e

    def _renew_failed(self, e: BaseException) -> None:
        self.renew_error = e

    @property
    def held(self) -> bool:
        """Whether the lease is not known to be lost."""
        return self.lost is None

    def check(self) -> None:
        """Raises :class:`Fenced` if the lease is known to be lost: call it
        before each side effect."""
        if self.lost is not None:
            raise self.lost

    def _token(self) -> int:
        if self.token is None:
            raise RuntimeError("the lease is not started")
        return self.token

