import numpy as np
import pytest
import torch

from halm.audio import MelConfig, causal_log_mel, mel_filterbank, n_codec_frames

CFG = MelConfig(sample_rate=24000, hop_length=320, frames_per_token=2, n_mels=80)


def test_slice_count_is_ceil_of_length_over_hop():
    rng = np.random.default_rng(0)
    lengths = [1, 2, 159, 160, 319, 320, 321, 639, 640, 641, 1000, 4799, 4800, 4801, 24000, 24001]
    lengths += list(rng.integers(1, 20000, size=30))
    for n in lengths:
        mel = causal_log_mel(torch.randn(int(n)) * 0.1, CFG)
        assert mel.shape == (-(-int(n) // 320), 2, 80), n
        assert mel.shape[0] == n_codec_frames(int(n), 320)


def test_slice_count_matches_transformers_encodec_frames():
    from transformers import EncodecConfig, EncodecModel

    cfg = EncodecConfig(num_filters=4, upsampling_ratios=[8, 5, 4, 2], codebook_size=16, hidden_size=16,
                        num_lstm_layers=1, target_bandwidths=[1.5])
    codec = EncodecModel(cfg).eval()
    assert int(np.prod(cfg.upsampling_ratios)) == CFG.hop_length
    for n in [1, 319, 320, 321, 1000, 3333, 24000]:
        with torch.no_grad():
            codes = codec.encode(torch.randn(1, 1, n) * 0.1, bandwidth=1.5).audio_codes  # (chunks, B, K, T)
        assert codes.shape[-1] == causal_log_mel(torch.randn(n), CFG).shape[0], n


@pytest.mark.parametrize("r", [1, 2, 4])
def test_no_future_leakage_bit_identical(r):
    cfg = MelConfig(sample_rate=24000, hop_length=320, frames_per_token=r, n_mels=80)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24000, generator=g) * 0.2
    full = causal_log_mel(x, cfg)
    T = full.shape[0]
    for t in [0, 1, 7, 30, T - 2]:
        y = x.clone()
        y[(t + 1) * 320:] = torch.randn(len(x) - (t + 1) * 320, generator=g)  # change every future sample
        other = causal_log_mel(y, cfg)
        assert torch.equal(full[: t + 1], other[: t + 1]), t
        assert not torch.equal(full[t + 1:], other[t + 1:])  # the change is visible right after
        # and the sample just before the boundary does matter for slice t
        z = x.clone()
        z[(t + 1) * 320 - 1] += 0.5
        assert not torch.equal(causal_log_mel(z, cfg)[t], full[t])


def test_prefix_of_audio_gives_prefix_of_slices():
    x = torch.randn(9600) * 0.1
    full = causal_log_mel(x, CFG)
    for cut in [320, 3200, 5000]:
        part = causal_log_mel(x[:cut], CFG)
        whole = cut // 320  # slices fully inside the prefix
        torch.testing.assert_close(part[:whole], full[:whole], atol=1e-5, rtol=0)


def test_batched_equals_single():
    x = torch.randn(3, 5000) * 0.1
    batched = causal_log_mel(x, CFG)
    assert batched.shape == (3, 16, 2, 80)
    for i in range(3):
        torch.testing.assert_close(batched[i], causal_log_mel(x[i], CFG), atol=1e-6, rtol=0)


def test_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    for sr, n_fft, n_mels, fmin, fmax in [(24000, 640, 80, 0.0, None), (16000, 400, 80, 0.0, 8000.0), (32000, 1024, 64, 50.0, 14000.0)]:
        ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=1e-4)


def test_log_mel_matches_librosa_on_reference_signal():
    librosa = pytest.importorskip("librosa")
    sr = 24000
    t = np.arange(sr) / sr
    chirp = 0.5 * np.sin(2 * np.pi * (100 * t + 2000 * t**2)) + 0.05 * np.random.default_rng(0).standard_normal(sr)
    chirp = chirp.astype(np.float32)
    ours = causal_log_mel(torch.from_numpy(chirp).double(), CFG).reshape(-1, 80).numpy()  # (T*r, M)
    # librosa on the same causal framing: left pad n_fft - hop, right pad to whole codec frames, no centring
    T = -(-sr // 320)
    padded = np.pad(chirp.astype(np.float64), (CFG.n_fft - CFG.mel_hop, T * 320 - sr))
    power = librosa.feature.melspectrogram(y=padded, sr=sr, n_fft=CFG.n_fft, hop_length=CFG.mel_hop, center=False,
                                           power=2.0, n_mels=80, window="hann")
    ref = (np.log10(np.maximum(power, CFG.log_floor)) + 4.0) / 4.0
    assert ref.shape[1] == ours.shape[0]
    np.testing.assert_allclose(ours, ref.T, atol=1e-4, rtol=0)


def test_config_validation():
    with pytest.raises(ValueError, match="must divide the codec hop"):
        MelConfig(hop_length=320, frames_per_token=3)
    with pytest.raises(ValueError, match="fmin"):
        MelConfig(fmin=20000.0)
    cfg = MelConfig(hop_length=320, frames_per_token=4)
    assert cfg.mel_hop == 80 and cfg.n_fft == 640 and cfg.win_length == 640 and cfg.fmax == 12000
    assert MelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="no samples"):
        causal_log_mel(torch.zeros(0), cfg)


def test_display_mel_is_frames_by_mels_at_sr_over_hop():
    from halm.audio.mel import DISPLAY_HOP, display_mel

    sr = 24000
    t = np.arange(sr) / sr
    noise = np.random.default_rng(0).standard_normal(sr)
    wav = np.where(t < 0.5, noise, 0.0).astype(np.float32)  # noise, then silence
    img, fps = display_mel(wav, sr)
    assert fps == sr / DISPLAY_HOP and img.shape == (sr // DISPLAY_HOP + 1, 80)
    half = img.shape[0] // 2
    assert img[: half - 4].mean() > img[half + 4:].mean() + 3.0  # time runs along the first axis
    stereo, _ = display_mel(np.stack([wav, wav]), sr)
    np.testing.assert_allclose(stereo, img, atol=1e-5)
