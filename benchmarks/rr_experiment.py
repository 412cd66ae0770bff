"""The RR experiment (the RR paper's Tables 1-3 in shape): t2a-s with and without RR, pooling and lambda.

For one prepared captioned dataset and its held-out captioned corpus, trains every (setting, seed) for
the same --steps (same data order, crops and CFG steps per seed), then scores the final checkpoint with
`benchmarks/t2a_baseline.py`'s scorer: test-split NLL with the caption and with the null condition, and
`halm eval-t2a` on the held-out captions (FAD, FAD∞, KL, CLAP and every judge head; sampling seed 0 for
every run, so two settings of one seed differ only by their weights). Each run is one row of --results
(docs/results/t2a_rr.json, shared with the baseline's rows; `"experiment": "rr"`). Resumable: rerun the
same command (scored runs are skipped, an interrupted run resumes from its checkpoint).

    python benchmarks/rr_experiment.py --data DATA --captions HELDOUT --domain sfx --runs RUNS --steps 1000 \\
        --seeds 0 1 2 --settings none rr-max-3 --n 147 --results docs/results/t2a_rr.json
    python benchmarks/rr_experiment.py --results docs/results/t2a_rr.json --tables

Settings: none (rr_weight 0), rr-max-3 (the paper's best: max pooling, lambda 3), rr-mean-3, rr-max-1,
and rr-all-3 (RR on every step: the paper's negative ablation). Two processes with disjoint --settings
or --seeds may share one --runs and --results (rows are merged under a lock); give each
OMP_NUM_THREADS=1 on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import t2a_baseline  # noqa: E402  (the one scorer of t2a runs)

SETTINGS = {
    "none": ["rr_weight=0.0"],
    "rr-max-3": ["rr_weight=3.0", "rr_pool=max"],
    "rr-mean-3": ["rr_weight=3.0", "rr_pool=mean"],
    "rr-max-1": ["rr_weight=1.0", "rr_pool=max"],
    "rr-all-3": ["rr_weight=3.0", "rr_pool=max", "rr_on=all"],
}
LABELS = {"none": "no RR", "rr-max-3": "RR, max, λ 3", "rr-mean-3": "RR, mean, λ 3", "rr-max-1": "RR, max, λ 1",
          "rr-all-3": "RR on every step, max, λ 3"}
METRICS = ("nll", "nll_uncond", "fad", "fad_inf", "kl", "clap")


def train_overrides(args, setting: str, seed: int) -> list[str]:
    warmup = max(1, args.steps // 10)
    return [f"batch_size={args.batch_size}", f"seed={seed}", f"threads={args.threads}", f"warmup_steps={warmup}",
            "eval_every=100", "ckpt_every=100", "eval_tokens=40000", f"cfg_dropout={args.cfg_dropout}",
            *SETTINGS[setting]]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def train_l_rr(run: Path) -> float | None:
    """Mean L_rr over the CFG steps of the second half of training (logged without gradient when rr_weight=0)."""
    rows = _metrics(run)
    last = max(r["step"] for r in rows)
    v = [r["l_rr"] for r in rows if "l_rr" in r and r["step"] > last / 2]
    return float(np.mean(v)) if v else None


def train_tokens_per_s(run: Path) -> float | None:
    """The training throughput over the whole run, from its logged rows (also for a run trained in several
    sittings, or one whose scoring alone is rerun)."""
    v = [r["tokens_per_s"] for r in _metrics(run) if r.get("tokens_per_s")]
    return round(float(np.mean(v)), 1) if v else None


def scored(results_path: Path, name: str, cfg: float) -> bool:
    if not results_path.exists():
        return False
    rows = json.loads(results_path.read_text())["rows"]
    return any(r["run"] == name and r["cfg"] == cfg and r["sample_seed"] == 0 for r in rows)


def run_all(args) -> None:
    from halm.train import train

    for seed in args.seeds:
        for setting in args.settings:
            run = Path(args.runs) / args.domain / setting / f"seed{seed}" / f"steps{args.steps}"
            name = f"rr/{args.domain}/{setting}/seed{seed}/steps{args.steps}"
            if scored(Path(args.results), name, args.cfg):
                continue
            overrides = train_overrides(args, setting, seed)
            train(args.preset, args.data, str(run), steps=args.steps, overrides=overrides, progress=not args.quiet)
            extra = {"experiment": "rr", "preset": args.preset, "overrides": overrides,
                     "train_tokens_per_s": train_tokens_per_s(run), "l_rr_train": train_l_rr(run)}
            t2a_baseline.score(SimpleNamespace(
                run=str(run), captions=args.captions, domain=args.domain, setting=setting, n=args.n, cfgs=[args.cfg],
                seed=0, out=str(Path(args.runs) / args.domain / "evals"), results=args.results, run_name=name,
                extra=extra))


def _diff(a, b):
    return None if a is None or b is None else a - b


def _ms(values, fmt: str, scale: float = 1.0) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=float) * scale
    if not len(v):
        return "—"
    return f"{v.mean():{fmt}} ± {v.std(ddof=1):{fmt.lstrip('+')}}" if len(v) > 1 else f"{v[0]:{fmt}}"


def tables(results: dict) -> str:
    """Per (domain, steps, cfg): mean ± sample std over seeds per setting, then the paired deltas vs no RR
    (same seed: same crops, same CFG steps, same sampling seed), mean ± std over the seeds both ran."""
    rows = [r for r in results["rows"] if r.get("experiment") == "rr"]
    out = []
    for key in sorted({(r["domain"], r["steps"], r["cfg"]) for r in rows}):
        domain, steps, cfg = key
        group = [r for r in rows if (r["domain"], r["steps"], r["cfg"]) == key]
        heads = [h for h in t2a_baseline.HEADS[domain] if any(h in r["controllability"] for r in group)]
        names = [t2a_baseline.head_name(h) for h in heads]
        by = {s: sorted((r for r in group if r["setting"] == s), key=lambda r: r["seed"]) for s in SETTINGS}
        out += [f"**{domain}, {steps} steps, CFG {cfg:g}** (mean ± std over seeds; controllability in %)", "",
                "| setting | seeds | test NLL | NLL, null cond. | L_rr (train) | FAD | FAD∞ | KL | CLAP | "
                + " | ".join(names) + " |", "|---" * (9 + len(heads)) + "|"]
        for s, rs in by.items():
            if not rs:
                continue
            seeds = ",".join(str(r["seed"]) for r in rs)
            out.append(f"| {LABELS[s]} | {seeds} | " + " | ".join(
                _ms([r[m] for r in rs], ".3f") for m in ("nll", "nll_uncond")) + f" | {_ms([r.get('l_rr_train') for r in rs], '.4f')} | "
                + " | ".join(_ms([r[m] for r in rs], ".3f") for m in ("fad", "fad_inf", "kl", "clap")) + " | "
                + " | ".join(_ms([r["controllability"].get(h) for r in rs], ".0f", 100) for h in heads) + " |")
        ref = results.get("reference", {}).get(domain)
        if ref:
            out.append("| reference clips (ceiling) | | | | | 0 | 0 | 0 | " + f"{ref['clap']:.3f} | "
                       + " | ".join(t2a_baseline.pct(ref["controllability"].get(h)) for h in heads) + " |")
        base = {r["seed"]: r for r in by["none"]}
        paired = [(s, [(r, base[r["seed"]]) for r in rs if r["seed"] in base]) for s, rs in by.items() if s != "none"]
        paired = [(s, ps) for s, ps in paired if ps]
        if paired:
            out += ["", "| paired: setting − no RR | seeds | Δ test NLL | Δ NLL, null cond. | Δ FAD | Δ FAD∞ | Δ KL | Δ CLAP | "
                    + " | ".join(f"Δ {h}" for h in heads) + " |", "|---" * (8 + len(heads)) + "|"]
            for s, ps in paired:
                out.append(f"| {LABELS[s]} | {','.join(str(r['seed']) for r, _ in ps)} | "
                           + " | ".join(_ms([_diff(r[m], b[m]) for r, b in ps], "+.4f" if m.startswith("nll") else "+.3f")
                                        for m in METRICS) + " | "
                           + " | ".join(_ms([r["controllability"][h] - b["controllability"][h] for r, b in ps], "+.0f", 100)
                                        for h in heads) + " |")
        out.append("")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="prepared captioned dataset (halm prepare --require-text)")
    p.add_argument("--captions", help="held-out captioned corpus with reference audio (e.g. a synth corpus of another seed)")
    p.add_argument("--domain", choices=sorted(t2a_baseline.HEADS), default="sfx", help="which judge heads apply (default sfx)")
    p.add_argument("--runs", help="folder for the runs (RUNS/DOMAIN/SETTING/seedN/stepsK) and their eval-t2a outputs")
    p.add_argument("--results", default="docs/results/t2a_rr.json", help="results JSON, shared with t2a_baseline.py")
    p.add_argument("--preset", default="t2a-s", help="t2a preset (default t2a-s)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS), help="settings to run (default all)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps per run, warm-up a tenth (default 1000)")
    p.add_argument("--batch-size", type=int, default=8, help="crops per step (default 8)")
    p.add_argument("--cfg-dropout", type=float, default=0.1, help="share of CFG steps (default 0.1, the paper's)")
    p.add_argument("--cfg", type=float, default=3.0, help="CFG coefficient of the scored samples (default 3)")
    p.add_argument("--n", type=int, default=147, help="held-out captions scored by eval-t2a (default 147)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--tables", action="store_true", help="only print the tables of --results")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args()
    if not args.tables:
        if not (args.data and args.captions and args.runs):
            p.error("--data, --captions and --runs are required unless --tables")
        run_all(args)
    print(tables(json.loads(Path(args.results).read_text())))


if __name__ == "__main__":
    main()
