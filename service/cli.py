"""The `reweigh` command line. Each subcommand lives in its own module under service/commands/ and
exposes `add_parser(subparsers)` (which sets `func`) so that this file only dispatches."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

from scoring.errors import ReweighError

log = logging.getLogger("reweigh")

# 128 + the signal number: what a shell reports for a process stopped by that signal.
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that every `finally` on
    the way out runs: temporary files (`.NAME.PID.tmp`) are removed rather than left next to outputs.
    A BaseException, so that no `except Exception` on the way mistakes it for a failure to handle."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises Terminated while the command runs (restored after). Python delivers signals to
    the main thread only, so elsewhere (main() called from a thread) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_parser() -> argparse.ArgumentParser:
    from service.commands import demo, distill, export, rewrite, score, serve

    parser = argparse.ArgumentParser(prog="reweigh", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (score, rewrite, distill, export, serve, demo):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        with sigterm_raises():
            return int(args.func(args) or 0)
    except ReweighError as exc:
        # Named, expected failures: one clear line, no traceback.
        print(f"reweigh {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reweigh {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        # A file the command needs that the system refuses (a full disk, a path that vanished): one line;
        # with -v the traceback too.
        log.debug("traceback", exc_info=True)
        print(f"reweigh {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except Terminated:
        print(f"reweigh {args.command}: terminated", file=sys.stderr)
        return EXIT_TERMINATED


if __name__ == "__main__":
    sys.exit(main())
