"""Pretrained scorers (VGGish, CLAP, AST) plumbed with tiny random weights in the official layouts."""

import math

import numpy as np
import pytest
import torch

from halm.metrics.external import VGGish, load_scorer, vggish_examples, vggish_mel_matrix
from tests.helpers import tiny_ast_dir, tiny_clap_dir, tiny_vggish_file


def noise(seconds, sr, seed=0):
    return (np.random.default_rng(seed).standard_normal(int(seconds * sr)) * 0.1).astype(np.float32)


def test_full_size_vggish_has_torchvggish_names_and_shapes():
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in VGGish().state_dict().items()}
    want = {"features.0.weight": (64, 1, 3, 3), "features.3.weight": (128, 64, 3, 3),
            "features.6.weight": (256, 128, 3, 3), "features.8.weight": (256, 256, 3, 3),
            "features.11.weight": (512, 256, 3, 3), "features.13.weight": (512, 512, 3, 3),
            "embeddings.0.weight": (4096, 512 * 6 * 4), "embeddings.2.weight": (4096, 4096),
            "embeddings.4.weight": (128, 4096)}
    assert {k: shapes[k] for k in want} == want
    assert set(shapes) == set(want) | {k.replace("weight", "bias") for k in want}


def test_vggish_frontend_follows_the_published_recipe():
    sr = 16000
    t = np.arange(3 * sr) / sr
    tone = (0.5 * np.sin(2 * math.pi * 1000 * t)).astype(np.float32)
    ex = vggish_examples(tone)
    assert ex.shape == (3, 1, 96, 64)  # 1 + (48000 - 400) // 160 = 298 frames -> 3 whole examples
    # the same log-mel by explicit framing, a periodic Hann and numpy's rfft
    frames = np.stack([tone[i * 160:i * 160 + 400] for i in range(96)]).astype(np.float64)
    spec = np.abs(np.fft.rfft(frames * np.hanning(401)[:-1], 512))
    want = np.log(spec @ vggish_mel_matrix().double().numpy() + 0.01)
    np.testing.assert_allclose(ex[0, 0].numpy(), want, atol=1e-4)
    # a 1 kHz tone peaks in the band whose centre (in HTK mel) is nearest to 1 kHz
    mel = lambda f: 1127 * np.log1p(f / 700)  # noqa: E731
    centres = np.linspace(mel(125), mel(7500), 66)[1:-1]
    assert ex[0, 0].mean(0).argmax().item() == np.abs(centres - mel(1000)).argmin()
    w = vggish_mel_matrix()
    assert w.shape == (257, 64) and (w[0] == 0).all() and (w.max(0).values <= 1).all()
    assert vggish_examples(np.zeros(15599, np.float32)).shape[0] == 0  # 0.975 s is needed for one example


def test_vggish_scorer_loads_the_torchvggish_layout_and_embeds_every_example(tmp_path):
    from halm.audio import resample

    s = load_scorer(f"vggish:{tiny_vggish_file(tmp_path / 'vggish.pth')}", "fad")
    clips = [(noise(2.0, 24000), 24000), (noise(1.5, 16000, 1), 16000)]
    emb = s.frame_embeddings(clips)
    assert emb.shape == (2 + 1, 12)
    with torch.no_grad():
        direct = s.model(vggish_examples(resample(clips[0][0], 24000, 16000)))
    np.testing.assert_allclose(emb[:2], direct.numpy(), atol=1e-6)
    assert (emb < 0).any()  # the embedding is the linear layer's output: no final ReLU
    from safetensors.torch import save_file

    save_file(dict(s.model.state_dict()), str(tmp_path / "vggish.safetensors"))
    np.testing.assert_allclose(load_scorer(f"vggish:{tmp_path / 'vggish.safetensors'}", "fad").frame_embeddings(clips), emb)
    with pytest.raises(ValueError, match="shorter than one VGGish example"):
        s.frame_embeddings([(noise(0.5, 16000), 16000)])


def test_scorer_errors_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="torchvggish/releases"):
        load_scorer(f"vggish:{tmp_path / 'missing.pth'}", "fad")
    torch.save({"layer.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="torchvggish's layout"):
        load_scorer(f"vggish:{tmp_path / 'other.pth'}", "fad")
    with pytest.raises(FileNotFoundError, match="ClapModel.from_pretrained"):
        load_scorer(f"clap:{tmp_path}", "clap")
    with pytest.raises(ValueError, match="unknown scorer"):
        load_scorer("passt:/x", "kl")
    with pytest.raises(ValueError, match="cannot give the FAD"):
        load_scorer(f"ast:{tmp_path}", "fad")
    assert load_scorer("judge", "fad") is None


def test_laion_clap_checkpoint_without_the_package_says_how(tmp_path):
    try:
        import laion_clap  # noqa: F401
        pytest.skip("laion_clap is installed here")
    except ImportError:
        pass
    (tmp_path / "630k-audioset-best.pt").write_bytes(b"x")
    with pytest.raises(ImportError, match="laion_clap.*clap:DIR"):
        load_scorer(f"laion-clap:{tmp_path / '630k-audioset-best.pt'}", "clap")


def test_hf_clap_scorer_equals_the_model_on_its_own_features(tmp_path):
    s = load_scorer(f"clap:{tiny_clap_dir(tmp_path / 'clap')}", "clap")
    clips = [(noise(1.0, 48000), 48000), (noise(3.0, 48000, 1), 48000)]  # the second is cut to max_length_s (2 s)
    emb = s.clip_embeddings(clips)
    assert emb.shape == (2, 16)
    f = s.features([clips[0][0], clips[1][0][:96000]], sampling_rate=48000, return_tensors="pt", truncation="rand_trunc")
    with torch.no_grad():
        direct = s.model.get_audio_features(input_features=f["input_features"])
    np.testing.assert_allclose(emb, s._tensor(direct).numpy(), atol=1e-5)
    np.testing.assert_array_equal(s.clip_embeddings(clips), emb)  # no random crop
    caps = ["a dog barks twice", "slow sad piano"]
    t = s.tokenizer(caps, padding=True, return_tensors="pt")
    with torch.no_grad():
        direct_t = s.model.get_text_features(input_ids=t["input_ids"], attention_mask=t["attention_mask"])
    np.testing.assert_allclose(s.text_embeddings(caps), s._tensor(direct_t).numpy(), atol=1e-6)
    assert load_scorer(f"clap:{tmp_path / 'clap'}", "fad") is s  # one load serves FAD and CLAP


def test_ast_scorer_gives_sigmoid_label_posteriors(tmp_path):
    s = load_scorer(f"ast:{tiny_ast_dir(tmp_path / 'ast')}", "kl")
    p = s.posteriors([(noise(1.0, 16000), 16000), (noise(0.5, 24000, 1), 24000)])
    assert p.shape == (2, 5) and s.multilabel and ((p > 0) & (p < 1)).all()
    f = s.features([noise(1.0, 16000)], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        np.testing.assert_allclose(p[0], torch.sigmoid(s.model(input_values=f["input_values"]).logits)[0].numpy(), atol=1e-6)
    assert len(s.labels) == 5
