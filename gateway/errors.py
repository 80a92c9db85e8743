"""The gateway's named failures, mapped to HTTP status in one place."""

from __future__ import annotations


class GatewayError(Exception):
    """A failure the client sees as a JSON error."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BadRequest(GatewayError):
    status, code = 400, "bad_request"


class Unauthorized(GatewayError):
    status, code = 401, "unauthorized"


class FunctionNotFound(GatewayError):
    status, code = 404, "function_not_found"


class QueueFull(GatewayError):
    status, code = 429, "queue_full"


class UpstreamBroken(GatewayError):
    """The container broke the connection after the request may have run."""

    status, code = 502, "upstream_failed"


class FunctionLoadFailed(GatewayError):
    status, code = 502, "function_load_failed"


class Unavailable(GatewayError):
    status, code = 503, "unavailable"


class QueueTimeout(GatewayError):
    status, code = 503, "queue_timeout"


class UpstreamTimeout(GatewayError):
    status, code = 504, "upstream_timeout"
