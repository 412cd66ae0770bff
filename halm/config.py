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


def config_differences(old: dict, new: dict) -> list[str]:
    """'field: X there vs Y asked' for every setting that must match to resume (train.steps may change)."""
    out = []
    for part in ("model", "train"):
        for k in sorted(set(old[part]) | set(new[part])):
            if k != "steps" and old[part].get(k) != new[part].get(k):
                out.append(f"{part}.{k}: {old[part].get(k)!r} there vs {new[part].get(k)!r} asked")
    if old["family"] != new["family"]:
        out.append(f"family: {old['family']} there vs {new['family']} asked")
    for k in ("path", "codec", "mel", "mel_source"):
        a, b = old["data"].get(k), new["data"].get(k)
        if a != b:
            out.append(f"data.{k}: {a!r} there vs {b!r} asked" if k == "path" else f"data.{k} differs")
    return out
