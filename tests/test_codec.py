import numpy as np
import pytest
import torch

from halm.audio import MelConfig, causal_log_mel
from halm.codec.model import Codec, CodecError, convert_original_state_dict, fast_padding
from tests.helpers import tiny_codec_dir, tiny_encodec


@pytest.fixture(scope="module")
def model():
    return tiny_encodec(n_codebooks=4, codebook_size=32)


def test_codes_equal_transformers_encode_and_frames_equal_mel_slices(model):
    codec = Codec(model, "tiny")
    model = tiny_encodec(n_codebooks=4, codebook_size=32)  # the same weights, transformers' own padding
    assert (codec.sample_rate, codec.hop_length, codec.frame_rate, codec.n_codebooks, codec.codebook_size) == (24000, 320, 75.0, 4, 32)
    mel_cfg = MelConfig(sample_rate=24000, hop_length=320)
    for n in [320, 1000, 4801, 12345]:
        x = torch.randn(2, 1, n) * 0.3
        ours = codec.encode(x, 24000)
        with torch.no_grad():
            ref = model.encode(x, bandwidth=model.config.target_bandwidths[-1]).audio_codes[0]  # (B, K, T)
        assert torch.equal(ours, ref)
        assert ours.dtype == torch.int64 and ours.shape == (2, 4, -(-n // 320))
        assert ours.shape[-1] == causal_log_mel(x[0, 0], mel_cfg).shape[0]
        if n > 4000:
            assert len(torch.unique(ours[:, 0])) > 1  # codes carry information


def test_fast_padding_gives_transformers_outputs_and_gradients():
    """halm's reflect padding (slices + cat) replaces F.pad's slow CPU kernel: the same numbers, forward and backward."""
    ours, ref = fast_padding(tiny_encodec(seed=3).train()), tiny_encodec(seed=3).train()
    for n in [100, 320, 2401, 9600]:  # 100: shorter than some paddings (transformers' own path)
        x = torch.randn(2, 1, n) * 0.3
        outs = []
        for m in (ours, ref):
            m.zero_grad()
            y = m.decoder(m.encoder(x))
            (y ** 2).mean().backward()
            outs.append((y.detach(), [p.grad.clone() for p in m.parameters() if p.grad is not None]))
        assert torch.equal(outs[0][0], outs[1][0])
        assert len(outs[0][1]) == len(outs[1][1]) > 0 and all(torch.equal(a, b) for a, b in zip(*(o[1] for o in outs)))


def test_fewer_codebooks_and_decode_prefix(model):
    codec = Codec(model, "tiny", n_codebooks=2)
    x = torch.randn(1, 1, 3200) * 0.3
    codes = codec.encode(x, 24000)
    assert codes.shape == (1, 2, 10)
    assert torch.equal(codes, Codec(model, "tiny").encode(x, 24000)[:, :2])
    for k in (1, 2):
        wav = codec.decode(codes[:, :k])
        assert wav.shape == (1, 1, 3200)
        with torch.no_grad():
            ref = model.decode(codes[None, :, :k], [None]).audio_values
        torch.testing.assert_close(wav, ref)
    with pytest.raises(CodecError, match=r"codes must be in \[0, 32\)"):
        codec.decode(torch.full((1, 1, 4), 40))
    assert codec.bitrate_kbps == pytest.approx(2 * 5 * 75 / 1000)


def test_resamples_and_masks_padding(model):
    codec = Codec(model, "tiny")
    x16 = torch.randn(1, 1, 16000) * 0.3
    assert codec.encode(x16, 16000).shape[-1] == 75
    x = torch.randn(2, 1, 6400) * 0.3
    garbage = x.clone()
    garbage[1, :, 3200:] = 5.0  # padding that must be ignored
    zeros = x.clone()
    zeros[1, :, 3200:] = 0.0
    assert torch.equal(codec.encode(garbage, 24000, lengths=[6400, 3200]), codec.encode(zeros, 24000))
    stereo = torch.randn(1, 2, 640) * 0.3
    assert torch.equal(codec.encode(stereo, 24000), codec.encode(stereo.mean(1, keepdim=True), 24000))


def test_save_load_roundtrip_and_identity(model, tmp_path):
    codec = Codec(model, "tiny")
    codec.save(tmp_path / "c32")
    loaded = Codec.load(tmp_path / "c32")
    x = torch.randn(1, 1, 4000) * 0.3
    assert torch.equal(loaded.encode(x, 24000), codec.encode(x, 24000))
    assert loaded.info().weights_sha256 == codec.info().weights_sha256
    assert Codec.load(tmp_path / "c32", bandwidth=0.75).n_codebooks == 2
    codec.save(tmp_path / "c16", dtype=torch.float16)
    assert (tmp_path / "c16" / "model.safetensors").stat().st_size < 0.6 * (tmp_path / "c32" / "model.safetensors").stat().st_size
    assert Codec.load(tmp_path / "c16").encode(x, 24000).shape == (1, 4, 13)
    other = Codec.load(tiny_codec_dir(tmp_path / "other", seed=1))
    assert other.info().weights_sha256 != codec.info().weights_sha256


def _to_original_layout(model) -> dict:
    """transformers EncodecModel weights -> the facebookresearch/encodec .th layout (what users have on disk):
    SConv1d keeps its Conv1d at `.conv.conv.`, SConvTranspose1d at `.convtr.convtr.`, weight norm as
    weight_g / weight_v, codebooks at `quantizer.vq.layers.N._codebook.`."""
    renames = {}
    for path, module in model.named_modules():
        kind = type(module).__name__
        if kind in ("EncodecConv1d", "EncodecConvTranspose1d"):
            inner = "conv.conv" if kind == "EncodecConv1d" else "convtr.convtr"
            renames[f"{path}.conv."] = f"{path}.{inner}."
    out = {}
    for k, v in model.state_dict().items():
        n = k
        for old, new in renames.items():
            if n.startswith(old):
                n = new + n[len(old):]
                break
        n = n.replace(".parametrizations.weight.original0", ".weight_g").replace(".parametrizations.weight.original1", ".weight_v")
        n = n.replace("quantizer.layers.", "quantizer.vq.layers.").replace(".codebook.", "._codebook.")
        n = n.replace("encoder.layers.", "encoder.model.").replace("decoder.layers.", "decoder.model.")
        out[n] = v
    return out


def test_original_th_checkpoint_is_converted(model, tmp_path):
    state = model.state_dict()
    original = _to_original_layout(model)
    assert any(".convtr.convtr.weight_g" in k for k in original) and any("._codebook.embed" in k for k in original)
    assert any(k.startswith("encoder.model.0.conv.conv.") for k in original)
    converted = convert_original_state_dict(original)
    assert set(converted) == set(state)
    th = tmp_path / "encodec_24khz-test.th"
    torch.save(original, th)
    model.config.save_pretrained(tmp_path)  # a tiny config beside it; without one the official 24 kHz config is used
    codec = Codec.load(th)
    x = torch.randn(1, 1, 4000) * 0.3
    assert torch.equal(codec.encode(x, 24000), Codec(model, "ref").encode(x, 24000))


def test_official_24khz_config_matches_published_sizes():
    from halm.codec.model import _config_for_original_24khz

    cfg = _config_for_original_24khz()
    assert int(np.prod(cfg.upsampling_ratios)) == 320 and cfg.codebook_size == 1024
    assert cfg.num_quantizers == 32


def test_hub_name_offline_and_bad_paths_give_clear_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CodecError, match="never downloads") as e:
        Codec.load("facebook/encodec_24khz")
    assert "--codec" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CodecError, match="no config.json"):
        Codec.load(tmp_path / "empty")
    (tmp_path / "x.bin").write_bytes(b"0")
    with pytest.raises(CodecError, match="expected an original EnCodec .th file"):
        Codec.load(tmp_path / "x.bin")
    with pytest.raises(CodecError, match="n_codebooks must be in 1..4"):
        Codec.load(tiny_codec_dir(tmp_path / "t"), n_codebooks=9)


def test_snake_decoder_codec_saves_loads_and_streams(tmp_path):
    from transformers import EncodecModel

    from halm.codec.model import Snake, build_encodec
    from halm.codec.streaming import StreamingDecoder

    model = tiny_encodec(decoder_activation="snake")
    assert not any(isinstance(m, torch.nn.ELU) for m in model.decoder.modules())
    # before each of the 4 upsamplings, 2 in each residual block, before the last conv
    assert sum(isinstance(m, Snake) for m in model.decoder.modules()) == 13
    assert any(isinstance(m, torch.nn.ELU) for m in model.encoder.modules())  # the encoder keeps its ELUs
    codec = Codec(model, "snake")
    codec.save(tmp_path / "c")
    loaded = Codec.load(tmp_path / "c")
    wav = torch.randn(1, 1, 24000, generator=torch.Generator().manual_seed(0)) * 0.3
    codes = codec.encode(wav, 24000)
    assert torch.equal(loaded.encode(wav, 24000), codes) and torch.equal(loaded.decode(codes), codec.decode(codes))
    plain = EncodecModel(model.config).eval()  # the same weights with ELUs decode differently: the activation matters
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.endswith("alpha")})
    assert not torch.allclose(plain.decode(codes[None], [None])[0], codec.decode(codes), atol=1e-3)
    stream = StreamingDecoder(loaded)
    parts = [stream.decode(codes[:, :1, :10])] + [stream.decode(codes[:, :1, t:t + 1]) for t in range(10, codes.shape[-1])]
    torch.testing.assert_close(torch.cat(parts, dim=1), loaded.decode(codes[:, :1])[:, 0], atol=1e-6, rtol=0)
    model.config.decoder_activation = "gelu"
    with pytest.raises(CodecError, match="decoder_activation"):
        build_encodec(model.config)


def _voice_the_branch(model, f0_hz: float, amps_bias: list[float]):
    """Make the harmonic branch read a constant voiced F0 and play fixed harmonic amplitudes."""
    import math

    with torch.no_grad():
        branch = model.harmonic
        branch.pitch.weight.zero_()
        branch.pitch.bias.copy_(torch.tensor([math.log(f0_hz / 150.0), 20.0]))  # voicing gate ~1
        branch.amps[-1].bias.copy_(torch.tensor(amps_bias))


def test_harmonic_branch_starts_silent_renders_the_pitch_it_reads_and_round_trips(tmp_path):
    from halm.metrics.pitch import yin_f0

    model = tiny_encodec(harmonics=16, decoder_activation="snake")
    codec = Codec(model, "harmonic")
    wav = torch.randn(1, 1, 24000, generator=torch.Generator().manual_seed(0)) * 0.3
    codes = codec.encode(wav, 24000)
    with torch.no_grad():
        plain = model.decoder(model.quantizer.decode(codes.transpose(0, 1)))  # (1, 1, N): the decoder alone
    # a new branch adds nothing: the codec decodes as its decoder alone
    torch.testing.assert_close(codec.decode(codes), plain, atol=1e-6, rtol=0)
    # a branch reading 180 Hz with one harmonic on plays a 180 Hz sine (the decoder's own output subtracted)
    _voice_the_branch(model, 180.0, [0.2] + [0.0] * 15)
    tone = (codec.decode(codes) - plain)[0, 0].numpy()
    spec = np.abs(np.fft.rfft(tone))
    assert abs(np.fft.rfftfreq(len(tone), 1 / 24000)[spec.argmax()] - 180.0) < 2.0
    assert abs(np.median(yin_f0(tone, 24000)) - 180.0) < 3.0
    assert abs(tone.std() - 0.2 / np.sqrt(2)) < 0.01
    # harmonics above 0.95 x Nyquist stay silent: at 1000 Hz only harmonics 1..11 sound
    _voice_the_branch(model, 1000.0, [0.1] * 16)
    tone = (codec.decode(codes) - plain)[0, 0].numpy()
    spec = np.abs(np.fft.rfft(tone)) ** 2
    freqs = np.fft.rfftfreq(len(tone), 1 / 24000)
    assert spec[freqs > 11500].sum() < 1e-6 * spec.sum() and spec[(freqs > 10900) & (freqs < 11100)].sum() > 0.05 * spec.sum()
    # the branch and its size travel in config.json + model.safetensors
    codec.save(tmp_path / "h")
    loaded = Codec.load(tmp_path / "h")
    assert loaded.model.config.harmonics == 16 and torch.equal(loaded.decode(codes), codec.decode(codes))


def test_envelope_keeps_a_formant_where_it_is_whatever_the_pitch_and_the_gate_hands_voiced_frames_over(tmp_path):
    from halm.codec.harmonic import hz_to_mel

    E = 48
    model = tiny_encodec(harmonics=32, decoder_activation="snake", harmonic_envelope=E)
    codec = Codec(model, "harmonic")
    wav = torch.randn(1, 1, 24000, generator=torch.Generator().manual_seed(0)) * 0.3
    codes = codec.encode(wav, 24000)
    with torch.no_grad():
        plain = model.decoder(model.quantizer.decode(codes.transpose(0, 1)))  # (1, 1, N)
    assert (codec.decode(codes) - plain).abs().max() < 2e-3  # a new envelope starts at -80 dB per harmonic
    # an envelope with one narrow peak at 1 kHz: a 200 Hz voice sounds its 5th harmonic, a 250 Hz one its 4th
    grid = torch.linspace(0, float(hz_to_mel(12000.0)), E)
    peak = (1 - (grid - hz_to_mel(1000.0)).abs() / (grid[1] - grid[0])).clamp(min=0) * 14 - 10  # before exp_sigmoid
    for f0 in (200.0, 250.0):
        _voice_the_branch(model, f0, peak.tolist())
        tone = (codec.decode(codes) - plain)[0, 0].numpy()
        spec = np.abs(np.fft.rfft(tone)) ** 2
        freqs = np.fft.rfftfreq(len(tone), 1 / 24000)
        assert abs(freqs[spec.argmax()] - 1000.0) < 3.0
        assert spec[np.abs(freqs - 1000.0) < 10].sum() > 0.9 * spec.sum()
    # decoder_gate 1 on a voiced frame: the decoding is the branch alone; on an unvoiced one, the decoder alone
    gated = tiny_encodec(harmonics=32, decoder_activation="snake", harmonic_envelope=E, decoder_gate=1.0)
    gcodec = Codec(gated, "gated")
    _voice_the_branch(gated, 250.0, peak.tolist())
    with torch.no_grad():
        q = gated.quantizer.decode(codes.transpose(0, 1))
        h = gated.decoder.layers[1](gated.decoder.layers[0](q))
        alone, _ = gated.harmonic(q, h)
    torch.testing.assert_close(gcodec.decode(codes), alone, atol=1e-6, rtol=0)
    with torch.no_grad():
        gated.harmonic.pitch.bias[1] = -30.0  # unvoiced
    torch.testing.assert_close(gcodec.decode(codes), plain, atol=1e-6, rtol=0)
    # the settings travel in config.json
    gcodec.save(tmp_path / "g")
    loaded = Codec.load(tmp_path / "g").model.harmonic
    assert loaded.envelope == E and loaded.decoder_gate == 1.0


@pytest.mark.parametrize("branch", [{}, {"harmonic_envelope": 12, "decoder_gate": 0.7}])
def test_harmonic_branch_is_causal_and_streams_as_the_full_decode(branch):
    from halm.codec.harmonic import decode_latent
    from halm.codec.streaming import StreamingDecoder

    model = tiny_encodec(harmonics=8, decoder_activation="snake", seed=1, **branch)
    with torch.no_grad():  # a pitch and envelope that vary with the codes
        g = torch.Generator().manual_seed(1)
        for p in model.harmonic.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    codec = Codec(model, "harmonic")
    wav = torch.randn(1, 1, 24000, generator=torch.Generator().manual_seed(2)) * 0.3
    codes = codec.encode(wav, 24000)[:, :2]  # (1, 2, 75)
    full = codec.decode(codes)[:, 0]
    with torch.no_grad():
        _, branch_only = decode_latent(model, model.quantizer.decode(codes.transpose(0, 1)), parts=True)
    assert branch_only.abs().max() > 0.01  # the branch sounds
    stream = StreamingDecoder(codec)
    parts = [stream.decode(codes[..., :10])] + [stream.decode(codes[..., t:t + 1]) for t in range(10, codes.shape[-1])]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)
    for t in (12, 40):  # changing frames after t leaves every sample of frames 0..t as it was (EnCodec reflect-pads
        # its first convolution, so its first frames see a few later ones, with or without the branch)
        changed = codes.clone()
        changed[..., t + 1:] = (changed[..., t + 1:] + 5) % 32
        torch.testing.assert_close(codec.decode(changed)[:, 0, : (t + 1) * 320], full[:, : (t + 1) * 320], atol=1e-6, rtol=0)
