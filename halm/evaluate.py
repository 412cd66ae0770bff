"""`halm eval` and `halm compare`: score runs on a prepared split and write the paper-style comparison."""

from __future__ import annotations

import json
import math
from pathlib import Path

from halm.data.prepare import DatasetMismatch
from halm.errors import UserError


def evaluate_run(run: str, data: str | None = None, split: str = "test", mel_source: str = "stored",
                 weights: str = "auto", max_tokens: int | None = None, device="cpu", progress: bool = True) -> dict:
    """NLL / accuracy / PPL / bits per second of a run on a split (see halm.metrics.lm for the protocol).

    data: a prepared dataset (default: the one the run was trained on). mel_source (hybrid only):
    "stored" = the dataset's mel; "codec" = the mel of the codec's decoding of the coarse tokens, i.e.
    what the model sees when it generates (closed loop). device: where the model (and the codec of the
    closed loop) run: "cpu", "cuda[:N]" or "auto".
    """
    from halm.audio import MelConfig
    from halm.data import open_dataset
    from halm.metrics.lm import evaluate_lm
    from halm.models import count_params
    from halm.runs import load_run

    model, rc = load_run(run, weights=weights, device=device)
    data = data or rc["data"]["path"]
    ds = open_dataset(data, split)
    if len(ds) == 0:
        raise DatasetMismatch(f"{data}: the {split!r} split is empty")
    if ds.codec["weights_sha256"] != rc["data"]["codec"]["weights_sha256"]:
        raise DatasetMismatch(f"{data} was tokenized with codec {ds.codec['name']} ({ds.codec['weights_sha256']}) but "
                              f"{run} was trained on {rc['data']['codec']['name']} ({rc['data']['codec']['weights_sha256']})")
    if model.uses_mel and ds.index["mel"] != rc["data"]["mel"]:
        raise DatasetMismatch(f"{data} has mel settings {ds.index['mel']} but {run} was trained with {rc['data']['mel']}")
    if mel_source not in ("stored", "codec"):
        raise UserError(f"mel_source must be 'stored' or 'codec', got {mel_source!r}")
    if max_tokens is not None and max_tokens < 1:
        raise UserError(f"max_tokens (--max-tokens) must be >= 1, got {max_tokens}")
    n_q = getattr(model.cfg, "n_q", 1)
    if ds.n_codebooks < n_q:
        raise DatasetMismatch(f"{data} holds {ds.n_codebooks} codebooks but {run} models {n_q}; prepare it with "
                              f"--n-codebooks {n_q} or more")
    mel_fn = None
    if mel_source == "codec" and model.uses_mel:
        import torch

        from halm.codec.closed_loop import ClosedLoopMel
        from halm.codec.model import Codec

        closed = ClosedLoopMel(Codec.load(rc["data"]["codec"]["name"]).to(next(model.parameters()).device),
                               MelConfig.from_dict(rc["data"]["mel"]))

        def mel_fn(item):
            tokens = torch.from_numpy(item.codes[0].astype("int64"))[None]  # (1, T)
            return closed.full(tokens)[0].numpy()  # (T, r, M)

    if rc["family"] == "t2a":  # conditional NLL with each item's caption (+ with the null condition)
        from halm.metrics.lm import evaluate_t2a
        from halm.models.text import caption_batches, load_text_encoder

        if mel_source == "codec" and model.uses_mel:
            raise UserError("--mel-source codec is not implemented for t2a runs; use stored")
        captions = caption_batches(load_text_encoder(model.cfg.text_encoder, device=next(model.parameters()).device,
                                                  max_tokens=model.cfg.text_max_tokens, dim=model.cfg.text_dim))
        r = evaluate_t2a(model, ds, captions, max_tokens=max_tokens, uncond=True, progress=progress)
    else:
        r = evaluate_lm(model, ds, max_tokens=max_tokens, mel_fn=mel_fn, progress=progress)
    stored_source = ds.index.get("mel_source", "audio")
    return {"run": str(run), "preset": rc["preset"], "family": rc["family"], "params": count_params(model),
            "data": str(data), "split": split,
            "mel_source": (("codec" if mel_source == "codec" else stored_source) if model.uses_mel else None),
            "mel_zero": bool(rc["model"].get("mel_zero", False)), **r}


def _val_curve(run: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    path = Path(run) / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if "val_nll" in rec:
                xs.append(rec["tokens"])
                ys.append(rec["val_nll"])
    return xs, ys


def _records(run: str) -> list[dict]:
    path = Path(run) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def compare_runs(runs: list[str], out: str, data: str | None = None, split: str = "test", names: list[str] | None = None,
                 device="cpu", progress: bool = True) -> dict:
    """Evaluate every run on the same split; write OUT/report.md (table, Δ vs the first run) and OUT/curves.png."""
    from halm.plots import plot_curves

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = names or [Path(r).name for r in runs]
    if len(names) != len(runs):
        raise UserError("give one name per run")
    results = [evaluate_run(r, data, split, device=device, progress=progress) for r in runs]
    base = results[0]
    lines = ["| model | preset | params | NLL | acc | PPL | bits/s | ΔNLL | Δacc | ΔPPL |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in zip(names, results):
        lines.append(f"| {name} | {r['preset']} | {r['params'] / 1e6:.2f}M | {r['nll']:.3f} | {100 * r['accuracy']:.2f}% | "
                     f"{r['ppl']:.2f} | {r['bits_per_second']:.0f} | {r['nll'] - base['nll']:+.3f} | "
                     f"{100 * (r['accuracy'] - base['accuracy']):+.2f} | {r['ppl'] - base['ppl']:+.2f} |")
    if any(r["family"] == "t2a" for r in results):
        lines[0] += " NLL, null condition |"
        lines[1] += "---|"
        for i, r in enumerate(results, start=2):
            lines[i] += f" {r['nll_uncond']:.3f} |" if "nll_uncond" in r else " — |"
    table = "\n".join(lines)
    t2a_note = ""
    if any(r["family"] == "t2a" for r in results):
        from halm.plots import plot_t2a_terms

        recs = {n: _records(r) for n, r in zip(names, runs) if _records(r)}
        plot_t2a_terms(recs, out_dir / "t2a_terms.png", title="text-to-audio training terms")
        t2a_note = ("For t2a runs NLL is the conditional NLL with each item's caption, the mean over codebooks of "
                    "each codebook's mean (halm/metrics/lm.py evaluate_t2a); 'null condition' scores the same "
                    "targets without the text.\n\n![t2a training terms](t2a_terms.png)\n\n")
    curves = {name: _val_curve(r) for name, r in zip(names, runs)}
    fig = plot_curves({k: v for k, v in curves.items() if v[0]}, out_dir / "curves.png",
                      title=f"validation NLL (dev split) — {', '.join(names)}")
    data_desc = data or "each run's own dataset"
    report = (f"# Comparison on the {split} split of {data_desc}\n\n{table}\n\n"
              f"{base['tokens']} targets, {base['seconds']:.1f} s of audio ({base['items']} items). NLL in nats per "
              f"coarse token, PPL = exp(NLL), acc = top-1 next-token accuracy; Δ against {names[0]}. Protocol: "
              f"non-overlapping windows of each model's context within each item (halm/metrics/lm.py).\n\n"
              f"{t2a_note}![validation curves](curves.png)\n")
    (out_dir / "report.md").write_text(report)
    summary = {"report": str(out_dir / "report.md"), "curves": str(fig), "table": table,
               "runs": [{"name": n, **r} for n, r in zip(names, results)]}
    (out_dir / "results.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    return summary


def _json_default(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)
