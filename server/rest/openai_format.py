"""OpenAI's wire shapes for the front door: errors, ``chat.completion`` and the
``chat.completion.chunk`` events of a streamed answer.

See https://platform.openai.com/docs/api-reference/chat: a stream is ``data:`` events
of chunks, then ``data: [DONE]``; with ``stream_options.include_usage`` every chunk
carries ``"usage": null`` and one last chunk with no choices carries the counts.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from errors import ERROR_CLASSES, ParleyError
from server.rest.http import JSONResponse

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
ERROR_CODES = {
    401: "invalid_api_key",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
}
# Parley's codes that OpenAI has its own word for (a spent budget is OpenAI's quota).
CODE_WORDS = {"budget_exceeded": "insufficient_quota"}
DONE = b"data: [DONE]\n\n"
# Parley's ``finish_reason``s that OpenAI has no word for: the text ended there.
FINISH_REASONS = {"stop": "stop", "length": "length"}


def error_body(exc: ParleyError) -> dict[str, Any]:
    """``{"error": {message, type, param, code}}``; ``param`` and ``code`` from the
    error's details when it names them (``{"field": …, "code": …}``)."""
    details = exc.details
    if isinstance(details, list) and details and isinstance(details[0], dict):
        details = details[0]
    if not isinstance(details, dict):
        details = {}
    word = CODE_WORDS.get(exc.code)
    error = {
        "message": exc.message,
        "type": word or ERROR_TYPES.get(exc.status, "server_error"),
        "param": details.get("field"),
        "code": details.get("code") or word or ERROR_CODES.get(exc.status) or exc.code,
    }
    return {"error": error}


def error_response(exc: ParleyError) -> JSONResponse:
    response = JSONResponse(error_body(exc), status_code=exc.status)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="parley"'
    return response


def error_of_end(end: dict[str, Any]) -> ParleyError | None:
    """The error a ``stream.end`` reports, as the exception of its wire code."""
    wire = end.get("error")
    if not wire:
        return None
    by_code = {cls.code: cls for cls in ERROR_CLASSES}
    cls = by_code.get(str(wire.get("code")), ParleyError)
    return cls(str(wire.get("message") or "the answer failed"))


def usage_of(end: dict[str, Any] | None) -> dict[str, int]:
    counts = (end or {}).get("usage") or {}
    prompt = int(counts.get("prompt_tokens") or 0)
    completion = int(counts.get("completion_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def finish_reason_of(end: dict[str, Any] | None) -> str:
    return FINISH_REASONS.get(str((end or {}).get("finish_reason")), "stop")


class Completion:
    """One answer in OpenAI's shapes; ``id`` names the room's stream (or message)."""

    def __init__(self, answer_id: str, model: str, *, include_usage: bool = False) -> None:
        self.id = "chatcmpl-" + answer_id.replace("-", "")
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._event({"choices": [choice]})

    def usage_chunk(self, usage: dict[str, int]) -> bytes:
        return self._event({"choices": [], "usage": usage})

    def whole(self, text: str, finish_reason: str, usage: dict[str, int]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage,
        }

    def _event(self, fields: dict[str, Any]) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            **fields,
        }
        if self.include_usage:
            body.setdefault("usage", None)
        return b"data: " + orjson.dumps(body) + b"\n\n"


def error_event(exc: ParleyError) -> bytes:
    """An error after the stream began (its status was sent): OpenAI's clients raise
    on a ``data:`` event with an ``error`` field."""
    return b"data: " + orjson.dumps(error_body(exc)) + b"\n\n"
