"""Analysis (not a test): how much of the voice's pitch a codec's codes carry.

    python benchmarks/latent_pitch_probe.py --codec C [C2 ...] --train /work/data/train_speech \
        --test /work/data/heldout_speech [--clips 60 20] [--json]

For each codec, the quantized latent that the decoder sees (all codebooks) of each voiced 10 ms frame
(YIN F0 of the original, `halm.metrics.pitch.yin_f0`), with its neighbours one codec frame before and
after, is the input of a small probe (an MLP with two hidden layers of 256) trained to predict log F0 on
the train clips and scored on the test clips. A decoder can only render the pitch the latent holds, so
a probe that cannot read it means the codes have lost it. Reference: the same probe on the causal
log-mel of the original audio (the Whisper-GPT front-end; 2 slices x 80 mels per frame), which does hold
the pitch, and a constant prediction (the train clips' mean log F0).

Printed per input: gross pitch error (share of voiced test frames whose predicted F0 is > 20% off)
and R^2 of log F0. The probe is seeded; a run on 2 cores takes about a minute per codec.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform

import numpy as np
import torch

from halm.audio.io import load_audio
from halm.audio.mel import MelConfig, causal_log_mel
from halm.codec.model import Codec
from halm.metrics.pitch import yin_f0

SR = 24000


def _clips(folder: str, n: int) -> list[np.ndarray]:
    files = sorted(glob.glob(os.path.join(folder, "**", "*.wav"), recursive=True))[:n]
    if not files:
        raise SystemExit(f"{folder}: no .wav files")
    return [load_audio(f, sample_rate=SR)[0][0] for f in files]


def _frames(f0: np.ndarray, n_frames: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Codec frame index of each 10 ms YIN frame (centred at 0.02 + 0.01 i s), and which are voiced."""
    idx = np.clip(((0.02 + 0.01 * np.arange(len(f0))) * SR / hop).astype(int), 0, n_frames - 1)
    return idx, f0 > 0


def features(clips: list[np.ndarray], f0s: list[np.ndarray], codec: Codec | None):
    """(X, log F0) over the voiced frames of all clips; X from the codec's latent, or (codec None) the causal mel."""
    X, Y = [], []
    for x, f0 in zip(clips, f0s):
        wav = torch.from_numpy(x)
        with torch.inference_mode():
            if codec is None:
                z = causal_log_mel(wav, MelConfig()).reshape(-1, 160)  # (T, r * n_mels)
                hop = MelConfig().hop_length
            else:
                codes = codec.encode(wav[None, None], SR)  # (1, K, T)
                z = codec.model.quantizer.decode(codes.transpose(0, 1))[0].T  # (T, D)
                hop = codec.hop_length
        z = z.numpy()
        z = np.concatenate([z, np.roll(z, 1, 0), np.roll(z, -1, 0)], 1)  # with the previous and next frame
        idx, v = _frames(f0, len(z), hop)
        X.append(z[idx[v]])
        Y.append(np.log(f0[v]))
    return np.concatenate(X).astype(np.float32), np.concatenate(Y).astype(np.float32)


def probe(Xa, Ya, Xb, Yb, steps: int = 3000, seed: int = 0) -> dict:
    mu, sd = Xa.mean(0), Xa.std(0) + 1e-6
    xa, xb = torch.from_numpy((Xa - mu) / sd), torch.from_numpy((Xb - mu) / sd)
    ya, ym = torch.from_numpy(Ya), float(Ya.mean())
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(xa.shape[1], 256), torch.nn.GELU(), torch.nn.Linear(256, 256),
                              torch.nn.GELU(), torch.nn.Linear(256, 1))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
    for _ in range(steps):
        i = torch.randint(0, len(xa), (256,), generator=g)
        loss = (net(xa[i])[:, 0] + ym - ya[i]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        p = net(xb)[:, 0].numpy() + ym
    return _score(p, Yb)


def _score(pred: np.ndarray, y: np.ndarray) -> dict:
    return {"gross_pitch_error": round(float(np.mean(np.abs(np.exp(pred - y) - 1) > 0.2)), 3),
            "r2_log_f0": round(float(1 - np.mean((pred - y) ** 2) / np.var(y)), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codec", nargs="+", required=True, help="codecs to probe (shipped name or folder)")
    ap.add_argument("--train", required=True, help="folder of speech .wav clips to fit the probe on")
    ap.add_argument("--test", required=True, help="folder of other speech .wav clips to score it on")
    ap.add_argument("--clips", type=int, nargs=2, default=[60, 20], metavar=("TRAIN", "TEST"),
                    help="clips taken from each folder, in name order (default 60 20)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--json", action="store_true", help="one JSON object")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tr, te = _clips(args.train, args.clips[0]), _clips(args.test, args.clips[1])
    f0_tr, f0_te = [yin_f0(x, SR) for x in tr], [yin_f0(x, SR) for x in te]
    out = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "train": args.train, "test": args.test,
           "clips": args.clips, "rows": {}}
    Xa, Ya = features(tr, f0_tr, None)
    Xb, Yb = features(te, f0_te, None)
    out["voiced_frames"] = [len(Ya), len(Yb)]
    out["rows"]["constant (train mean)"] = _score(np.full_like(Yb, Ya.mean()), Yb)
    out["rows"]["causal log-mel of the original"] = probe(Xa, Ya, Xb, Yb)
    for spec in args.codec:
        codec = Codec.load(spec)
        Xa, Ya = features(tr, f0_tr, codec)
        Xb, Yb = features(te, f0_te, codec)
        out["rows"][f"latent of {spec} ({codec.n_codebooks} codebooks)"] = probe(Xa, Ya, Xb, Yb)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{out['date']}, {out['machine']}; voiced frames train/test {out['voiced_frames']}")
    print(f"{'probe input':70s} {'GPE':>6s} {'R2':>7s}")
    for name, r in out["rows"].items():
        print(f"{name:70s} {r['gross_pitch_error']:6.3f} {r['r2_log_f0']:7.3f}")


if __name__ == "__main__":
    main()
