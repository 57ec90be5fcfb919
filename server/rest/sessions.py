"""``/v1/sessions/*``: rooms, members and history."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from errors import ParleyError
from server.container import container_of
from server.rest.http import ok, query_int, read_body
from server.rest.schemas import MemberAddBody, MessagePostBody, SessionCreateBody, SessionPatchBody
from server.services.sessions import DEFAULT_PAGE, parse_id

log = logging.getLogger("parley.sessions")


async def create_session(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    body = await read_body(request, SessionCreateBody)
    created = await container.sessions.create(
        principal, title=body.title, model=body.model, system_prompt=body.system_prompt
    )
    return ok(created, 201)


async def list_sessions(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    # Without a status: every session not closed. Idle expiry is the server's
    # bookkeeping; a person's sessions stay in their list and writing continues one.
    status = request.query_params.get("status", "open")
    return ok({"sessions": await container.sessions.list_for(principal, status)})


async def get_session(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    return ok(await container.sessions.get(principal, parse_id(request.path_params["id"])))


async def patch_session(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    session_id = parse_id(request.path_params["id"])
    body = await read_body(request, SessionPatchBody)
    changes = body.model_dump(exclude_unset=True)
    return ok(await container.sessions.update(principal, session_id, changes))


async def close_session(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    return ok(await container.sessions.close(principal, parse_id(request.path_params["id"])))


async def restore_session(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    return ok(await container.sessions.restore(principal, parse_id(request.path_params["id"])))


async def add_member(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    session_id = parse_id(request.path_params["id"])
    body = await read_body(request, MemberAddBody)
    if body.email is not None:
        # By email: an invitation, with one answer whether or not the address exists.
        return ok(await container.sessions.invite(principal, session_id, body.email), 202)
    member = await container.sessions.add_member(principal, session_id, user_id=body.user_id)
    await _announce_member(container, str(session_id), member, "added")
    return ok(member, 201)


async def list_invitations(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    return ok({"invitations": await container.sessions.invitations(principal)})


async def accept_invitation(request: Request) -> Response:
    return await _answer_invitation(request, accept=True)


async def decline_invitation(request: Request) -> Response:
    return await _answer_invitation(request, accept=False)


async def _answer_invitation(request: Request, *, accept: bool) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    invitation_id = parse_id(request.path_params["id"], "invitation")
    answer = await container.sessions.answer_invitation(principal, invitation_id, accept=accept)
    if accept:
        await _announce_member(container, answer["session_id"], answer, "added")
    return ok(answer)


async def _announce_member(
    container: Any, session_id: str, member: dict[str, Any], change: str
) -> None:
    # Best effort: the change is stored; a member who misses the frame (the bus is
    # down) sees it in GET /v1/sessions/{id} and on their next join.
    try:
        await container.hub.publish_member(
            session_id, member["user_id"], member["name"], change=change
        )
    except ParleyError as exc:
        log.warning("membership change in %s not announced: %s", session_id, exc.message)


async def remove_member(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    session_id = parse_id(request.path_params["id"])
    user_id = parse_id(request.path_params["user_id"], "member")
    name = await container.sessions.remove_member(principal, session_id, user_id)
    await container.hub.revoke_membership(str(session_id), str(user_id))
    removed = {"user_id": str(user_id), "name": name}
    await _announce_member(container, str(session_id), removed, "removed")
    return ok({"removed": True})


async def list_messages(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    # Not ``or DEFAULT_PAGE``: limit=0 is out of bounds and must be refused, not widened.
    limit = query_int(request, "limit")
    page = await container.sessions.history(
        principal,
        parse_id(request.path_params["id"]),
        before_seq=query_int(request, "before_seq"),
        after_seq=query_int(request, "after_seq"),
        limit=DEFAULT_PAGE if limit is None else limit,
    )
    return ok(page)


async def post_message(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    session_id = parse_id(request.path_params["id"])
    body = await read_body(request, MessagePostBody)
    if "text/event-stream" in request.headers.get("accept", ""):
        last_event_id = request.headers.get("last-event-id")
        return await container.sse.post_and_stream(principal, session_id, body, last_event_id)
    posted = await container.messages.post(
        principal,
        session_id,
        content=body.content,
        client_msg_id=body.client_msg_id,
        reply=body.reply,
        search=body.search,
    )
    data = {"message": posted.message, "stream_id": posted.stream_id}
    return ok(data, 201 if posted.created else 200)


async def delete_message(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    session_id = parse_id(request.path_params["id"])
    message_id = parse_id(request.path_params["message_id"], "message")
    return ok(await container.sessions.delete_message(principal, session_id, message_id))


routes = [
    Route("/v1/sessions", create_session, methods=["POST"]),
    Route("/v1/sessions", list_sessions, methods=["GET"]),
    Route("/v1/sessions/{id}", get_session, methods=["GET"]),
    Route("/v1/sessions/{id}", patch_session, methods=["PATCH"]),
    Route("/v1/sessions/{id}/close", close_session, methods=["POST"]),
    Route("/v1/sessions/{id}/restore", restore_session, methods=["POST"]),
    Route("/v1/sessions/{id}/members", add_member, methods=["POST"]),
    Route("/v1/sessions/{id}/members/{user_id}", remove_member, methods=["DELETE"]),
    Route("/v1/me/invitations", list_invitations, methods=["GET"]),
    Route("/v1/me/invitations/{id}/accept", accept_invitation, methods=["POST"]),
    Route("/v1/me/invitations/{id}/decline", decline_invitation, methods=["POST"]),
    Route("/v1/sessions/{id}/messages", list_messages, methods=["GET"]),
    Route("/v1/sessions/{id}/messages", post_message, methods=["POST"]),
    Route("/v1/sessions/{id}/messages/{message_id}", delete_message, methods=["DELETE"]),
]
