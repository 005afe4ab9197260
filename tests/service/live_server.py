"""`python -m tests.service.live_server PORT DELAY_MS`: the real app on the real models from REWEIGH_*
settings, with each engine call slowed by DELAY_MS, so a test can kill the process mid-job reliably."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn

from service.app import create_app, load_engine
from service.settings import Settings, load_settings


class SlowEngine:
    def __init__(self, engine: Any, delay_s: float) -> None:
        self.engine, self.delay_s = engine, delay_s
        self.fingerprint = engine.fingerprint

    def score(self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None) -> Any:
        time.sleep(self.delay_s)
        return self.engine.score(texts, progress)


def main() -> None:
    port, delay_ms = int(sys.argv[1]), float(sys.argv[2])

    def factory(settings: Settings) -> SlowEngine:
        return SlowEngine(load_engine(settings), delay_ms / 1000)

    uvicorn.run(
        create_app(load_settings(port=port), engine_factory=factory),
        host="127.0.0.1",
        port=port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
