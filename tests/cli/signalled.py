"""`python -m tests.cli.signalled SIGNAL N -- reweigh-args...`: run the CLI in-process, and send this
process SIGNAL right after its N-th parquet write has put bytes into a temporary file, so a test can
stop a command exactly while a `.NAME.PID.tmp` exists, as a user's Ctrl-C or a `kill` may."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import pyarrow.parquet as pq

from service.cli import main


def send_after(sig: signal.Signals, n: int) -> None:
    calls = [0]

    def count() -> None:
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), sig)

    write_table = pq.write_table
    writer_write_table = pq.ParquetWriter.write_table

    def patched_write_table(*args: Any, **kwargs: Any) -> None:
        write_table(*args, **kwargs)
        count()

    def patched_writer_write_table(self: pq.ParquetWriter, *args: Any, **kwargs: Any) -> None:
        writer_write_table(self, *args, **kwargs)
        count()

    pq.write_table = patched_write_table
    pq.ParquetWriter.write_table = patched_writer_write_table  # type: ignore[method-assign]


if __name__ == "__main__":
    name, n, sep, *argv = sys.argv[1:]
    assert sep == "--", sys.argv
    send_after(signal.Signals[name], int(n))
    sys.exit(main(argv))
