"""A finished job's pair diagnostics (corpus/diagnostics.py), read from its report.json."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter

from corpus import confine, storage
from corpus.report import REPORT_NAME
from scoring.errors import JobStateError, NotFoundError
from service.deps import RuntimeDep
from service.schemas import error_responses

router = APIRouter(prefix="/v1", tags=["diagnostics"])


@router.get(
    "/jobs/{job_id}/diagnostics",
    summary="a finished job's pair diagnostics: rank correlations, regions, per-group shares, warnings",
    responses=error_responses(
        404, 409, 503, e404="no such job, or its report is gone", e409="the job has not succeeded (yet)"
    ),
)
def get_diagnostics(job_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    job = runtime.store.get(job_id)
    if job.state != "succeeded":
        raise JobStateError(f"job {job_id} is {job.state}; its diagnostics exist once it has succeeded")
    path = job.output / REPORT_NAME
    with confine.confined_to(runtime.roots.confinement):  # the job's output may be a store prefix
        if not storage.is_file(path):
            raise NotFoundError(f"the report of job {job_id} is gone from its output directory")
        report = json.loads(storage.read_bytes(path))
    if "diagnostics" not in report:
        raise NotFoundError(f"the report of job {job_id} predates pair diagnostics; rerun it with --overwrite")
    return {"job_id": job_id, **report["diagnostics"]}
