"""Exports of a finished job for the loaders trainers use (corpus/export), written under the job's
output directory, `exports/<format>/`, in the background (service/exports.py): a POST answers 202
at once, and the export's state is then read like a job's."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, Request, Response

from corpus import storage
from corpus.storage import JobPath
from scoring.errors import JobStateError
from service.auth import PrincipalDep
from service.deps import Runtime, RuntimeDep
from service.exports import Export, export_config_for, export_directory
from service.fields import JobId
from service.jobs import Job
from service.paths import DataRoots
from service.schemas import ExportList, ExportRequest, ExportView, error_responses
from service.settings import SettingsDep

router = APIRouter(prefix="/v1", tags=["exports"])


def export_view(export: Export, output: JobPath, roots: DataRoots) -> ExportView:
    record = export.record
    if record is not None:  # clients see paths relative to the data roots, never the server's
        record = json.loads(roots.scrub(json.dumps(record, ensure_ascii=False), urls=True))
        if record.get("tokenizer"):  # the service's teacher: not under a data root
            record["tokenizer"] = Path(record["tokenizer"]).name
    return ExportView(
        id=export.id,
        job_id=export.job_id,
        origin=export.origin,  # type: ignore[arg-type]
        format=export.options.format,
        options=export.options.model_dump(),
        state=export.state,  # type: ignore[arg-type]
        cancel_requested=export.cancel_requested,
        created_at=export.created_at,
        started_at=export.started_at,
        finished_at=export.finished_at,
        attempts=export.attempts,
        error=export.error,
        directory=roots.relative(str(export_directory(output, export.options.format))),
        record=record,
    )


def job_exports(runtime: Runtime, job: Job) -> list[ExportView]:
    return [export_view(e, job.output, runtime.roots) for e in runtime.exports.for_job(job.id)]


@router.post(
    "/jobs/{job_id}/exports",
    status_code=202,
    response_model=ExportView,
    summary="export a finished job for mosaicml-streaming (mds), Megatron (megatron), HF datasets (hf) or "
    "Megatron-Energon (energon), in the background",
    responses=error_responses(
        400, 404, 409, 413, 503, e409="the job has not succeeded, or that export exists or is being written"
    ),
)
def create_export(
    job_id: JobId,
    body: ExportRequest,
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> ExportView:
    job = runtime.store.get(job_id, principal)  # another owner's job is the same 404 as an unknown one
    if job.state != "succeeded":
        raise JobStateError(f"job {job_id} is {job.state}; it can be exported once it has succeeded")
    config = export_config_for(job.output, body, settings.teacher)  # a bad combination: 422 before queueing
    if storage.exists(storage.job_path(config.out)) and not config.overwrite:
        raise JobStateError(f"job {job_id} already has a {body.format} export; pass overwrite=true to redo it")
    (export,) = runtime.exports.create(job, [body], "request")
    runtime.export_runner.notify()
    response.headers["Location"] = str(request.url_for("get_export", job_id=job_id, export_id=export.id))
    return export_view(export, job.output, runtime.roots)


@router.get(
    "/jobs/{job_id}/exports",
    response_model=ExportList,
    summary="a job's exports, oldest first",
    responses=error_responses(404, 503),
)
def list_exports(job_id: JobId, runtime: RuntimeDep, principal: PrincipalDep) -> ExportList:
    return ExportList(exports=job_exports(runtime, runtime.store.get(job_id, principal)))


@router.get(
    "/jobs/{job_id}/exports/{export_id}",
    response_model=ExportView,
    summary="an export's state, and its export.json once it succeeded",
    responses=error_responses(404, 503),
)
def get_export(job_id: JobId, export_id: JobId, runtime: RuntimeDep, principal: PrincipalDep) -> ExportView:
    job = runtime.store.get(job_id, principal)
    return export_view(runtime.exports.get(job.id, export_id), job.output, runtime.roots)


@router.delete(
    "/jobs/{job_id}/exports/{export_id}",
    status_code=202,
    response_model=ExportView,
    summary="cancel an export (a running one stops at its next row group and leaves no directory)",
    responses=error_responses(404, 409, 503, e409="the export already finished"),
)
def cancel_export(job_id: JobId, export_id: JobId, runtime: RuntimeDep, principal: PrincipalDep) -> ExportView:
    job = runtime.store.get(job_id, principal)  # another owner's job is the same 404 as an unknown one
    return export_view(runtime.export_runner.cancel(job.id, export_id), job.output, runtime.roots)
