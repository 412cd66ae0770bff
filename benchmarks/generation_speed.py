"""Generation speed of gpt-s and whisper-gpt: tokens/s and real-time factor, with and without the KV cache.

The hybrid runs in closed loop with the shipped codec: each new token is decoded (streaming decoder)
and its causal mel slice fed back; also shown with the window-decode fallback (decode the last 8
frames every step), which is what a non-causal codec would need. Weights are random: speed does not
depend on them. Real time = 75 tokens/s (24 kHz, hop 320).

    python benchmarks/generation_speed.py [--tokens 500] [--prompt 12] [--threads 2] [--repeat 3] [--json]
    python benchmarks/generation_speed.py --micro [--threads 2]   # what one decode step is made of
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch


def bench(model, prompt, n_new, mel=None, mel_fn=None, use_cache=True) -> float:
    from halm.generate import generate

    t0 = time.perf_counter()
    generate(model, prompt, n_new, mel=mel, mel_fn=mel_fn, use_cache=use_cache, seed=0, top_k=250)
    return n_new / (time.perf_counter() - t0)


def best_of(repeat: int, fn) -> float:
    """The best rate of `repeat` runs (like timeit: other load on a shared machine only ever slows a run down)."""
    return max(fn() for _ in range(repeat))


def profile(n: int):
    """Where a cached gpt-s step spends its time: operator self-times of n steps after a warm-up."""
    from torch.profiler import profile as torch_profile

    from halm.generate import generate
    from halm.models import build_model, preset_config

    torch.manual_seed(0)
    model = build_model(*preset_config("gpt-s")).eval()
    prompt = torch.randint(0, 1024, (1, 12))
    generate(model, prompt, 20, top_k=250)
    with torch_profile() as prof:
        generate(model, prompt, n, top_k=250)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def micro():
    """The costs a cached batch-1 step is made of, in microseconds per call (best of 5 rounds):
    dispatch of a trivial op, a 1008x252 matrix-vector product with its weights hot (one matrix, fits
    in L2) and cold (12 matrices, a 12 MB working set, like the 13 MB of gpt-s's weights), the same
    product in bf16 / fp16, and attention of one query over 256 cached keys (sdpa vs written out)."""
    import torch.nn.functional as F

    def us(fn, n=400):
        fn()
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best = min(best, (time.perf_counter() - t0) / n * 1e6)
        return best

    g = torch.Generator().manual_seed(0)
    rows = {}
    with torch.inference_mode():
        x = torch.randn(252, generator=g)
        rows["x + 1 (dispatch of one op)"] = us(lambda: x + 1)
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            ws = [torch.randn(1008, 252, generator=g).to(dtype) for _ in range(12)]
            b, v = torch.zeros(1008, dtype=dtype), x.to(dtype)
            name = str(dtype).replace("torch.", "")
            rows[f"addmv 1008x252 {name}, hot"] = us(lambda b=b, w=ws[0], v=v: torch.addmv(b, w, v))
            rows[f"addmv 1008x252 {name}, 12 MB working set"] = us(lambda b=b, ws=ws, v=v: [torch.addmv(b, w, v) for w in ws], 40) / 12
        q = torch.randn(1, 4, 1, 63, generator=g)
        k, v = torch.randn(2, 1, 4, 256, 63, generator=g).unbind(0)
        rows["sdpa, 1 query x 256 keys"] = us(lambda: F.scaled_dot_product_attention(q, k, v))
        rows["matmul-softmax-matmul, same"] = us(lambda: ((q @ k.transpose(-1, -2)) * 63**-0.5).softmax(-1) @ v)
    for name, t in rows.items():
        print(f"{name:45s} {t:8.1f} us")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=500, help="tokens to generate (default 500, within the context)")
    p.add_argument("--prompt", type=int, default=12, help="prompt tokens (default 12)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--repeat", type=int, default=3, help="runs per mode; the best is reported (default 3)")
    p.add_argument("--profile", type=int, metavar="N", help="instead: profile N cached gpt-s steps (torch.profiler table)")
    p.add_argument("--micro", action="store_true", help="instead: the per-call costs a cached step is made of")
    p.add_argument("--json", action="store_true", help="one JSON object")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.profile:
        return profile(args.profile)
    if args.micro:
        return micro()
    from halm.audio import MelConfig
    from halm.codec.closed_loop import ClosedLoopMel
    from halm.codec.model import Codec
    from halm.models import build_model, preset_config

    torch.manual_seed(0)
    codec = Codec.load("halm-small")
    fr = codec.frame_rate
    prompt = torch.randint(0, 1024, (1, args.prompt))
    rows = []
    for preset in ("gpt-s", "whisper-gpt"):
        model = build_model(*preset_config(preset)).eval()
        assert args.prompt + args.tokens <= model.cfg.context, "stay within the context for a fair no-cache run"
        kinds = [("kv cache", True, None), ("no cache", False, None)]
        if model.uses_mel:
            kinds = [("kv cache + streaming codec mel", True, "stream"), ("no cache + streaming codec mel", False, "stream"),
                     ("kv cache + window-decode mel (fallback)", True, "window")]
        for label, cache, mode in kinds:
            def once(model=model, mode=mode, cache=cache):
                mel = mel_fn = None
                if mode:
                    mel_fn = ClosedLoopMel(codec, MelConfig(), streaming=mode == "stream")
                    mel = mel_fn.full(prompt)
                return bench(model, prompt, args.tokens, mel, mel_fn, cache)

            rate = best_of(args.repeat, once)
            rows.append({"preset": preset, "mode": label, "tokens_per_s": round(rate, 1), "realtime_factor": round(rate / fr, 2)})
    for preset in ("gpt-s", "whisper-gpt"):
        r = {x["mode"]: x["tokens_per_s"] for x in rows if x["preset"] == preset}
        cached = next(v for k, v in r.items() if k.startswith("kv cache"))
        uncached = next(v for k, v in r.items() if k.startswith("no cache"))
        rows.append({"preset": preset, "mode": "speed-up of the KV cache", "ratio": round(cached / uncached, 2)})
    meta = {"tokens": args.tokens, "prompt": args.prompt, "threads": args.threads, "repeat": args.repeat, "torch": torch.__version__,
            "machine": platform.processor() or platform.machine()}
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}))
        return
    print(f"generation of {args.tokens} tokens after a {args.prompt}-token prompt, {args.threads} threads, best of "
          f"{args.repeat} runs, torch "
          f"{torch.__version__}\n\n| model | mode | tokens/s | x real time |\n|---|---|---|---|")
    for r in rows:
        if "ratio" in r:
            print(f"| {r['preset']} | {r['mode']} | {r['ratio']}x | |")
        else:
            print(f"| {r['preset']} | {r['mode']} | {r['tokens_per_s']} | {r['realtime_factor']} |")


if __name__ == "__main__":
    main()
