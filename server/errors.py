"""Domain exceptions: what went wrong, in words a client can act on, free of any transport.

What it is: `ServerError` and its subclasses, raised by the engine, the scheduler, the store and
the routes, each with a client-facing message, the offending parameter, a machine-readable
`code` and, for overload, when to retry. What it is not: HTTP. Statuses, OpenAI error types and
websocket close codes are assigned once, in `server/api/errors.py`, so the engine and the store
know nothing of the protocol their errors travel over.
"""

from __future__ import annotations


class ServerError(Exception):
    """An error with a client-facing message; subclasses name the kind and its default code."""

    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after
        if code is not None:
            self.code = code


class InvalidRequest(ServerError):
    code = "invalid_request"


class Unauthorized(ServerError):
    code = "invalid_api_key"


class NotFound(ServerError):
    code = "not_found"


class NotReady(ServerError):
    """The job is not in the state the operation needs (no content yet, or already over)."""

    code = "video_not_ready"


class PayloadTooLarge(ServerError):
    code = "payload_too_large"


class Overloaded(ServerError):
    """No room in the waiting queue; the client should retry after `retry_after` seconds."""

    code = "queue_full"


class Unavailable(ServerError):
    """The server is starting up or draining."""

    code = "unavailable"


class StorageError(ServerError):
    """The job store or data directory cannot be written (full, read-only, failing disk)."""

    code = "storage_error"
