"""A small blocking HTTP client for the `hearth` CLI (stdlib only, so the CLI starts fast)."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

USER_AGENT = "hearth-cli/0.1"
# Long enough for a slow function or a big deploy; the gateway enforces the real limits.
DEFAULT_TIMEOUT_S = 330.0
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class GatewayUnreachable(Exception):
    """No HTTP answer at all: refused, timed out, or not speaking HTTP."""

    def __init__(self, url: str, reason: str, refused: bool) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.refused = refused


@dataclass(frozen=True)
class Response:
    """Any HTTP answer, success or not; callers decide what a status means."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 400

    def json(self) -> Any:
        return json.loads(self.body)

    def error(self) -> tuple[str, str] | None:
        """(code, message) when the body is the contract's `{"error": {...}}`."""
        try:
            error = self.json().get("error")
        except (ValueError, AttributeError):
            return None
        if not isinstance(error, dict):
            return None
        return str(error.get("code", "error")), str(error.get("message", ""))

    def describe_error(self) -> str:
        error = self.error()
        if error is not None:
            return f"{self.status} {error[0]}: {error[1]}"
        text = self.body.decode("utf-8", "replace").strip()[:200]
        return f"HTTP {self.status} {self.reason}" + (f": {text}" if text else "")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A 3xx is the function's answer to show the user, not something to follow.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _opener(url: str) -> urllib.request.OpenerDirector:
    handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
    if urllib.parse.urlsplit(url).hostname in _LOOPBACK_HOSTS:
        # An http_proxy in the environment must not swallow traffic to our own gateway.
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


def request(
    url: str,
    method: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Response:
    all_headers = {"User-Agent": USER_AGENT, **(headers or {})}
    req = urllib.request.Request(url, data=body, headers=all_headers, method=method)
    try:
        with _opener(url).open(req, timeout=timeout_s) as resp:
            return Response(resp.status, resp.reason, list(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return Response(err.code, str(err.reason), list(err.headers.items()), err.read())
    except urllib.error.URLError as err:
        reason = err.reason
        refused = isinstance(reason, ConnectionRefusedError | FileNotFoundError)
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        raise GatewayUnreachable(url, text or "no answer", refused) from None
    except (OSError, http.client.HTTPException) as err:
        raise GatewayUnreachable(url, str(err) or type(err).__name__, refused=False) from None


def call_json(url: str, method: str, payload: Any = None, *, token: str | None = None) -> Response:
    """An admin-API call: JSON in, bearer token on."""
    headers = {"Accept": "application/json"}
    body = None
    if payload is not None:
        body = json.dumps(payload).encode()
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return request(url, method, body=body, headers=headers)
