"""What every `halm` command shares: the --json and --device flags, and the defaults of the functions behind flags."""

from __future__ import annotations

import inspect


def add_json(s) -> None:
    s.add_argument("--json", action="store_true", help="print one JSON object with the result and nothing else")


def add_device(s) -> None:
    s.add_argument("--device", default="auto", help="where models run: auto (CUDA when present, else the CPU), cpu, "
                   "cuda or cuda:N (default auto)")


def defaults(fn) -> dict:
    """The keyword defaults of a function or the field defaults of a dataclass: the one place a flag's default
    comes from (the CLI never restates them)."""
    import dataclasses

    if dataclasses.is_dataclass(fn):
        return {f.name: f.default for f in dataclasses.fields(fn) if f.default is not dataclasses.MISSING}
    return {k: v.default for k, v in inspect.signature(fn).parameters.items() if v.default is not inspect.Parameter.empty}
