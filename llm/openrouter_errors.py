"""OpenRouter's failures as Parley's errors (``errors``), in one place.

Statuses as documented by OpenRouter: 400 bad request; 401 invalid key; 402 out of
credit; 403 key permissions or moderation; 408 timeout; 429 rate limited (may carry
Retry-After); 502 model down; 503 no provider available. Only 400 (and other
unexpected 4xx) is the client's fault; everything else is ``Unavailable``, and only
408, 429, 5xx, timeouts and dropped connections are worth retrying.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from errors import ParleyError, Unavailable
from llm.provider import NoFreeConnection, UpstreamBadRequest, UpstreamUnavailable


def json_object(content: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def status_error(response: httpx.Response) -> ParleyError:
    """An HTTP error status from OpenRouter as one of Parley's errors."""
    status = response.status_code
    error = json_object(response.content).get("error")
    detail = str(error.get("message")) if isinstance(error, dict) else response.reason_phrase
    retry_after = retry_after_s(response)
    if status == 400 or (400 <= status < 500 and status not in (401, 402, 403, 408, 429)):
        message = f"the model rejected the request: {detail}"
        return UpstreamBadRequest(message, upstream_status=status)
    if status == 401:
        message = "the model provider refused Parley's API key (check OPENROUTER_API_KEY)"
        return UpstreamUnavailable(message, upstream_status=status, retryable=False)
    if status == 402:
        message = "the model provider's account is out of credit"
        return UpstreamUnavailable(message, upstream_status=status, retryable=False)
    if status == 403:
        message = f"the model provider refused the request (permissions or moderation): {detail}"
        return UpstreamUnavailable(message, upstream_status=status, retryable=False)
    if status == 408:
        return UpstreamUnavailable("the model provider timed out", upstream_status=status)
    if status == 429:
        return UpstreamUnavailable(
            "the model provider is rate limiting Parley",
            upstream_status=status,
            retry_after=retry_after,
        )
    return UpstreamUnavailable(
        f"the model is unavailable: {detail}", upstream_status=status, retry_after=retry_after
    )


def body_error(error: dict[str, Any], *, mid_stream: bool = False) -> ParleyError:
    code = error.get("code")
    message = str(error.get("message") or "unknown error")
    status = code if isinstance(code, int) else None
    prefix = "the model failed while answering" if mid_stream else "the model failed"
    return UpstreamUnavailable(f"{prefix}: {message}", upstream_status=status)


def request_error(exc: httpx.HTTPError) -> Unavailable:
    """A request that failed before its response: waiting for a free connection in
    this node's pool is not the upstream's failure."""
    if isinstance(exc, httpx.PoolTimeout):
        return NoFreeConnection(
            "this server is answering as many questions as it can at once; try again shortly"
        )
    return transport_error(exc)


def transport_error(exc: httpx.HTTPError) -> UpstreamUnavailable:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamUnavailable("the model provider timed out")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamUnavailable("cannot reach the model provider")
    return UpstreamUnavailable(f"the connection to the model provider failed: {type(exc).__name__}")


def deadline_error(what: str, seconds: float) -> UpstreamUnavailable:
    return UpstreamUnavailable(f"the model {what} within {seconds:g} s")
