"""Run folders for inference: find a run (or a shipped one by name), read its config, load its model.

Nothing here trains: evaluation, generation and `halm.load` import this module, never halm.train
(test: loading a shipped run imports no trainer). A run folder is made by halm.train:
config.json (family, model / train configs, the dataset's codec and mel settings) and checkpoint/
(model.safetensors [+ ema.safetensors], state.pt), or a shipped run (config.json + checkpoint/ with
fp16 weights only), or a run imported by halm.interop (checkpoint/ with weights only).
"""

from __future__ import annotations

import os
from pathlib import Path

from halm.checkpoint import complete_checkpoint_dir


def checkpoint_dir(run: Path) -> Path | None:
    """The last complete checkpoint (checkpoint/, or checkpoint.old/ if a crash hit between the renames)."""
    return complete_checkpoint_dir(Path(run) / "checkpoint", ("model.safetensors", "state.pt"))


# Runs shipped inside the package, loadable by name wherever a run folder is expected (fp16 weights).
SHIPPED_RUNS = {"halm-sfx-small": Path(__file__).parent / "assets" / "t2a_halm_sfx_small"}


def resolve_run(run: str | os.PathLike) -> Path:
    """A run folder, or the folder of a shipped run named `run` (when no folder of that name exists)."""
    if str(run) in SHIPPED_RUNS and not Path(run).exists():
        return SHIPPED_RUNS[str(run)]
    return Path(run)


def read_run_config(run: str | os.PathLike) -> dict:
    from halm.checkpoint import DamagedFile, read_json_file

    path = resolve_run(run) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{run}: no config.json — not a run made by `halm train`")
    rc = read_json_file(path, "run config", "restore it from a copy of the run (halm writes it once, at the start)")
    missing = [k for k in ("family", "model", "train", "data") if not isinstance(rc.get(k), dict if k != "family" else str)]
    if missing:
        raise DamagedFile(f"{path}: damaged run config (no valid {', '.join(repr(k) for k in missing)}); restore it from "
                          "a copy of the run")
    return rc


def weights_dir(run: str | os.PathLike, rc: dict) -> Path | None:
    """The folder with the run's weights: its last complete checkpoint, or for a shipped or imported run
    (weights only, no training state) its checkpoint/ folder."""
    folder = resolve_run(run)
    if "shipped" in rc or "imported" in rc:
        return folder / "checkpoint" if (folder / "checkpoint" / "model.safetensors").exists() else None
    return checkpoint_dir(folder)


def load_run(run: str | os.PathLike, weights: str = "auto", device="cpu"):
    """(model in eval mode, run config dict). weights: "model", "ema" or "auto" (EMA when the run has one).
    device: "cpu", "cuda[:N]" or "auto" (CUDA when present)."""
    from halm.checkpoint import DamagedFile, load_weights

    rc = read_run_config(run)
    from halm.models import model_from_config

    model = model_from_config(rc, str(run))
    ck = weights_dir(run, rc)
    if ck is None:
        raise FileNotFoundError(f"{run}: no checkpoint yet; train first (halm train … --out {run})")
    name = "ema" if weights == "ema" or (weights == "auto" and (ck / "ema.safetensors").exists()) else "model"
    if not (ck / f"{name}.safetensors").exists():
        raise FileNotFoundError(f"{ck}: no {name}.safetensors (train with --set ema_decay=0.999 for EMA weights)")
    fix = "restore it, or resume training to rewrite it"
    try:  # fp16 weights (shipped) are cast on copy
        model.load_state_dict(load_weights(ck / f"{name}.safetensors", fix))
    except RuntimeError as e:  # shapes that do not fit the config (e.g. an edited context)
        raise DamagedFile(f"{ck / f'{name}.safetensors'}: the weights do not fit {run}/config.json "
                          f"({str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e})") from None
    model.run_config = rc
    from halm.config import resolve_device

    return model.to(resolve_device(device)).eval(), rc
