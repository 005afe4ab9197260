"""Manifests of finished jobs and their shards: what corpus.loader reads over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response

from corpus.layout import SHARDS_DIR
from corpus.manifest import MANIFEST_NAME, Manifest, load_manifest
from scoring.errors import InputError, JobStateError, NotFoundError
from service.deps import Runtime, RuntimeDep
from service.schemas import error_responses

# The prefix sits on the router (not on include_router) so that route templates, hence metric
# labels, carry it.
router = APIRouter(prefix="/v1", tags=["manifests"])

_ERRORS = error_responses(404, 409, 503, e404="no such job or shard", e409="the job has not succeeded (yet)")


def _finished_manifest(runtime: Runtime, job_id: str) -> tuple[Manifest, Path]:
    job = runtime.store.get(job_id)
    if job.state != "succeeded":
        raise JobStateError(f"job {job_id} is {job.state}; its manifest exists once it has succeeded")
    path = job.output / MANIFEST_NAME
    if not path.is_file():
        raise NotFoundError(f"the manifest of job {job_id} is gone from its output directory")
    return load_manifest(path), job.output


@router.get(
    "/manifests/{job_id}",
    summary="a finished job's manifest, or one rank's share of it",
    responses={200: {"model": Manifest, "description": "the manifest"}, **_ERRORS},
)
def get_manifest(
    job_id: str,
    runtime: RuntimeDep,
    rank: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
    world_size: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
) -> Response:
    if (rank is None) != (world_size is None):
        raise InputError(f"rank={rank} and world_size={world_size}: give both or neither")
    manifest, _ = _finished_manifest(runtime, job_id)
    if rank is not None and world_size is not None:
        manifest = manifest.for_rank(rank, world_size)
    # The manifest's own serialisation: byte-identical to manifest.json on disk when whole.
    return Response(manifest.to_json_bytes(), media_type="application/json")


@router.get(
    "/manifests/{job_id}/shards/{name}",
    summary="one output shard (parquet); supports HTTP Range",
    response_class=FileResponse,
    responses={
        **_ERRORS,
        206: {"description": "the requested byte range"},
        416: {"description": "a range outside the file"},
    },
)
def get_shard(job_id: str, name: str, runtime: RuntimeDep) -> FileResponse:
    manifest, output = _finished_manifest(runtime, job_id)
    # Only a shard the manifest lists is served: the name is looked up, never joined onto a path.
    listed = {Path(s.path).name: s for s in manifest.shards if Path(s.path).parent == Path(SHARDS_DIR)}
    entry = listed.get(name)
    if entry is None:
        raise NotFoundError(f"job {job_id} has no shard {name!r}")
    path = output / entry.path
    if not path.is_file():
        raise NotFoundError(f"shard {name!r} of job {job_id} is gone from its output directory")
    return FileResponse(path, media_type="application/vnd.apache.parquet", filename=name)
