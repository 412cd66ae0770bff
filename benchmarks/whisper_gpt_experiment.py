"""The Whisper-GPT experiment: the paper's Tables 1 and 2 on the shipped codec, with seeds and paired deltas.

Three steps; each is resumable (rerun the same command after an interruption) and deterministic:

    # 1. a corpus: MINUTES of training audio (seed 0) and a held-out set of another seed (1000) that
    #    becomes dev (every third clip) and test (the rest); prepared with the shipped codec, all codebooks
    python benchmarks/whisper_gpt_experiment.py corpus --domain speech --root DATA --minutes 600 --heldout-minutes 30
    # 2. train every (model, seed) on one domain with the same token budget, score it on the test split
    #    (the hybrids also on the closed-loop mel); one row per run into --results
    python benchmarks/whisper_gpt_experiment.py train --data DATA/speech --domain speech --runs RUNS \\
        --tokens 1500000 --seeds 0 1 2 --models gpt-s whisper-gpt whisper-gpt-nomel --results docs/results/whisper_gpt.json
    # 3. the markdown tables of docs/results_whisper_gpt.md (mean ± std, paired deltas vs GPT-S) and the dev-NLL figure
    python benchmarks/whisper_gpt_experiment.py tables --results docs/results/whisper_gpt.json --plot docs/whisper_gpt_curves.png

Models of one seed see the same crops in the same order (the crop sampler is seeded by the run's seed
only), so "hybrid − GPT-S" at one seed is a paired difference. A run's precision (fp32, or bf16 autocast
where the hardware has bf16 units: --amp auto) is part of its identity: RUNS/DOMAIN/MODEL/seedN-bf16, a
row of its own, and the paired deltas compare runs of the same precision (a bf16 GPT-S against the fp32
one measures the precision's own effect). Run the two domains side by side on a
2-core machine with OMP_NUM_THREADS=1 and --threads 1 each.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODELS = ("gpt-s", "gpt-l", "whisper-gpt", "whisper-gpt-nomel", "whisper-gpt-codecmel")
LABELS = {"gpt-s": "GPT-S (tokens only)", "gpt-l": "GPT-L (tokens only)", "whisper-gpt": "Whisper-GPT (hybrid)",
          "whisper-gpt-nomel": "hybrid, mel zeroed (ablation)",
          "whisper-gpt-codecmel": "hybrid trained on the codec mel"}
# whisper-gpt-codecmel: the whisper-gpt preset trained on --codec-mel-data (the same corpus prepared with
# `halm prepare --mel-source codec`: the mel of the codec's coarse decoding, what the model sees when it
# generates); scored like the others on the real mel of --data, and closed-loop
PRESETS = {"whisper-gpt-codecmel": "whisper-gpt"}
LR = {"gpt-l": 5e-4}  # the rest 1e-3


def _python_m_halm(*args: str) -> list[str]:
    return [sys.executable, "-m", "halm", *args]


def corpus(args) -> dict:
    """Synthesise the training and held-out corpora, join them in one manifest with splits, prepare it."""
    root, d = Path(args.root), args.domain
    root.mkdir(parents=True, exist_ok=True)
    parts = {"train": (root / f"{d}_train", args.minutes, args.seed),
             "heldout": (root / f"{d}_heldout", args.heldout_minutes, args.heldout_seed)}
    commands, t0 = {}, time.perf_counter()
    for name, (folder, minutes, seed) in parts.items():
        cmd = ["synth", d, "--out", str(folder), "--minutes", f"{minutes:g}", "--seed", str(seed), "--quiet",
               *(["--renderer", args.renderer] if d == "music" else [])]
        commands[f"synth_{name}"] = "halm " + " ".join(cmd)
        subprocess.run(_python_m_halm(*cmd), check=True)  # a finished corpus is only checked
    t_synth = time.perf_counter() - t0
    # one manifest: the training corpus is the train split; the held-out corpus (another seed) is dev + test
    manifest = root / f"{d}.jsonl"
    rows = []
    for name, (folder, _, _) in parts.items():
        src = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines() if line.strip()]
        for i, r in enumerate(src):
            split = "train" if name == "train" else ("dev" if i % 3 == 0 else "test")
            rows.append({**r, "id": f"{name}/{r['id']}", "path": str((folder / r["path"]).resolve()), "split": split})
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(manifest)
    data = root / d
    cmd = ["prepare", "--source", str(manifest), "--out", str(data), "--workers", str(args.workers)]
    commands["prepare"] = "halm " + " ".join(cmd)
    t1 = time.perf_counter()
    subprocess.run(_python_m_halm(*cmd), check=True)
    if args.codec_mel:  # the same corpus with the mel of the codec's coarse decoding (whisper-gpt-codecmel),
        # decoded from the prepared codes (halm.data.codec_mel: the audio is not encoded again)
        cmd = ["prepare", "--source", str(data), "--out", f"{data}_codecmel", "--workers", str(args.workers),
               "--mel-source", "codec"]
        commands["prepare_codec_mel"] = "halm " + " ".join(cmd)
        subprocess.run(_python_m_halm(*cmd), check=True)
    info = {"domain": d, "commands": commands, "synth_s": round(t_synth, 1), "prepare_s": round(time.perf_counter() - t1, 1),
            "splits_minutes": split_minutes(data)}
    (data / "corpus.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info), flush=True)
    return info


def split_minutes(data: str | os.PathLike) -> dict:
    idx = json.loads((Path(data) / "index.json").read_text())
    return {split: round(s["seconds"] / 60, 1) for split, s in idx["splits"].items()}


def codec_sha256(data: str | os.PathLike) -> str:
    """sha256 of the model.safetensors of the codec a dataset was prepared with (the shipped one by name)."""
    from halm.codec.model import ASSETS, SHIPPED

    name = json.loads((Path(data) / "index.json").read_text())["codec"]["name"]
    folder = ASSETS / SHIPPED[name] if name in SHIPPED else Path(name)
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def dev_curve(run: Path) -> list[list[float]]:
    """[[training tokens, dev NLL], ...] from the run's metrics.jsonl (the paper's figure)."""
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "val_nll" in r:
            out.append([r["tokens"], round(r["val_nll"], 5)])
    return out


def _update(results_path: Path, fn) -> dict:
    """Read-modify-write of the results file under a lock (two domains run side by side), atomic replace."""
    results_path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(results_path) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(results_path.read_text()) if results_path.exists() else {"rows": []}
        fn(results)
        tmp = results_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(results_path)
    return results


def run_key(r: dict) -> tuple:
    """What makes two rows the same run; rows written before precision was recorded were all fp32."""
    return r["domain"], r["model"], r["seed"], r["train_tokens"], r.get("precision", "fp32")


def precision(amp: str) -> str:
    """The precision halm.train will use here for --amp: 'bf16' (autocast) or 'fp32'."""
    import torch

    from halm.train import precision_for

    return precision_for(amp, torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train_all(args) -> dict:
    from halm.evaluate import evaluate_run
    from halm.train import train

    runs, results_path = Path(args.runs) / args.domain, Path(args.results)
    steps = max(1, -(-args.tokens // (args.batch_size * args.context)))
    done = {run_key(r) for r in (json.loads(results_path.read_text())["rows"] if results_path.exists() else [])}
    prec = precision(args.amp)
    if "whisper-gpt-codecmel" in args.models and not args.codec_mel_data:
        raise SystemExit("whisper-gpt-codecmel needs --codec-mel-data (the corpus prepared with --mel-source codec)")
    for seed in args.seeds:
        for model in args.models:
            if (args.domain, model, seed, steps * args.batch_size * args.context, prec) in done:
                continue
            run = runs / model / (f"seed{seed}" if prec == "fp32" else f"seed{seed}-{prec}")
            settings = [f"batch_size={args.batch_size}", f"seed={seed}", f"lr={LR.get(model, 1e-3)}", f"context={args.context}",
                        f"warmup_steps={max(1, steps // 20)}", f"eval_every={max(1, steps // 20)}",
                        f"eval_tokens={args.eval_tokens}", f"ckpt_every={max(1, steps // 20)}", f"threads={args.threads}",
                        f"amp={args.amp}", *args.set]
            t0 = time.perf_counter()
            train_data = args.codec_mel_data if model == "whisper-gpt-codecmel" else args.data
            tr = train(PRESETS.get(model, model), train_data, run, steps=steps, overrides=settings, progress=not args.quiet)
            if tr["precision"] != prec:
                raise RuntimeError(f"{run} trained in {tr['precision']}, expected {prec}")
            ev = evaluate_run(str(run), data=args.data, split="test", progress=False)
            row = {"domain": args.domain, "model": model, "params": ev["params"], "seed": seed, "precision": prec,
                   "train_tokens": tr["tokens"], "steps": steps, "nll": ev["nll"], "accuracy": ev["accuracy"],
                   "ppl": ev["ppl"], "bits_per_second": ev["bits_per_second"], "test_tokens": ev["tokens"],
                   "nll_closed_loop": None, "accuracy_closed_loop": None, "dev_curve": dev_curve(run),
                   "train_tokens_per_s": tr["tokens_per_s"], "wall_s": round(time.perf_counter() - t0, 1),
                   "settings": settings, "commit": _commit(), "date": time.strftime("%Y-%m-%d")}
            if model.startswith("whisper-gpt"):  # scored on the mel of its own coarse decoding: what it sees generating
                cl = evaluate_run(str(run), data=args.data, split="test", mel_source="codec", progress=False)
                row["nll_closed_loop"], row["accuracy_closed_loop"] = cl["nll"], cl["accuracy"]

            def add(results, row=row):
                results["rows"] = [r for r in results["rows"] if run_key(r) != run_key(row)] + [row]
                results["codec"] = {"name": json.loads((Path(args.data) / "index.json").read_text())["codec"]["name"],
                                    "weights_sha256": codec_sha256(args.data)}
                sm = split_minutes(args.data)
                info = Path(args.data) / "corpus.json"
                results.setdefault("corpora", {})[args.domain] = {
                    "train_minutes": sm["train"], "splits_minutes": sm,
                    "commands": json.loads(info.read_text())["commands"] if info.exists() else None}
                results["machine"] = f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores, " \
                                     f"torch threads {args.threads}, amp {args.amp}"

            _update(results_path, add)
            print(json.dumps({k: v for k, v in row.items() if k != "dev_curve"}), flush=True)
    return json.loads(results_path.read_text())  # every row so far (a rerun with all runs done trains nothing)


def _ms(values, fmt: str, scale: float = 1.0) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=float) * scale
    if len(v) == 0:
        return "—"
    std_fmt = fmt.lstrip("+")
    return f"{v.mean():{fmt}} ± {v.std(ddof=1):{std_fmt}}" if len(v) > 1 else f"{v[0]:{fmt}}"


def _label(group: tuple) -> str:
    model, prec = group
    return LABELS[model] + ("" if prec == "fp32" else f", {prec} autocast")


def tables(results: dict) -> str:
    """Per domain: the paper-style table (mean ± sample std over seeds) and the paired deltas vs GPT-S."""
    out = []
    for domain in sorted({r["domain"] for r in results["rows"]}):
        rows = [r for r in results["rows"] if r["domain"] == domain]
        budget = max(r["train_tokens"] for r in rows)
        rows = [r for r in rows if r["train_tokens"] == budget]  # one budget per table
        # one group per (model, precision), fp32 first
        by = {(m, p): sorted((r for r in rows if r["model"] == m and r.get("precision", "fp32") == p),
                             key=lambda r: r["seed"]) for p in ("fp32", "bf16") for m in MODELS}
        by = {g: rs for g, rs in by.items() if rs}
        out += [f"| {domain} | params | test NLL | acc (%) | PPL | NLL, closed-loop mel | seeds | train tokens |",
                "|---|---|---|---|---|---|---|---|"]
        for g, rs in by.items():
            if rs:
                out.append(f"| {_label(g)} | {rs[0]['params'] / 1e6:.2f}M | {_ms([r['nll'] for r in rs], '.3f')} | "
                           f"{_ms([r['accuracy'] for r in rs], '.2f', 100)} | {_ms([r['ppl'] for r in rs], '.2f')} | "
                           f"{_ms([r['nll_closed_loop'] for r in rs], '.3f')} | {', '.join(str(r['seed']) for r in rs)} | "
                           f"{budget:,} |")
        # paired against GPT-S of the same seed and precision; the bf16 GPT-S against the fp32 one
        paired = []
        for (m, p), rs in by.items():
            b = ("gpt-s", "fp32") if m == "gpt-s" else ("gpt-s", p)
            if (m, p) != b:
                base = {r["seed"]: r for r in by.get(b, [])}
                paired.append(((m, p), b, [(r, base[r["seed"]]) for r in rs if r["seed"] in base]))
        paired = [x for x in paired if x[2]]
        if paired:
            out += ["", f"| {domain}: paired, model − GPT-S (same seed, same crops) | Δ NLL per seed | Δ NLL mean ± std | "
                    "Δ acc (points) | Δ NLL closed-loop mel |", "|---|---|---|---|---|"]
            for g, b, ps in paired:
                dn = [r["nll"] - b["nll"] for r, b in ps]
                dcl = [r["nll_closed_loop"] - b["nll"] for r, b in ps if r["nll_closed_loop"] is not None]
                name = _label(g) + (" − GPT-S fp32: the precision alone" if g[0] == "gpt-s" else "")
                out.append(f"| {name} | {' / '.join(f'{x:+.3f}' for x in dn)} | {_ms(dn, '+.3f')} | "
                           f"{_ms([r['accuracy'] - b['accuracy'] for r, b in ps], '+.2f', 100)} | {_ms(dcl, '+.3f')} |")
        out.append("")
    return "\n".join(out)


def plot(results: dict, path: str) -> None:
    """Dev NLL against training tokens, one panel per domain, one colour per model, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = sorted({r["domain"] for r in results["rows"]})
    fig, axes = plt.subplots(1, len(domains), figsize=(5.5 * len(domains), 4), squeeze=False)
    colours = dict(zip(MODELS, ("tab:blue", "tab:purple", "tab:red", "tab:gray", "tab:orange")))
    for ax, domain in zip(axes[0], domains):
        labelled = set()
        for r in sorted((r for r in results["rows"] if r["domain"] == domain), key=lambda r: (r["model"], r["seed"])):
            t, nll = np.asarray(r["dev_curve"], dtype=float).T
            g = (r["model"], r.get("precision", "fp32"))
            ax.plot(t / 1e6, nll, color=colours[r["model"]], alpha=0.8, lw=1.2, ls="-" if g[1] == "fp32" else "--",
                    label=None if g in labelled else _label(g))
            labelled.add(g)
        ax.set(title=f"{domain}: dev NLL (one line per seed)", xlabel="training tokens (millions)", ylabel="dev NLL (nats)")
        lo = min(min(p[1] for p in r["dev_curve"]) for r in results["rows"] if r["domain"] == domain)
        ax.set_ylim(lo - 0.05, lo + 1.0)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize="small")  # the curves fall from the upper left
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus", help="synthesise and prepare one domain's corpus")
    c.add_argument("--domain", required=True, choices=["speech", "music"])
    c.add_argument("--root", required=True, help="folder for the corpora; the dataset is ROOT/DOMAIN")
    c.add_argument("--minutes", type=float, default=600, help="training audio in minutes (default 600)")
    c.add_argument("--heldout-minutes", type=float, default=30, help="held-out audio (dev + test) in minutes (default 30)")
    c.add_argument("--seed", type=int, default=0, help="seed of the training corpus (default 0)")
    c.add_argument("--heldout-seed", type=int, default=1000, help="seed of the held-out corpus (default 1000)")
    c.add_argument("--workers", type=int, default=1, help="prepare's worker processes (default 1)")
    c.add_argument("--codec-mel", action="store_true", help="also prepare ROOT/DOMAIN_codecmel with --mel-source codec "
                   "(for whisper-gpt-codecmel)")
    c.add_argument("--renderer", choices=["halm", "tinysoundfont"], default="halm",
                   help="music: halm synth's SoundFont renderer (default halm; the tables in docs/results_whisper_gpt.md were "
                   "made with tinysoundfont, generator version 1)")
    t = sub.add_parser("train", help="train and score every (model, seed) of one domain")
    t.add_argument("--data", required=True, help="prepared dataset (the corpus step's ROOT/DOMAIN)")
    t.add_argument("--domain", required=True, help="domain name in the tables (speech, music)")
    t.add_argument("--runs", required=True, help="folder for the runs: RUNS/DOMAIN/MODEL/seedN")
    t.add_argument("--results", required=True, help="JSON results file (rows of the same run are replaced)")
    t.add_argument("--models", nargs="+", default=["gpt-s", "whisper-gpt", "whisper-gpt-nomel"], choices=list(MODELS),
                   help="models to train (default gpt-s whisper-gpt whisper-gpt-nomel)")
    t.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default 0 1 2)")
    t.add_argument("--tokens", type=int, default=1_500_000, help="training tokens per run (default 1500000)")
    t.add_argument("--batch-size", type=int, default=8, help="sequences per step (default 8)")
    t.add_argument("--context", type=int, default=512, help="context length (default 512, the presets' own)")
    t.add_argument("--eval-tokens", type=int, default=30000, help="dev targets per validation (default 30000)")
    t.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    t.add_argument("--amp", default="auto", help="auto, bf16 or none (default auto: bf16 only on bf16 hardware)")
    t.add_argument("--set", nargs="*", default=[], help="extra training settings KEY=VALUE for every run")
    t.add_argument("--codec-mel-data", help="whisper-gpt-codecmel: the corpus prepared with --mel-source codec (the "
                   "corpus step's --codec-mel)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    s = sub.add_parser("tables", help="print the markdown tables; --plot writes the dev-NLL figure")
    s.add_argument("--results", required=True)
    s.add_argument("--plot", help="PNG of dev NLL against training tokens")
    args = p.parse_args()
    if args.cmd == "corpus":
        corpus(args)
    elif args.cmd == "train":
        print(tables(train_all(args)))
    else:
        results = json.loads(Path(args.results).read_text())
        print(tables(results))
        if args.plot:
            plot(results, args.plot)


if __name__ == "__main__":
    main()
