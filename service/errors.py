"""The one place where errors become HTTP responses.

Every response error has the body `{"error": <type>, "detail": <message>}` (validation errors add
`fields`). Routes raise the named errors of scoring/errors.py and never build error responses
themselves; middleware that must answer before routing (body too large) uses `error_response` too.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from scoring.errors import (
    AuthenticationError,
    BucketNotFoundError,
    ConfigError,
    EngineDeadError,
    EngineNotReadyError,
    InputError,
    JobConflictError,
    JobStateError,
    NotFoundError,
    OverloadedError,
    PathNotAllowedError,
    RequestTimeoutError,
    RequestTooLargeError,
    ReweighError,
    StorageCredentialsError,
    StorageError,
    StoragePermissionError,
)
from service.batcher import ClientDisconnectedError
from service.paths import DataRoots, scrub

log = logging.getLogger(__name__)


class JobSupersededError(ReweighError):
    """A job whose output was replaced by a later job of the same owner (submitted with overwrite)."""


class RangeNotSatisfiableError(ReweighError):
    """An HTTP Range outside the file (the 416 names the file's size in Content-Range)."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class BadRangeError(ReweighError):
    """An HTTP Range header that cannot be parsed."""


class ErrorJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: an error message may quote what the client sent,
    lone surrogates included, which UTF-8 cannot encode (the default renderer would fail with a 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


# Most specific first: the first isinstance match decides (ConfigError before its ValueError base...).
# An object store's refusal: the bucket named is missing (404), the store denies the service's
# credentials this URL (403), or the service has no credentials for it (502: the upstream store
# cannot be used as configured; the caller cannot fix that, the operator can).
_STATUS: tuple[tuple[type[ReweighError], int], ...] = (
    (BucketNotFoundError, 404),
    (StoragePermissionError, 403),
    (StorageCredentialsError, 502),
    (StorageError, 502),
    (AuthenticationError, 401),
    (PathNotAllowedError, 403),
    (NotFoundError, 404),
    (JobConflictError, 409),
    (JobStateError, 409),
    (JobSupersededError, 410),
    (RequestTooLargeError, 413),
    (RangeNotSatisfiableError, 416),
    (BadRangeError, 400),
    (ConfigError, 422),
    (InputError, 422),
    (OverloadedError, 429),
    (EngineNotReadyError, 503),
    (EngineDeadError, 503),
    (RequestTimeoutError, 503),
    (ClientDisconnectedError, 503),  # nobody reads it: counted in metrics as the service's answer
)
# Statuses after which a retry may succeed: they carry Retry-After.
_RETRYABLE = {429, 503}


def status_for(exc: ReweighError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def error_response(exc: ReweighError, retry_after_s: int = 1, roots: Sequence[Path] = ()) -> JSONResponse:
    """The error's JSON answer; `roots`, the data roots, are cut out of its message (a client names
    paths relative to them and never sees where they are on the server)."""
    status = status_for(exc)
    headers: dict[str, str] = {}
    if status in _RETRYABLE:
        headers["Retry-After"] = str(retry_after_s)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="reweigh"'
    if isinstance(exc, RangeNotSatisfiableError):
        headers["Content-Range"] = f"bytes */{exc.size}"
    if status == 500:
        # A ReweighError without a mapping is a bug here, not the caller's: don't echo internals.
        return _internal_error(exc)
    return ErrorJSONResponse(
        {"error": type(exc).__name__, "detail": scrub(str(exc), roots)}, status_code=status, headers=headers
    )


def _internal_error(exc: BaseException) -> JSONResponse:
    incident = uuid.uuid4().hex[:12]
    log.error("internal error %s", incident, exc_info=(type(exc), exc, exc.__traceback__))
    return ErrorJSONResponse(
        {
            "error": "InternalError",
            "detail": f"internal error (incident {incident}; details are in the server log)",
        },
        status_code=500,
    )


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """('body', 'documents', 3, 'text') -> 'documents[3].text' (the request part is implied)."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    fields = []
    for err in exc.errors():
        name = _field_name(err.get("loc", ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            # loc is (body, character offset): name the body and say where it broke.
            cause = (err.get("ctx") or {}).get("error", "")
            name, msg = (
                "body",
                f"malformed JSON at character {err['loc'][-1]}" + (f" ({cause})" if cause else ""),
            )
        fields.append({"field": name, "message": msg, "type": err.get("type")})
    detail = "; ".join(f"{f['field']}: {f['message']}" for f in fields) or "invalid request"
    return ErrorJSONResponse({"error": "ValidationError", "detail": detail, "fields": fields}, status_code=422)


def _allowed_methods(request: Request) -> list[str]:
    # From the OpenAPI paths (cached by FastAPI) rather than the router tree, whose shape differs
    # between FastAPI versions.
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        regex, _, _ = compile_path(template)
        if regex.match(request.url.path):
            methods |= {m.upper() for m in operations}
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    retry_after = app.state.settings.retry_after_s
    given = [Path(r) for r in app.state.settings.data_roots]
    roots = [*DataRoots(given).roots, *given]  # real and as configured (a root may be a symlink)

    async def on_reweigh_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ReweighError)
        return error_response(exc, retry_after, roots)

    async def on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _validation_response(exc)

    async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
        # Routing's own answers (unknown path 404, wrong method 405), in the same body shape.
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the first matching route's methods; list every route's on this path.
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return ErrorJSONResponse(
            {"error": "HTTPError", "detail": str(exc.detail)}, status_code=exc.status_code, headers=headers
        )

    async def on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
        # Never a stack trace or an exception message to the client: they can hold paths and data.
        return _internal_error(exc)

    app.add_exception_handler(ReweighError, on_reweigh_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(Exception, on_unexpected)
