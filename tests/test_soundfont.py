"""halm's SoundFont renderer (halm/data/synth/soundfont.py): the file read right, notes at their pitch and
level, loops and envelopes, deterministic, close to tinysoundfont, and music synthesis without it."""

import json
import sys

import numpy as np
import pytest

from halm.data.synth import CorpusMismatch, synthesize
from halm.data.synth.music import CLIP_SECONDS, _soundfont_path, caption, compose, render, sample_attributes
from halm.data.synth.soundfont import SAMPLE_ID, load_soundfont, regions, render_notes
from halm.metrics.pitch import yin_f0

SR = 24000
SF2 = _soundfont_path()


def _note(program: int, key: int, velocity: int = 100, seconds: float = 1.0, total: float = 2.0, bank: int = 0):
    return render_notes(SF2, [(bank, program, key, velocity, 0.0, seconds)], total, SR)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def test_the_shipped_soundfont_parses_into_presets_instruments_and_samples():
    sf = load_soundfont(SF2)
    assert (0, 0) in sf.presets and (128, 0) in sf.presets  # grand piano, the standard drum kit
    assert len(sf.headers) > 100 and sf.samples.dtype == np.float32 and np.abs(sf.samples).max() <= 1.0
    for h in sf.headers:
        assert 0 <= h.start < h.end <= len(sf.samples) and 0 <= h.root <= 127 and h.rate > 0
    piano = regions(sf, 0, 0, 60, 100)
    assert piano and all(SAMPLE_ID in g for g in piano)
    assert regions(sf, 128, 0, 36, 100)  # the kick drum
    assert regions(sf, 0, 0, 60, 100) == piano  # a pure function of the note


@pytest.mark.parametrize("program,key", [(0, 57), (0, 69), (73, 72), (40, 64), (24, 64)])
def test_a_note_sounds_at_its_pitch(program, key):
    wav = _note(program, key, seconds=0.8, total=1.0)
    f0 = yin_f0(wav[: int(0.6 * SR)], SR, fmin=100, fmax=1000)
    voiced = f0[f0 > 0]
    assert len(voiced) > 20
    expected = 440.0 * 2 ** ((key - 69) / 12)
    assert np.median(voiced) == pytest.approx(expected, rel=0.02)


def test_velocity_scales_the_amplitude_and_loops_sustain_a_held_note():
    loud, soft = _note(0, 60, 127), _note(0, 60, 64)
    assert _rms(loud) / _rms(soft) == pytest.approx(127 / 64, rel=1e-3)
    organ = _note(16, 60, seconds=3.0, total=4.0)  # a looped sample: it lasts as long as the key is held
    early, late, after = organ[: SR // 2], organ[int(2.4 * SR): 3 * SR], organ[int(3.6 * SR):]
    assert _rms(late) > 0.3 * _rms(early) and _rms(after) < 0.05 * _rms(late)  # then the release ends it
    assert np.all(organ[: 3 * SR].reshape(-1, SR // 10).std(axis=1) > 0)  # no silent gap where the loop wraps


def test_rendering_is_deterministic_and_exactly_the_asked_length():
    notes = [(0, 0, 60, 90, 0.0, 0.5), (0, 40, 67, 80, 0.25, 1.2), (128, 0, 38, 100, 0.5, 0.6)]
    a, b = render_notes(SF2, notes, 1.5, SR), render_notes(SF2, notes, 1.5, SR)
    assert a.dtype == np.float32 and len(a) == int(1.5 * SR) and np.array_equal(a, b)
    assert _rms(a) > 0.01 and np.isfinite(a).all()


def _pieces(n: int):
    for i in range(n):
        rng = np.random.default_rng([0, i])
        a = sample_attributes(rng)
        caption(a, rng)
        yield a, compose(a, rng, CLIP_SECONDS)


def test_close_to_tinysoundfont_on_the_corpus_pieces():
    """Level, loudness envelope and long-term spectrum of whole compositions against tinysoundfont's render
    of the same MIDI (measured on 12 pieces: RMS within 16%, envelope correlation >= 0.92, band levels within
    1.4 dB of the mean offset)."""
    pytest.importorskip("tinysoundfont")
    f = np.fft.rfftfreq(int(CLIP_SECONDS * SR), 1 / SR)
    bands = np.geomspace(50, 11000, 25)
    for _, pm in _pieces(4):
        ours, theirs = render(pm, SR, CLIP_SECONDS, "halm"), render(pm, SR, CLIP_SECONDS, "tinysoundfont")
        assert 0.75 < _rms(ours) / _rms(theirs) < 1.25
        env = [np.sqrt((w.reshape(-1, 1200).astype(np.float64) ** 2).mean(1)) for w in (ours, theirs)]
        assert np.corrcoef(*env)[0, 1] > 0.85
        spec = [np.abs(np.fft.rfft(w)) for w in (ours, theirs)]
        level = [np.array([s[(f >= lo) & (f < hi)].mean() for lo, hi in zip(bands[:-1], bands[1:])]) for s in spec]
        d = 20 * np.log10(level[0] / level[1])
        assert np.abs(d - d.mean()).mean() < 2.0


def test_music_synthesis_needs_no_tinysoundfont(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tinysoundfont", None)  # as if it were not installed
    synthesize("music", tmp_path / "m", 0.2, seed=0, progress=False)
    assert json.loads((tmp_path / "m" / "corpus.json").read_text())["generator_version"] == 2
    with pytest.raises(ValueError, match="pip install --no-deps tinysoundfont"):
        synthesize("music", tmp_path / "t", 0.2, seed=0, progress=False, renderer="tinysoundfont")
    assert not (tmp_path / "t").exists()  # refused before anything is written: the default renderer can use the folder
    # a corpus made by tinysoundfont (generator version 1) is not continued with the other renderer
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "corpus.json").write_text(json.dumps({"kind": "music", "seed": 0, "sample_rate": SR,
                                                             "generator_version": 1}))
    with pytest.raises(CorpusMismatch, match="--renderer tinysoundfont"):
        synthesize("music", tmp_path / "v1", 0.2, seed=0, progress=False)
    with pytest.raises(ValueError, match="--renderer is for music"):
        synthesize("sfx", tmp_path / "s", 0.2, renderer="halm", progress=False)
