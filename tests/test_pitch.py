"""The YIN F0 tracker and the pitch scores of `halm codec eval`."""

import numpy as np
import pytest

from halm.metrics.pitch import pitch_counts, pitch_scores, pooled_scores, yin_f0

SR = 24000


def _tone(f0, seconds=1.0, sr=SR, amps=(0.2, 0.3, 0.1)):
    t = np.arange(int(seconds * sr)) / sr
    # by default the second harmonic is stronger than the fundamental: octave errors are easy here
    return sum(a * np.sin(2 * np.pi * f0 * (k + 1) * t) for k, a in enumerate(amps)).astype(np.float32)


def _noise(seconds=1.0, seed=0, rms=0.1):
    return (np.random.default_rng(seed).standard_normal(int(seconds * SR)) * rms).astype(np.float32)


@pytest.mark.parametrize("f0", [65.0, 123.0, 210.0, 440.0])
def test_yin_finds_the_fundamental(f0):
    est = yin_f0(_tone(f0), SR)
    assert len(est) == 97  # 40 ms frames every 10 ms over 1 s at 16 kHz
    assert (est > 0).all()
    assert np.median(np.abs(1200 * np.log2(est / f0))) < 10  # cents


def test_outside_the_f0_range_silence_and_noise_are_unvoiced():
    assert (yin_f0(_tone(800.0), SR) == 0).all()  # above fmax: not reported as its subharmonic 400 Hz
    assert (yin_f0(_tone(45.0, amps=(0.3,)), SR) == 0).all()  # below fmin: not pinned to the range's edge
    assert (yin_f0(np.zeros(SR, np.float32), SR) == 0).all()
    assert (yin_f0(np.full(SR, 0.3, np.float32), SR) > 0).mean() < 0.05  # DC (the resampler rings at the edges)
    assert (yin_f0(_noise(), SR) > 0).mean() < 0.05
    half = np.concatenate([_tone(150, 0.5), np.zeros(SR // 2, np.float32)])
    f = yin_f0(half, SR)
    assert (f[:40] > 0).all() and (f[-40:] == 0).all()


@pytest.mark.parametrize("f0", [150.0, 200.0])
def test_noise_costs_voicing_not_octaves(f0):
    """At 5 dB SNR a shrinking summation window made dips at 2T deeper than at T: 40-70% octave errors."""
    x = _tone(f0)
    rms = float(np.sqrt(np.mean(x**2)))
    at_10db = pitch_scores(x, x + _noise(seed=3, rms=rms / 10 ** (10 / 20)), SR)
    assert at_10db["voicing_recall"] == 1 and at_10db["gross_pitch_error"] == 0
    at_5db = pitch_scores(x, x + _noise(seed=3, rms=rms / 10 ** (5 / 20)), SR)
    assert at_5db["voicing_recall"] < 0.6 and at_5db["gross_pitch_error"] < 0.15


def test_pitch_scores_rank_reconstructions():
    x = _tone(150)
    same = pitch_scores(x, x, SR)
    assert same["voicing_recall"] == 1 and same["gross_pitch_error"] == 0 and same["f0_error_cents"] < 1
    assert same["f0_frame_error"] == 0
    slightly = pitch_scores(x, _tone(155), SR)  # 57 cents sharp: not a gross error
    assert slightly["gross_pitch_error"] == 0 and 40 < slightly["f0_error_cents"] < 75
    octave = pitch_scores(x, _tone(300), SR)
    assert octave["gross_pitch_error"] == 1 and abs(octave["f0_error_cents"] - 1200) < 20
    assert octave["f0_frame_error"] > 0.9
    lost = pitch_scores(x, _noise(seed=1), SR)  # loudness kept, pitch lost: what an envelope-only codec does
    assert lost["voicing_recall"] < 0.1 and lost["f0_frame_error"] > 0.9
    assert pitch_scores(_noise(), x, SR)["voicing_recall"] is None  # nothing voiced in the original


def test_pooling_is_frame_weighted_and_compares_the_same_frames():
    """A reconstruction that keeps the pitch on every clip must beat one that loses voicing on the hard
    clips, even if the latter is perfect where it stays voiced (per-clip means dropped those clips)."""
    f = np.full(100, 150.0, np.float32)
    keeps = [pitch_counts(f, f * 1.3 if i == 0 else f) for i in range(3)]  # one clip with gross errors
    loses = [pitch_counts(f, f)] + [pitch_counts(f, np.zeros(100, np.float32)) for _ in range(2)]
    a, b = pooled_scores(keeps), pooled_scores(loses)
    assert a["f0_frame_error"] == pytest.approx(1 / 3) and b["f0_frame_error"] == pytest.approx(2 / 3)
    assert a["voicing_recall"] == 1 and b["voicing_recall"] == pytest.approx(1 / 3)
    assert pooled_scores([])["f0_frame_error"] is None
