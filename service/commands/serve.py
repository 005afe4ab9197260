"""`reweigh serve`: the HTTP service (scores, jobs, manifests) on one model pair.

Every option can also come from the environment (`REWEIGH_<NAME>`) or a .env file; options given on
the command line win. See service/settings.py for the full list (limits, batching, keys).
"""

from __future__ import annotations

import argparse
from typing import Any

from corpus.config import RayOptions
from service.commands.config_args import add_model_args, model_kwargs
from service.commands.engine_args import ENGINE_FIELDS, add_engine_args
from service.commands.rewrite import RAY_FIELDS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve scores, rewrite jobs and manifests over HTTP",
        description="Serve POST /v1/scores, /v1/jobs and /v1/manifests (OpenAPI at /openapi.json) on one "
        "teacher/reference pair. Options fall back to REWEIGH_* environment variables and .env.",
    )
    add_engine_args(p, required=False)
    p.add_argument(
        "--data-root",
        dest="data_roots",
        action="append",
        default=None,
        metavar="DIR",
        help="directory, or object-store prefix (s3://bucket/data), jobs may read and write "
        "(repeatable; REWEIGH_DATA_ROOTS)",
    )
    p.add_argument("--jobs-db", default=None, metavar="PATH", help="SQLite job store (REWEIGH_JOBS_DB)")
    p.add_argument("--proxy", default=None, metavar="DIR",
                   help="proxy directory (reweigh distill) served by POST /v1/scores?scorer=proxy (REWEIGH_PROXY)")
    p.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="listen port (default 8000)")
    p.add_argument(
        "--environment",
        choices=["development", "production"],
        default=None,
        help="production refuses to start without API keys (REWEIGH_API_KEYS)",
    )
    p.add_argument("--job-executor", choices=["local", "ray"], default=None, help="run jobs here or on Ray (REWEIGH_JOB_EXECUTOR)")
    add_model_args(p.add_argument_group("ray (REWEIGH_RAY__<NAME>)"), RayOptions, RAY_FIELDS, prefix="ray_")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run)


def settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Options given on the command line; the others are left to the environment, .env and defaults."""
    given: dict[str, Any] = model_kwargs(args, ENGINE_FIELDS)
    for name in ("teacher", "reference", "data_roots", "jobs_db", "proxy", "host", "port", "environment", "job_executor"):
        value = getattr(args, name)
        if value is not None:
            given[name] = value
    if args.cache is not None:
        given["score_cache"] = args.cache
    ray = model_kwargs(args, RAY_FIELDS, prefix="ray_")
    if ray:
        given["ray"] = ray
    if "data_roots" in given:
        from pathlib import Path

        from corpus.confine import is_url_root

        given["data_roots"] = [p if is_url_root(p) else str(Path(p).resolve()) for p in given["data_roots"]]
    return given


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from scoring.errors import ConfigError
    from scoring.models import check_model_source
    from service.app import create_app
    from service.settings import load_settings

    settings = load_settings(**settings_overrides(args))  # a bad value fails here, before any model loads
    # The models load in the app's lifespan, where a failure is a uvicorn traceback: refuse a bad path here.
    for role, name in (("teacher", settings.teacher), ("reference", settings.reference)):
        if not name:
            raise ConfigError(f"--{role} (or REWEIGH_{role.upper()}) is required: the model pair to serve")
        check_model_source(name, role)
    app = create_app(settings)
    # One process, one engine: workers > 1 would load the models once per worker and race the job store.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        workers=1,
        timeout_graceful_shutdown=30,
    )
    return 0
