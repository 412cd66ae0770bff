"""Training and sampling speed of the larger t2a presets on one device, with model FLOPs utilisation (MFU).

    python benchmarks/t2a_scale_speed.py --device cuda --presets t2a-m t2a-l [--batch 16] [--steps 10] [--json]
    python benchmarks/t2a_scale_speed.py --device cpu --presets tiny-t2a --batch 2 --steps 2   # a smoke run

Training: full steps (forward with CFG dropout and RR as halm train does them, backward, fused AdamW on
CUDA), random codes and captions (speed does not depend on the values), bf16 autocast with fp32 master
weights where the device has bf16 (`--amp auto`, as halm train), else fp32. Reported: pattern steps per
second (each step holds K codes) and MFU = 6 * parameters * pattern steps/s / the device's peak dense
bf16 FLOP/s (the common transformer estimate; it leaves out attention's own FLOPs, so it is a lower bound).
The peak comes from --peak-tflops, or from the GPU's name for the ones listed in PEAK_TFLOPS.
Sampling: `halm.generate.generate_t2a` of --seconds of audio for a batch of --sample-batch captions, CFG 3
(conditional and null rows in one batch), KV cache; frames/s of all K codebooks and real-time factor (75
frames/s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time

import torch

# dense bf16 tensor-core peaks (TFLOP/s, without sparsity), from the vendors' data sheets
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "RTX 4090": 165.0}


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given:
        return given
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(preset: str, args, device: torch.device) -> dict:
    from halm.generate import generate_t2a
    from halm.models import build_model, count_params, preset_config
    from halm.train import has_native_bf16, param_groups

    torch.manual_seed(0)
    family, cfg = preset_config(preset, ["text_encoder=none"] if args.no_text else [])
    model = build_model(family, cfg).to(device)
    n_params = count_params(model)
    B, K, T, L = args.batch, cfg.n_q, cfg.frames, 16
    g = torch.Generator().manual_seed(0)
    batch = {"codes": torch.randint(0, cfg.vocab_size, (B, K, T), generator=g),
             "lengths": torch.full((B,), T), "text_emb": torch.randn(B, L, cfg.text_dim, generator=g),
             "text_mask": torch.ones(B, L, dtype=torch.bool), "drop": torch.arange(B) % 10 == 0}
    batch = {k: v.to(device) for k, v in batch.items()}
    use_bf16 = args.amp == "bf16" or (args.amp == "auto" and has_native_bf16(device))
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4, fused=device.type == "cuda")

    def step():
        with autocast():
            loss, _ = model.loss(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    model.train()
    step()  # warm-up (allocations, kernels)
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize(device)
    train_rate = B * cfg.context * args.steps / (time.perf_counter() - t0)  # pattern steps per second
    peak = peak_tflops(device, args.peak_tflops)
    mfu = 6 * n_params * train_rate / (peak * 1e12) if peak else None
    model.eval()
    frames = min(int(round(args.seconds * 75)), cfg.frames)
    emb = torch.randn(args.sample_batch, L, cfg.text_dim, generator=g).to(device)
    mask = torch.ones(args.sample_batch, L, dtype=torch.bool, device=device)
    with autocast():
        generate_t2a(model, emb, mask, 8, cfg_coef=3.0, seed=0)  # warm-up
        synchronize(device)
        t0 = time.perf_counter()
        generate_t2a(model, emb, mask, frames, cfg_coef=3.0, seed=0)
        synchronize(device)
    sample_rate = args.sample_batch * frames / (time.perf_counter() - t0)
    return {"preset": preset, "params": n_params, "precision": "bf16 autocast" if use_bf16 else "fp32",
            "batch": B, "context": cfg.context, "codebooks": K, "train_pattern_steps_per_s": round(train_rate, 1),
            "train_codes_per_s": round(train_rate * K, 1), "peak_tflops": peak, "mfu": round(mfu, 4) if mfu else None,
            "sample_batch": args.sample_batch, "sample_frames": frames, "sample_frames_per_s": round(sample_rate, 1),
            "sample_realtime_factor": round(sample_rate / 75, 2)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["t2a-m", "t2a-l"], help="t2a presets (default t2a-m t2a-l)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--batch", type=int, default=16, help="training sequences per step (default 16)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps (default 10)")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "none"], help="as halm train's amp (default auto)")
    p.add_argument("--seconds", type=float, default=10.0, help="audio sampled per caption (default 10 s)")
    p.add_argument("--sample-batch", type=int, default=4, help="captions sampled together (default 4)")
    p.add_argument("--peak-tflops", type=float, help="the device's peak dense bf16 TFLOP/s for MFU (default: by GPU name)")
    p.add_argument("--no-text", action="store_true", help="text_encoder=none (no cross-attention)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    args = p.parse_args()
    from halm.config import resolve_device

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [measure(preset, args, device) for preset in args.presets]
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "rows": rows}
    if args.json:
        print(json.dumps(info))
        return
    print(f"{info['device']}, torch {info['torch']}, {info['date']}\n")
    print("| preset | params | precision | train pattern steps/s (batch x context) | MFU | sampling frames/s (batch) | x real time |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "—"
        print(f"| {r['preset']} | {r['params'] / 1e6:.1f}M | {r['precision']} | {r['train_pattern_steps_per_s']:.0f} "
              f"({r['batch']} x {r['context']}) | {mfu} | {r['sample_frames_per_s']:.0f} ({r['sample_batch']}) | "
              f"{r['sample_realtime_factor']:.1f} |")


if __name__ == "__main__":
    main()
