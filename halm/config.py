"""Config helpers shared by every dataclass config in halm."""

from __future__ import annotations

import dataclasses
import json

from halm.errors import UserError


def apply_overrides(cfg, pairs: list[str]):
    """Return a copy of dataclass `cfg` with `key=value` overrides; values are parsed as JSON
    (numbers, true/false, lists) when they can be, else kept as strings. Unknown keys are errors."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    changes = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise UserError(f"override {pair!r} is not key=value")
        if key not in fields:
            raise UserError(f"unknown setting {key!r}; known: {', '.join(sorted(fields))}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        current = getattr(cfg, key)
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if current is not None and not isinstance(value, type(current)):
            raise UserError(f"setting {key}: expected {type(current).__name__}, got {raw!r}")
        changes[key] = value
    return dataclasses.replace(cfg, **changes)


def resolve_device(spec, flag: str = "--device"):
    """"auto" -> the first CUDA device when there is one, else the CPU; "cpu", "cuda", "cuda:N" as asked. A
    CUDA device that is not there is a UserError naming `flag`, not a crash inside the first kernel."""
    import torch

    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"{flag} {spec!r}: not a torch device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= n:
            raise UserError(f"{flag} {spec!r}: this machine has {n} CUDA device(s) (torch {torch.__version__}"
                            f"{'' if torch.version.cuda else ', a CPU-only build'}); use {flag} cpu or auto")
    elif device.type != "cpu":
        raise UserError(f"{flag} {spec!r}: halm runs on cpu or cuda")
    return device
