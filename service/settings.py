"""Every knob of the service, in one pydantic-settings class (environment `REWEIGH_*`, optional .env).

Routes read it through the `get_settings` dependency (tests override it); the app factory keeps the
instance on `app.state`. Built with unsafe values outside development, it refuses to start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from scoring.config import DType, EngineConfig
from scoring.errors import ConfigError
from scoring.strict import describe_validation_error

# Keys shorter than this are guessable; production refuses them.
MIN_KEY_LENGTH = 16
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _split_commas(value: Any) -> Any:
    """`a,b` from the environment -> ["a", "b"]; a list (from code) passes through."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="REWEIGH_", env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # development: keys optional, any host. production: keys required (the compose file sets it).
    environment: Literal["development", "production"] = "development"

    # The model pair (paths, or hub ids when the network is allowed).
    teacher: str | None = None
    reference: str | None = None
    dtype: DType = "auto"
    device: str = "auto"
    max_length: int | None = Field(default=None, ge=2)
    window_overlap: int | None = Field(default=None, ge=0)
    token_budget: int = Field(default=16384, ge=1)
    num_threads: int | None = Field(default=None, ge=1)
    score_cache: Path | None = Field(
        default=None, description="SQLite score cache shared by requests and jobs"
    )
    # A proxy directory (`reweigh distill`): POST /v1/scores?scorer=proxy answers from it.
    proxy: Path | None = Field(default=None, description="proxy scorer directory, served by ?scorer=proxy")

    # Jobs read and write only below these directories. Relative job paths resolve against the first.
    data_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    jobs_db: Path = Field(default=Path("reweigh-state/jobs.sqlite"), description="SQLite job store")
    job_chunk_docs: int = Field(
        default=256,
        ge=1,
        description="default documents per engine call in jobs: also how long a job holds the engine "
        "while HTTP requests wait",
    )
    # Jobs run on a Ray cluster when this is set ("auto", "ray://head:10001", "host:6379"); HTTP scoring
    # stays on this process's engine. Each actor loads the pair from the same model paths.
    ray_address: str | None = None
    ray_actors: int = Field(default=1, ge=1, description="scoring actors per job on Ray")
    ray_gpus_per_actor: float = Field(default=0.0, ge=0.0, description="GPUs reserved per Ray actor")

    # Authentication: with keys, every /v1 route needs `Authorization: Bearer <key>`.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

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

    # Where `reweigh serve` listens.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    @field_validator("data_roots", "api_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_commas(value)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        keys = [k.get_secret_value() for k in self.api_keys]
        if any(not k or any(c.isspace() for c in k) for k in keys):
            raise ConfigError("api_keys: a key is empty or contains whitespace")
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
        elif not keys and self.host not in _LOOPBACK:
            # Development may skip keys, but not while listening beyond this machine.
            raise ConfigError(
                f"host={self.host!r} without api_keys would serve anyone on the network; "
                "set REWEIGH_API_KEYS or listen on 127.0.0.1"
            )
        for root in self.data_roots:
            if not root.is_absolute():
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
        return self

    @property
    def api_key_values(self) -> list[bytes]:
        return [k.get_secret_value().encode() for k in self.api_keys]

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            dtype=self.dtype,
            device=self.device,
            max_length=self.max_length,
            window_overlap=self.window_overlap,
            token_budget=self.token_budget,
            num_threads=self.num_threads,
        )


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
