"""Exports of a finished job for the loaders trainers use (corpus/export): written under the job's
output directory, `exports/<format>/`, and listed by their `export.json` records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt

from corpus.export import EXPORT_RECORD, ExportFormat, export_config, run_export
from corpus.manifest import MANIFEST_NAME
from scoring.errors import ConfigError, JobStateError
from service.auth import PrincipalDep
from service.deps import Runtime, RuntimeDep
from service.keys import Principal
from service.schemas import error_responses
from service.settings import SettingsDep

router = APIRouter(prefix="/v1", tags=["exports"])
EXPORTS_DIR = "exports"


class ExportRequest(BaseModel):
    """The ExportConfig fields a client chooses; the service picks the manifest and the directory."""

    model_config = ConfigDict(extra="forbid")

    format: ExportFormat
    # Strict: a JSON string such as "yes" is not a boolean, nor "12" a number (a 422, as for jobs).
    overwrite: StrictBool = False
    allow_other_tokenizer: StrictBool = False
    mds_shard_bytes: StrictInt | None = None
    hf_shard_rows: StrictInt | None = None


def _succeeded_output(runtime: Runtime, job_id: str, principal: Principal) -> Path:
    job = runtime.store.get(job_id, principal)  # another owner's job is the same 404 as an unknown one
    if job.state != "succeeded":
        raise JobStateError(f"job {job_id} is {job.state}; it can be exported once it has succeeded")
    if not isinstance(job.output, Path):
        raise ConfigError(
            f"job {job_id} wrote to an object store ({job.output}); exports read a local job directory: "
            "copy it to a data root on disk first"
        )
    return job.output


def export_records(output: Path) -> list[dict[str, Any]]:
    """The finished exports of a job's output directory (a directory without export.json is not one)."""
    records = []
    for record in sorted((output / EXPORTS_DIR).glob(f"*/{EXPORT_RECORD}")):
        records.append({"directory": str(record.parent), **json.loads(record.read_text())})
    return records


@router.post(
    "/jobs/{job_id}/exports",
    status_code=201,
    summary="export a finished job for mosaicml-streaming (mds), Megatron (megatron) or HF datasets (hf)",
    responses=error_responses(400, 404, 409, 413, 503, e409="the job has not succeeded, or the export exists"),
)
def create_export(
    job_id: str, body: ExportRequest, runtime: RuntimeDep, settings: SettingsDep, principal: PrincipalDep
) -> dict[str, Any]:
    output = _succeeded_output(runtime, job_id, principal)
    options = body.model_dump(exclude_none=True)
    config = export_config(
        manifest=str(output / MANIFEST_NAME),
        out=str(output / EXPORTS_DIR / body.format),
        # Megatron tokenizes with the teacher's tokenizer: the one the scores were computed with.
        tokenizer=settings.teacher if body.format == "megatron" else None,
        **options,
    )
    if Path(config.out).exists() and not config.overwrite:
        raise JobStateError(
            f"job {job_id} already has a {body.format} export; pass overwrite=true to redo it"
        )
    return {"directory": config.out, **run_export(config)}


@router.get(
    "/jobs/{job_id}/exports",
    summary="a finished job's exports (their export.json records)",
    responses=error_responses(404, 409, 503),
)
def list_exports(job_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    return export_records(_succeeded_output(runtime, job_id, principal))
