"""Formants: an LPC formant tracker and the vowel scores of `halm codec eval`.

A decoding can have the right pitch and loudness and still smear the vowels: what tells an /a/ from
an /i/ is where the first two formants (the vocal tract's resonances) lie, and a spectrogram shows
it only to an eye that knows where to look. These scores put it in numbers. On the frames that YIN
finds voiced in the original, F1 and F2 of the original and of the reconstruction, pooled over the
frames of all clips:
- f1_error, f2_error: the median |F_y / F_x - 1| over the frames where both have that formant (0.1 =
  10% off; the F1 of /a/ and /e/ of a male voice lie ~30% apart, their F2 ~40%);
- formant_gross_error: of the frames where the original has F1 and F2, the share where the
  reconstruction lacks either or has either more than 20% off. A decoding that loses its resonances
  scores 1 here, while its medians above stay undefined (None) or rest on the few frames it kept.

The tracker is the textbook one (Markel & Gray 1976; as Praat's "Burg" in spirit, with the
autocorrelation method): resample to 10 kHz, pre-emphasis, 25 ms Hamming frames every 10 ms centred
where YIN's frames are (`halm.metrics.pitch.yin_f0`: 0.02 + 0.01 i s), LPC of order 12 by
Levinson-Durbin, and the angles of the poles above 90 Hz with a bandwidth under 400 Hz, lowest first.
Its known bias: a low F1 is pulled towards the nearest harmonics, most for high voices (the /u/ of a
210 Hz voice, F1 300 Hz, reads ~380 Hz; tests/test_formants.py); F2 is within 5% on the test vowels.
The scores compare two tracks made by the same tracker, so a bias common to both cancels.
A frame whose F1 pole is wider than 400 Hz reads its F2 as F1 (the columns fill from the lowest
resonance); such a frame counts as a gross error, not as a missing formant.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_toeplitz

from halm.audio.io import resample

RATE = 10000  # formants of interest (F1, F2) lie below 3 kHz; 5 kHz of band leaves room for F3-F4 poles


def lpc_formants(wav: np.ndarray, sample_rate: int, n_formants: int = 2, order: int = 12, frame_s: float = 0.025,
                 hop_s: float = 0.01, max_bandwidth: float = 400.0, min_freq: float = 90.0) -> np.ndarray:
    """Mono audio (N,) -> formant frequencies in Hz (F, n_formants), NaN where a frame has fewer
    resonances (or is silent). Frame i is centred at 0.02 + 0.01 i s, as yin_f0's frame i."""
    x = resample(np.asarray(wav, np.float32), sample_rate, RATE).astype(np.float64)
    x = np.append(x[0], x[1:] - 0.97 * x[:-1])  # pre-emphasis: flatten the source's -6 dB/octave tilt
    W, H = int(frame_s * RATE), int(hop_s * RATE)
    n_frames = 1 + (len(x) - int(0.04 * RATE)) // H if len(x) >= int(0.04 * RATE) else 0  # yin_f0's count
    out = np.full((n_frames, n_formants), np.nan)
    starts = np.round((0.02 + hop_s * np.arange(n_frames)) * RATE).astype(int) - W // 2
    window = np.hamming(W)
    for i, s in enumerate(starts):
        fr = x[max(s, 0): s + W]
        if len(fr) < W:
            fr = np.pad(fr, (0, W - len(fr)))
        fr = fr * window
        r = np.correlate(fr, fr, "full")[W - 1: W + order]  # autocorrelation, lags 0..order
        if r[0] <= 1e-12:
            continue
        r[0] *= 1 + 1e-9  # white-noise correction: keeps the Toeplitz system well conditioned
        a = solve_toeplitz(r[:-1], -r[1:])  # x_t + sum_k a_k x_{t-k} = e_t
        poles = np.roots(np.concatenate([[1.0], a]))
        poles = poles[poles.imag > 0]
        freq = np.angle(poles) * RATE / (2 * np.pi)
        bandwidth = -np.log(np.abs(poles)) * RATE / np.pi
        keep = np.sort(freq[(freq > min_freq) & (bandwidth < max_bandwidth)])[:n_formants]
        out[i, : len(keep)] = keep
    return out


def formant_counts(fx: np.ndarray, fy: np.ndarray, voiced: np.ndarray) -> dict:
    """Formant tracks (F, 2) of an original and a reconstruction and the original's voiced frames (F,)
    -> per formant the relative errors |F_y / F_x - 1| on the voiced frames where both have it; the
    voiced frames where the original has F1 and F2 (`pairs`), and of those the ones where the
    reconstruction lacks either or has either > 20% off (`gross`)."""
    n = min(len(fx), len(fy), len(voiced))
    fx, fy, voiced = fx[:n], fy[:n], voiced[:n]
    rel = np.abs(fy / fx - 1)  # (n, 2), NaN where either lacks the formant (formants are > 90 Hz: no 0)
    errors = [rel[voiced & ~np.isnan(rel[:, k]), k] for k in range(fx.shape[1])]
    has_x = voiced & ~np.isnan(fx).any(axis=1)
    bad = np.isnan(rel[has_x]).any(axis=1) | (np.nan_to_num(rel[has_x], nan=0.0) > 0.2).any(axis=1)
    return {"errors": errors, "pairs": int(has_x.sum()), "gross": int(bad.sum())}


def pooled_formant_scores(counts: list[dict]) -> dict:
    """Pool formant_counts of several clips -> f1_error, f2_error (medians), formant_gross_error; None where undefined."""
    out = {}
    for k, name in enumerate(("f1_error", "f2_error")):
        e = np.concatenate([c["errors"][k] for c in counts]) if counts else np.zeros(0)
        out[name] = float(np.median(e)) if len(e) else None
    pairs = sum(c["pairs"] for c in counts)
    out["formant_gross_error"] = sum(c["gross"] for c in counts) / pairs if pairs else None
    return out
