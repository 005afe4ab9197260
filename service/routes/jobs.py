"""Rewrite jobs: submit, list, inspect, cancel."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from corpus import storage
from corpus.readers import detect_format
from corpus.scorers import scorer_spec
from corpus.storage import JobPath
from scoring.errors import ConfigError, InputError, JobStateError
from scoring.protocols import BuiltScorer
from service.auth import PrincipalDep
from service.deps import Runtime, RuntimeDep
from service.exports import export_config_for
from service.fields import JobId
from service.jobs import Job, resolve_scorer
from service.routes.exports import job_exports
from service.schemas import JobList, JobProgress, JobRequest, JobView, error_responses
from service.settings import SettingsDep

# The prefix sits on the router (not on include_router) so that route templates, hence metric
# labels, carry it.
router = APIRouter(prefix="/v1", tags=["jobs"])

_ERRORS = error_responses(404, 503)
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled", "superseded"]


def job_view(request: Request, job: Job, runtime: Runtime) -> JobView:
    manifest_url = str(request.url_for("get_manifest", job_id=job.id)) if job.state == "succeeded" else None
    return JobView(
        id=job.id,
        state=job.state,  # type: ignore[arg-type]
        request=job.request,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempts=job.attempts,
        progress=JobProgress(**job.progress) if job.progress else None,
        error=job.error,
        cancel_requested=job.cancel_requested,
        manifest_url=manifest_url,
        owner=job.owner,
        exports=job_exports(runtime, job),
    )


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobView,
    summary="start a rewrite job",
    responses=error_responses(
        400,
        403,
        409,
        413,
        503,
        e409="another live job writes the same output, or the output belongs to another key's job",
        e422="invalid body, an input that is not a readable corpus, or a path the file system cannot use",
    ),
)
def create_job(
    body: JobRequest,
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> JobView:
    # Every path is confined and checked before anything is read or created.
    inputs = [runtime.roots.resolve(p, f"inputs[{i}]") for i, p in enumerate(body.inputs)]
    output = runtime.roots.resolve(body.output, "output")
    for i, path in enumerate(inputs):
        try:
            detect_format(path)
        except InputError as exc:  # its message quotes the server path: show the client's instead
            raise InputError(
                f"inputs[{i}]: {body.inputs[i]!r} is not a readable corpus: {runtime.roots.scrub(str(exc))}"
            ) from None
        if _inside(path, output):
            raise InputError(f"inputs[{i}]: {body.inputs[i]!r} lies inside the output directory")
    if storage.is_file(output) or (isinstance(output, Path) and output.exists() and not output.is_dir()):
        raise InputError(f"output: {body.output!r} exists and is not a directory")
    config = body.rewrite_config([str(p) for p in inputs], str(output))
    # The proxy directory is confined like the paths above; what cannot combine with the selection is
    # refused now (the spec is only described here: nothing loads).
    scorer_spec(resolve_scorer(body.scorer, runtime.roots), config.selection, BuiltScorer(runtime.engine))
    for i, options in enumerate(body.exports):  # a bad combination is a 422 now, not a failure later
        try:
            export_config_for(output, options, settings.teacher)
        except ConfigError as exc:
            raise ConfigError(f"exports[{i}]: {exc}") from None
    exporting = runtime.exports.live_on_output(config.output) if config.overwrite else None
    if exporting is not None:  # it reads the files this job would replace
        raise JobStateError(f"export {exporting} is reading output {body.output!r}; overwrite it once that is done")
    job = runtime.store.create(body.model_dump(mode="json", exclude_unset=True), config, principal.name)
    runtime.runner.notify()
    response.headers["Location"] = str(request.url_for("get_job", job_id=job.id))
    return job_view(request, job, runtime)


def _inside(path: JobPath, directory: JobPath) -> bool:
    if isinstance(path, Path) and isinstance(directory, Path):
        return path == directory or path.is_relative_to(directory)
    return (str(path).rstrip("/") + "/").startswith(str(directory).rstrip("/") + "/")


@router.get("/jobs", response_model=JobList, summary="list jobs, newest first", responses=_ERRORS)
def list_jobs(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    state: JobState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JobList:
    jobs = runtime.store.list_jobs(principal, state, limit)
    return JobList(jobs=[job_view(request, j, runtime) for j in jobs])


@router.get("/jobs/{job_id}", response_model=JobView, summary="a job's state and progress", responses=_ERRORS)
def get_job(job_id: JobId, request: Request, runtime: RuntimeDep, principal: PrincipalDep) -> JobView:
    return job_view(request, runtime.store.get(job_id, principal), runtime)


@router.delete(
    "/jobs/{job_id}",
    status_code=202,
    response_model=JobView,
    summary="cancel a job (a running one stops at its next chunk; its output stays resumable)",
    responses=error_responses(404, 409, 503, e409="the job already finished"),
)
def cancel_job(job_id: JobId, request: Request, runtime: RuntimeDep, principal: PrincipalDep) -> JobView:
    return job_view(request, runtime.runner.cancel(job_id, principal), runtime)
