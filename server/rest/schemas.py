"""Request bodies. The same models validate requests and describe them in OpenAPI."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.services import frontdoor


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RegisterBody(Strict):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=8, max_length=256)
    name: str = Field(min_length=1, max_length=100)


class LoginBody(Strict):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=256)


class RefreshBody(Strict):
    refresh_token: str | None = Field(default=None, min_length=1, max_length=512)


class UserPatchBody(Strict):
    disabled: bool


class BudgetPatchBody(Strict):
    """An admin's override of one user's budget; a field left out keeps its value,
    null is unlimited."""

    tokens_per_period: int | None = Field(default=None, ge=1, le=2**62)
    usd_per_period: float | None = Field(default=None, ge=0, le=1e9)
    period: Literal["day", "month"] = "day"


class SessionCreateBody(Strict):
    title: str = Field(default="", max_length=200)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    system_prompt: str | None = Field(default=None, max_length=8000)


class SessionPatchBody(Strict):
    # Not nullable: a session always has a title ("" when it has none). ``model`` and
    # ``system_prompt`` may be null: back to the default model, no prompt.
    title: str = Field(default="", max_length=200)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    system_prompt: str | None = Field(default=None, max_length=8000)


class MemberAddBody(BaseModel):
    """Add a member by id, or by the email they registered with."""

    model_config = ConfigDict(extra="forbid")
    user_id: uuid.UUID | None = None
    email: str | None = Field(default=None, min_length=3, max_length=320)

    @model_validator(mode="after")
    def _exactly_one(self) -> MemberAddBody:
        if (self.user_id is None) == (self.email is None):
            raise ValueError("give exactly one of user_id or email")
        return self


class MessagePostBody(Strict):
    content: str = Field(min_length=1)
    client_msg_id: str | None = Field(default=None, min_length=1, max_length=128)
    reply: Literal["auto", "none"] = "auto"
    search: bool = False


class MemoryAddBody(Strict):
    content: str = Field(min_length=1)
    kind: Literal["preference", "fact"] = "fact"


class DocumentJsonBody(Strict):
    title: str = Field(min_length=1, max_length=300)
    content: str = Field(min_length=1)


class ApiKeyCreateBody(Strict):
    name: str = Field(min_length=1, max_length=100)


# The front door's body is the service's own input (server/services/frontdoor.py):
# named here too, for the OpenAPI document.
ChatCompletionBody = frontdoor.ChatCompletionBody


class MessageEditBody(Strict):
    content: str = Field(min_length=1)


class VersionSelectBody(Strict):
    version: int = Field(ge=1)
