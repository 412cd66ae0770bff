"""Pitch: a YIN F0 tracker and the pitch-reconstruction scores of `halm codec eval`.

A codec can follow the loudness and the spectral envelope of speech and still lose its pitch; then
log-mel distances look moderate while the speech is not recognisable. These scores make that
visible: on frames that are voiced in the original,
- voicing_recall: the share also voiced in the reconstruction;
- gross_pitch_error: among frames voiced in both, the share whose F0 is off by more than 20%
  (GPE, the standard pitch-tracking error; octave errors count);
- f0_error_cents: the median |1200 log2(f0_y / f0_x)| over the frames voiced in both.

The tracker is YIN (de Cheveigné & Kawahara, 2002): the difference function from FFT
autocorrelations, cumulative-mean normalisation, the first dip below `threshold`, parabolic
refinement. It runs at 16 kHz on 40 ms frames every 10 ms, for F0 in [fmin, fmax]. Frames quieter
than `silence_db` below the clip's loudest frame are unvoiced.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from halm.audio.io import resample

RATE = 16000


def yin_f0(wav: np.ndarray, sample_rate: int, fmin: float = 60.0, fmax: float = 500.0, threshold: float = 0.15,
           frame_s: float = 0.04, hop_s: float = 0.01, silence_db: float = 40.0) -> np.ndarray:
    """Mono audio (N,) -> F0 in Hz per 10 ms frame (F,), 0 where unvoiced."""
    x = torch.from_numpy(np.ascontiguousarray(resample(np.asarray(wav, np.float32), sample_rate, RATE)))
    W, H = int(frame_s * RATE), int(hop_s * RATE)
    tau_min, tau_max = int(RATE / fmax), min(int(RATE / fmin), W // 2)
    if len(x) < W:
        return np.zeros(0, np.float32)
    fr = x.unfold(0, W, H).double()  # (F, W)
    F = fr.shape[0]
    # difference function d(tau) = sum_{j < W - tau} (x_j - x_{j+tau})^2 = e_head + e_tail - 2 r(tau)
    spec = torch.fft.rfft(fr, 2 * W)
    r = torch.fft.irfft(spec.abs().pow(2), 2 * W)[:, : tau_max + 1]  # (F, tau_max+1), r[tau] = sum x_j x_{j+tau}
    sq = torch.cat([torch.zeros(F, 1, dtype=fr.dtype), fr.pow(2).cumsum(1)], 1)  # (F, W+1) prefix sums
    taus = torch.arange(tau_max + 1)
    e_head = sq[:, W - taus]  # sum_{j < W - tau} x_j^2
    e_tail = sq[:, W : W + 1] - sq[:, taus]  # sum_{j >= tau} x_j^2
    d = (e_head + e_tail - 2 * r).clamp_min(0)  # (F, tau_max+1)
    # cumulative-mean-normalised difference d'(tau) = d(tau) * tau / sum_{1..tau} d
    cum = d[:, 1:].cumsum(1)
    dn = torch.ones_like(d)
    dn[:, 1:] = d[:, 1:] * taus[1:] / cum.clamp_min(1e-12)
    dn = dn.numpy()
    energy = 10 * np.log10(fr.pow(2).mean(1).numpy() + 1e-12)
    loud = energy > energy.max() - silence_db
    f0 = np.zeros(F, np.float32)
    for i in np.flatnonzero(loud):
        row = dn[i]
        below = np.flatnonzero(row[tau_min : tau_max] < threshold)
        if not len(below):
            continue
        t = tau_min + int(below[0])
        while t + 1 < tau_max and row[t + 1] < row[t]:  # walk down to the dip's minimum
            t += 1
        a, b, c = row[t - 1], row[t], row[t + 1] if t + 1 <= tau_max else row[t]
        den = a - 2 * b + c
        shift = 0.5 * (a - c) / den if den > 1e-12 else 0.0
        f0[i] = RATE / (t + float(np.clip(shift, -1, 1)))
    return f0


def pitch_scores(x: np.ndarray, y: np.ndarray, sample_rate: int) -> dict:
    """Original x and reconstruction y (N,) -> voicing_recall, gross_pitch_error, f0_error_cents,
    voiced_frames (of x). The scores are NaN when x has no voiced frame (e.g. noise)."""
    fx, fy = yin_f0(x, sample_rate), yin_f0(y, sample_rate)
    n = min(len(fx), len(fy))
    fx, fy = fx[:n], fy[:n]
    vx, both = fx > 0, (fx > 0) & (fy > 0)
    out = {"voiced_frames": int(vx.sum()), "voicing_recall": math.nan, "gross_pitch_error": math.nan,
           "f0_error_cents": math.nan}
    if vx.any():
        out["voicing_recall"] = float(both.sum() / vx.sum())
    if both.any():
        ratio = fy[both] / fx[both]
        out["gross_pitch_error"] = float((np.abs(ratio - 1) > 0.2).mean())
        out["f0_error_cents"] = float(np.median(np.abs(1200 * np.log2(ratio))))
    return out
