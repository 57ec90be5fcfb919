"""``/v1/auth/*`` and ``/v1/me``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from errors import BadRequest
from realtime.close_codes import CloseCode
from server.container import container_of
from server.rest.http import JSONResponse, client_ip, ok, read_body
from server.rest.schemas import LoginBody, RefreshBody, RegisterBody, UserPatchBody
from server.services.accounts import LoginResult, user_to_wire
from server.services.sessions import parse_id

REFRESH_COOKIE = "parley_refresh"
REFRESH_COOKIE_PATH = "/v1/auth"
# Marks a device that signed in to an account: it is spared that account's login lock.
DEVICE_COOKIE = "parley_device"
DEVICE_HEADER = "x-parley-device"
DEVICE_COOKIE_MAX_AGE_S = 365 * 24 * 3600
# The same answer whether the address was free or taken: registration does not tell
# anyone which addresses have accounts. The owner of a taken address signs in.
REGISTERED = {
    "status": "accepted",
    "message": "if this address can be registered, its account is ready: sign in with it",
}


async def register(request: Request) -> Response:
    body = await read_body(request, RegisterBody)
    await container_of(request).accounts.register(
        email=body.email, password=body.password, name=body.name.strip() or body.email
    )
    # 201 as the contract says, but not the user: a taken address must read the same.
    return ok(dict(REGISTERED), 201)


async def login(request: Request) -> Response:
    body = await read_body(request, LoginBody)
    device = request.headers.get(DEVICE_HEADER) or request.cookies.get(DEVICE_COOKIE)
    result = await container_of(request).accounts.login(
        email=body.email,
        password=body.password,
        client_ip=client_ip(request),
        device_token=device,
    )
    return _session_response(request, result)


async def refresh(request: Request) -> Response:
    token = await _refresh_token_from(request)
    if not token:
        raise BadRequest("no refresh token: send {refresh_token} or the refresh cookie")
    result = await container_of(request).accounts.refresh(token)
    return _session_response(request, result)


async def logout(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    await container.accounts.logout(principal, await _refresh_token_from(request))
    return _clear_cookies(ok({"logged_out": True}))


async def logout_all(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    await container.accounts.logout_all(principal.user_id)
    await container.hub.disconnect_user(
        str(principal.user_id), CloseCode.TOKEN_EXPIRED, "logged out everywhere"
    )
    return _clear_cookies(ok({"logged_out": True}))


async def ws_ticket(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    ticket, expires_in = await container.accounts.issue_ticket(principal)
    return ok({"ticket": ticket, "expires_in": expires_in})


async def patch_user(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    user_id = parse_id(request.path_params["id"], "user")
    body = await read_body(request, UserPatchBody)
    result = await container.accounts.set_disabled(principal, user_id, body.disabled)
    if body.disabled:
        await container.hub.disconnect_user(str(user_id), CloseCode.FORBIDDEN, "account disabled")
    return ok(result)


async def me(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    return ok(await container.accounts.profile(principal.user_id))


async def _refresh_token_from(request: Request) -> str | None:
    if await request.body():
        body = await read_body(request, RefreshBody)
        if body.refresh_token:
            return body.refresh_token
    return request.cookies.get(REFRESH_COOKIE)


def _session_response(request: Request, result: LoginResult) -> JSONResponse:
    body = {
        "access_token": result.access_token,
        "token_type": "Bearer",
        "expires_in": result.expires_in,
        "refresh_token": result.refresh_token,
        "user": user_to_wire(result.user),
    }
    if result.device_token is not None:
        # For clients without a cookie jar: send it back as X-Parley-Device.
        body["device_token"] = result.device_token
    response = ok(body)
    secure = request.url.scheme == "https"
    if result.device_token is not None:
        response.set_cookie(
            DEVICE_COOKIE,
            result.device_token,
            max_age=DEVICE_COOKIE_MAX_AGE_S,
            httponly=True,
            samesite="lax",
            secure=secure,
            path=REFRESH_COOKIE_PATH,
        )
    response.set_cookie(
        "jwt",
        result.access_token,
        max_age=result.expires_in,
        httponly=True,
        samesite="lax",
        secure=secure,
        path="/",
    )
    response.set_cookie(
        REFRESH_COOKIE,
        result.refresh_token,
        max_age=result.refresh_expires_in,
        httponly=True,
        samesite="lax",
        secure=secure,
        path=REFRESH_COOKIE_PATH,
    )
    return response


def _clear_cookies(response: JSONResponse) -> JSONResponse:
    response.delete_cookie("jwt", path="/")
    response.delete_cookie(REFRESH_COOKIE, path=REFRESH_COOKIE_PATH)
    return response


routes = [
    Route("/v1/auth/register", register, methods=["POST"]),
    Route("/v1/auth/login", login, methods=["POST"]),
    Route("/v1/auth/refresh", refresh, methods=["POST"]),
    Route("/v1/auth/logout", logout, methods=["POST"]),
    Route("/v1/auth/logout-all", logout_all, methods=["POST"]),
    Route("/v1/auth/ws-ticket", ws_ticket, methods=["POST"]),
    Route("/v1/me", me, methods=["GET"]),
    Route("/v1/users/{id}", patch_user, methods=["PATCH"]),
]
