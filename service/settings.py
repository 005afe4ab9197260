"""Every knob of the service, in one pydantic-settings class (environment `REWEIGH_*`, optional .env).

Routes read it through the `get_settings` dependency (tests override it); the app factory keeps the
instance on `app.state`. Built with unsafe values outside development, it refuses to start.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from corpus.config import RayOptions
from corpus.confine import is_url_root, url_under
from scoring.config import EngineConfig
from scoring.errors import ConfigError
from scoring.strict import describe_validation_error
from service.keys import ApiKey, parse_api_keys

# Keys shorter than this are guessable; production refuses them.
MIN_KEY_LENGTH = 16
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _split_commas(value: Any) -> Any:
    """`a,b` from the environment -> ["a", "b"]; a list (from code) passes through."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _data_root(value: Any) -> Any:
    """An object-store prefix (s3://bucket/data) stays text; anything else is a local directory."""
    if isinstance(value, str):
        return value.rstrip("/") if is_url_root(value) else Path(value)
    return value


DataRoot = Annotated[Path | str, BeforeValidator(_data_root)]


class Settings(BaseSettings, EngineConfig):
    """The engine's fields come from EngineConfig (declared once); `engine_config()` extracts them."""

    model_config = SettingsConfigDict(
        env_prefix="REWEIGH_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
    )

    # development: keys optional, any host. production: keys required (the compose file sets it).
    environment: Literal["development", "production"] = "development"

    # The model pair (paths, or hub ids when the network is allowed); the engine's own options
    # (dtype, device, max_length, ...) are EngineConfig's fields, inherited.
    teacher: str | None = None
    reference: str | None = None
    score_cache: Path | None = Field(
        default=None, description="SQLite score cache shared by requests and jobs"
    )
    # A proxy directory (`reweigh distill`): POST /v1/scores?scorer=proxy answers from it.
    proxy: Path | None = Field(default=None, description="proxy scorer directory, served by ?scorer=proxy")

    # Jobs read and write only below these directories or object-store prefixes (s3://bucket/data).
    # Relative job paths resolve against the first local one; URLs must lie under a URL root.
    data_roots: Annotated[list[DataRoot], NoDecode] = Field(default_factory=list)
    jobs_db: Path = Field(default=Path("reweigh-state/jobs.sqlite"), description="SQLite job store")
    # Where jobs run: here, on this process's engine (HTTP scoring shares it), or on a Ray cluster
    # whose actors load the pair from the same model paths (REWEIGH_RAY__ADDRESS, ...__GPUS_PER_ACTOR).
    job_executor: Literal["local", "ray"] = "local"
    ray: RayOptions = RayOptions()

    # Authentication: with keys, every /v1 route needs `Authorization: Bearer <key>`. Entries are
    # `key`, `name:key` or `name:key:admin` (service/keys.py); a job belongs to its key's name.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # /docs, /redoc and /openapi.json without a key: default yes in development, no in production.
    public_docs: bool | None = None

    # Limits.
    max_body_bytes: int = Field(default=8 << 20, ge=1024)
    max_documents_per_request: int = Field(default=256, ge=1)
    max_chars_per_document: int = Field(default=200_000, ge=1)
    max_queued_documents: int = Field(default=4096, ge=1, description="scoring queue depth; beyond: 429")
    request_timeout_s: float = Field(default=60.0, gt=0)
    retry_after_s: int = Field(default=1, ge=1, description="Retry-After sent with 429 and 503")

    # Micro-batching: concurrent requests' documents wait this long to share one engine call.
    batch_wait_ms: float = Field(default=5.0, ge=0)
    batch_max_documents: int = Field(default=512, ge=1)
    # Fairness: at most this many HTTP batches run while a job's chunk waits for the engine.
    batches_per_job_chunk: int = Field(default=4, ge=1)
    # The engine works in slices of at most this many characters (one document at least): between
    # slices, work of requests that timed out or disconnected is dropped, and a job's chunk gives way
    # to waiting HTTP batches. So no request holds the engine for much longer than one slice. The
    # default is about one engine batch at the default token budget (~4 characters a token).
    engine_slice_chars: int = Field(default=65_536, ge=1)

    # Where `reweigh serve` listens.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    @field_validator("data_roots", "api_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_commas(value)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        keys = [secret for _, secret in parse_api_keys([k.get_secret_value() for k in self.api_keys])]
        if self.environment == "production":
            if not keys:
                raise ConfigError(
                    "environment='production' needs api_keys (REWEIGH_API_KEYS, comma-separated); "
                    "set REWEIGH_ENVIRONMENT=development to run without authentication"
                )
            short = [i for i, k in enumerate(keys) if len(k) < MIN_KEY_LENGTH]
            if short:
                raise ConfigError(
                    f"environment='production' refuses api keys shorter than {MIN_KEY_LENGTH} characters "
                    f"(key number {', '.join(str(i + 1) for i in short)})"
                )
            if not self.data_roots:
                raise ConfigError("environment='production' needs data_roots (REWEIGH_DATA_ROOTS)")
            missing = [str(r) for r in self.data_roots if isinstance(r, Path) and not r.is_dir()]
            if missing:
                raise ConfigError(f"environment='production': data_roots {missing} are not directories")
        elif not keys and self.host not in _LOOPBACK:
            # Development may skip keys, but not while listening beyond this machine.
            raise ConfigError(
                f"host={self.host!r} without api_keys would serve anyone on the network; "
                "set REWEIGH_API_KEYS or listen on 127.0.0.1"
            )
        for root in self.data_roots:
            if isinstance(root, str):
                if not url_under(root + "/x", [root + "/"]):
                    raise ConfigError(f"data_roots: {root!r} has an empty, '.' or '..' segment")
            elif not root.is_absolute():
                raise ConfigError(f"data_roots: {str(root)!r} is not absolute")
        if self.batch_max_documents < self.max_documents_per_request:
            raise ConfigError(
                f"batch_max_documents={self.batch_max_documents} must hold a full request "
                f"(max_documents_per_request={self.max_documents_per_request})"
            )
        if self.max_queued_documents < self.max_documents_per_request:
            raise ConfigError(
                f"max_queued_documents={self.max_queued_documents} must hold a full request "
                f"(max_documents_per_request={self.max_documents_per_request})"
            )
        self.engine_config()  # an impossible engine combination fails here, before models load
        if self.job_executor == "ray":
            if not self.teacher or not self.reference:
                raise ConfigError("job_executor='ray' needs teacher and reference model paths: each Ray actor loads the pair")
            self.ray.check(self.engine_config())
        return self

    @cached_property  # parsed once: every request's key check uses it
    def api_key_entries(self) -> list[ApiKey]:
        return [key for key, _ in parse_api_keys([k.get_secret_value() for k in self.api_keys])]

    @property
    def docs_are_public(self) -> bool:
        return self.public_docs if self.public_docs is not None else self.environment == "development"

    def engine_config(self) -> EngineConfig:
        return EngineConfig(**{name: getattr(self, name) for name in EngineConfig.model_fields})


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and .env, with `overrides` (e.g. command-line values) on top.

    A bad value raises ConfigError naming it (the CLI prints it as one line).
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, "settings")) from None


def get_settings(request: Request) -> Settings:
    """The FastAPI dependency routes use; tests override it with `app.dependency_overrides`."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]
