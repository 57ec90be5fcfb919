"""``GET /v1/search?q=``: a web search on the caller's behalf, through the shared cache.

An upstream problem is not an error of this endpoint: the answer is 200 with no
results and a ``note`` saying why (``"web search is unavailable"``, ``"… rate
limited"``, ``"… not configured"``), the same way a turn goes on without search.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from errors import BadRequest
from search.service import SearchOutcome, WebSearch
from search.tavily import MAX_QUERY_CHARS
from server.container import container_of
from server.rest.http import ok
from server.security.ratelimit import Limit

SEARCH_LIMIT = Limit("search", 30, 60)


def search_to_wire(outcome: SearchOutcome) -> dict[str, object]:
    body: dict[str, object] = {
        "query": outcome.query,
        "results": [result.to_dict() for result in outcome.results],
        "cached": outcome.cached,
        "note": _note(outcome),
    }
    if outcome.retry_after is not None:
        body["retry_after"] = round(outcome.retry_after, 3)
    return body


def _note(outcome: SearchOutcome) -> str | None:
    if outcome.reason is not None:
        return f"web search is {outcome.reason}"
    return None if outcome.results else "no results"


async def web_search(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    query = " ".join(request.query_params.get("q", "").split())
    if not query:
        raise BadRequest("q must not be empty")
    if len(query) > MAX_QUERY_CHARS:
        raise BadRequest(f"q must be at most {MAX_QUERY_CHARS} characters")
    await container.limiter.hit(
        SEARCH_LIMIT, str(principal.user_id), "too many searches, slow down"
    )
    search: WebSearch = container.web_search
    return ok(search_to_wire(await search.run(query)))


routes = [Route("/v1/search", web_search, methods=["GET"])]
