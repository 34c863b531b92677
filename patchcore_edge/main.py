"""`patchcore-edge <command>`: subcommands from calibrate/, export/ and edge/.

Errors the user can fix (PatchcoreError, a full or read-only disk) print as one line on
stderr with exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import faulthandler
import logging
import signal
import sys

from edge.errors import PatchcoreError


# a full, over-quota or read-only disk is the user's to fix, not a bug: one line, no traceback
_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def build_parser() -> argparse.ArgumentParser:
    import calibrate.cli
    import calibrate.cli_evaluate
    import edge.cli_infer
    import edge.cli_recalibrate
    import edge.cli_run
    import edge.cli_status
    import edge.cli_threshold
    import edge.install
    import export.cli

    parser = argparse.ArgumentParser(prog="patchcore-edge", description="PatchCore visual inspection for the edge")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    calibrate.cli.add_parser(sub)
    calibrate.cli_evaluate.add_parser(sub)
    edge.cli_infer.add_parser(sub)
    edge.cli_run.add_parser(sub)
    edge.cli_recalibrate.add_parser(sub)
    edge.cli_status.add_parser(sub)
    edge.cli_threshold.add_parser(sub)
    edge.install.add_parser(sub)
    export.cli.add_parser(sub)
    for command in sub.choices.values():  # -v after the command too (`patchcore-edge infer -v ...`)
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 PID`: every thread's stack to stderr, for a hung process
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines are noise
    logging.getLogger("PIL").setLevel(logging.INFO)  # -v: PIL's DEBUG is a line per PNG chunk read
    try:
        return int(args.func(args) or 0)
    except PatchcoreError as e:
        print(f"patchcore-edge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in _DISK_ERRORS:
            raise
        print(f"patchcore-edge {args.command}: error: cannot write {e.filename or 'a file'}: {e.strerror}; "
              "free space on that disk or point the output elsewhere", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
