"""The OpenAPI 3.1 document, served at ``GET /openapi.json``.

It is generated from the app's own route table, so a path or method cannot be
documented without existing. What a route table cannot say (a summary, the request
model, the shape of ``data``, the extra error statuses) comes from ``ENDPOINTS``, one
entry per ``"METHOD /path"``. A route missing from ``ENDPOINTS`` is still listed, marked
``x-undocumented``, and ``tests/test_openapi.py`` fails until someone describes it.

Adding an endpoint is one entry, for example::

    "GET /v1/me/memory": Doc("The assistant's memory of the caller", "memory",
                             data=obj(items=array(ref("MemoryItem")))),
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from errors import ERROR_CODES
from server.rest import schemas
from server.rest.http import JSONResponse

Schema = dict[str, Any]
OPENAPI_PATH = "/openapi.json"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def obj(required: tuple[str, ...] | None = None, **properties: Schema) -> Schema:
    """An object with these properties, all required unless ``required`` names fewer."""
    names = list(properties) if required is None else list(required)
    return {"type": "object", "properties": properties, "required": names}


def extend(base: Schema, **properties: Schema) -> Schema:
    merged = {**base["properties"], **properties}
    return {"type": "object", "properties": merged, "required": list(merged)}


STRING = {"type": "string"}
UUID = {"type": "string", "format": "uuid"}
TIME = {"type": "string", "format": "date-time"}
USER = obj(id=UUID, email=STRING, name=STRING, role={"enum": ["user", "admin"]}, created_at=TIME)
SESSION = obj(
    id=UUID,
    title=STRING,
    model=nullable(STRING),
    system_prompt=nullable(STRING),
    status={"enum": ["active", "expired", "closed"]},
    owner_id=UUID,
    last_seq={"type": "integer", "minimum": 0},
    created_at=TIME,
    last_activity_at=TIME,
    closed_at=nullable(TIME),
)
MESSAGE = obj(
    id=UUID,
    session_id=UUID,
    seq={"type": "integer", "minimum": 1},
    role={"enum": ["user", "assistant", "system"]},
    user_id=nullable(UUID),
    content=STRING,
    client_msg_id=nullable(STRING),
    status=STRING,
    model=nullable(STRING),
    reply_to=nullable(UUID),
    created_at=TIME,
    deleted={"type": "boolean"},
    version={"type": "integer", "minimum": 1},
    version_count={"type": "integer", "minimum": 1},
    error=obj(code=STRING, message=STRING),
    required=(
        "id",
        "session_id",
        "seq",
        "role",
        "user_id",
        "content",
        "client_msg_id",
        "status",
        "model",
        "reply_to",
        "created_at",
        "deleted",
        "version",
        "version_count",
    ),
)
VERSION = obj(
    version={"type": "integer", "minimum": 1},
    content=STRING,
    model=nullable(STRING),
    status=STRING,
    created_at=TIME,
    error=obj(code=STRING, message=STRING),
    required=("version", "content", "model", "status", "created_at"),
)
LIMIT = obj(
    limit=nullable({"type": "number"}), used={"type": "number"}, left=nullable({"type": "number"})
)
BUDGET = obj(
    period={"enum": ["day", "month"]},
    resets_at=TIME,
    tokens=LIMIT,
    usd=LIMIT,
    exhausted={"type": "boolean"},
)
LIMITS = obj(
    period={"enum": ["day", "month"]},
    tokens_per_period=nullable({"type": "integer"}),
    usd_per_period=nullable({"type": "number"}),
    overridden={"type": "boolean"},
)
USER_BUDGET = obj(user_id=UUID, limits=LIMITS, budget={"$ref": "#/components/schemas/Budget"})
MEMBER = obj(user_id=UUID, name=STRING, role={"enum": ["owner", "member"]})
COMPONENTS: dict[str, Schema] = {
    "User": USER,
    "Session": SESSION,
    "SessionDetail": extend(SESSION, members=array(MEMBER)),
    "RestoredSession": extend(
        SESSION,
        summary=nullable(obj(covers_seq={"type": "integer"}, content=STRING, created_at=TIME)),
        messages=array(ref("Message")),
    ),
    "Member": MEMBER,
    "Budget": BUDGET,
    "MemoryItem": obj(
        id=UUID,
        kind={"enum": ["preference", "fact"]},
        content=STRING,
        source={"enum": ["user", "learned"]},
        created_at=TIME,
    ),
    "Document": obj(
        id=UUID,
        title=STRING,
        chunks={"type": "integer", "minimum": 0},
        created_at=TIME,
        size_bytes={"type": "integer"},
        uploaded_by=nullable(UUID),
        required=("id", "title", "chunks", "created_at"),
    ),
    "Message": MESSAGE,
    "OpenAIError": obj(
        error=obj(
            message=STRING,
            type=STRING,
            param=nullable(STRING),
            code=nullable(STRING),
        )
    ),
    "MessageVersion": VERSION,
    "ErrorEnvelope": obj(
        success={"const": False},
        error=obj(
            code={"enum": list(ERROR_CODES)},
            message=STRING,
            details={},
            timestamp=TIME,
            request_id=nullable(STRING),
            retry_after={"type": "number"},
            required=("code", "message", "details", "timestamp", "request_id"),
        ),
    ),
}


@dataclass(frozen=True)
class Query:
    """A query parameter, or a header one (``where="header"``)."""

    name: str
    schema: Schema
    description: str = ""
    where: str = "query"
    required: bool = False


@dataclass(frozen=True)
class Doc:
    """What the route table cannot tell about one endpoint."""

    summary: str
    tag: str
    data: Schema | None = None  # the ``data`` of the success envelope
    ok: int = 200
    body: type[BaseModel] | None = None
    query: tuple[Query, ...] = ()
    errors: tuple[int, ...] = ()  # beyond those implied by auth, body and path ids
    public: bool = False
    multipart: Schema | None = None  # a multipart/form-data alternative to ``body``
    # A response that is not the JSON envelope: (status → (media type, schema)).
    raw: dict[int, tuple[str, Schema]] = field(default_factory=dict)
    # Also answers ``text/event-stream`` with this status (a streamed answer).
    streamed: int | None = None
    # Errors in OpenAI's shape (the front door), not the envelope.
    openai_errors: bool = False


INT64: Schema = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
PAGE_QUERY = (
    Query("before_seq", INT64, "the page just before this seq (default: newest)"),
    Query("after_seq", INT64, "the page just after this seq"),
    Query("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
)
TOKENS = obj(
    access_token={"type": "string"},
    token_type={"const": "Bearer"},
    expires_in={"type": "integer"},
    refresh_token={"type": "string"},
    user=ref("User"),
)
LOGIN = extend(TOKENS, device_token={"type": "string"})
LOGIN["required"] = [name for name in LOGIN["required"] if name != "device_token"]
ACCEPTED = obj(status={"const": "accepted"}, message=STRING)
INVITED = obj(status={"const": "invited"}, email=STRING, message=STRING)
INVITATION = obj(
    id=UUID, session_id=UUID, session_title=STRING, invited_by=nullable(STRING), created_at=TIME
)
DONE = obj(logged_out={"type": "boolean"})
COMPLETION = obj(
    id=STRING,
    object={"const": "chat.completion"},
    created={"type": "integer"},
    model=STRING,
    choices=array({"type": "object"}),
    usage=obj(
        prompt_tokens={"type": "integer"},
        completion_tokens={"type": "integer"},
        total_tokens={"type": "integer"},
    ),
    required=("id", "object", "created", "model", "choices", "usage"),
)
MODELS = obj(
    object={"const": "list"},
    data=array(
        obj(id=STRING, object={"const": "model"}, created={"type": "integer"}, owned_by=STRING)
    ),
)
API_KEY = obj(id=UUID, name=STRING, prefix=STRING, created_at=TIME, last_used_at=nullable(TIME))
READINESS = obj(
    success={"type": "boolean"},
    data=obj(ready={"type": "boolean"}, checks={"type": "object"}),
    error=obj(code={"type": "string"}, message={"type": "string"}, details={}),
    required=("success", "data"),
)

ENDPOINTS: dict[str, Doc] = {
    "GET /healthz": Doc("Liveness", "operations", obj(status={"const": "ok"}), public=True),
    "GET /readyz": Doc(
        "Readiness of the database, Redis and the configured upstreams",
        "operations",
        public=True,
        raw={200: ("application/json", READINESS), 503: ("application/json", READINESS)},
    ),
    "GET /metrics": Doc(
        "Prometheus metrics (with METRICS_TOKEN set: Authorization: Bearer <METRICS_TOKEN>)",
        "operations",
        public=True,
        errors=(401,),
        raw={200: ("text/plain", {"type": "string"})},
    ),
    "GET /openapi.json": Doc(
        "This document",
        "operations",
        public=True,
        raw={200: ("application/json", {"type": "object"})},
    ),
    "POST /v1/auth/register": Doc(
        "Create an account. The answer is the same whether the address was free or "
        "already has an account (then nothing changes); sign in next",
        "auth",
        ACCEPTED,
        201,
        schemas.RegisterBody,
        public=True,
    ),
    "POST /v1/auth/login": Doc(
        "Log in: an access token, a refresh token, the jwt and refresh cookies, and a "
        "device token (also the parley_device cookie) that spares this device the "
        "account-wide lock after failed logins elsewhere; 429 after too many failures",
        "auth",
        LOGIN,
        body=schemas.LoginBody,
        public=True,
        errors=(401, 403, 429),
        query=(
            Query(
                "X-Parley-Device",
                STRING,
                "the device_token of an earlier login (or the parley_device cookie)",
                where="header",
            ),
        ),
    ),
    "POST /v1/auth/refresh": Doc(
        "Rotate the refresh token (body or cookie) within the family's absolute "
        "lifetime; reuse revokes the whole family, its access tokens and its sockets",
        "auth",
        TOKENS,
        body=schemas.RefreshBody,
        public=True,
        errors=(401,),
    ),
    "POST /v1/auth/logout": Doc(
        "Revoke one refresh family (the body's or cookie's refresh token, else the "
        "access token's): its access tokens stop and its sockets close with 4401",
        "auth",
        DONE,
        body=schemas.RefreshBody,
    ),
    "POST /v1/auth/logout-all": Doc(
        "Revoke every refresh family and every access token issued so far", "auth", DONE
    ),
    "POST /v1/auth/ws-ticket": Doc(
        "A single-use WebSocket ticket; it carries the access token's expiry and "
        "revocation (the socket closes with 4401 when that token would expire)",
        "auth",
        obj(ticket={"type": "string"}, expires_in={"type": "integer"}),
    ),
    "GET /v1/me": Doc("The caller", "auth", ref("User")),
    "GET /v1/me/usage": Doc(
        "What is left of the caller's budget this period, and what every model request "
        "cost, by kind (answer, retry, fallback, summary, memory, search_round, reask) "
        "and model",
        "auth",
        obj(
            budget=ref("Budget"),
            limits=LIMITS,
            since=TIME,
            spend=array(
                obj(
                    kind=STRING,
                    model=STRING,
                    calls={"type": "integer"},
                    prompt_tokens={"type": "integer"},
                    completion_tokens={"type": "integer"},
                    usd={"type": "number"},
                )
            ),
        ),
    ),
    "GET /v1/users/{id}/budget": Doc(
        "A user's budget and what is left of it (admin)", "auth", USER_BUDGET, errors=(403,)
    ),
    "PATCH /v1/users/{id}/budget": Doc(
        "Override a user's budget (admin); fields left out keep their value, null is unlimited",
        "auth",
        USER_BUDGET,
        body=schemas.BudgetPatchBody,
        errors=(403,),
    ),
    "DELETE /v1/users/{id}/budget": Doc(
        "Back to the default budget (admin)", "auth", USER_BUDGET, errors=(403,)
    ),
    "PATCH /v1/users/{id}": Doc(
        "Disable or re-enable an account (admin); a disabled user's sockets close with 4403",
        "auth",
        obj(user_id={"type": "string", "format": "uuid"}, disabled={"type": "boolean"}),
        body=schemas.UserPatchBody,
        errors=(403, 409),
    ),
    "POST /v1/sessions": Doc(
        "Create a session; the caller owns it",
        "sessions",
        ref("Session"),
        201,
        schemas.SessionCreateBody,
    ),
    "GET /v1/sessions": Doc(
        "The caller's sessions (default: all not closed), most recently active first",
        "sessions",
        obj(sessions=array(ref("Session"))),
        query=(Query("status", {"enum": ["open", "active", "expired", "closed", "all"]}),),
    ),
    "GET /v1/sessions/{id}": Doc("One session and its members", "sessions", ref("SessionDetail")),
    "PATCH /v1/sessions/{id}": Doc(
        "Change title, model or system prompt (owner)",
        "sessions",
        ref("Session"),
        body=schemas.SessionPatchBody,
        errors=(403,),
    ),
    "POST /v1/sessions/{id}/close": Doc(
        "Close the session (owner)", "sessions", ref("Session"), errors=(403,)
    ),
    "POST /v1/sessions/{id}/restore": Doc(
        "Reopen it; the answer carries its summary and latest history page",
        "sessions",
        ref("RestoredSession"),
        errors=(403,),
    ),
    "POST /v1/sessions/{id}/members": Doc(
        "By email: invite (owner); 202 with the same answer whether or not the address "
        "has an account, and the invitee joins by accepting. By user_id: add (201)",
        "sessions",
        {"anyOf": [INVITED, ref("Member")]},
        202,
        schemas.MemberAddBody,
        errors=(201, 403, 409),
    ),
    "GET /v1/me/invitations": Doc(
        "The caller's pending invitations", "sessions", obj(invitations=array(INVITATION))
    ),
    "POST /v1/me/invitations/{id}/accept": Doc(
        "Accept an invitation: the caller becomes a member",
        "sessions",
        extend(MEMBER, session_id=UUID),
    ),
    "POST /v1/me/invitations/{id}/decline": Doc(
        "Decline an invitation",
        "sessions",
        obj(invitation_id=UUID, declined={"const": True}),
    ),
    "DELETE /v1/sessions/{id}/members/{user_id}": Doc(
        "Remove a member (owner)",
        "sessions",
        obj(removed={"type": "boolean"}),
        errors=(403, 409),
    ),
    "GET /v1/sessions/{id}/messages": Doc(
        "Keyset-paginated history, oldest first within a page",
        "messages",
        obj(messages=array(ref("Message")), next_before_seq=nullable({"type": "integer"})),
        query=PAGE_QUERY,
    ),
    "POST /v1/sessions/{id}/messages": Doc(
        "Post a message (idempotent with client_msg_id); 200 when it was a retry",
        "messages",
        obj(message=ref("Message"), stream_id=nullable({"type": "string"})),
        201,
        schemas.MessagePostBody,
        errors=(200, 409, 429),
        # With ``Accept: text/event-stream``: events named after the frame types
        # (message, stream.start, stream.status, stream.delta, stream.end).
        raw={201: ("text/event-stream", STRING), 200: ("text/event-stream", STRING)},
        query=(
            Query(
                "Last-Event-ID",
                {"type": "string"},
                "with text/event-stream, on a retry: the id of the last event received"
                " ({stream_id}:{next index}); the answer goes on from there",
                where="header",
            ),
        ),
    ),
    "DELETE /v1/sessions/{id}/messages/{message_id}": Doc(
        "Soft-delete a message (author, owner or admin; audited)",
        "messages",
        ref("Message"),
        errors=(403,),
    ),
    "POST /v1/sessions/{id}/messages/{message_id}/regenerate": Doc(
        "A new answer to the question (or the answer's question): its next version, shown;"
        " also the retry of a failed answer. Stops the answers to it still running",
        "messages",
        obj(message=ref("Message"), stream_id=nullable({"type": "string"})),
        202,
        errors=(400, 409, 429),
    ),
    "PATCH /v1/sessions/{id}/messages/{message_id}": Doc(
        "Edit your question: a new version of it, shown, and a new answer",
        "messages",
        obj(message=ref("Message"), stream_id=nullable({"type": "string"})),
        body=schemas.MessageEditBody,
        errors=(400, 403, 409, 429),
    ),
    "PUT /v1/sessions/{id}/messages/{message_id}/version": Doc(
        "Show another version of a message (every member sees message.version)",
        "messages",
        obj(message=ref("Message"), stream_id={"type": "null"}),
        body=schemas.VersionSelectBody,
        errors=(400, 409),
    ),
    "GET /v1/sessions/{id}/messages/{message_id}/versions": Doc(
        "Every version of a message, oldest first",
        "messages",
        obj(message=ref("Message"), versions=array(ref("MessageVersion"))),
    ),
    "GET /v1/me/memory": Doc(
        "What the assistant keeps about the caller", "memory", obj(items=array(ref("MemoryItem")))
    ),
    "POST /v1/me/memory": Doc(
        "Tell the assistant something to keep",
        "memory",
        ref("MemoryItem"),
        201,
        schemas.MemoryAddBody,
        errors=(409,),
    ),
    "DELETE /v1/me/memory": Doc(
        "Forget everything", "memory", obj(removed={"type": "integer", "minimum": 0})
    ),
    "DELETE /v1/me/memory/{item_id}": Doc(
        "Forget one item", "memory", obj(removed={"type": "integer", "minimum": 0})
    ),
    "POST /v1/sessions/{id}/documents": Doc(
        "Add a document the assistant retrieves from (JSON, or multipart with a file)",
        "documents",
        ref("Document"),
        201,
        schemas.DocumentJsonBody,
        errors=(409,),
        multipart=obj(
            file={"type": "string", "contentMediaType": "text/plain"},
            title=STRING,
            required=("file",),
        ),
    ),
    "GET /v1/sessions/{id}/documents": Doc(
        "The session's documents", "documents", obj(documents=array(ref("Document")))
    ),
    "DELETE /v1/sessions/{id}/documents/{doc_id}": Doc(
        "Remove a document", "documents", obj(removed={"type": "boolean"}), errors=(403,)
    ),
    "POST /v1/me/api-keys": Doc(
        "Create an API key for the OpenAI-compatible front door; the secret (key) is "
        "shown in this answer only, and stored as a hash",
        "api-keys",
        extend(API_KEY, key=STRING),
        201,
        schemas.ApiKeyCreateBody,
        errors=(409,),
    ),
    "GET /v1/me/api-keys": Doc(
        "The caller's live API keys (prefix, name, created, last used; never the secret)",
        "api-keys",
        obj(api_keys=array(API_KEY)),
    ),
    "DELETE /v1/me/api-keys/{id}": Doc(
        "Revoke an API key: requests with it are refused from now on",
        "api-keys",
        obj(revoked={"const": True}),
    ),
    "POST /v1/chat/completions": Doc(
        "OpenAI-compatible chat completion: a turn in the room named by X-Parley-Session "
        "(or metadata.session_id, or a session id as user), else in a new room whose id "
        "the X-Parley-Session header of the answer carries. With stream: true, "
        "chat.completion.chunk events and data: [DONE]. Bearer: an access token or an "
        "API key (pk_…). Errors in OpenAI's shape",
        "openai",
        body=schemas.ChatCompletionBody,
        raw={200: ("application/json", COMPLETION)},
        streamed=200,
        errors=(404, 409, 429),
        openai_errors=True,
        query=(
            Query("X-Parley-Session", UUID, "the room this turn is in", where="header"),
            Query(
                "Idempotency-Key",
                STRING,
                "a retry with the same key is the same turn (default: the messages' hash)",
                where="header",
            ),
        ),
    ),
    "GET /v1/models": Doc(
        "OpenAI-compatible list of the models the operator offers, and parley (the room's)",
        "openai",
        raw={200: ("application/json", MODELS)},
        openai_errors=True,
    ),
    "GET /v1/search": Doc(
        "Web search (cached; says so when the search service is unavailable)",
        "search",
        obj(
            query=STRING,
            results=array({"type": "object"}),
            cached={"type": "boolean"},
            note=nullable(STRING),
            retry_after={"type": "number"},
            required=("query", "results", "cached", "note"),
        ),
        # Something besides whitespace: the query is the words in it.
        query=(
            Query(
                "q",
                {"type": "string", "minLength": 1, "maxLength": 400, "pattern": r"\S"},
                required=True,
            ),
        ),
        errors=(429,),
    ),
}


def route_keys(routes: list[BaseRoute]) -> list[tuple[str, str, Route]]:
    """Every (method, path) the app answers over plain HTTP, in table order."""
    found = []
    for route in routes:
        if isinstance(route, Route) and route.methods:
            for method in sorted(route.methods - {"HEAD"}):
                found.append((method, route.path, route))
    return found


def undocumented(routes: list[BaseRoute]) -> list[str]:
    return [f"{m} {p}" for m, p, _ in route_keys(routes) if f"{m} {p}" not in ENDPOINTS]


def stale(routes: list[BaseRoute]) -> list[str]:
    """Table entries for endpoints the app does not have."""
    present = {f"{m} {p}" for m, p, _ in route_keys(routes)}
    return [key for key in ENDPOINTS if key not in present]


def build_document(routes: list[BaseRoute]) -> Schema:
    paths: dict[str, dict[str, Schema]] = {}
    components: dict[str, Schema] = dict(COMPONENTS)
    for method, path, route in route_keys(routes):
        doc = ENDPOINTS.get(f"{method} {path}")
        paths.setdefault(path, {})[method.lower()] = _operation(
            method, path, route, doc, components
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Parley",
            "version": "1",
            "description": (
                "Real-time chat with an assistant: the REST half of the wire contract. "
                "The WebSocket at GET /v1/ws is described in docs/protocol.md."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": {
                "Error": {
                    "description": "the error envelope; the status says which kind",
                    "content": {"application/json": {"schema": ref("ErrorEnvelope")}},
                },
                "OpenAIError": {
                    "description": "an error in OpenAI's shape (the front door)",
                    "content": {"application/json": {"schema": ref("OpenAIError")}},
                },
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "jwt"},
            },
        },
        "security": [{"bearer": []}, {"cookie": []}],
    }


def _operation(
    method: str, path: str, route: Route, doc: Doc | None, components: dict[str, Schema]
) -> Schema:
    path_params = list(route.param_convertors)
    if doc is None:
        return {
            "summary": f"{method} {path}",
            "x-undocumented": True,
            "parameters": [_path_param(name) for name in path_params],
            "responses": {"default": {"description": "not described yet"}},
        }
    operation: Schema = {
        "summary": doc.summary,
        "operationId": _operation_id(method, path),
        "tags": [doc.tag],
    }
    parameters = [_path_param(name) for name in path_params]
    parameters += [
        {"name": q.name, "in": q.where, "required": q.required, "schema": q.schema}
        | ({"description": q.description} if q.description else {})
        for q in doc.query
    ]
    if parameters:
        operation["parameters"] = parameters
    if doc.body is not None:
        components[doc.body.__name__] = _model_schema(doc.body, components)
        content: Schema = {"application/json": {"schema": ref(doc.body.__name__)}}
        if doc.multipart is not None:
            content["multipart/form-data"] = {"schema": doc.multipart}
        operation["requestBody"] = {
            "required": doc.body is not schemas.RefreshBody,
            "content": content,
        }
    if doc.public:
        operation["security"] = []
    operation["responses"] = _responses(doc, bool(path_params))
    return operation


def _responses(doc: Doc, has_ids: bool) -> Schema:
    responses: Schema = {}
    for status, (media, schema) in doc.raw.items():
        responses[str(status)] = {"description": "answer", "content": {media: {"schema": schema}}}
    if doc.streamed is not None:
        answer = responses.setdefault(str(doc.streamed), {"description": "answer", "content": {}})
        answer["content"]["text/event-stream"] = {"schema": STRING}
    if doc.data is not None:
        envelope = obj(success={"const": True}, data=doc.data)
        for status in {doc.ok, *(s for s in doc.errors if s < 300)}:
            answer = responses.setdefault(str(status), {"description": "success", "content": {}})
            answer["content"]["application/json"] = {"schema": envelope}
    errors = {s for s in doc.errors if s >= 400} | {500}
    if not doc.public:
        errors |= {401, 403, 503}
    if doc.body is not None:
        errors |= {400, 413}
    if doc.query:
        errors.add(400)
    if has_ids:
        errors.add(404)
    if doc.data is not None and doc.public:
        errors.add(503)
    error = "#/components/responses/" + ("OpenAIError" if doc.openai_errors else "Error")
    for status in sorted(errors):
        responses[str(status)] = {"$ref": error}
    return responses


def _path_param(name: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }


def _operation_id(method: str, path: str) -> str:
    words = [p.strip("{}").replace("-", "_") for p in path.strip("/").split("/") if p]
    return "_".join([method.lower(), *words]).replace(".", "_")


def _model_schema(model: type[BaseModel], components: dict[str, Schema]) -> Schema:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    return schema


def _offered_models(document: Schema, models: list[str]) -> None:
    """A session's ``model`` is one of the operator's (``LLM_MODELS``), or null."""
    for name in ("SessionCreateBody", "SessionPatchBody"):
        model = document["components"]["schemas"].get(name, {}).get("properties", {}).get("model")
        if model is not None:
            model["anyOf"] = [{"type": "string", "enum": list(models)}, {"type": "null"}]
    # The front door also takes "parley": whatever the room is set to.
    chat = document["components"]["schemas"].get("ChatCompletionBody", {}).get("properties", {})
    if "model" in chat:
        chat["model"] = {"type": "string", "enum": [*models, "parley"]}


async def openapi_json(request: Request) -> Response:
    document = getattr(request.app.state, "openapi", None)
    if document is None:
        document = build_document(request.app.routes)
        settings = getattr(request.app.state, "settings", None)
        if settings is not None:
            _offered_models(document, settings.allowed_models)
        request.app.state.openapi = document
    return JSONResponse(document)


routes: list[BaseRoute] = [Route(OPENAPI_PATH, openapi_json, methods=["GET"])]
