"""Analysis (not a test): can a codec's decoder render a voice's pitch at all? Overfit it to one clip, or a few.

    python benchmarks/codec_pitch_overfit.py --clip speech.wav [more.wav ...] [--activation elu snake] \
        [--init fresh | --init RUN/codec] [--steps 300] [--stft-weight 1] [--lr 1e-3] [--json]

The codec (halm-small's architecture: `CodecTrainConfig()`, or the codec folder given by --init) is
trained as a plain autoencoder (quantizer bypassed, so only the encoder and decoder matter) on the first
`--seconds` of one clip (or of several, as one batch: then the decoder must render each voice's pitch
from what the latent says, not from one memorised waveform), with `halm codec train`'s losses
(multi-scale mel + 0.1 x waveform L1 + `--stft-weight` x the linear-frequency STFT loss). Fitting a single clip is the easiest
task a decoder can get: the encoder may put anything it wants into the latent. Every `--every` steps the script
prints the reconstruction's median F0 (YIN; `median_f0`, one per clip) against the clip's, its gross pitch
error (voiced frames of both whose F0 is > 20% off, pooled over the clips), its autocorrelation at one
codec frame (320 samples; mean over the clips; a decoder that repeats one waveform per frame scores ~1
and has a 75 Hz pitch), its share of energy in one waveform repeated in every frame (`frame_locked_share`
of `halm codec eval`, mean over the clips), the largest loss since the last
report (a fit that blows up shows here first) and, with Snake, its smallest |alpha|. `--init RUN/codec` with
`--activation snake` swaps a trained ELU decoder's activations (alpha 1), a fresh init is LSUV
(`data_dependent_init`) as in training. Seeded; ~0.5 s per step on 2 cores.

Any speech WAV works; the clips of docs/results.md come from `halm synth speech`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time

import numpy as np
import torch

from halm.audio.io import load_audio
from halm.codec.eval import _median_f0, frame_locked_share, lag_autocorr
from halm.codec.losses import MultiResolutionSTFTLoss, MultiScaleMelLoss
from halm.codec.model import Codec, Snake, build_encodec, snake_decoder
from halm.codec.train import CodecTrainConfig, data_dependent_init
from halm.metrics.pitch import yin_f0

SR = 24000


def _gpe(f0_xs: list[np.ndarray], f0_ys: list[np.ndarray]) -> float | None:
    """Share of the frames voiced in both original and reconstruction whose F0 is > 20% off, pooled over clips."""
    off = []
    for f0_x, f0_y in zip(f0_xs, f0_ys):
        n = min(len(f0_x), len(f0_y))
        both = (f0_x[:n] > 0) & (f0_y[:n] > 0)
        off.append(np.abs(f0_y[:n][both] / f0_x[:n][both] - 1) > 0.2)
    off = np.concatenate(off)
    return round(float(off.mean()), 3) if len(off) else None


def overfit(x: torch.Tensor, activation: str, init: str, steps: int, every: int, stft_weight: float, seed: int,
            lr: float = CodecTrainConfig.lr) -> dict:
    """x (n, 1, N): n clips fitted as one batch -> the trajectory of pitch scores while fitting them."""
    torch.manual_seed(seed)
    if init == "fresh":
        cfg = CodecTrainConfig(decoder_activation=activation).encodec_config()
        model = build_encodec(cfg)
        data_dependent_init(model, x)
    else:
        model = Codec.load(init).model.float()
        if activation == "snake" and getattr(model.config, "decoder_activation", "elu") == "elu":
            snake_decoder(model)
        elif activation != getattr(model.config, "decoder_activation", "elu"):
            raise SystemExit(f"{init} has a {model.config.decoder_activation} decoder; cannot turn it into {activation}")
    model.train()
    train = CodecTrainConfig()  # the trainer's loss weights and betas
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=train.betas)
    alphas = [m.alpha for m in model.decoder.modules() if isinstance(m, Snake)]
    mel, stft = MultiScaleMelLoss(SR), MultiResolutionSTFTLoss()
    f0_xs = [yin_f0(c.numpy(), SR) for c in x[:, 0]]
    rows, t0, loss_max = [], time.perf_counter(), 0.0
    for step in range(1, steps + 1):
        y = model.decoder(model.encoder(x))[..., : x.shape[-1]]  # (n, 1, N)
        loss = train.mel_weight * mel(y[:, 0], x[:, 0]) + train.wave_weight * (y - x).abs().mean()
        if stft_weight:
            loss = loss + stft_weight * stft(y[:, 0], x[:, 0])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        loss_max = max(loss_max, loss.item())
        if step % every == 0 or step == steps:
            yy = y.detach()[:, 0]  # (n, N)
            f0_ys = [yin_f0(c.numpy(), SR) for c in yy]
            rows.append({"step": step, "loss": round(loss.item(), 4), "median_f0": [_median_f0(f) for f in f0_ys],
                         "gross_pitch_error": _gpe(f0_xs, f0_ys),
                         "hop_periodicity": round(float(np.mean([lag_autocorr(c, 320) for c in yy])), 3),
                         "frame_locked_share": round(float(np.mean([frame_locked_share(c, 320) for c in yy])), 3),
                         "seconds": round(time.perf_counter() - t0, 1), "loss_max": round(loss_max, 4)})
            if alphas:  # the smallest |alpha| of any Snake channel: 1/alpha scales its sin^2 term
                rows[-1]["alpha_min_abs"] = round(min(a.detach().abs().min().item() for a in alphas), 4)
            loss_max = 0.0
            print(f"  {activation:5s} step {step:4d}  loss {rows[-1]['loss']:.3f} (max since last {rows[-1]['loss_max']:.3f})  "
                  f"median F0 {rows[-1]['median_f0']}  GPE {rows[-1]['gross_pitch_error']}  "
                  f"hop periodicity {rows[-1]['hop_periodicity']:.3f}  frame-locked {rows[-1]['frame_locked_share']:.3f}"
                  + (f"  min |alpha| {rows[-1]['alpha_min_abs']}" if alphas else ""), flush=True)
    return {"activation": activation, "init": init, "trajectory": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", required=True, nargs="+",
                   help="speech WAVs (any rate; resampled to 24 kHz, first channel); several are fitted as one batch")
    p.add_argument("--seconds", type=float, default=2.0, help="how much of each clip to fit (default 2)")
    p.add_argument("--activation", nargs="+", default=["elu", "snake"], choices=["elu", "snake"],
                   help="decoder activations to compare, one fit each (default: elu snake)")
    p.add_argument("--init", default="fresh", help="'fresh' (LSUV init, as training) or a codec folder to start from")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per fit (default 300)")
    p.add_argument("--every", type=int, default=100, help="score the reconstruction every N steps (default 100)")
    p.add_argument("--stft-weight", type=float, default=1.0, help="weight of the linear STFT loss (default 1; 0: off)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--lr", type=float, default=CodecTrainConfig.lr,
                   help=f"Adam learning rate (default {CodecTrainConfig.lr}, as codec train)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    clips = [torch.from_numpy(load_audio(c, sample_rate=SR)[0][0][: int(a.seconds * SR)]) for c in a.clip]
    n = min(len(c) for c in clips)  # a batch needs one length: the shortest clip's
    x = torch.stack([c[:n] for c in clips])[:, None]  # (n_clips, 1, N)
    f0 = [_median_f0(yin_f0(c.numpy(), SR)) for c in x[:, 0]]
    for path, c, f in zip(a.clip, x[:, 0], f0):
        print(f"clip {path}: {n / SR:.2f} s, median F0 {f} Hz, hop periodicity {lag_autocorr(c, 320):.3f}, "
              f"frame-locked {frame_locked_share(c, 320):.3f}")
    fits = [overfit(x, act, a.init, a.steps, a.every, a.stft_weight, a.seed, a.lr) for act in a.activation]
    if a.json:
        print(json.dumps({"clip": a.clip, "clip_median_f0": f0, "fits": fits, "steps": a.steps, "stft_weight": a.stft_weight, "lr": a.lr,
                          "threads": a.threads, "torch": torch.__version__, "machine": platform.machine(),
                          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes")}))


if __name__ == "__main__":
    main()
