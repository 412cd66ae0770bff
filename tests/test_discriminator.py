"""The multi-scale STFT discriminator and adversarial codec training (resumable, init from a run without one)."""

import json

import torch
from safetensors.torch import load_file

from halm.codec.discriminator import MultiScaleSTFTDiscriminator, discriminator_loss, generator_losses
from halm.codec.train import CodecTrainConfig, train_codec
from halm.data.synth import synthesize
from tests.test_codec_train import TINY


def test_scales_shapes_and_where_the_gradients_go():
    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator(n_ffts=(512, 128), filters=4)
    real, fake = torch.randn(2, 4800), torch.randn(2, 4800, requires_grad=True)
    out = disc(real)
    assert len(out) == 2
    logits, feats = out[0]
    assert logits.shape[:2] == (2, 1) and logits.shape[2] == (4800 - 512) // 128 + 1  # frames of the 512-point STFT
    assert len(feats) == 5 and feats[1].shape[-1] == -(-feats[0].shape[-1] // 2)  # frequency halved by the strided conv
    adv, feat = generator_losses(disc, fake, real)
    (adv + feat).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0  # the decoder learns from it ...
    assert all(p.grad is None for p in disc.parameters())  # ... the discriminator does not
    assert all(p.requires_grad for p in disc.parameters())
    _, same = generator_losses(disc, real, real)
    assert same.item() == 0.0 and feat.item() > 0.1  # feature matching: zero only for the real audio itself
    d = discriminator_loss(disc, fake, real)
    d.backward()
    assert all(p.grad is not None for p in disc.parameters())


def test_discriminator_learns_to_tell_noise_from_tones():
    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator(n_ffts=(256,), filters=4)
    opt = torch.optim.Adam(disc.parameters(), lr=3e-3)
    t = torch.arange(2400) / 24000
    real = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (110.0, 220.0, 330.0, 440.0)]) * 0.5
    fake = torch.randn(4, 2400) * 0.3
    first = discriminator_loss(disc, fake, real).item()
    for _ in range(30):
        loss = discriminator_loss(disc, fake, real)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first  # hinge loss starts near 2 (logits ~0)
    assert generator_losses(disc, fake, real)[0] > generator_losses(disc, real, real)[0]


def test_adversarial_training_resumes_identically_and_starts_from_a_run_without_one(tmp_path):
    synthesize("speech", tmp_path / "speech", 0.1, seed=0, progress=False)
    data = [str(tmp_path / "speech")]
    adv = {**TINY, "threads": 1, "adv_weight": 3.0, "disc_filters": 4}
    train_codec(CodecTrainConfig(**{**adv, "steps": 4}), data, tmp_path / "full", progress=False)
    train_codec(CodecTrainConfig(**{**adv, "steps": 3}), data, tmp_path / "resumed", progress=False)
    train_codec(CodecTrainConfig(**{**adv, "steps": 4}), data, tmp_path / "resumed", progress=False)
    for name in ("model", "discriminator"):
        a = load_file(str(tmp_path / "full" / "train_state" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "resumed" / "train_state" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["adv"] > 0 and r["feat"] > 0 and r["disc"] > 0 for r in rows)
    # a run trained without the discriminator continues with a fresh one
    train_codec(CodecTrainConfig(**{**TINY, "threads": 1, "steps": 3}), data, tmp_path / "plain", progress=False)
    assert not (tmp_path / "plain" / "train_state" / "discriminator.safetensors").exists()
    train_codec(CodecTrainConfig(**{**adv, "steps": 5}), data, tmp_path / "tuned", progress=False,
                init_from=tmp_path / "plain")
    st = torch.load(tmp_path / "tuned" / "train_state" / "trainer.pt", weights_only=True)
    assert st["step"] == 5 and "disc_optimizer" in st
    rows = [json.loads(x) for x in (tmp_path / "tuned" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 5]
