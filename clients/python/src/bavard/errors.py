"""The one exception of the SDK: a failed request, connection or REST call, with its code."""

from __future__ import annotations

from typing import Optional

#: Codes of failures seen by the client rather than answered by the server.
CLIENT_CODES = frozenset({"disconnected", "timeout", "closed", "refused"})


class BavardError(Exception):
    """A failure with a stable ``code``.

    ``code`` is the server's error code (``bad_request``, ``unknown_op``, ``not_found``,
    ``forbidden``, ``rate_limited``, ``too_large``, ``conflict``, ``unauthorized``,
    ``internal``, ``unavailable``; an unknown one is to be treated like ``internal``) or
    the client's: ``disconnected`` (the connection was lost before the answer came),
    ``timeout`` (no answer in time: the connection is made again), ``closed`` (the
    client was closed), ``refused`` (the server refused the connection for good: a bad
    token or name, a close with 1003 or 1008).
    """

    def __init__(self, code: str, message: str, *, status: Optional[int] = None,
                 close_code: Optional[int] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        #: The HTTP status (a refused upgrade, a REST call).
        self.status = status
        #: The WebSocket close code, when the connection was closed.
        self.close_code = close_code

    @property
    def from_server(self) -> bool:
        """True for an answer of the server (an ``error`` body), False for a connection problem."""
        return self.code not in CLIENT_CODES

    def __repr__(self) -> str:
        return f"BavardError({self.code!r}, {self.message!r})"
