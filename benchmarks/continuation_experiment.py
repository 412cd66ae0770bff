"""Does a continuation keep the prompt's voice? GPT-S against the hybrid as generators (issue 24, section 3).

From the first --n held-out clips (test split of a prepared dataset, sorted by id, at least --prompt-seconds
long), each model continues the first --prompt-seconds by --seconds with the same seed per prompt (seed =
the prompt's index). Measured on the generated part, against the prompt's real audio:
- F0 ratio: median F0 of the continuation / median F0 of the prompt (YIN, halm.metrics.pitch; 1 = same
  pitch), its median over prompts and the share of prompts within ±20% (one semitone is 6%);
- voicing share: the share of the continuation's 10 ms frames that are voiced (the prompt's next to it);
- the judge's speech heads (when the judge has them): does the judge give the continuation the accent /
  timbre / pitch class it gives the prompt, and the prompt voice's true accent?
With --fine RUN (a second-stage run, --preset fine-s) the continuation is decoded from all codebooks.
With --references, the ceilings too: the real audio that follows each prompt (the same voice going on), as it
is and through the dataset's codec from the coarse codebook and from all codebooks.
Writes OUT/MODEL/NNN.wav, OUT/continuations.png (prompt + continuation per model for the first 4
prompts) and one row per model into --results.

    python benchmarks/continuation_experiment.py --data DATA/speech --runs gpt-s=RUNS/speech/gpt-s/seed0 \\
        whisper-gpt=RUNS/speech/whisper-gpt/seed0 --fine FINE_RUN --n 30 --out OUT --results docs/results/continuations.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

SPEECH_HEADS = ("accent", "timbre", "pitch", "rate")
REST_MIN_S = 1.5  # the ceilings use prompts whose clip goes on for at least this long after the prompt


def prompts(data: str, n: int, prompt_seconds: float, seconds: float = 4.0) -> list[dict]:
    """The first n test-split source clips of a prepared dataset that are long enough for a prompt; "rest" is
    the real audio that follows the prompt (up to `seconds` of it)."""
    from halm.audio import load_audio
    from halm.data import open_dataset, open_source

    ds = open_dataset(data, "test")
    ids = {ds[i].id for i in range(len(ds))}
    source = json.loads((Path(data) / "index.json").read_text())["source"]
    items = sorted((it for it in open_source(source) if it.id in ids), key=lambda it: it.id)
    out = []
    for it in items:
        wav, sr = load_audio(it.path)
        if wav.shape[1] >= prompt_seconds * sr:
            cut = int(prompt_seconds * sr)
            out.append({"id": it.id, "wav": wav[:, :cut], "rest": wav[:, cut: cut + int(seconds * sr)], "sr": sr,
                        "attributes": it.attributes})
        if len(out) == n:
            break
    return out


def median_f0(wav: np.ndarray, sr: int) -> tuple[float, float]:
    """(median F0 in Hz over voiced frames (nan if none), voiced share of the frames)."""
    from halm.metrics.pitch import yin_f0

    f0 = yin_f0(wav, sr)
    voiced = f0 > 0
    return (float(np.median(f0[voiced])) if voiced.any() else float("nan")), float(voiced.mean()) if len(f0) else 0.0


def judge_speech(judge, wavs: list[np.ndarray], sr: int) -> dict[str, list[str]]:
    """The judge's argmax class per speech head for each clip."""
    from halm.judge import clip_from_wav, embed_clips

    clips = [clip_from_wav(w, sr, "speech", {}) for w in wavs]
    _, post = embed_clips(judge, clips)
    return {h: [judge.cfg.attributes[h][int(i)] for i in post[h].argmax(-1)] for h in SPEECH_HEADS if h in post}


def voice_scores(name: str, gens: list[np.ndarray], sr: int, items: list[dict], prompt_stats, judge, heads,
                 judged_prompts, truth) -> dict:
    """F0 ratio, voicing share and the judge's speech heads of `gens` (one clip per prompt) against the prompts."""
    stats = [median_f0(g, sr) for g in gens]
    ratios = np.array([c[0] / p[0] for c, p in zip(stats, prompt_stats)])  # nan where either is unvoiced
    ok = np.isfinite(ratios)
    row = {"model": name, "n_prompts": len(items),
           "f0_ratio_median": float(np.median(ratios[ok])) if ok.any() else None,
           "f0_within_20pct": float(np.mean(np.abs(ratios[ok] - 1) <= 0.2)) if ok.any() else None,
           "f0_ratio_iqr": [float(np.percentile(ratios[ok], 25)), float(np.percentile(ratios[ok], 75))] if ok.any() else None,
           "voicing_share": float(np.mean([s[1] for s in stats])),
           "voicing_share_prompt": float(np.mean([s[1] for s in prompt_stats]))}
    if heads:
        judged = judge_speech(judge, gens, sr)
        row["judge_agrees_with_prompt"] = {h: float(np.mean([a == b for a, b in zip(judged[h], judged_prompts[h])]))
                                           for h in heads}
        row["judge_true_accent"] = float(np.mean([j == t.get("accent") for j, t in zip(judged["accent"], truth)]))
    return row


def reference_rows(args, items, prompt_stats, judge, heads, judged_prompts, truth) -> list[dict]:
    """The ceilings: the real audio that follows each prompt (the same voice going on), as it is and through the
    dataset's codec from its coarse codebook and from all of them (what a continuation decoded so can reach).
    Prompts whose clip has less than REST_MIN_S after the prompt are left out of these rows."""
    import torch

    from halm.codec.model import Codec

    keep = [i for i, it in enumerate(items) if it["rest"].shape[1] >= REST_MIN_S * it["sr"]]
    if not keep:
        print(f"no prompt's clip goes on for {REST_MIN_S} s after the prompt: no ceiling rows", flush=True)
        return []
    sub = [items[i] for i in keep]
    ps = [prompt_stats[i] for i in keep]
    jp = {h: [v[i] for i in keep] for h, v in judged_prompts.items()}
    tr = [truth[i] for i in keep]
    sr = sub[0]["sr"]
    codec = Codec.load(json.loads((Path(args.data) / "index.json").read_text())["codec"]["name"])
    real = [it["rest"][0] for it in sub]
    codes = [codec.encode(torch.from_numpy(w)[None, None], sr) for w in real]  # (1, K, T) each
    rows = [voice_scores("real continuation", real, sr, sub, ps, judge, heads, jp, tr)]
    for k, label in ((1, "real continuation via the codec, coarse codebook"),
                     (codec.n_codebooks, f"real continuation via the codec, all {codec.n_codebooks} codebooks")):
        dec = [codec.decode(c[:, :k])[0, 0, : len(w)].float().cpu().numpy() for c, w in zip(codes, real)]
        rows.append({**voice_scores(label, dec, codec.sample_rate, sub, ps, judge, heads, jp, tr), "codebooks": k})
    return rows


def run(args) -> dict:
    from halm.audio import save_audio
    from halm.audio.mel import DISPLAY_HOP, display_mel
    from halm.generate import generate_continuation
    from halm.judge import attributes_of, judge_hash, load_judge, probes_hash
    from halm.plots import plot_continuation_grid
    from halm.runs import load_run

    items = prompts(args.data, args.n, args.prompt_seconds, args.seconds)
    if len(items) < args.n:
        print(f"only {len(items)} test clips are at least {args.prompt_seconds} s long", flush=True)
    fine = load_run(args.fine)[0] if args.fine else None
    judge = load_judge(args.judge)
    heads = [h for h in SPEECH_HEADS if h in judge.cfg.attributes]
    sr_out = None
    prompt_stats = [median_f0(it["wav"][0], it["sr"]) for it in items]
    judged_prompts = judge_speech(judge, [it["wav"][0] for it in items], items[0]["sr"]) if heads else {}
    truth = [attributes_of(it["attributes"]) for it in items]
    # the spectrogram grid: the real prompt, then each model's prompt + continuation (first 4 prompts)
    grid = [[(f"real prompt {it['id']}", display_mel(it["wav"][0], it["sr"])[0])] for it in items[:4]]
    rows = reference_rows(args, items, prompt_stats, judge, heads, judged_prompts, truth) if args.references else []
    for spec in args.runs:
        name, _, path = spec.partition("=")
        model, rc = load_run(path)
        t0 = time.perf_counter()
        gens = []
        for i, it in enumerate(items):
            r = generate_continuation(model, rc, it["wav"], it["sr"], args.seconds, temperature=args.temperature,
                                      top_k=args.top_k, seed=i, fine=fine)
            sr_out = r["sample_rate"]
            save_audio(Path(args.out) / name / f"{i:03d}.wav", r["audio"], sr_out)
            gens.append(r["audio"][len(r["audio"]) - int(round(r["seconds_generated"] * sr_out)):])  # the generated part
            if i < 4:
                grid[i].append((f"{name}: prompt + continuation", display_mel(r["audio"], sr_out)[0]))
        row = {**voice_scores(name, gens, sr_out, items, prompt_stats, judge, heads, judged_prompts, truth),
               "run": str(path), "prompt_seconds": args.prompt_seconds, "seconds": args.seconds,
               "temperature": args.temperature, "top_k": args.top_k, "codebooks": fine.cfg.n_q if fine else 1,
               "generate_s": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    png = plot_continuation_grid(grid, sr_out / DISPLAY_HOP, args.prompt_seconds, Path(args.out) / "continuations.png") \
        if sr_out else None
    result = {"data": str(args.data), "fine": str(args.fine) if args.fine else None, "judge_sha256": judge_hash(args.judge),
              "judge_probes_sha256": probes_hash(args.judge),
              "judge_speech_heads": heads, "prompt_ids": [it["id"] for it in items], "rows": rows, "png": str(png) if png else None,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")}
    if args.results:
        add_run(Path(args.results), result)
    return result


def add_run(path: Path, result: dict) -> None:
    """Append one invocation's result to path's "runs" (read-modify-write under a lock, atomic replace)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(path.read_text()) if path.exists() else {"runs": []}
        results["runs"].append(result)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(path)


LABELS = {"gpt-s": "GPT-S", "whisper-gpt": "Whisper-GPT (closed loop)",
          "whisper-gpt-codecmel": "Whisper-GPT trained on the codec mel (closed loop)"}


def _decode(row: dict, fine: str | None) -> str:
    k = row.get("codebooks")
    if k is None:
        return "as recorded"
    if k == 1:
        return "codec, coarse codebook"
    return f"codec, all {k} codebooks" + (f" ({Path(fine).name} samples codebooks 1-{k - 1})" if fine and "run" in row else "")


def tables(results: dict) -> str:
    """The markdown table of every row of every run in the file (the ceilings first, then the models as run)."""
    out = ["| decode | continuation | run | prompts | F0 ratio, median (IQR) | F0 within ±20% | voiced share (prompt) | "
           + " | ".join(f"judge: same {h}" for h in SPEECH_HEADS) + " | judge: true accent |",
           "|---|---|---|---|---|---|---|" + "---|" * (len(SPEECH_HEADS) + 1)]
    entries = [(r, run) for run in results["runs"] for r in run["rows"]]
    entries.sort(key=lambda e: ("run" in e[0], e[0].get("codebooks") or 0))
    pct = lambda x: "—" if x is None else f"{100 * x:.0f}%"  # noqa: E731
    for r, run in entries:
        iqr = r.get("f0_ratio_iqr")
        f0 = "—" if r["f0_ratio_median"] is None else f"{r['f0_ratio_median']:.2f}" + \
            (f" ({iqr[0]:.2f}–{iqr[1]:.2f})" if iqr else "")
        agree = r.get("judge_agrees_with_prompt", {})
        who = "the real audio after the prompt" if "run" not in r else LABELS.get(r["model"], r["model"])
        src = "/".join(Path(r["run"]).parts[-2:]) if "run" in r else "—"
        out.append(f"| {_decode(r, run.get('fine'))} | {who} | {src} | {r['n_prompts']} | {f0} | {pct(r['f0_within_20pct'])} | "
                   f"{pct(r['voicing_share'])} ({pct(r['voicing_share_prompt'])}) | "
                   + " | ".join(pct(agree.get(h)) for h in SPEECH_HEADS) + f" | {pct(r.get('judge_true_accent'))} |")
    return "\n".join(out)


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="prepared dataset whose test split gives the prompts (required unless --tables)")
    p.add_argument("--runs", nargs="*", default=[], help="NAME=RUN pairs (gpt / whisper_gpt runs)")
    p.add_argument("--references", action="store_true", help="also the ceilings: the real audio after each prompt, "
                   "as it is and through the codec (coarse codebook / all codebooks)")
    p.add_argument("--fine", help="second-stage run (--preset fine-s): decode from all codebooks")
    p.add_argument("--judge", help="judge directory (default: the shipped one; speech heads are used if it has them)")
    p.add_argument("--n", type=int, default=30, help="prompts (default 30)")
    p.add_argument("--prompt-seconds", type=float, default=3.0, help="prompt length (default 3)")
    p.add_argument("--seconds", type=float, default=4.0, help="continuation length (default 4)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    p.add_argument("--top-k", type=int, default=0, help="top-k (default 0 = all)")
    p.add_argument("--out", help="folder for the WAVs and the PNG (required unless --tables)")
    p.add_argument("--results", help="JSON file: this run's result is added to its \"runs\"")
    p.add_argument("--tables", action="store_true", help="print the markdown table of --results and exit")
    args = p.parse_args(argv)
    if args.tables:
        if not args.results:
            p.error("--tables needs --results")
        print(tables(json.loads(Path(args.results).read_text())))
        return None
    if not args.data or not args.out:
        p.error("--data and --out are required (unless --tables)")
    return run(args)


if __name__ == "__main__":
    main()
