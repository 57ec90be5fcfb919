"""Configuration from the environment and ``.env`` (names as in docs/protocol.md §4).

A bad value stops start-up with one line naming the setting (see ``load_settings``);
secrets are ``SecretStr`` so that they never reach a log or a repr.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///./parley.db"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    # An empty variable means unset: compose files and shells pass `KEY=` for a value
    # nobody gave, and an empty OPENROUTER_API_KEY must choose the offline model.
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,
    )

    # Network
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    public_url: str | None = None  # the server's own origin when behind a proxy
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    trust_proxy_headers: bool = False

    # Storage
    database_url: str = DEFAULT_SQLITE_URL
    redis_url: str | None = None
    migrate_on_start: bool = True
    db_pool_size: int = Field(10, ge=1)
    # Bounded waits on the database, so that an outage or a partition answers
    # ``unavailable`` (HTTP 503, with Retry-After) instead of hanging the request: opening
    # a connection, each statement (PostgreSQL: client side, so it holds in a partition
    # too; SQLite: the busy timeout), and waiting for a free pooled connection.
    db_connect_timeout_s: float = Field(5.0, gt=0)
    db_statement_timeout_s: float = Field(10.0, gt=0)
    db_pool_timeout_s: float = Field(5.0, gt=0)
    # The retry hint (``retry_after``, the Retry-After header) while it is unreachable.
    db_retry_after_s: float = Field(5.0, gt=0)
    # The longest /readyz waits for any one check (database, Redis) before it reports
    # that check as not answering.
    readiness_timeout_s: float = Field(1.0, gt=0)
    # An answer whose store failed on an unreachable database is retried (and sent to
    # the room once stored) with backoff from 0.5 s up to this between tries.
    db_store_retry_max_s: float = Field(30.0, gt=0)

    # Tokens
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_issuer: str = "parley"
    jwt_audience: str = "parley"
    jwt_leeway_s: float = Field(10.0, ge=0)
    access_token_ttl_s: int = Field(900, ge=10)
    refresh_token_ttl_s: int = Field(30 * 24 * 3600, ge=60)
    # A refresh family's absolute lifetime from its login: rotation never extends it.
    refresh_family_max_age_s: int = Field(90 * 24 * 3600, ge=60)
    ws_ticket_ttl_s: int = Field(60, ge=1)
    # How long a node may authenticate from its cached copy of a user's row (name, role,
    # disabled, token revocation) without reading the database; 0 reads it every time.
    # Changes reach every node over the bus at once; this bounds staleness without it.
    caller_cache_ttl_s: float = Field(5.0, ge=0)

    # Limits
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_frame_bytes: int = Field(65_536, ge=1024)
    max_content_chars: int = Field(32_768, ge=1)
    messages_per_window: int = Field(20, ge=1)
    message_window_s: int = Field(10, ge=1)
    typing_per_window: int = Field(10, ge=1)
    typing_window_s: int = Field(5, ge=1)
    # ``join`` and ``leave`` frames, per user (each join reads the database and may
    # replay history).
    joins_per_window: int = Field(30, ge=1)
    join_window_s: int = Field(10, ge=1)
    # Every frame a connection sends, whatever its type (bad ones too), per connection.
    frames_per_window: int = Field(120, ge=1)
    frame_window_s: int = Field(10, ge=1)
    # Failed logins per window: for one account from one address (login_attempts_...),
    # for one account from anywhere (devices that signed in to it before are exempt),
    # and for one address over any accounts. Successful logins are not counted.
    login_attempts_per_window: int = Field(10, ge=1)
    login_account_failures_per_window: int = Field(20, ge=1)
    login_ip_failures_per_window: int = Field(100, ge=1)
    login_window_s: int = Field(300, ge=1)
    abuse_strikes_before_close: int = Field(20, ge=1)
    # Connections, per node (docs/security.md); 0 turns a cap off. Per address: every
    # open socket, half-open ones included (behind TRUST_PROXY_HEADERS: WebSocket
    # connections by the forwarded address, the proxy caps sockets).
    max_connections_per_ip: int = Field(256, ge=0)
    max_connections_per_user: int = Field(16, ge=0)  # WebSocket connections
    # From a socket's first byte (or its opening) to the end of a request's headers.
    header_timeout_s: float = Field(10.0, gt=0)
    send_queue_frames: int = Field(1024, ge=8)
    # What may wait for one slow reader, in bytes of encoded frames; past it the
    # connection is closed with 1013 (docs/security.md).
    send_queue_bytes: int = Field(1_048_576, ge=65_536)
    heartbeat_s: float = Field(25.0, gt=0)
    presence_ttl_s: int = Field(30, ge=2)
    session_idle_expiry_s: int = Field(1800, ge=1)
    sweep_interval_s: float = Field(30.0, gt=0)
    drain_timeout_s: float = Field(20.0, ge=0)
    # What a front-door caller (POST /v1/chat/completions) closing its connection does
    # to the answer: "cancel_if_alone" stops it when no member is in the room to see
    # it, "keep" lets it finish for the room (as when a WebSocket asker leaves),
    # "cancel" always stops it. The answer is stored either way, partial if stopped.
    frontdoor_on_disconnect: Literal["cancel_if_alone", "keep", "cancel"] = "cancel_if_alone"
    # A ``joined`` replays at most this many messages and (past the first) this many
    # characters of them; the rest is paged over REST (docs/protocol.md).
    replay_limit: int = Field(100, ge=1)
    replay_max_chars: int = Field(262_144, ge=1024)

    # Assistant
    openrouter_api_key: SecretStr | None = None
    openrouter_base_url: str = "https://openrouter.ai/api/v1"
    openrouter_referer: str = "https://github.com/parley-chat/parley"
    openrouter_title: str = "Parley"
    llm_model: str = "openai/gpt-4o-mini"
    llm_fallback_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The models a session may ask for (comma-separated); empty means LLM_MODEL and
    # LLM_FALLBACK_MODELS. Anything else is refused when a session is created or changed.
    llm_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    llm_context_length: int | None = Field(None, ge=256)
    llm_reply_reserve_tokens: int = Field(1024, ge=16)
    llm_connect_timeout_s: float = Field(10.0, gt=0)
    # How long an idle upstream connection is kept for the next request. httpx's
    # default, 5 s, made any answer after a quiet spell pay a new TLS handshake.
    upstream_keepalive_s: float = Field(60.0, ge=0)
    # A streamed answer holds its connection for as long as it runs (HTTP/1.1): this
    # is how many answers a node can stream at once, with Tavily and the embeddings.
    upstream_max_connections: int = Field(1000, ge=1)
    upstream_max_idle_connections: int = Field(100, ge=0)
    llm_first_token_timeout_s: float = Field(60.0, gt=0)
    llm_idle_timeout_s: float = Field(30.0, gt=0)
    llm_total_timeout_s: float = Field(300.0, gt=0)
    # Before the first token, every attempt together (retries, their backoff, the
    # fallback models) gets this long; then the user hears the model is unavailable.
    llm_first_token_deadline_s: float = Field(30.0, gt=0)
    llm_max_retries: int = Field(2, ge=0)
    llm_breaker_fail_max: int = Field(5, ge=1)
    llm_breaker_reset_s: float = Field(30.0, gt=0)
    offline_token_delay_s: float = Field(0.02, ge=0)
    stream_log_ttl_s: int = Field(600, ge=1)

    # Context
    # Each node's copy of recent turns per session (server/assistant/turn_cache.py), in
    # approximate megabytes (message text plus the objects holding it); 0 reads the
    # database for every answer.
    context_cache_mb: int = Field(64, ge=0)
    tavily_api_key: SecretStr | None = None
    tavily_base_url: str = "https://api.tavily.com"
    search_cache_ttl_s: int = Field(3600, ge=0)
    # What a web search may cost an answer, every attempt included; then it goes on
    # without results. And the most of Tavily's answer that is read.
    search_deadline_s: float = Field(3.0, gt=0)
    search_max_body_bytes: int = Field(1_048_576, ge=1024)
    embeddings_url: str | None = None
    embeddings_api_key: SecretStr | None = None
    embeddings_model: str = "text-embedding-3-small"
    max_document_bytes: int = Field(1_048_576, ge=1)
    # What one user may keep uploaded, over all sessions (deleting frees it): each
    # document costs chunking CPU and its chunks' rows. Over it, an upload is a 413.
    upload_quota_bytes: int = Field(20 * 1_048_576, ge=1)
    upload_quota_documents: int = Field(100, ge=1)
    max_memory_chars: int = Field(1000, ge=1)

    # Budgets (per user; an admin may override them per user). Unset is unlimited.
    # Every request sent to a model counts: answers, retries, fallbacks, summaries,
    # memory extraction, search-tool rounds. A period starts at 00:00 UTC (day) or
    # on the 1st at 00:00 UTC (month).
    budget_period: Literal["day", "month"] = "day"
    budget_tokens_per_period: int | None = Field(None, ge=1)
    budget_usd_per_period: float | None = Field(None, ge=0)
    # Whose budget pays for an answer and what it starts: the member who asked, or the
    # room's owner (who then pays for everyone in their rooms).
    budget_payer: Literal["asker", "owner"] = "asker"
    # Answers one user may have running at once (all their rooms); 0 is no cap.
    max_concurrent_answers: int = Field(0, ge=0)

    # Metrics: unset, /metrics is open to whoever reaches the port (bind to a private
    # address or filter it at the proxy); set, it needs "Authorization: Bearer <token>".
    metrics_token: SecretStr | None = None

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Unset: JSON lines when stderr is not a terminal, human lines when it is.
    log_json: bool | None = None

    # Process
    # Once started, move everything allocated so far (modules, the ORM's mappers, the
    # tokenizer, ...) out of the cyclic garbage collector's sight: it lives as long as
    # the process, and full collections walking it paused the event loop for 40-70 ms
    # every few seconds under load. Off for processes that start many apps (tests).
    gc_freeze: bool = True

    @field_validator("allowed_origins", "llm_fallback_models", "llm_models", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if value.startswith(("postgres://", "postgresql://")):
            value = "postgresql+asyncpg://" + value.split("://", 1)[1]
        if value.startswith("sqlite:///"):
            value = "sqlite+aiosqlite:///" + value.removeprefix("sqlite:///")
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("must be a postgresql:// or sqlite:/// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and value.strip() == "":
            return None
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis:// or rediss:// URL")
        return value

    @model_validator(mode="after")
    def _verification_key(self) -> Settings:
        if self.jwt_secret is not None and len(self.jwt_secret.get_secret_value()) < 32:
            raise ValueError("JWT_SECRET must be at least 32 characters")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def allowed_models(self) -> list[str]:
        """What a session's ``model`` may name (null always means ``llm_model``)."""
        return self.llm_models or list(dict.fromkeys([self.llm_model, *self.llm_fallback_models]))

    @cached_property
    def offline_model(self) -> bool:
        return self.openrouter_api_key is None

    def model_for(self, asked: str | None) -> str:
        """The model that answers when ``asked`` (a session's choice, or None) is asked.

        Without a key it is the offline model whatever was asked, and answers, labels
        and stored messages say so rather than name a model that never ran. A model
        the operator no longer offers (``LLM_MODELS`` narrowed after the session chose
        it) is never asked: the default answers instead.
        """
        if self.offline_model:
            from llm.offline import OFFLINE_MODEL

            return OFFLINE_MODEL
        if asked is None or asked not in self.allowed_models:
            return self.llm_model
        return asked


class ConfigError(Exception):
    """A setting is wrong; the message is one line meant for the operator."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(part) for part in first["loc"]).upper() or "configuration"
        raise ConfigError(f"invalid setting {name}: {first['msg']}") from None
