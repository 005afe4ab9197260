"""The configs of a rewrite job, each declared once: `SelectionConfig`, `RewriteConfig`, `RayOptions`.

The CLI flags (service/commands/), the HTTP job schema (service/schemas.py) and the service settings
(service/settings.py) are derived from these models, so an option has one name, one type, one
default and one validation wherever it is given.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

from scoring.config import EngineConfig
from scoring.errors import ConfigError
from scoring.strict import StrictModel

PathText = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
# An input field: a top-level key, or a dotted path into nested objects (corpus/groups.py).
FieldName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
DEFAULT_SHARD_BYTES = 64 << 20
DEFAULT_CHUNK_DOCS = 1024

_SOFT_ONLY = ("temperature", "min_weight", "max_weight", "target_documents", "target_tokens")
_TOP_ONLY = ("ratio", "keep_tokens")


class SelectionConfig(StrictModel):
    """How scores become weights. Fields of the other method are refused, not silently ignored."""

    method: Literal["top-fraction", "soft"] = "top-fraction"
    # top-fraction: the share of eligible documents kept (MiniPLM's alpha), or a token budget.
    ratio: float | None = Field(default=None, description="top-fraction: share kept, in (0, 1]; default 0.5")
    keep_tokens: int | None = Field(
        default=None, ge=1, description="top-fraction: token budget instead of a ratio"
    )
    # soft
    temperature: float = 1.0
    min_weight: float = Field(default=0.0, ge=0.0)
    max_weight: float = 4.0
    target_documents: int | None = Field(
        default=None, ge=1, description="soft: total repeats; default = eligible docs"
    )
    target_tokens: int | None = Field(
        default=None, ge=1, description="soft: total tokens instead of documents"
    )
    # guards
    min_teacher_logprob: float | None = None
    drop_duplicates: bool = True
    # stratification (corpus/stratify.py)
    stratify_by: FieldName | None = Field(
        default=None,
        description="input field whose values are groups (e.g. source, or a dotted path such as "
        "meta.pile_set_name): select within each group, keeping the mixture of groups",
    )
    group_shares: dict[Annotated[str, StringConstraints(max_length=4096)], float] | None = Field(
        default=None,
        max_length=10_000,
        description="with stratify_by: output share per group, e.g. python-docs=0.3,bible=0.2; "
        "unlisted groups share the rest in proportion to their size",
    )

    @model_validator(mode="after")
    def _check(self) -> SelectionConfig:
        given = self.model_fields_set
        wrong = _SOFT_ONLY if self.method == "top-fraction" else _TOP_ONLY
        for name in wrong:
            if name in given and getattr(self, name) is not None:
                raise ConfigError(f"{name}={getattr(self, name)!r} does not apply to method={self.method!r}")
        if self.ratio is not None and not (0.0 < self.ratio <= 1.0):
            raise ConfigError(f"ratio={self.ratio} must be in (0, 1]")
        if self.ratio is not None and self.keep_tokens is not None:
            raise ConfigError(
                f"ratio={self.ratio} and keep_tokens={self.keep_tokens} are exclusive: give one"
            )
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ConfigError(f"temperature={self.temperature} must be a positive finite number")
        if not (self.max_weight > self.min_weight and math.isfinite(self.max_weight)):
            raise ConfigError(
                f"max_weight={self.max_weight} must be finite and above min_weight={self.min_weight}"
            )
        if self.target_documents is not None and self.target_tokens is not None:
            raise ConfigError(
                f"target_documents={self.target_documents} and target_tokens={self.target_tokens} are exclusive"
            )
        if self.min_teacher_logprob is not None and not math.isfinite(self.min_teacher_logprob):
            raise ConfigError(f"min_teacher_logprob={self.min_teacher_logprob} must be finite")
        if self.group_shares is not None:
            self._check_shares(self.group_shares)
        return self

    def _check_shares(self, shares: dict[str, float]) -> None:
        if self.stratify_by is None:
            raise ConfigError("group_shares needs stratify_by: the field whose values the shares are for")
        for group, share in shares.items():
            if not (0.0 < share <= 1.0):
                raise ConfigError(f"group_shares[{group!r}]={share} must be in (0, 1]")
        if sum(shares.values()) > 1.0 + 1e-9:
            raise ConfigError(f"group_shares sum to {sum(shares.values()):g}: they must not exceed 1")

    @property
    def effective_ratio(self) -> float:
        return 0.5 if self.ratio is None and self.keep_tokens is None else (self.ratio or 0.0)

    def record(self) -> dict[str, Any]:
        """The config as fingerprints and reports hold it. Stratification appears only when used,
        so jobs that do not use it keep the bytes (and digests) they had before it existed."""
        data = self.model_dump(mode="json")
        for name in ("stratify_by", "group_shares"):
            if data[name] is None:
                del data[name]
        return data


class RewriteConfig(StrictModel):
    """One rewrite job: what to read, how to select, where and how to write."""

    inputs: list[PathText] = Field(
        min_length=1, max_length=100_000, description="input shards: jsonl, jsonl.gz, jsonl.zst, parquet, datasets dirs"
    )
    output: PathText = Field(description="output directory (one job per directory)")
    selection: SelectionConfig = SelectionConfig()
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="seeds soft selection's repeats")
    text_field: str = Field(default="text", min_length=1, max_length=256)
    id_field: str = Field(default="id", min_length=1, max_length=256)
    shard_rows: int | None = Field(default=None, ge=1, le=2**62, description="rows per output shard")
    shard_bytes: int | None = Field(
        default=None,
        ge=1,
        le=2**62,
        description=f"text bytes per output shard; default {DEFAULT_SHARD_BYTES} when neither is set",
    )
    on_error: Literal["fail", "skip"] = Field(
        default="fail", description="an unreadable input shard stops the job, or is skipped and listed"
    )
    overwrite: bool = Field(default=False, description="replace a different job in the output directory")
    group_field: FieldName | None = Field(
        default=None,
        description="input field (or dotted path) labelling each document's group, e.g. source: the report "
        "gives kept shares per group (selection.stratify_by implies it)",
    )
    chunk_docs: int = Field(
        default=DEFAULT_CHUNK_DOCS,
        ge=1,
        le=1_000_000,
        description="documents per scorer call and per checkpoint (in the service: also how long a job "
        "holds the engine while HTTP requests wait)",
    )

    @model_validator(mode="after")
    def _check(self) -> RewriteConfig:
        strata = self.selection.stratify_by
        if self.group_field is not None and strata is not None and self.group_field != strata:
            raise ConfigError(
                f"group_field={self.group_field!r} and stratify_by={strata!r} name different fields: "
                "the groups a job reports are the groups it stratifies by"
            )
        seen: set[str] = set()
        for p in self.inputs:
            if p in seen:
                raise ConfigError(f"input {p!r} is listed twice")
            seen.add(p)
        return self

    @property
    def groups(self) -> str | None:
        """The field labelling groups: for stratification, or for the report alone."""
        return self.selection.stratify_by or self.group_field

    @property
    def sizing(self) -> tuple[int | None, int | None]:
        if self.shard_rows is None and self.shard_bytes is None:
            return None, DEFAULT_SHARD_BYTES
        return self.shard_rows, self.shard_bytes


class RayOptions(StrictModel):
    """Where and how wide a job runs on Ray. Combinations with the engine are checked by `check`."""

    address: str | None = Field(
        default=None, description="'auto', ray://head:10001 or host:port; none: this process's Ray, else a local one"
    )
    actors: int = Field(default=1, ge=1, description="scorer replicas (one per GPU on a GPU cluster)")
    gpus_per_actor: float = Field(
        default=0.0, ge=0.0, description="GPUs per scorer actor (1 on a GPU cluster; a fraction packs small pairs)"
    )
    workers: int = Field(default=2, ge=1, description="CPU tasks at once for selection and shard writing")
    max_restarts: int = Field(default=4, ge=0, description="restarts of a scorer actor that died")
    max_task_retries: int = Field(default=3, ge=0, description="retries of a task whose worker died")

    @model_validator(mode="after")
    def _check(self) -> RayOptions:
        if self.address is not None and not (
            self.address == "auto" or self.address.startswith("ray://") or ":" in self.address
        ):
            raise ConfigError(f"address={self.address!r} is not 'auto', ray://host:port or host:port")
        return self

    def check(self, engine: EngineConfig) -> None:
        if self.gpus_per_actor > 0 and engine.device == "cpu":
            raise ConfigError(
                f"gpus_per_actor={self.gpus_per_actor} with device='cpu': the GPUs would be reserved and unused"
            )
        if self.gpus_per_actor == 0 and engine.device.startswith("cuda"):
            raise ConfigError(
                f"device={engine.device!r} with gpus_per_actor=0: Ray hides GPUs from actors that reserve none"
            )

    def cpus_per_actor(self, engine: EngineConfig) -> float:
        # On CPU the torch thread count decides the last bits of a score, so an actor reserves
        # exactly the threads it runs; on GPU one CPU feeds the device.
        return float(engine.num_threads or 1) if self.gpus_per_actor == 0 else 1.0
