"""The run kit: what every trainer of halm (the LM trainer, the codec's, the judge's) does with its run folder.

    run = TrainingRun(out)                      # or config_file= / state_dir= / state_file= for its layout
    with run:                                   # OUT/.lock: one process trains a folder at a time
        saved = run.settings(config, may_change=("train.steps",))  # resume: compared with the saved ones
        ck = run.last_checkpoint()              # None on a first start
        weights, state = run.load(ck)           # {"model": tensors, ...}, the loop's state (step, RNG, optimizer)
        log = run.metrics(step)                 # the settings recorded; metrics.jsonl + tb/ (rows after `step` dropped)
        ...
        log({"step": step, "loss": ...})        # one JSON line, and TensorBoard scalars (train/…, val/…)
        run.save({"model": sd}, state)          # OUT/STATE_DIR written as a whole (halm.checkpoint)
    lr = warmup_cosine(step, lr, warmup_steps, steps, min_lr_ratio)

A checkpoint folder holds one `NAME.safetensors` per weight set and one torch-saved state file that
loads with `weights_only=True` (no pickled code runs). Settings are JSON; a resume compares every leaf
except those that may change (e.g. the number of steps) and refuses one that differs, naming it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from halm.checkpoint import (
    FolderLock,
    atomic_write_text,
    complete_checkpoint_dir,
    load_state,
    load_weights,
    read_json_file,
    save_weights,
    truncate_metrics,
    write_checkpoint_dir,
)
from halm.errors import UserError


class RunMismatch(UserError):
    """An existing run folder was made with other settings."""


def cpu_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as contiguous CPU tensors, as safetensors writes them (from any device)."""
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def warmup_cosine(step: int, lr: float, warmup_steps: int, steps: int, min_lr_ratio: float = 0.0) -> float:
    """The learning rate of 0-based `step`: linear warm-up over warmup_steps, then a cosine from lr down to
    lr * min_lr_ratio at `steps` (and flat after it)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def settings_differences(old: dict, new: dict, skip: Iterable[str] = (), prefix: str = "") -> list[str]:
    """'key: X there vs Y asked' for every leaf (dotted key, nested dicts walked) that differs, but those in `skip`."""
    skip = set(skip)
    out = []
    for k in sorted(set(old) | set(new)):
        key = f"{prefix}{k}"
        if key in skip:
            continue
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += settings_differences(a, b, skip, key + ".")
        elif a != b:
            out.append(f"{key}: {json.dumps(a)} there vs {json.dumps(b)} asked")
    return out


def _set_leaf(d: dict, key: str, value) -> None:
    *parents, leaf = key.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[leaf] = value


def _get_leaf(d: dict, key: str):
    for p in key.split("."):
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


class MetricsLog:
    """RUN/metrics.jsonl (one JSON object per call) and RUN/tb/ (TensorBoard scalars: `val_x` as val/x,
    every other number as train/x). Only the writing process (rank 0) writes; the others' calls do nothing."""

    def __init__(self, folder: Path, step: int, write: bool = True):
        self.f = self.writer = None
        if not write:
            return
        folder.mkdir(parents=True, exist_ok=True)
        truncate_metrics(folder / "metrics.jsonl", step)  # rows an interrupted run logged after its checkpoint
        self.f = open(folder / "metrics.jsonl", "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            # events from step + 1 on are dropped (those of `step` itself were logged before its checkpoint)
            self.writer = SummaryWriter(str(folder / "tb"), purge_step=step + 1)
        except ImportError:  # tensorboard is a dependency of halm, but a run must not die for its logs
            self.writer = None

    def __call__(self, record: dict) -> None:
        if self.f is None:
            return
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()
        if self.writer is not None:
            for k, v in record.items():
                if k not in ("step", "tokens") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.writer.add_scalar(f"val/{k[4:]}" if k.startswith("val_") else f"train/{k}", v, record["step"])

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class TrainingRun:
    """One trainer's run folder: its lock, its settings file, its checkpoint folder and its metrics.

    rank: under torchrun only rank 0 locks and writes; every rank reads."""

    def __init__(self, folder: str | os.PathLike, config_file: str = "config.json", state_dir: str = "checkpoint",
                 state_file: str = "state.pt", rank: int = 0):
        self.folder = Path(folder)
        self.config_path = self.folder / config_file
        self.state_dir, self.state_file, self.rank = state_dir, state_file, rank
        self._lock = FolderLock(self.folder) if rank == 0 else None
        self._logs: list[MetricsLog] = []
        self._unrecorded: dict | None = None  # settings to write once every check of the trainer has passed

    def __enter__(self) -> TrainingRun:
        if self._lock is not None:
            self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        for log in self._logs:  # also when training raised: what was logged reaches the files
            log.close()
        if self._lock is not None:
            self._lock.release()

    # ---- settings ----
    def saved_settings(self) -> dict | None:
        """The settings the run was started with (None before its first start)."""
        if not self.config_path.exists():
            return None
        return read_json_file(self.config_path, "run settings", "restore it from a copy of the run (it is written "
                              "once, at the start)")

    def settings(self, config: dict, may_change: Iterable[str] = (), skip: Iterable[str] = (),
                 normalize: Callable[[dict], dict] | None = None, set_hint: bool = True) -> dict | None:
        """At a first start, `config` is the run's settings; on a resume, refuse it (RunMismatch) if a setting
        differs from the saved one, but the dotted keys `may_change` (recorded anew when they change) and
        `skip` (kept as saved). normalize(saved): the saved settings with defaults for fields added since.
        set_hint: the message spells the saved values as `--set key=value` (trainers that take --set).
        Returns the saved settings (None at a first start).

        Nothing is written here: the settings are recorded by metrics(), which a trainer calls once all its
        other checks passed, so a command refused later (a bad combination, a --steps below the checkpoint)
        leaves the folder as it was and its corrected rerun is not refused for the settings it did not run."""
        old = self.saved_settings()
        if old is None:
            self._unrecorded = config
            return None
        if normalize is not None:
            old = normalize(old)
        may_change = tuple(may_change)
        diffs = settings_differences(old, config, (*may_change, *skip))
        if diffs:
            keys = [d.split(":")[0] for d in diffs]
            flat_config = not any(isinstance(v, dict) for v in config.values())
            settable = [k for k in keys if set_hint and ((flat_config and "." not in k) or k.split(".")[0] in ("model", "train"))]
            hint = " ".join(f"{k.split('.')[-1]}={json.dumps(_get_leaf(old, k))}" for k in settable)
            raise RunMismatch(f"{self.folder} was made with other settings ({'; '.join(diffs)}); rerun its own command "
                              f"to resume it{f' (as --set: {hint})' if hint else ''}, or choose a new --out")
        changed = [k for k in may_change if _get_leaf(old, k) != _get_leaf(config, k)]
        if changed:
            new = json.loads(json.dumps(old))
            for k in changed:
                _set_leaf(new, k, _get_leaf(config, k))
            self._unrecorded = new
        return old

    def record_settings(self) -> None:
        """Write the settings settings() accepted (first start, or keys that may change); metrics() calls it."""
        if self._unrecorded is not None and self.rank == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.config_path, json.dumps(self._unrecorded, indent=2) + "\n")
        self._unrecorded = None

    # ---- checkpoints ----
    def last_checkpoint(self, root: str | os.PathLike | None = None) -> Path | None:
        """The last complete checkpoint folder under `root` (default: the run folder), or None."""
        return complete_checkpoint_dir(Path(root or self.folder) / self.state_dir, ("model.safetensors", self.state_file))

    def save(self, weights: dict[str, dict[str, torch.Tensor]], state: dict, root: str | os.PathLike | None = None) -> None:
        """Write ROOT/STATE_DIR as a whole: NAME.safetensors per weight set, and the state file."""

        def write(folder: Path):
            for name, tensors in weights.items():
                save_weights(cpu_tensors(tensors), str(folder / f"{name}.safetensors"))
            torch.save(state, folder / self.state_file)

        write_checkpoint_dir(Path(root or self.folder) / self.state_dir, write)

    def load(self, ck: Path, device="cpu") -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
        """(weights by name, state) of checkpoint folder `ck`; a damaged file is one message naming it."""
        own = ck.resolve().is_relative_to(self.folder.resolve())
        fix = (f"remove {ck} to train {self.folder} from the start" if own else
               "restore it from a copy, or start from another run")  # an --init-from source is not ours to remove
        weights = {p.name.removesuffix(".safetensors"): load_weights(p, fix, device=str(device))
                   for p in sorted(ck.glob("*.safetensors"))}
        return weights, load_state(ck / self.state_file, fix, device)

    def metrics(self, step: int) -> MetricsLog:
        """The run's logs from `step` on; the settings are recorded first (the run starts here)."""
        self.record_settings()
        self._logs.append(MetricsLog(self.folder, step, write=self.rank == 0))
        return self._logs[-1]
