"""Request and response bodies. Requests forbid unknown fields: a typo is a 422 naming it, not a default."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema, field_validator

from corpus.config import RewriteConfig
from corpus.export import ExportFormat, ExportOptions
from service.fields import refuse_surrogates

MAX_ID_CHARS = 512
# Integer ids fit in 64 bits (what parquet, Arrow and most clients store); bigger ones are refused.
MAX_ID_INT = 2**63 - 1


def _document_id(value: Any) -> str | int:
    # One validator rather than a `str | int` union: a bad id then yields one error naming
    # `documents[i].id`, not one per union branch.
    if isinstance(value, str) and len(value) <= MAX_ID_CHARS:
        return refuse_surrogates(value)
    if isinstance(value, int) and not isinstance(value, bool) and -MAX_ID_INT - 1 <= value <= MAX_ID_INT:
        return value
    raise ValueError(
        f"must be a string of at most {MAX_ID_CHARS} characters or an integer in [-2^63, 2^63 - 1]"
    )


# Ids are echoed back; bounded so that a request cannot smuggle a megabyte through them.
DocumentId = Annotated[
    str | int,
    PlainValidator(_document_id),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "maxLength": MAX_ID_CHARS},
                {"type": "integer", "minimum": -MAX_ID_INT - 1, "maximum": MAX_ID_INT},
            ]
        }
    ),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DocumentScore(BaseModel):
    id: DocumentId
    n_tokens: int
    teacher_logprob: float | None = Field(description="mean per-token log-prob (nats) under the teacher")
    reference_logprob: float | None
    score: float | None = Field(description="teacher_logprob - reference_logprob; null when status is not ok")
    status: str


class ScoreResponse(BaseModel):
    fingerprint: dict[str, Any] = Field(
        description="what produced the numbers: models, dtype, max length, digest"
    )
    documents: list[DocumentScore]


class ExportRequest(ExportOptions):
    """An export as a client asks for it: corpus.export.ExportOptions (the service picks the manifest,
    the directory and, for megatron, the teacher's tokenizer)."""

    # Strict: a JSON string such as "yes" is not a boolean, nor "12" a number (a 422, as for jobs).
    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, json_schema_extra={"examples": [{"format": "hf"}]}
    )


class JobRequest(RewriteConfig):
    """A rewrite job as a client submits it: RewriteConfig itself (one declaration, one default per
    option), with `inputs` and `output` relative to a data root or absolute under one."""

    # The example is a real request: it documents the body, and API fuzzers start from it.
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"inputs": ["docs.jsonl"], "output": "out", "selection": {"method": "top-fraction", "ratio": 0.5}}
            ]
        }
    )

    exports: list[ExportRequest] = Field(
        default_factory=list,
        max_length=3,
        description="exports to make once the job has succeeded (one per format), as POST /v1/jobs/{id}/exports",
    )

    def __init__(self, **data: Any) -> None:
        # pydantic's own errors, located per field (FastAPI answers them as a 422 naming each field),
        # rather than the one ConfigError line a config built in code raises.
        BaseModel.__init__(self, **data)

    @field_validator("inputs", "output", "text_field", "id_field")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        # Paths and field names reach the file system, SQLite and responses: lone surrogates cannot.
        for text in value if isinstance(value, list) else [value]:
            refuse_surrogates(text)
        return value

    @field_validator("exports")
    @classmethod
    def _one_per_format(cls, value: list[ExportRequest]) -> list[ExportRequest]:
        formats = [e.format for e in value]
        if len(set(formats)) < len(formats):
            raise ValueError(f"one export per format (they write exports/<format>/): {formats}")
        return value

    def rewrite_config(self, inputs: list[str], output: str) -> RewriteConfig:
        """The job's RewriteConfig, with its paths resolved (exports are the service's to run)."""
        values = dict(self)
        values.pop("exports")
        return RewriteConfig(**{**values, "inputs": inputs, "output": output})


class JobProgress(BaseModel):
    phase: str
    documents: int
    tokens: int
    shards_done: int
    shards_total: int


class ExportView(BaseModel):
    id: str
    job_id: str
    origin: Literal["job", "request"] = Field(
        description="job: asked for in the job request; request: POST /v1/jobs/{id}/exports"
    )
    format: ExportFormat
    options: dict[str, Any]
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    cancel_requested: bool = Field(description="a DELETE asked a running export to stop")
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    error: str | None
    directory: str = Field(description="where the export is written, relative to the data root")
    record: dict[str, Any] | None = Field(description="its export.json once succeeded (paths relative to the data root)")


class ExportList(BaseModel):
    exports: list[ExportView]


class JobView(BaseModel):
    id: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled", "superseded"]
    owner: str = Field(description="the name of the API key that created the job")
    request: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int = Field(description="times the job was started (more than 1: it was resumed)")
    progress: JobProgress | None
    error: str | None
    cancel_requested: bool
    manifest_url: str | None = Field(description="where the manifest is served once the job succeeded")
    exports: list[ExportView] = Field(
        description="the job's exports (those its request asks for are queued once it succeeds)"
    )


class JobList(BaseModel):
    jobs: list[JobView]


class FieldError(BaseModel):
    field: str = Field(description="where in the request, e.g. documents[3].text")
    message: str
    type: str | None = None


class ErrorBody(BaseModel):
    """Every error response: the error's type name and a message (validation errors add `fields`)."""

    error: str
    detail: str
    fields: list[FieldError] | None = None


_ERROR_DESCRIPTIONS = {
    400: "unreadable request",
    401: "missing or invalid API key",
    403: "a path outside the data roots",
    404: "not found",
    409: "not allowed in the job's current state",
    410: "the job was superseded: a later job of the same key overwrote its output",
    413: "request body over the size limit",
    416: "a Range outside the file (Content-Range names its size)",
    422: "invalid request; `fields` names what is wrong",
    429: "scoring queue full; retry after Retry-After seconds",
    503: "not ready, engine out of service, or no answer within the request timeout; see Retry-After",
}


def error_responses(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer, all with the ErrorBody schema.

    Listing 422 here also replaces FastAPI's default 422 schema, which is not what we send."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in (401, 422, *codes):
        text = descriptions.get(f"e{code}", _ERROR_DESCRIPTIONS[code])
        out[code] = {"model": ErrorBody, "description": text}
    return out
