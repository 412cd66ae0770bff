"""The RR experiment (the RR paper's Tables 1-3 in shape): t2a-s with and without RR, pooling and lambda.

For one prepared captioned dataset (NAME) and its reference manifest, trains every (setting, seed),
scores each run on the test split (conditional and null-condition NLL) and with `halm eval-t2a` on
the reference manifest's captions (FAD, KL, CLAP, controllability in the shipped judge's space), and
writes OUT/NAME/results.json and OUT/NAME/table.md (mean ± sample std over seeds). Resumable: rerun
the same command (finished runs and scores are reused; an interrupted run resumes from its checkpoint).

    python benchmarks/rr_experiment.py --data DATA --captions SRC --name music --out RUNS --steps 600 --seeds 0 1 2
    python benchmarks/rr_experiment.py --out RUNS --tables

Settings: none (rr_weight 0), rr-max-3 (the paper's best: max pooling, lambda 3), rr-mean-3, rr-max-1,
and rr-all-3 (RR on every step: the paper's negative ablation). Run two datasets side by side on a
2-core machine with OMP_NUM_THREADS=1 --threads 1 each.
Processes with disjoint --settings or --seeds may also share one --out/--name (results are merged on write).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SETTINGS = {
    "none": ["rr_weight=0.0"],
    "rr-max-3": ["rr_weight=3.0", "rr_pool=max"],
    "rr-mean-3": ["rr_weight=3.0", "rr_pool=mean"],
    "rr-max-1": ["rr_weight=1.0", "rr_pool=max"],
    "rr-all-3": ["rr_weight=3.0", "rr_pool=max", "rr_on=all"],
}
LABELS = {"none": "no RR", "rr-max-3": "RR, max, λ 3", "rr-mean-3": "RR, mean, λ 3", "rr-max-1": "RR, max, λ 1",
          "rr-all-3": "RR on every step, max, λ 3"}


def run_all(args) -> dict:
    from halm.eval_t2a import eval_t2a
    from halm.evaluate import evaluate_run
    from halm.train import train

    out = Path(args.out) / args.name
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"runs": {}}
    for seed in args.seeds:
        for setting in args.settings:
            key = f"{setting}/seed{seed}"
            if key in results["runs"]:
                continue
            t0 = time.perf_counter()
            run = out / setting / f"seed{seed}"
            overrides = [f"batch_size={args.batch_size}", f"seed={seed}", f"threads={args.threads}", "eval_every=50",
                         "ckpt_every=50", f"cfg_dropout={args.cfg_dropout}", *SETTINGS[setting]]
            tr = train(args.preset, args.data, str(run), steps=args.steps, overrides=overrides, progress=not args.quiet)
            ev = evaluate_run(str(run), split="test", progress=False)
            sc = eval_t2a(str(run), args.captions, str(run / "eval_t2a"), n=args.n, seed=seed, progress=False)
            row = {"setting": setting, "seed": seed, "nll": ev["nll"], "nll_uncond": ev["nll_uncond"],
                   "fad": sc["fad"], "kl": sc["kl"], "clap": sc["clap"], "controllability": sc["controllability"],
                   "reference": sc["reference"], "steps": args.steps, "train_tokens_per_s": tr["tokens_per_s"],
                   "wall_s": round(time.perf_counter() - t0, 1), "overrides": overrides}
            # re-read before writing: processes with disjoint --settings/--seeds may share one OUT/NAME
            results = json.loads(results_path.read_text()) if results_path.exists() else {"runs": {}}
            results["runs"][key] = row
            results["data"], results["captions"] = str(Path(args.data).resolve()), str(args.captions)
            tmp = results_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(results, indent=2) + "\n")
            tmp.replace(results_path)
            print(json.dumps(row), flush=True)
    (out / "table.md").write_text(table(results, args.name, out) + "\n")
    return results


def train_l_rr(run: Path) -> float:
    """Mean L_rr over the CFG steps of the second half of training (logged without gradient when rr_weight=0)."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    last = max(r["step"] for r in rows)
    v = [r["l_rr"] for r in rows if "l_rr" in r and r["step"] > last / 2]
    return float(np.mean(v)) if v else float("nan")


def table(results: dict, name: str, root: Path | None = None) -> str:
    """Mean ± sample std over seeds. Δ NLL: paired with the no-RR run of the same seed (same crops, same
    CFG steps), so the seed-to-seed spread of the data order cancels. L_rr (train): see train_l_rr."""
    by: dict[str, list[dict]] = {}
    for row in results["runs"].values():
        by.setdefault(row["setting"], []).append(row)
    base = {r["seed"]: r["nll"] for r in by.get("none", [])}

    def ms(values, fmt, scale=1.0):
        v = np.asarray(values, dtype=float) * scale
        return f"{v.mean():{fmt}} ± {v.std(ddof=1):{fmt.lstrip('+')}}" if len(v) > 1 else f"{v[0]:{fmt}}"

    attrs = sorted({a for rows in by.values() for r in rows for a in r["controllability"]})
    lines = [f"| {name} | NLL | Δ NLL vs no RR | NLL, null cond. | L_rr (train) | FAD | KL | CLAP | " + " | ".join(attrs)
             + " | seeds |", "|---" * (9 + len(attrs)) + "|"]
    for s in [x for x in SETTINGS if x in by]:
        rows = by[s]
        ctl = " | ".join(ms([r["controllability"][a] for r in rows], ".0f", 100) for a in attrs)
        paired = [r["nll"] - base[r["seed"]] for r in rows if r["seed"] in base]
        delta = "—" if s == "none" or not paired else ms(paired, "+.4f")
        lrr = ms([train_l_rr(root / s / f"seed{r['seed']}") for r in rows], ".4f") if root else "—"
        lines.append(f"| {LABELS[s]} | {ms([r['nll'] for r in rows], '.3f')} | {delta} | "
                     f"{ms([r['nll_uncond'] for r in rows], '.3f')} | {lrr} | "
                     f"{ms([r['fad'] for r in rows], '.3f')} | {ms([r['kl'] for r in rows], '.3f')} | "
                     f"{ms([r['clap'] for r in rows], '.3f')} | {ctl} | {len(rows)} |")
    if by:
        ref = next(iter(by.values()))[0]["reference"]
        lines.append(f"| reference clips | | | | | 0 | 0 | {ref['clap']:.3f} | "
                     + " | ".join(f"{100 * ref['controllability'][a]:.0f}" for a in attrs) + " | |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="prepared captioned dataset (halm prepare --require-text)")
    p.add_argument("--captions", help="captioned source with reference audio for eval-t2a (e.g. a held-out synth corpus)")
    p.add_argument("--name", help="dataset name in the table (music, sfx)")
    p.add_argument("--out", required=True, help="folder for runs and results")
    p.add_argument("--preset", default="t2a-s", help="t2a preset (default t2a-s)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS), help="settings to run (default all)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default 0 1 2)")
    p.add_argument("--steps", type=int, default=600, help="optimizer steps per run (default 600)")
    p.add_argument("--batch-size", type=int, default=8, help="crops per step (default 8)")
    p.add_argument("--cfg-dropout", type=float, default=0.1, help="share of CFG steps (default 0.1, the paper's)")
    p.add_argument("--n", type=int, default=32, help="captions scored by eval-t2a (default 32)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--tables", action="store_true", help="only print the tables of every dataset under --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args()
    if args.tables:
        for f in sorted(Path(args.out).glob("*/results.json")):
            print(table(json.loads(f.read_text()), f.parent.name, f.parent) + "\n")
        return
    if not (args.data and args.name and args.captions):
        p.error("--data, --captions and --name are required unless --tables")
    print(table(run_all(args), args.name, Path(args.out) / args.name))


if __name__ == "__main__":
    main()
