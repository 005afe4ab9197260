"""The `reweigh` command line. Each subcommand lives in its own module under service/commands/ and
exposes `add_parser(subparsers)` (which sets `func`) so that this file only dispatches."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from scoring.errors import ReweighError


def build_parser() -> argparse.ArgumentParser:
    from service.commands import demo, distill, rewrite, score, serve

    parser = argparse.ArgumentParser(prog="reweigh", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (score, rewrite, distill, serve, demo):
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
        return int(args.func(args) or 0)
    except ReweighError as exc:
        # Named, expected failures: one clear line, no traceback.
        print(f"reweigh {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reweigh {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
