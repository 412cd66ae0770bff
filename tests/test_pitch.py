"""The YIN F0 tracker and the pitch scores of `halm codec eval`."""


import numpy as np
import pytest

from halm.metrics.pitch import pitch_scores, yin_f0

SR = 24000


def _tone(f0, seconds=1.0, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    # a harmonic tone whose second harmonic is stronger than the fundamental: octave errors are easy here
    return (0.2 * np.sin(2 * np.pi * f0 * t) + 0.3 * np.sin(2 * np.pi * 2 * f0 * t)
            + 0.1 * np.sin(2 * np.pi * 3 * f0 * t)).astype(np.float32)


@pytest.mark.parametrize("f0", [70.0, 123.0, 210.0, 440.0])
def test_yin_finds_the_fundamental(f0):
    est = yin_f0(_tone(f0), SR)
    assert len(est) == 97  # 40 ms frames every 10 ms over 1 s at 16 kHz
    assert (est > 0).all()
    assert np.median(np.abs(1200 * np.log2(est / f0))) < 10  # cents


def test_noise_and_silence_are_unvoiced():
    noise = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    assert (yin_f0(noise, SR) > 0).mean() < 0.05
    quiet = np.concatenate([_tone(150, 0.5), np.zeros(SR // 2, np.float32)])
    f = yin_f0(quiet, SR)
    assert (f[:40] > 0).all() and (f[-40:] == 0).all()


def test_pitch_scores_rank_reconstructions():
    x = _tone(150)
    same = pitch_scores(x, x, SR)
    assert same["voicing_recall"] == 1 and same["gross_pitch_error"] == 0 and same["f0_error_cents"] < 1
    slightly = pitch_scores(x, _tone(155), SR)  # 57 cents sharp: not a gross error
    assert slightly["gross_pitch_error"] == 0 and 40 < slightly["f0_error_cents"] < 75
    octave = pitch_scores(x, _tone(300), SR)
    assert octave["gross_pitch_error"] == 1 and abs(octave["f0_error_cents"] - 1200) < 20
    noise = np.random.default_rng(1).standard_normal(SR).astype(np.float32) * 0.1
    lost = pitch_scores(x, noise, SR)  # loudness kept, pitch lost: what an envelope-only codec does
    assert lost["voicing_recall"] < 0.1
    unvoiced = pitch_scores(noise, x, SR)
    assert unvoiced["voiced_frames"] <= 5
