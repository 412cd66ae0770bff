"""Pitch: a YIN F0 tracker and the pitch-reconstruction scores of `halm codec eval`.

A codec can follow the loudness and the spectral envelope of speech and still lose its pitch; then
log-mel distances look moderate while the speech is not recognisable. These scores make that
visible. Pooled over the frames of all clips:
- voicing_recall: of the frames voiced in the original, the share also voiced in the reconstruction;
- gross_pitch_error: among frames voiced in both, the share whose F0 is off by more than 20%
  (GPE, the standard pitch-tracking error; octave errors count; +20% is +316 cents, -20% is -386);
- f0_error_cents: the median |1200 log2(f0_y / f0_x)| over the frames voiced in both;
- f0_frame_error: FFE (Chu & Alwan, 2009), frames with a voicing disagreement or a gross pitch
  error over all frames: the one number to compare two reconstructions by, since it is computed
  over the same frames for both.

The tracker is YIN (de Cheveigné & Kawahara, 2002): the difference function from FFT
autocorrelations, cumulative-mean normalisation, the first dip below `threshold`, parabolic
refinement. It runs at 16 kHz on 40 ms frames every 10 ms, for F0 in [fmin, fmax].
"""

from __future__ import annotations

import math

import numpy as np
import torch

from halm.audio.io import resample

RATE = 16000


def yin_f0(wav: np.ndarray, sample_rate: int, fmin: float = 60.0, fmax: float = 500.0, threshold: float = 0.15,
           frame_s: float = 0.04, hop_s: float = 0.01, silence_db: float = 40.0, floor_db: float = -80.0) -> np.ndarray:
    """Mono audio (N,) -> F0 in Hz per 10 ms frame (F,), 0 where unvoiced.

    The difference function sums a fixed window of frame_s / 2 at every lag (lags up to frame_s / 2),
    so that its cumulative-mean normalisation is not biased towards long lags (a shrinking window
    made noisy frames dip lower at 2T than at T: octave errors). A frame is unvoiced when no dip
    goes below `threshold`, when the dip lies beyond the F0 range (a pitch above fmax, or still falling
    at fmin), or when it is quieter than silence_db below the loudest frame or than floor_db dBFS.
    """
    x = torch.from_numpy(np.ascontiguousarray(resample(np.asarray(wav, np.float32), sample_rate, RATE)))
    W, H = int(frame_s * RATE), int(hop_s * RATE)
    Wi = W // 2  # integration window; lags 0..W - Wi
    tau_min, tau_max = int(RATE / fmax), min(int(math.ceil(RATE / fmin)), W - Wi)
    if len(x) < W:
        return np.zeros(0, np.float32)
    fr = x.unfold(0, W, H).double()  # (F, W)
    F = fr.shape[0]
    # d(tau) = sum_{j < Wi} (x_j - x_{j+tau})^2 = sum_{j<Wi} x_j^2 + sum_{tau <= j < tau+Wi} x_j^2 - 2 r(tau)
    head = torch.fft.rfft(fr[:, :Wi], 2 * W)
    r = torch.fft.irfft(head.conj() * torch.fft.rfft(fr, 2 * W), 2 * W)[:, : tau_max + 1]  # r(tau) = sum_{j<Wi} x_j x_{j+tau}
    sq = torch.cat([torch.zeros(F, 1, dtype=fr.dtype), fr.pow(2).cumsum(1)], 1)  # (F, W+1) prefix sums
    taus = torch.arange(tau_max + 1)
    d = (sq[:, Wi : Wi + 1] + sq[:, taus + Wi] - sq[:, taus] - 2 * r).clamp_min(0)  # (F, tau_max+1)
    # cumulative-mean-normalised difference d'(tau) = d(tau) * tau / sum_{1..tau} d
    cum = d[:, 1:].cumsum(1)
    dn = torch.ones_like(d)
    dn[:, 1:] = torch.where(cum > 1e-12, d[:, 1:] * taus[1:] / cum.clamp_min(1e-12), torch.ones_like(cum))
    dn = dn.numpy()
    energy = 10 * np.log10(fr.pow(2).mean(1).numpy() + 1e-20)
    loud = (energy > energy.max() - silence_db) & (energy > floor_db)
    f0 = np.zeros(F, np.float32)
    for i in np.flatnonzero(loud):
        row = dn[i]
        below = np.flatnonzero(row[2:tau_max] < threshold)
        if not len(below):
            continue
        t = 2 + int(below[0])
        while t < tau_max and row[t + 1] < row[t]:  # walk down to the dip's minimum
            t += 1
        if t < tau_min or t >= tau_max:  # pitch above fmax, or below fmin (the dip runs off the range)
            continue
        h = t // 2  # in noise the dip at T can miss the threshold while the one at 2T makes it: prefer T
        if h - 2 >= tau_min:
            h = h - 2 + int(np.argmin(row[h - 2 : h + 3]))
            if row[h] < 2 * threshold and row[h] < row[h - 1] and row[h] < row[h + 1]:
                t = h
        a, b, c = row[t - 1], row[t], row[t + 1]
        den = a - 2 * b + c
        shift = 0.5 * (a - c) / den if den > 1e-12 else 0.0
        f0[i] = RATE / (t + float(np.clip(shift, -0.5, 0.5)))
    return f0


def pitch_counts(fx: np.ndarray, fy: np.ndarray) -> dict:
    """F0 tracks of an original and a reconstruction (0 = unvoiced) -> frame counts, to pool over clips:
    frames, voiced (in x), both (voiced in both), gross (both, |f0_y / f0_x - 1| > 20%), voicing_errors
    (voiced in one only), cents (|1200 log2(f0_y / f0_x)| of the frames voiced in both)."""
    n = min(len(fx), len(fy))
    fx, fy = fx[:n], fy[:n]
    vx, vy = fx > 0, fy > 0
    both = vx & vy
    ratio = fy[both] / fx[both]
    return {"frames": int(n), "voiced": int(vx.sum()), "both": int(both.sum()),
            "gross": int((np.abs(ratio - 1) > 0.2).sum()), "voicing_errors": int((vx != vy).sum()),
            "cents": np.abs(1200 * np.log2(ratio))}


def pooled_scores(counts: list[dict]) -> dict:
    """Pool pitch_counts of several clips (frame-weighted) -> voicing_recall, gross_pitch_error,
    f0_error_cents (median), f0_frame_error (FFE: voicing errors + gross errors over all frames);
    None where undefined (no voiced frame)."""
    tot = {k: sum(c[k] for c in counts) for k in ("frames", "voiced", "both", "gross", "voicing_errors")}
    cents = np.concatenate([c["cents"] for c in counts]) if counts else np.zeros(0)
    return {
        "voicing_recall": tot["both"] / tot["voiced"] if tot["voiced"] else None,
        "gross_pitch_error": tot["gross"] / tot["both"] if tot["both"] else None,
        "f0_error_cents": float(np.median(cents)) if len(cents) else None,
        "f0_frame_error": (tot["voicing_errors"] + tot["gross"]) / tot["frames"] if tot["frames"] else None,
        "voiced_frames": tot["voiced"],
    }


def pitch_scores(x: np.ndarray, y: np.ndarray, sample_rate: int) -> dict:
    """Original x and reconstruction y (N,) -> pooled_scores of the one clip."""
    return pooled_scores([pitch_counts(yin_f0(x, sample_rate), yin_f0(y, sample_rate))])
