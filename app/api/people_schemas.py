"""Request and response shapes of sign-in and people (SPEC 8.2)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    WithJsonSchema,
)

from app.api.schemas import FreeText, IsoDateTime, Patch
from app.auth.identity import ROLES
from app.auth.people import ALL_QUEUES, EMAIL_PATTERN

Role = Literal["agent", "supervisor", "admin", "scorer"]
QueueName = Literal["unsigned_users", "outstanding_requests"]
Queues = Annotated[list[QueueName], Field(min_length=1, max_length=2)]
Email = Annotated[str, Field(min_length=3, max_length=254, pattern=EMAIL_PATTERN)]
DisplayName = Annotated[FreeText, Field(min_length=1, max_length=200)]


class MeOut(BaseModel):
    id: int
    email: str | None
    display_name: str
    role: Role
    allowed_queues: list[QueueName]
    auth: Literal["session", "token"]
    csrf_token: str | None = Field(
        description="the X-CSRF-Token a cookie-authenticated write carries (null for a token)"
    )


class PersonOut(BaseModel):
    id: int
    email: str | None
    display_name: str
    role: Role
    allowed_queues: list[QueueName]
    is_active: bool
    has_password: bool
    has_identity_provider: bool
    created_at: datetime
    deactivated_at: datetime | None


class PeopleOut(BaseModel):
    items: list[PersonOut]


class PersonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    display_name: DisplayName | None = None
    role: Role = "agent"
    allowed_queues: Queues = ["unsigned_users", "outstanding_requests"]


class PersonPatch(Patch):
    """Any of the four, by name; null is not a value (as for the flags)."""

    display_name: Annotated[
        DisplayName | None,
        WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 200}),
    ] = None
    role: Annotated[Role | None, WithJsonSchema({"type": "string", "enum": list(ROLES)})] = None
    allowed_queues: Annotated[
        Queues | None,
        WithJsonSchema(
            {
                "type": "array",
                "items": {"type": "string", "enum": list(ALL_QUEUES)},
                "minItems": 1,
                "maxItems": 2,
            }
        ),
    ] = None
    is_active: Annotated[StrictBool | None, WithJsonSchema({"type": "boolean"})] = None


class PersonCreated(BaseModel):
    person: PersonOut
    set_password_link: str | None = Field(
        description="the one-time set-password link, shown once (null when passwords are off)"
    )


class LinkOut(BaseModel):
    set_password_link: str = Field(description="the one-time set-password link, shown once")


class SignedOutOut(BaseModel):
    sessions_ended: int


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[FreeText, Field(min_length=1, max_length=200)]
    agent_id: StrictInt = Field(ge=1, le=2**31 - 1, description="the person the token acts as")
    expires_at: IsoDateTime | None = None


class TokenOut(BaseModel):
    id: int
    name: str
    agent_id: int
    owner: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokensOut(BaseModel):
    items: list[TokenOut]


class TokenCreated(TokenOut):
    token: str = Field(description="the bearer token, shown once")


class SignInIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Annotated[str, Field(max_length=254)]
    password: Annotated[str, Field(max_length=1024)]


class SetPasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: Annotated[str, Field(max_length=200)]
    password: Annotated[str, Field(max_length=1024)]
