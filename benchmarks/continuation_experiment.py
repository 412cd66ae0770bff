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


def prompts(data: str, n: int, prompt_seconds: float) -> list[dict]:
    """The first n test-split source clips of a prepared dataset that are long enough for a prompt."""
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
            out.append({"id": it.id, "wav": wav[:, : int(prompt_seconds * sr)], "sr": sr, "attributes": it.attributes})
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


def run(args) -> dict:

    from halm.audio import save_audio
    from halm.audio.mel import DISPLAY_HOP, display_mel
    from halm.generate import generate_continuation
    from halm.judge import attributes_of, judge_hash, load_judge
    from halm.plots import plot_continuation_grid
    from halm.runs import load_run

    items = prompts(args.data, args.n, args.prompt_seconds)
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
    rows = []
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
        stats = [median_f0(g, sr_out) for g in gens]
        ratios = np.array([c[0] / p[0] for c, p in zip(stats, prompt_stats)])  # nan where either is unvoiced
        ok = np.isfinite(ratios)
        row = {"model": name, "run": str(path), "n_prompts": len(items), "prompt_seconds": args.prompt_seconds,
               "seconds": args.seconds, "temperature": args.temperature, "top_k": args.top_k,
               "codebooks": fine.cfg.n_q if fine else 1, "f0_ratio_median": float(np.median(ratios[ok])) if ok.any() else None,
               "f0_within_20pct": float(np.mean(np.abs(ratios[ok] - 1) <= 0.2)) if ok.any() else None,
               "f0_ratio_iqr": [float(np.percentile(ratios[ok], 25)), float(np.percentile(ratios[ok], 75))] if ok.any() else None,
               "voicing_share": float(np.mean([s[1] for s in stats])),
               "voicing_share_prompt": float(np.mean([s[1] for s in prompt_stats])),
               "generate_s": round(time.perf_counter() - t0, 1)}
        if heads:
            judged = judge_speech(judge, gens, sr_out)
            row["judge_agrees_with_prompt"] = {h: float(np.mean([a == b for a, b in zip(judged[h], judged_prompts[h])]))
                                               for h in heads}
            row["judge_true_accent"] = float(np.mean([j == t.get("accent") for j, t in zip(judged["accent"], truth)]))
        rows.append(row)
        print(json.dumps(row), flush=True)
    png = plot_continuation_grid(grid, sr_out / DISPLAY_HOP, args.prompt_seconds, Path(args.out) / "continuations.png")
    result = {"data": str(args.data), "fine": str(args.fine) if args.fine else None, "judge_sha256": judge_hash(args.judge),
              "judge_speech_heads": heads, "prompt_ids": [it["id"] for it in items], "rows": rows, "png": str(png),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")}
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(json.dumps(result, indent=2) + "\n")
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="prepared dataset whose test split gives the prompts")
    p.add_argument("--runs", nargs="+", required=True, help="NAME=RUN pairs (gpt / whisper_gpt runs)")
    p.add_argument("--fine", help="second-stage run (--preset fine-s): decode from all codebooks")
    p.add_argument("--judge", help="judge directory (default: the shipped one; speech heads are used if it has them)")
    p.add_argument("--n", type=int, default=30, help="prompts (default 30)")
    p.add_argument("--prompt-seconds", type=float, default=3.0, help="prompt length (default 3)")
    p.add_argument("--seconds", type=float, default=4.0, help="continuation length (default 4)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    p.add_argument("--top-k", type=int, default=0, help="top-k (default 0 = all)")
    p.add_argument("--out", required=True, help="folder for the WAVs and the PNG")
    p.add_argument("--results", help="JSON file for the result")
    run(p.parse_args())


if __name__ == "__main__":
    main()
