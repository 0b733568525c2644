"""Stage 2b — the fresh path: commit events pushed to an intake, kept in a durable log and applied by the stream
processor to the online store and the lake within seconds (ADR 0015, ADR 0016).

:func:`open_log` lives here, in the package, not in :mod:`skewless.stream.log`: the interface module does not know
its implementations (``nats_log`` imports ``log``; ``log`` importing ``nats_log`` back would be an import circle).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from skewless.core.config import Profile
    from skewless.stream.log import EventLog


def open_log(p: "Profile") -> "EventLog":
    """The event log of profile ``p``: JetStream in production, the SQLite log locally."""
    if p.event_broker == "nats":
        from skewless.stream.nats_log import NatsEventLog

        assert p.nats_url is not None
        return NatsEventLog(p.nats_url, p.stream, ack_wait=p.stream_ack_wait)
    from skewless.stream.log import SqliteEventLog

    return SqliteEventLog(p.event_log_path)
