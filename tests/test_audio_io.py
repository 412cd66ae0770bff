import warnings

import numpy as np
import pytest

from halm.audio import AudioError, load_audio, resample, save_audio
from halm.audio.io import AudioWarning
from tests.conftest import sine


@pytest.mark.parametrize("ext,subtype,tol", [("wav", "FLOAT", 1e-7), ("flac", "PCM_16", 1e-4), ("ogg", "VORBIS", 0.05)])
def test_formats_load_as_float32_channels_first(write_audio, ext, subtype, tol):
    x = sine(440, 0.5, 16000)
    p = write_audio(f"a.{ext}", x, 16000, subtype)
    wav, sr = load_audio(p)
    assert sr == 16000 and wav.dtype == np.float32 and wav.shape[0] == 1
    n = min(len(x), wav.shape[1])
    assert np.abs(wav[0, :n] - x[:n]).max() < tol


def test_mono_mixdown_and_keep_channels(write_audio):
    left, right = sine(200, 0.2, 8000, 0.4), sine(300, 0.2, 8000, 0.2)
    p = write_audio("st.wav", np.stack([left, right]), 8000, "FLOAT")
    mono, _ = load_audio(p)
    assert mono.shape == (1, len(left))
    np.testing.assert_allclose(mono[0], (left + right) / 2, atol=1e-6)
    both, _ = load_audio(p, mono=False)
    assert both.shape == (2, len(left))
    np.testing.assert_allclose(both[1], right, atol=1e-6)


def test_resample_keeps_frequency_and_duration(write_audio):
    p = write_audio("s.wav", sine(1000, 1.0, 44100), 44100, "FLOAT")
    wav, sr = load_audio(p, sample_rate=24000)
    assert sr == 24000 and abs(wav.shape[1] - 24000) <= 1
    spectrum = np.abs(np.fft.rfft(wav[0] * np.hanning(wav.shape[1])))
    peak_hz = np.argmax(spectrum) * sr / wav.shape[1]
    assert abs(peak_hz - 1000) < 2
    assert resample(wav, 24000, 24000) is wav


def test_errors_name_the_file(tmp_path, write_audio):
    with pytest.raises(AudioError, match="missing.wav: file not found"):
        load_audio(tmp_path / "missing.wav")
    bad = tmp_path / "garbage.wav"
    bad.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match="garbage.wav: unreadable audio"):
        load_audio(bad)
    empty = write_audio("empty.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav: empty audio"):
        load_audio(empty)
    short = write_audio("short.wav", sine(440, 0.05, 16000), 16000)
    with pytest.raises(AudioError, match=r"short.wav: too short: 0.050 s < 0.500 s"):
        load_audio(short, min_seconds=0.5)
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)


def test_silent_audio_warns_unless_asked_not_to(write_audio):
    p = write_audio("silence.wav", np.zeros(1600, dtype=np.float32), 16000, "FLOAT")
    with pytest.warns(AudioWarning, match="silent-only"):
        load_audio(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_audio(p, warn_silent=False)


def test_save_audio_roundtrip_and_clipping(tmp_path):
    x = np.stack([sine(300, 0.1, 16000), sine(500, 0.1, 16000) * 3])  # second channel clips
    p = save_audio(tmp_path / "sub" / "o.wav", x, 16000)
    y, sr = load_audio(p, mono=False)
    assert sr == 16000 and y.shape == x.shape
    np.testing.assert_allclose(y[0], x[0], atol=1e-4)
    assert np.abs(y[1]).max() <= 1.0
    assert not list((tmp_path / "sub").glob("*.tmp"))  # written atomically, no leftovers
