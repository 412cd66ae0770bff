"""Integration: the codec shipped inside the package (halm/assets/codec_halm_small)."""

import numpy as np
import pytest
import torch

from halm.audio import load_audio
from halm.audio.codec import Codec
from halm.audio.codec_eval import mel_l1
from halm.data.synth import synthesize


@pytest.fixture(scope="module")
def codec():
    return Codec.load("halm-small")


def test_shipped_codec_contract(codec):
    assert (codec.sample_rate, codec.hop_length, codec.frame_rate, codec.codebook_size) == (24000, 320, 75.0, 1024)
    assert codec.n_codebooks >= 4
    info = codec.info()
    assert info.name == "halm-small" and len(info.weights_sha256) == 16


def test_shipped_codec_tokens_carry_information(codec, tmp_path):
    synthesize("speech", tmp_path / "s", 0.1, seed=123, progress=False)
    wav, sr = load_audio(next((tmp_path / "s" / "audio").glob("*.wav")), sample_rate=24000)
    x = torch.from_numpy(wav)[None]  # (1, 1, N)
    codes = codec.encode(x, sr)
    assert codes.shape == (1, codec.n_codebooks, -(-wav.shape[1] // 320))
    for k in range(codec.n_codebooks):
        assert len(torch.unique(codes[0, k])) >= 8, f"codebook {k} is (nearly) constant"
    full = codec.decode(codes)[0, 0, : wav.shape[1]]
    coarse = codec.decode(codes[:, :1])[0, 0, : wav.shape[1]]
    silence = torch.zeros_like(full)
    x0 = torch.from_numpy(wav[0])
    # more codebooks reconstruct better, and any reconstruction beats silence by a wide margin
    assert mel_l1(x0, full, sr) < mel_l1(x0, coarse, sr) < mel_l1(x0, silence, sr)
    assert np.isfinite(full.numpy()).all()
