"""`reweigh serve`: the HTTP service (scores, jobs, manifests) on one model pair.

Every option can also come from the environment (`REWEIGH_<NAME>`) or a .env file; options given on
the command line win. See service/settings.py for the full list (limits, batching, keys).
"""

from __future__ import annotations

import argparse
from typing import Any

from service.commands.engine_args import add_engine_args

# Options whose value only counts when given: otherwise the environment / .env / defaults decide.
_ENGINE_OPTIONS = {
    "teacher": "teacher",
    "reference": "reference",
    "dtype": "dtype",
    "device": "device",
    "max_length": "max_length",
    "window_overlap": "window_overlap",
    "token_budget": "token_budget",
    "threads": "num_threads",
    "cache": "score_cache",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve scores, rewrite jobs and manifests over HTTP",
        description="Serve POST /v1/scores, /v1/jobs and /v1/manifests (OpenAPI at /openapi.json) on one "
        "teacher/reference pair. Options fall back to REWEIGH_* environment variables and .env.",
    )
    add_engine_args(p, required=False)
    # None = not given: the settings (environment, .env, defaults) decide.
    p.set_defaults(**{name: None for name in _ENGINE_OPTIONS})
    p.add_argument(
        "--data-root",
        dest="data_roots",
        action="append",
        default=None,
        metavar="DIR",
        help="directory jobs may read and write (repeatable; REWEIGH_DATA_ROOTS)",
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
    p.add_argument("--ray-address", default=None, help="run jobs on this Ray cluster (auto | ray://HEAD:10001; REWEIGH_RAY_ADDRESS)")
    p.add_argument("--ray-actors", type=int, default=None, help="scoring actors per job on Ray (REWEIGH_RAY_ACTORS)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run)


def settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    given: dict[str, Any] = {
        field: getattr(args, option)
        for option, field in _ENGINE_OPTIONS.items()
        if getattr(args, option) is not None
    }
    for name in ("data_roots", "jobs_db", "proxy", "host", "port", "environment", "ray_address", "ray_actors"):
        value = getattr(args, name)
        if value is not None:
            given[name] = value
    if "data_roots" in given:
        from pathlib import Path

        given["data_roots"] = [str(Path(p).resolve()) for p in given["data_roots"]]
    return given


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app
    from service.settings import load_settings

    settings = load_settings(**settings_overrides(args))  # a bad value fails here, before any model loads
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
