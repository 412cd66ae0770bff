"""Which mel bins carry what the hybrid reads: test NLL of a trained Whisper-GPT with one band of its mel input
replaced by that band's mean (a mean ablation: the band's information gone, its level kept in range).

    python benchmarks/mel_band_ablation.py --run RUNS/speech/whisper-gpt/seed0 --domain speech --bands 4 \\
        --max-tokens 30000 --results docs/results/mel_bands.json
    python benchmarks/mel_band_ablation.py --results docs/results/mel_bands.json --tables

The mel bins are split into --bands equal groups (low to high frequency); each group is replaced, in every
frame of the test split, by its per-bin mean over the dev split. Also scored: the stored mel as is, and every
bin replaced (no mel information at all; compare with GPT-S and the mel-zeroed ablation). One row per run
into --results (rows of the same run are replaced).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def band_edges_hz(n_mels: int, bands: int, sample_rate: int, n_fft: int) -> list[tuple[int, int, float, float]]:
    """(first bin, last bin + 1, low Hz, high Hz) of each band, from the filterbank's peak frequencies."""
    from halm.audio import mel_filterbank

    peaks = mel_filterbank(sample_rate, n_fft, n_mels).argmax(axis=1) * sample_rate / n_fft
    cuts = np.linspace(0, n_mels, bands + 1).round().astype(int)
    return [(int(a), int(b), float(peaks[a]), float(peaks[b - 1])) for a, b in zip(cuts[:-1], cuts[1:])]


def score(args) -> dict:
    from halm.audio import MelConfig
    from halm.data import open_dataset
    from halm.metrics.lm import evaluate_lm
    from halm.runs import load_run

    model, rc = load_run(args.run)
    if not model.uses_mel:
        raise SystemExit(f"{args.run} has no mel path")
    data = rc["data"]["path"]
    test, dev = open_dataset(data, args.split), open_dataset(data, "dev")
    mel_cfg = MelConfig(**rc["data"]["mel"])
    mean = np.concatenate([np.asarray(dev[i].mel, dtype=np.float32).reshape(-1, mel_cfg.n_mels) for i in range(len(dev))]).mean(0)
    variants = {"stored mel": None, "every bin replaced": np.arange(mel_cfg.n_mels)}
    edges = band_edges_hz(mel_cfg.n_mels, args.bands, mel_cfg.sample_rate, mel_cfg.n_fft)
    for a, b, lo, hi in edges:
        variants[f"bins {a}-{b - 1} ({lo:.0f}-{hi:.0f} Hz) replaced"] = np.arange(a, b)
    out, t0 = {}, time.perf_counter()
    for name, bins in variants.items():
        def mel_fn(item, bins=bins):
            m = np.array(item.mel, dtype=np.float32)  # (T, r, M)
            m[..., bins] = mean[bins]
            return m

        r = evaluate_lm(model, test, max_tokens=args.max_tokens, mel_fn=None if bins is None else mel_fn, progress=False)
        out[name] = {"nll": r["nll"], "accuracy": r["accuracy"], "tokens": r["tokens"]}
        print(f"{name}: NLL {r['nll']:.4f}", flush=True)
    row = {"run": "/".join(Path(args.run).resolve().parts[-3:]), "domain": args.domain, "seed": rc["train"]["seed"],
           "split": args.split, "max_tokens": args.max_tokens, "bands": args.bands, "scores": out,
           "seconds": round(time.perf_counter() - t0, 1), "date": time.strftime("%Y-%m-%d")}
    path = Path(args.results)
    results = json.loads(path.read_text()) if path.exists() else {"rows": []}
    results["rows"] = [r for r in results["rows"] if r["run"] != row["run"]] + [row]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return results


def tables(results: dict) -> str:
    out = []
    for row in results["rows"]:
        base = row["scores"]["stored mel"]["nll"]
        out += [f"| {row['domain']} (seed {row['seed']}, {row['scores']['stored mel']['tokens']:,} test targets) | NLL | Δ vs stored mel |",
                "|---|---|---|"]
        out += [f"| {name} | {s['nll']:.4f} | {s['nll'] - base:+.4f} |" for name, s in row["scores"].items()]
        out.append("")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="a trained hybrid (whisper-gpt) run")
    p.add_argument("--domain", default="", help="domain name in the table")
    p.add_argument("--split", default="test")
    p.add_argument("--bands", type=int, default=4, help="equal groups of mel bins (default 4)")
    p.add_argument("--max-tokens", type=int, default=30000, help="targets scored (default 30000; 0 = all)")
    p.add_argument("--results", default="docs/results/mel_bands.json")
    p.add_argument("--tables", action="store_true", help="print the tables of --results")
    args = p.parse_args()
    args.max_tokens = args.max_tokens or None
    if not args.tables:
        if not args.run:
            p.error("--run is required unless --tables")
        score(args)
    print(tables(json.loads(Path(args.results).read_text())))


if __name__ == "__main__":
    main()
