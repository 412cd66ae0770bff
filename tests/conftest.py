import numpy as np
import pytest
import soundfile as sf


@pytest.fixture
def write_audio(tmp_path):
    """write_audio(name, wav (C, N) or (N,), sr, fmt) -> path, in a per-test folder."""

    def _write(name, wav, sr=24000, subtype=None):
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        wav = np.asarray(wav, dtype=np.float32)
        data = wav.T if wav.ndim == 2 else wav
        sf.write(p, data, sr, subtype=subtype)
        return p

    return _write


def sine(freq, seconds, sr, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="session")
def lm_data(tmp_path_factory):
    """A tokenized tiny speech dataset shared by the model/trainer/generation tests."""
    from tests.helpers import tiny_lm_dataset

    return tiny_lm_dataset(tmp_path_factory.mktemp("lm"))


@pytest.fixture(scope="session")
def t2a_data(tmp_path_factory):
    """A tokenized, captioned tiny sound-effects dataset shared by the text-to-audio tests."""
    from tests.helpers import tiny_t2a_dataset

    return tiny_t2a_dataset(tmp_path_factory.mktemp("t2a"))
