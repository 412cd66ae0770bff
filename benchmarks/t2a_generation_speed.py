"""Text-to-audio sampling speed: frames/s and real-time factor with/without the KV cache, with/without CFG.

One caption, batch 1, delay pattern (K codebooks -> frames + K - 1 steps), top-k 250. CFG runs the
conditional and the null-condition rows in one batched forward (2 rows); "no CFG" is coef 1, where the
sampler skips the null rows. Frames of all K codebooks per second; real time = 75 frames/s (24 kHz,
hop 320). Weights are random (speed does not depend on them); codec decoding is not included.

    python benchmarks/t2a_generation_speed.py [--preset t2a-s] [--seconds 4] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="t2a-s", help="t2a preset (default t2a-s)")
    p.add_argument("--seconds", type=float, default=4.0, help="audio to generate (default 4 s = 300 frames)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from halm.generate import generate_t2a
    from halm.models import build_model, preset_config
    from halm.models.text import TextEncoder

    torch.manual_seed(0)
    model = build_model(*preset_config(args.preset)).eval()
    emb, mask = TextEncoder(model.cfg.text_encoder).encode(["a slow piano piece in A minor"])
    frames = int(round(args.seconds * 75))
    if frames + model.cfg.n_q - 1 > model.cfg.context:
        raise SystemExit(f"{frames} frames exceed the context of {args.preset}: a fair no-cache run needs fewer")
    rows = []
    for cfg_label, coef in (("CFG 3.0", 3.0), ("no CFG", 1.0)):
        for cache_label, cache in (("kv cache", True), ("no cache", False)):
            generate_t2a(model, emb, mask, 8, cfg_coef=coef, use_cache=cache)  # warm-up
            t0 = time.perf_counter()
            generate_t2a(model, emb, mask, frames, cfg_coef=coef, use_cache=cache, seed=0)
            rate = frames / (time.perf_counter() - t0)
            rows.append({"mode": f"{cache_label}, {cfg_label}", "frames_per_s": round(rate, 1),
                         "realtime_factor": round(rate / 75, 2)})
    by = {r["mode"]: r["frames_per_s"] for r in rows}
    ratios = {"kv cache speed-up (CFG)": by["kv cache, CFG 3.0"] / by["no cache, CFG 3.0"],
              "kv cache speed-up (no CFG)": by["kv cache, no CFG"] / by["no cache, no CFG"],
              "cost of CFG (kv cache)": by["kv cache, no CFG"] / by["kv cache, CFG 3.0"]}
    meta = {"preset": args.preset, "frames": frames, "steps": frames + model.cfg.n_q - 1, "threads": args.threads,
            "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows, "ratios": {k: round(v, 2) for k, v in ratios.items()}}))
        return
    print(f"{args.preset}: {frames} frames x {model.cfg.n_q} codebooks ({args.seconds} s), batch 1, {args.threads} "
          f"threads, torch {torch.__version__}\n\n| mode | frames/s | x real time |\n|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['frames_per_s']} | {r['realtime_factor']} |")
    for k, v in ratios.items():
        print(f"| {k} | {v:.2f}x | |")


if __name__ == "__main__":
    main()
