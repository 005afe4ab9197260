"""Manifests of finished jobs and their shards: what corpus.loader reads over HTTP.

Only the job's owner (or an admin key) reaches them; others get the 404 of an unknown job. A job
superseded by a later `overwrite` of its output answers 410: its files now belong to the new job.
Paths in a served manifest are relative to the data roots: clients never see server paths.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from corpus import confine, storage
from corpus.layout import SHARDS_DIR
from corpus.manifest import MANIFEST_NAME, Manifest, load_manifest
from corpus.storage import JobPath, RemotePath
from scoring.errors import InputError, JobStateError, NotFoundError
from service.auth import PrincipalDep
from service.deps import Runtime, RuntimeDep
from service.errors import BadRangeError, JobSupersededError, RangeNotSatisfiableError
from service.fields import JobId
from service.keys import Principal
from service.schemas import error_responses

# The prefix sits on the router (not on include_router) so that route templates, hence metric
# labels, carry it.
router = APIRouter(prefix="/v1", tags=["manifests"])

_ERRORS = error_responses(
    404, 409, 410, 503, e404="no such job or shard", e409="the job has not succeeded (yet)"
)
ShardName = Annotated[str, PathParam(min_length=1, max_length=255)]


def _finished_manifest(runtime: Runtime, job_id: str, principal: Principal) -> tuple[Manifest, JobPath]:
    job = runtime.store.get(job_id, principal)
    if job.state == "superseded":
        raise JobSupersededError(
            f"job {job_id} was superseded: a later job of the same key overwrote its output"
        )
    if job.state != "succeeded":
        raise JobStateError(f"job {job_id} is {job.state}; its manifest exists once it has succeeded")
    if not isinstance(job.output, Path):  # a store prefix: no symlinks, the URL roots still apply
        with confine.confined_to(runtime.roots.confinement):
            if not storage.is_file(job.output / MANIFEST_NAME):
                raise NotFoundError(f"the manifest of job {job_id} is gone from its output prefix")
            return load_manifest(job.output / MANIFEST_NAME), job.output
    # Confined at use: the output directory may have been swapped for a symlink since the job ran.
    path = confine.check(job.output / MANIFEST_NAME, runtime.roots.roots)
    if not path.is_file():
        raise NotFoundError(f"the manifest of job {job_id} is gone from its output directory")
    return load_manifest(path), job.output


def _without_server_paths(manifest: Manifest, runtime: Runtime) -> Manifest:
    relative = runtime.roots.relative
    return manifest.model_copy(
        update={
            "inputs": [e.model_copy(update={"path": relative(e.path)}) for e in manifest.inputs],
            "skipped_inputs": [
                e.model_copy(update={"path": relative(e.path), "reason": runtime.roots.scrub(e.reason)})
                for e in manifest.skipped_inputs
            ],
        }
    )


@router.get(
    "/manifests/{job_id}",
    summary="a finished job's manifest, or one rank's share of it",
    responses={200: {"model": Manifest, "description": "the manifest"}, **_ERRORS},
)
def get_manifest(
    job_id: JobId,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    rank: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
    world_size: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
) -> Response:
    if (rank is None) != (world_size is None):
        raise InputError(f"rank={rank} and world_size={world_size}: give both or neither")
    manifest, _ = _finished_manifest(runtime, job_id, principal)
    manifest = _without_server_paths(manifest, runtime)
    if rank is not None and world_size is not None:
        manifest = manifest.for_rank(rank, world_size)
    # The manifest's own serialisation (as on disk, with input paths relative to the data roots).
    return Response(manifest.to_json_bytes(), media_type="application/json")


class _ShardResponse(FileResponse):
    """Starlette answers a bad Range in plain text; raise our errors instead (the exception handlers
    turn them into the JSON error shape, with Content-Range on 416)."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader as exc:
            raise BadRangeError(f"Range {http_range!r}: {exc.content}") from None
        except RangeNotSatisfiable:
            raise RangeNotSatisfiableError(
                f"Range {http_range!r} starts beyond the shard's {file_size} bytes", file_size
            ) from None


_SHARD_ROUTE = dict(
    path="/manifests/{job_id}/shards/{name}",
    response_class=FileResponse,
    responses={
        **_ERRORS,
        **error_responses(400, 416, e400="a malformed Range header"),
        200: {
            "description": "the shard",
            "content": {"application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}}},
        },
        206: {
            "description": "the requested byte range(s)",
            "content": {
                "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
                "multipart/byteranges": {"schema": {"type": "string", "format": "binary"}},
            },
        },
    },
)


# HEAD too (size and ETag without the bytes), as its own operation in the OpenAPI document.
@router.get(**_SHARD_ROUTE, summary="one output shard (parquet); supports HTTP Range")  # type: ignore[arg-type]
@router.head(**_SHARD_ROUTE, name="head_shard", summary="a shard's headers (size, ETag)")  # type: ignore[arg-type]
def get_shard(job_id: JobId, name: ShardName, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    manifest, output = _finished_manifest(runtime, job_id, principal)
    # Only a shard the manifest lists is served: the name is looked up, never joined onto a path.
    listed = {Path(s.path).name: s for s in manifest.shards if Path(s.path).parent == Path(SHARDS_DIR)}
    entry = listed.get(name)
    if entry is None:
        raise NotFoundError(f"job {job_id} has no shard {name!r}")
    if not isinstance(output, Path):
        return _store_shard(runtime, output / entry.path, entry.bytes, name)
    path = confine.check(output / entry.path, runtime.roots.roots)
    if not path.is_file():
        raise NotFoundError(f"shard {name!r} of job {job_id} is gone from its output directory")
    return _ShardResponse(path, media_type="application/vnd.apache.parquet", filename=name)


def _store_shard(runtime: Runtime, location: RemotePath, size: int, name: str) -> Response:
    """A shard of a job written to an object store, streamed through (whole: no Range here; a reader
    with the store's credentials can read it from the store directly)."""
    with confine.confined_to(runtime.roots.confinement):
        source = storage.open_read(location)

    def chunks() -> Iterator[bytes]:
        with source:
            while chunk := source.read(1 << 20):
                yield chunk

    return StreamingResponse(
        chunks(),
        media_type="application/vnd.apache.parquet",
        headers={"Content-Length": str(size), "Content-Disposition": f'attachment; filename="{name}"'},
    )
