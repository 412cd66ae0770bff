"""The `halm` command: one entry point, subcommands mapped to plain functions (one module per command group).

    data   synth, inspect, mel, prepare        codec    codec train / eval
    lm     presets, train, eval, compare,      judge    judge train / eval, eval-t2a, listen
           generate                            interop  import musicgen, export
                                               tools    doctor, demo
"""

from __future__ import annotations

import argparse
import os
import sys

from halm import __version__
from halm.cli import codec, data, interop, judge, lm, tools
from halm.errors import TrainingDiverged, UserError

# What the CLI shows as one line: bad input (halm.errors.UserError), a missing file, a diverged run.
# Anything else is a bug and keeps its traceback.
USER_ERRORS = (UserError, FileNotFoundError, TrainingDiverged)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="halm",
        description="halm: train, evaluate and sample audio language models over neural-codec tokens "
        "(Whisper-GPT and text-to-audio LMs with representation regularization).",
    )
    p.add_argument("--version", action="version", version=f"halm {__version__}", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in (data, codec, lm, judge, interop, tools):
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    done = False
    try:
        code = args.func(args)
        done = True
        return code
    except USER_ERRORS as e:
        if os.environ.get("HALM_DEBUG"):  # HALM_DEBUG=1 shows the traceback of a user error
            raise
        print(f"halm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"halm {args.command}: interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
    finally:
        _end_process_group(wait_for_all=done)


def _end_process_group(wait_for_all: bool) -> None:
    """Under torchrun: destroy the process group before the interpreter shuts down. Left to finalization, gloo's
    worker threads can still hold tensors then, and a rank dies with SIGABRT after its work is done. After a
    command that succeeded, a barrier first: a rank that is done (e.g. the sender of the last broadcast) must not
    close its connections while another is still receiving on them (gloo aborts that one). After an error, no
    barrier: the other ranks may never reach it."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        if wait_for_all:
            dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
