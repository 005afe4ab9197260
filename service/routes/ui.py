"""The jobs dashboard at /ui: server-rendered HTML (Jinja2, no JavaScript, no CDN), behind the same
API key as /v1.

A browser cannot attach `Authorization: Bearer` to a link, so /ui/login takes the key once in a form
and keeps it in an HttpOnly, SameSite=Strict cookie limited to /ui; every /ui route then checks that
cookie (or a bearer header) against the same keys with the same constant-time comparison.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import pyarrow.parquet as pq
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.templating import Jinja2Templates

from corpus import confine, storage
from corpus.manifest import MANIFEST_NAME, load_manifest
from corpus.report import HISTOGRAM_NAME, REPORT_NAME, SCATTER_NAME
from corpus.storage import JobPath
from scoring.errors import AuthenticationError, NotFoundError
from service.auth import bearer_scheme, require_api_key
from service.deps import RuntimeDep
from service.jobs import Job
from service.keys import Principal, find_principal
from service.routes.exports import job_exports
from service.settings import SettingsDep

COOKIE = "reweigh_key"
PLOTS = (HISTOGRAM_NAME, SCATTER_NAME)
LIVE = ("queued", "running")
templates = Jinja2Templates(directory=str(Path(__file__).parent.parent / "templates"))


def require_ui_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    settings: SettingsDep,
) -> Principal:
    """Who is looking: from the login cookie, else exactly as /v1 decides (a bearer header)."""
    cookie = request.cookies.get(COOKIE)
    keys = settings.api_key_entries
    if credentials is None and cookie is not None and keys:
        principal = find_principal(cookie, keys)
        if principal is None:
            raise AuthenticationError("the API key is not valid; sign in again at /ui/login")
        request.state.principal = principal
        return principal
    return require_api_key(request, credentials, settings)


UiPrincipal = Annotated[Principal, Depends(require_ui_key)]


# The login form itself is open; everything else under /ui needs the key.
login_router = APIRouter(prefix="/ui", include_in_schema=False)
router = APIRouter(prefix="/ui", include_in_schema=False, dependencies=[Depends(require_ui_key)])


@login_router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return templates.TemplateResponse(request, "login.html", {"error": None})


@login_router.post("/login", response_class=HTMLResponse)
def login(request: Request, key: Annotated[str, Form()], settings: SettingsDep) -> Response:
    if settings.api_key_entries and find_principal(key, settings.api_key_entries) is None:
        return templates.TemplateResponse(
            request, "login.html", {"error": "that key is not valid"}, status_code=401
        )
    response = RedirectResponse(str(request.url_for("jobs_page")), status_code=303)
    response.set_cookie(
        COOKIE, key, httponly=True, samesite="strict", path="/ui", secure=request.url.scheme == "https"
    )
    return response


def progress_view(job: Job, now: float) -> dict[str, Any]:
    """Documents, tokens, rate and ETA of a job (ETA from its shards: the only total known ahead)."""
    p = job.progress or {}
    view: dict[str, Any] = {
        "phase": p.get("phase", "-"),
        "documents": p.get("documents", 0),
        "tokens": p.get("tokens", 0),
        "shards": f"{p.get('shards_done', 0)}/{p.get('shards_total', 0)}" if p else "-",
        "rate": None,
        "eta": None,
    }
    started = job.started_at
    end = job.finished_at or now
    if started is not None and end > started and view["tokens"]:
        view["rate"] = view["tokens"] / (end - started)
    done, total = p.get("shards_done", 0), p.get("shards_total", 0)
    if job.state == "running" and started is not None and 0 < done < total:
        view["eta"] = (now - started) * (total - done) / done
    return view


def source_shares(output: JobPath) -> list[tuple[str, int, float]]:
    """(source, documents with repeats, share of the epoch) from the shards' `source` field (top
    level, or inside `meta`); empty when the documents carry no source. Local files are checked
    against the active confinement here; a store's URLs by corpus/storage.py."""
    manifest_path = output / MANIFEST_NAME
    manifest = load_manifest(confine.check(manifest_path) if isinstance(manifest_path, Path) else manifest_path)
    counts: dict[str, int] = {}
    for shard in manifest.shards:
        path = output / shard.path
        parquet = pq.ParquetFile(confine.parquet_source(path) if isinstance(path, Path) else storage.open_read(path))
        names = parquet.schema_arrow.names
        column = "source" if "source" in names else "meta" if "meta" in names else None
        if column is None:
            return []
        table = parquet.read(columns=[column, "repeats"])
        for value, repeats in zip(
            table.column(column).to_pylist(), table.column("repeats").to_pylist(), strict=True
        ):
            source = value.get("source") if isinstance(value, dict) else value
            if source is None and column == "meta":
                source = "(none)"
            counts[str(source)] = counts.get(str(source), 0) + repeats
    total = sum(counts.values()) or 1
    return sorted(((s, n, n / total) for s, n in counts.items()), key=lambda t: -t[1])


@router.get("", response_class=HTMLResponse, name="jobs_page")
def jobs_page(request: Request, runtime: RuntimeDep, principal: UiPrincipal) -> Response:
    now = time.time()
    jobs = runtime.store.list_jobs(principal, None, 200)  # the caller's jobs (an admin's: all)
    rows = [
        {"job": j, "output": runtime.roots.relative(str(j.output)), "progress": progress_view(j, now)}
        for j in jobs
    ]
    return templates.TemplateResponse(
        request, "jobs.html", {"rows": rows, "refresh": any(j.state in LIVE for j in jobs)}
    )


@router.get("/jobs/{job_id}", response_class=HTMLResponse, name="job_page")
def job_page(job_id: str, request: Request, runtime: RuntimeDep, principal: UiPrincipal) -> Response:
    import json

    job = runtime.store.get(job_id, principal)
    context: dict[str, Any] = {
        "job": job,
        "output": runtime.roots.relative(str(job.output)),  # as clients see paths: under the data root
        "progress": progress_view(job, time.time()),
        "refresh": job.state in LIVE,
        "report": None,
        "plots": [],
        "sources": [],
        # The export jobs, from the store: their state and error too, paths relative to the data root.
        "exports": job_exports(runtime, job),
        "diagnostics": None,
    }
    context["refresh"] = context["refresh"] or any(e.state in ("queued", "running") for e in context["exports"])
    report_path = job.output / REPORT_NAME
    # What the job wrote, read as a job reads: a file swapped for a symlink out of the roots is refused
    # (the output may also be an object-store prefix under a URL root).
    with confine.confined_to(runtime.roots.confinement):
        if job.state == "succeeded" and storage.is_file(report_path):
            with storage.open_read(report_path) as fh:
                report = json.loads(fh.read())
            context["report"] = report
            # The selection-quality diagnostics, where the report carries them (older reports do not).
            context["diagnostics"] = report.get("pair_diagnostics") or report.get("diagnostics")
            context["plots"] = [name for name in PLOTS if storage.is_file(job.output / name)]
            context["sources"] = source_shares(job.output)
    return templates.TemplateResponse(request, "job.html", context)


@router.get("/jobs/{job_id}/plots/{name}", name="job_plot")
def job_plot(job_id: str, name: str, runtime: RuntimeDep, principal: UiPrincipal) -> Response:
    if name not in PLOTS:  # looked up, never joined onto a path from the request
        raise NotFoundError(f"no plot {name!r}")
    path = runtime.store.get(job_id, principal).output / name
    with confine.confined_to(runtime.roots.confinement):
        if not storage.is_file(path):
            raise NotFoundError(f"job {job_id} has no {name}")
        if isinstance(path, Path):
            return FileResponse(confine.check(path, runtime.roots.roots), media_type="image/png")
        return Response(storage.read_bytes(path), media_type="image/png")


@router.get("/static/style.css", name="ui_style")
def style() -> FileResponse:
    return FileResponse(Path(__file__).parent.parent / "static" / "style.css", media_type="text/css")
