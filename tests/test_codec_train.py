import json

import pytest
import torch
from safetensors.torch import load_file

from halm.codec.losses import pitch_loss, pitch_targets
from halm.codec.model import Codec
from halm.codec.rvq import RVQTrainer
from halm.codec.train import CodecTrainConfig, resolve_device, train_codec
from halm.data.synth import synthesize

TINY = dict(num_filters=4, hidden_size=16, num_lstm_layers=1, n_codebooks=3, codebook_size=32, batch_size=2,
            segment_seconds=0.25, kmeans_iters=3, log_every=1, ckpt_every=3, lr=1e-3, ae_warmup_steps=2)


def _quantizer(cfg: CodecTrainConfig):
    from transformers import EncodecModel

    return EncodecModel(cfg.encodec_config()).quantizer


def test_kmeans_init_and_ema_codebooks():
    cfg = CodecTrainConfig(**{**TINY, "ema_decay": 0.0})
    q = _quantizer(cfg)
    rvq = RVQTrainer(q, cfg)
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(8, 16) * 3
    emb = (centers[torch.randint(8, (4 * 50,), generator=g)] + 0.01 * torch.randn(200, 16, generator=g))
    emb = emb.reshape(4, 50, 16).transpose(1, 2)  # (B, D, T)
    _, commit_random, _ = rvq(emb, 1, g, update=False)
    rvq.kmeans_init(emb, g, frames_per_step=emb.shape[0] * emb.shape[2])
    _, commit_kmeans, codes = rvq(emb, 1, g, update=False)
    assert commit_kmeans < 0.05 * commit_random
    # the codes we train with are the codes transformers' inference quantizer picks
    assert torch.equal(codes[0], q.encode(emb, bandwidth=None)[0].reshape(-1))
    # decay 0: after one update every used code is the mean of its frames, unused ones are re-seeded
    cb = q.layers[0].codebook
    x = emb.transpose(1, 2).reshape(-1, 16)
    _, _, used = rvq(emb, 1, g, update=True)  # the assignment the update was computed from
    idx = used[0]
    for k in idx.unique()[:5]:
        torch.testing.assert_close(cb.embed[k], x[idx == k].mean(0), atol=1e-3, rtol=1e-3)
    assert (cb.cluster_size >= cfg.dead_code_threshold).all()  # dead codes were replaced


@pytest.mark.parametrize("every", [True, False])
def test_ema_every_codebook_updates_codebooks_beyond_the_dropout_draw(every):
    cfg = CodecTrainConfig(**{**TINY, "ema_every_codebook": every})
    rvq = RVQTrainer(_quantizer(cfg), cfg)
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(2, 16, 200, generator=g)  # 400 frames: a residual is left after every codebook of 32
    rvq.kmeans_init(emb, g, frames_per_step=400)
    before = [cb.embed_avg.clone() for cb in rvq.layers]
    before_q0 = rvq.layers[0].embed.clone()  # the step quantizes with the codebook as it was before its update
    quantized, commit, codes = rvq(emb, 1, g)  # a step whose dropout draw kept 1 of 3 codebooks
    changed = [not torch.equal(b, cb.embed_avg) for b, cb in zip(before, rvq.layers)]
    assert changed == [True, every, every]
    # what the decoder and the loss see is the same either way: the first codebook only
    assert codes.shape == (1, 400)
    torch.testing.assert_close(quantized, before_q0[codes[0]].reshape(2, 200, 16).transpose(1, 2))


def test_straight_through_gradients_reach_the_encoder():
    cfg = CodecTrainConfig(**TINY)
    rvq = RVQTrainer(_quantizer(cfg), cfg)
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(2, 16, 10, requires_grad=True)
    rvq.kmeans_init(emb.detach(), g, frames_per_step=emb.shape[0] * emb.shape[2])
    quantized, commit, _ = rvq(emb, 3, g)
    (quantized.sum() + commit).backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0


@pytest.mark.slow
def test_training_exports_and_resumes_identically(tmp_path):
    synthesize("speech", tmp_path / "speech", 0.15, seed=0, progress=False)
    data = [str(tmp_path / "speech")]
    cfg = CodecTrainConfig(**{**TINY, "steps": 6, "threads": 1})
    train_codec(cfg, data, tmp_path / "full", progress=False)
    # the first part names its device ("auto" resolves to it here): the device may change on resume
    train_codec(CodecTrainConfig(**{**TINY, "steps": 3, "threads": 1, "device": "cpu"}), data, tmp_path / "resumed", progress=False)
    train_codec(cfg, data, tmp_path / "resumed", progress=False)  # the same command again continues
    a = load_file(str(tmp_path / "full" / "train_state" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "train_state" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7)) and all(r["mel"] > 0 for r in rows)
    codec = Codec.load(tmp_path / "full" / "codec")
    assert codec.n_codebooks == 3 and codec.hop_length == 320 and codec.codebook_size == 32
    codes = codec.encode(torch.randn(1, 1, 2400) * 0.1, 24000)
    assert codes.shape == (1, 3, 8)
    with pytest.raises(ValueError, match="other settings"):
        train_codec(CodecTrainConfig(**{**TINY, "steps": 6, "num_filters": 8}), data, tmp_path / "full", progress=False)


def test_device_setting_resolves_or_says_what_is_missing():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="cpu or cuda"):
        resolve_device("meta")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match=f"has {n} CUDA device"):
        resolve_device(f"cuda:{n}")


def test_init_from_continues_another_run(tmp_path):
    """--init-from with the same settings is the same trajectory as one run; with other settings it
    continues from the other run's step, and is recorded."""
    synthesize("speech", tmp_path / "speech", 0.1, seed=0, progress=False)
    data = [str(tmp_path / "speech")]
    cfg = CodecTrainConfig(**{**TINY, "steps": 4, "threads": 1, "ckpt_every": 2})
    train_codec(cfg, data, tmp_path / "one", progress=False)
    train_codec(CodecTrainConfig(**{**TINY, "steps": 2, "threads": 1, "ckpt_every": 2}), data, tmp_path / "a", progress=False)
    train_codec(cfg, data, tmp_path / "b", progress=False, init_from=tmp_path / "a")
    one = load_file(str(tmp_path / "one" / "train_state" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "train_state" / "model.safetensors"))
    assert all(torch.equal(one[k], b[k]) for k in one)
    assert json.loads((tmp_path / "b" / "init_from.json").read_text())["step"] == 2
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 4]
    # a run killed after its checkpoint at step 4 had logged steps 5-6: the rerun logs them once
    with open(tmp_path / "one" / "metrics.jsonl", "a") as f:
        f.write("".join(json.dumps({"step": s, "mel": 9.9}) + "\n" for s in (5, 6)))
    train_codec(CodecTrainConfig(**{**cfg.__dict__, "steps": 6}), data, tmp_path / "one", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and rows[-1]["mel"] != 9.9
    other = CodecTrainConfig(**{**TINY, "steps": 3, "threads": 1, "dead_code_threshold": 0.5, "lr": 1e-5})
    train_codec(other, data, tmp_path / "c", progress=False, init_from=tmp_path / "a")  # a recipe change is allowed
    st = torch.load(tmp_path / "c" / "train_state" / "trainer.pt", weights_only=True)
    assert st["step"] == 3 and st["optimizer"]["param_groups"][0]["lr"] == 1e-5  # not the checkpoint's 1e-3
    done = CodecTrainConfig(**{**TINY, "steps": 2, "threads": 1})  # already there: still a complete run folder
    train_codec(done, data, tmp_path / "e", progress=False, init_from=tmp_path / "a")
    assert Codec.load(tmp_path / "e" / "codec").n_codebooks == 3
    with pytest.raises(ValueError, match="cannot change mid-training"):
        train_codec(CodecTrainConfig(**{**TINY, "steps": 4, "num_filters": 8}), data, tmp_path / "f", progress=False,
                    init_from=tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_codec(cfg, data, tmp_path / "d", progress=False, init_from=tmp_path / "nothing")
    # a run made before a setting existed was trained with its old behaviour, and resumes only with it
    saved = json.loads((tmp_path / "a" / "train_config.json").read_text())
    del saved["ema_every_codebook"]
    (tmp_path / "a" / "train_config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="ema_every_codebook=false"):
        train_codec(cfg, data, tmp_path / "a", progress=False)
    legacy = CodecTrainConfig(**{**TINY, "steps": 3, "threads": 1, "ckpt_every": 2, "ema_every_codebook": False})
    train_codec(legacy, data, tmp_path / "a", progress=False)


def test_data_dependent_init_makes_the_latent_depend_on_the_audio():
    from transformers import EncodecModel

    from halm.codec.train import data_dependent_init

    cfg = CodecTrainConfig(**{**TINY, "num_filters": 8, "hidden_size": 32})
    torch.manual_seed(0)
    model = EncodecModel(cfg.encodec_config())
    audio = torch.randn(2, 1, 6000) * 0.1

    def info_ratio():
        with torch.no_grad():
            z = model.encoder(audio)  # (B, D, T)
        return float(z.std(dim=2).mean() / z.mean(dim=2).abs().mean())

    before = info_ratio()
    data_dependent_init(model, audio)
    assert info_ratio() > 5 * before
    with torch.no_grad():
        out = model.decoder(model.encoder(audio))
    assert abs(float(out.std()) / float(audio.std()) - 1) < 0.05


def _tone_then_silence(sr: int = 24000) -> torch.Tensor:
    t = torch.arange(sr) / sr
    x = 0.3 * torch.sin(2 * torch.pi * 440 * t)
    x[sr // 2:] = 0.0  # digital silence, as in the synthetic corpora
    return x


def test_mel_loss_ignores_what_is_80_db_below_the_clip_peak():
    from halm.codec.losses import MultiScaleMelLoss

    x = _tone_then_silence()[None]
    hiss = x + 1e-6 * torch.randn_like(x)  # -110 dB: inaudible next to the tone
    relative, fixed = MultiScaleMelLoss(24000), MultiScaleMelLoss(24000, floor_db=None)
    assert relative(hiss, x) < 1e-3 < fixed(hiss, x)  # the fixed 1e-5 floor pays for the depth of silence
    wrong = x.roll(12000, dims=-1)  # the tone in the other half: a real error
    assert relative(wrong, x) > 1.0


def test_hop_periodicity_finds_a_waveform_that_repeats_every_frame():
    from halm.codec.eval import lag_autocorr

    g = torch.Generator().manual_seed(0)
    frame = torch.randn(320, generator=g)
    buzz = frame.repeat(30) * torch.linspace(0.2, 1.0, 9600)  # the same waveform each frame, louder over time
    assert lag_autocorr(buzz, 320) > 0.99
    assert abs(lag_autocorr(torch.randn(9600, generator=g), 320)) < 0.05
    t = torch.arange(9600) / 24000
    voice = torch.sin(2 * torch.pi * 187.5 * t)  # 320 samples = 2.5 periods of 187.5 Hz: opposite phase
    assert lag_autocorr(voice, 320) < -0.99 and lag_autocorr(voice, 128) > 0.99  # 128 samples = one period


def test_frame_locked_share_measures_one_waveform_stamped_on_every_frame():
    from halm.codec.eval import frame_locked_share

    g = torch.Generator().manual_seed(0)
    frame = torch.randn(320, generator=g)
    buzz = frame.repeat(30)
    assert frame_locked_share(buzz, 320) > 0.999
    noise = torch.randn(9600 * 10, generator=g)
    assert frame_locked_share(noise, 320) < 3 / 300  # ~1/frames
    t = torch.arange(24000) / 24000
    voice = torch.sin(2 * torch.pi * 130.0 * t)  # drifts in phase against the 75 Hz frames
    assert frame_locked_share(voice, 320) < 0.01
    voice_at_2_frames = torch.sin(2 * torch.pi * 150.0 * t)  # 150 Hz: 2 periods per frame, locked
    assert frame_locked_share(voice_at_2_frames, 320) > 0.99
    tone = torch.sin(2 * torch.pi * 130.0 * torch.arange(9600) / 24000) * (2 * frame.pow(2).mean()).sqrt()  # rms = the frame's
    half = 0.5 * buzz + 0.5 * tone
    assert 0.4 < frame_locked_share(half, 320) < 0.6  # equal energies: half of it is locked
    assert frame_locked_share(torch.zeros(9600), 320) == 0.0 and frame_locked_share(frame, 320) == 0.0


def test_codec_eval_metrics_floor_at_80_db_and_rank_real_errors():
    from halm.codec.eval import mel_l1, si_snr, stft_distance

    x = _tone_then_silence()
    hiss = x + 1e-6 * torch.randn_like(x)
    assert mel_l1(x, hiss, 24000) < 1e-3 and stft_distance(x, hiss) < 1e-3 and si_snr(x, hiss) > 80
    worse = 0.5 * x  # 6 dB too quiet
    assert mel_l1(x, hiss, 24000) < mel_l1(x, worse, 24000) < mel_l1(x, torch.zeros_like(x), 24000)
    assert stft_distance(x, worse) < stft_distance(x, torch.zeros_like(x))


def test_pitch_targets_follow_the_input_at_codec_frames():
    sr, hop = 24000, 320
    t = torch.arange(int(0.5 * sr)) / sr
    tone = sum(torch.sin(2 * torch.pi * 180 * k * t) / k for k in range(1, 6)) * 0.3  # 180 Hz, 5 harmonics
    x = torch.cat([tone, torch.zeros(int(0.3 * sr))])[None, None]  # (1, 1, N): 0.5 s voiced, 0.3 s silent
    log_f0, voiced = pitch_targets(x, sr, hop, n_frames=60)
    assert log_f0.shape == voiced.shape == (1, 60)
    mid = slice(5, 30)  # frames well inside the tone (a frame lasts 13.3 ms)
    assert voiced[0, mid].all() and torch.allclose(log_f0[0, mid].exp(), torch.tensor(180.0), rtol=0.02)
    assert not voiced[0, 42:].any() and (log_f0[0, 42:] == 0).all()


def test_pitch_head_learns_and_resumes_identically(tmp_path):
    synthesize("speech", tmp_path / "speech", 0.1, seed=0, progress=False)
    data = [str(tmp_path / "speech")]
    cfg = {**TINY, "threads": 1, "pitch_weight": 1.0}
    train_codec(CodecTrainConfig(**{**cfg, "steps": 4}), data, tmp_path / "full", progress=False)
    train_codec(CodecTrainConfig(**{**cfg, "steps": 3}), data, tmp_path / "resumed", progress=False)
    train_codec(CodecTrainConfig(**{**cfg, "steps": 4}), data, tmp_path / "resumed", progress=False)
    a, b = (torch.load(tmp_path / r / "train_state" / "trainer.pt", weights_only=True) for r in ("full", "resumed"))
    assert all(torch.equal(a["pitch_head"][k], b["pitch_head"][k]) for k in a["pitch_head"])
    ma, mb = (load_file(str(tmp_path / r / "train_state" / "model.safetensors")) for r in ("full", "resumed"))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["pitch"] > 0 for r in rows)
    # the head's gradient reaches the encoder: the same run without it (the same random stream) ends elsewhere
    train_codec(CodecTrainConfig(**{**TINY, "threads": 1, "steps": 4}), data, tmp_path / "plain", progress=False)
    mp = load_file(str(tmp_path / "plain" / "train_state" / "model.safetensors"))
    enc = [k for k in ma if k.startswith("encoder.")]
    assert any(not torch.equal(ma[k], mp[k]) for k in enc)
    # a run without a head continues with a fresh one
    train_codec(CodecTrainConfig(**{**cfg, "steps": 6}), data, tmp_path / "tuned", progress=False, init_from=tmp_path / "plain")
    assert "pitch_head" in torch.load(tmp_path / "tuned" / "train_state" / "trainer.pt", weights_only=True)


def test_pitch_loss_falls_when_the_head_fits():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 8, 30, generator=g)  # (B, D, T)
    log_f0 = (q[:, 0] * 0.2 + 5.0).detach()  # F0 readable off the first latent channel
    voiced = q[:, 1] > 0
    head = torch.nn.Linear(8, 2)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    first = pitch_loss(head, q, log_f0, voiced).item()
    for _ in range(300):
        loss = pitch_loss(head, q, log_f0, voiced)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


def test_stft_loss_is_zero_on_a_match_ignores_deep_silence_and_has_finite_gradients():
    from halm.codec.losses import MultiResolutionSTFTLoss, MultiScaleMelLoss, stft_magnitudes

    loss = MultiResolutionSTFTLoss()
    x = _tone_then_silence()[None]
    assert loss(x, x).item() == 0.0
    assert loss(x + 1e-6 * torch.randn_like(x), x) < 1e-3  # -110 dB hiss: below the floor, as in the mel loss
    t = torch.arange(24000) / 24000
    voice = sum(torch.sin(2 * torch.pi * 120 * k * t + k) / k for k in range(1, 20))[None] * 0.1
    buzz = sum(torch.sin(2 * torch.pi * 75 * k * t + k) / k for k in range(1, 32))[None]
    buzz = buzz / buzz.std() * voice.std()  # the same loudness at the codec's frame rate
    assert loss(buzz, voice) > 1.0 > 20 * loss(voice * 1.01, voice)
    mel = MultiScaleMelLoss(24000)  # the trainer computes the spectra once for both losses: the same values
    sizes = set(loss.n_ffts) | set(mel.n_ffts)
    spectra = stft_magnitudes(buzz, sizes), stft_magnitudes(voice, sizes)
    assert torch.equal(loss(buzz, voice, spectra), loss(buzz, voice)) and torch.equal(mel(buzz, voice, spectra), mel(buzz, voice))
    for y0 in (torch.zeros_like(x), 1e-4 * torch.randn_like(x)):  # |STFT| = 0 everywhere (no NaN), nearly silent
        y = y0.requires_grad_()
        loss(y, x).backward()
        assert torch.isfinite(y.grad).all()
    assert y.grad.abs().sum() > 0


def test_stft_loss_reaches_the_codec_and_is_logged(tmp_path):
    synthesize("speech", tmp_path / "speech", 0.1, seed=0, progress=False)
    data = [str(tmp_path / "speech")]
    for name, extra in (("plain", {}), ("stft", {"stft_weight": 1.0})):
        train_codec(CodecTrainConfig(**{**TINY, "threads": 1, "steps": 3, **extra}), data, tmp_path / name, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "stft" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["stft"] > 0 for r in rows) and "stft" not in json.loads((tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()[0])
    ma, mb = (load_file(str(tmp_path / r / "train_state" / "model.safetensors")) for r in ("plain", "stft"))
    assert any(not torch.equal(ma[k], mb[k]) for k in ma if k.startswith("decoder."))


def test_harmonic_branch_trains_resumes_identically_and_joins_a_run_with_a_pitch_head(tmp_path):
    synthesize("speech", tmp_path / "speech", 0.1, seed=0, progress=False)
    data = [str(tmp_path / "speech")]
    cfg = {**TINY, "threads": 1, "pitch_weight": 1.0, "decoder_activation": "snake"}
    with pytest.raises(ValueError, match="needs pitch_weight"):
        train_codec(CodecTrainConfig(**{**cfg, "pitch_weight": 0.0, "harmonics": 4, "steps": 1}), data, tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="need a harmonic branch"):
        train_codec(CodecTrainConfig(**{**cfg, "branch_weight": 1.0, "steps": 1}), data, tmp_path / "y", progress=False)
    harm = {**cfg, "harmonics": 4, "branch_weight": 1.0}
    # the refused command left no settings behind: its corrected rerun in the same folder trains
    train_codec(CodecTrainConfig(**{**harm, "steps": 1}), data, tmp_path / "y", progress=False)
    train_codec(CodecTrainConfig(**{**harm, "steps": 4}), data, tmp_path / "full", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["branch"] > 0 for r in rows)  # the branch's own mel loss
    train_codec(CodecTrainConfig(**{**harm, "steps": 3}), data, tmp_path / "resumed", progress=False)
    train_codec(CodecTrainConfig(**{**harm, "steps": 4}), data, tmp_path / "resumed", progress=False)
    ma, mb = (load_file(str(tmp_path / r / "train_state" / "model.safetensors")) for r in ("full", "resumed"))
    assert any(k.startswith("harmonic.") for k in ma) and all(torch.equal(ma[k], mb[k]) for k in ma)
    assert ma["harmonic.amps.2.weight"].abs().max() > 0  # it left its silent start: the losses reach it
    codec = Codec.load(tmp_path / "full" / "codec")
    assert codec.model.config.harmonics == 4 and codec.decode(torch.zeros(1, 3, 5, dtype=torch.long)).shape == (1, 1, 1600)
    # a run with a plain pitch head gets the branch on --init-from; the branch starts from its head
    train_codec(CodecTrainConfig(**{**cfg, "steps": 4}), data, tmp_path / "head", progress=False)
    head = torch.load(tmp_path / "head" / "train_state" / "trainer.pt", weights_only=True)["pitch_head"]
    train_codec(CodecTrainConfig(**{**harm, "steps": 4}), data, tmp_path / "joined", progress=False, init_from=tmp_path / "head")
    mj = load_file(str(tmp_path / "joined" / "train_state" / "model.safetensors"))
    assert torch.equal(mj["harmonic.pitch.weight"], head["weight"]) and torch.equal(mj["harmonic.pitch.bias"], head["bias"])
    assert mj["harmonic.amps.2.weight"].abs().max() == 0  # not trained yet (already at --steps): still silent
    mh = load_file(str(tmp_path / "head" / "train_state" / "model.safetensors"))
    assert all(torch.equal(mh[k], mj[k]) for k in mh)
    train_codec(CodecTrainConfig(**{**harm, "steps": 6}), data, tmp_path / "joined", progress=False)  # and trains on
    # its size cannot change mid-training
    with pytest.raises(ValueError, match="harmonics"):
        train_codec(CodecTrainConfig(**{**cfg, "harmonics": 8, "steps": 6}), data, tmp_path / "other", progress=False,
                    init_from=tmp_path / "full")


def test_an_envelope_and_a_decoder_gate_join_a_branch_run(tmp_path):
    synthesize("speech", tmp_path / "speech", 0.1, seed=0, progress=False)
    data = [str(tmp_path / "speech")]
    harm = {**TINY, "threads": 1, "pitch_weight": 1.0, "decoder_activation": "snake", "harmonics": 4, "branch_weight": 1.0}
    for i, (bad, match) in enumerate((({"harmonics": 0, "branch_weight": 0.0, "decoder_gate": 0.5}, "need a harmonic branch"),
                       ({"harmonic_envelope": 1}, "harmonic_envelope must be"),
                       ({"decoder_gate": 1.5}, r"decoder_gate must be in \[0, 1\]"))):
        with pytest.raises(ValueError, match=match):
            train_codec(CodecTrainConfig(**{**harm, **bad, "steps": 1}), data, tmp_path / f"bad{i}", progress=False)
    train_codec(CodecTrainConfig(**{**harm, "steps": 4}), data, tmp_path / "branch", progress=False)
    src = load_file(str(tmp_path / "branch" / "train_state" / "model.safetensors"))
    # another kind of amplitudes: the branch's last layer starts from zero, everything else is the run's
    env = {**harm, "harmonic_envelope": 6, "decoder_gate": 1.0}
    train_codec(CodecTrainConfig(**{**env, "steps": 4}), data, tmp_path / "env", progress=False, init_from=tmp_path / "branch")
    me = load_file(str(tmp_path / "env" / "train_state" / "model.safetensors"))
    assert me["harmonic.amps.2.weight"].shape == (6, 256) and me["harmonic.amps.2.weight"].abs().max() == 0
    assert all(torch.equal(src[k], me[k]) for k in src if not k.startswith("harmonic.amps.2."))
    train_codec(CodecTrainConfig(**{**env, "steps": 7}), data, tmp_path / "env", progress=False)  # and it trains on
    me = load_file(str(tmp_path / "env" / "train_state" / "model.safetensors"))
    assert me["harmonic.amps.2.weight"].abs().max() > 0
    codec = Codec.load(tmp_path / "env" / "codec")
    assert codec.model.harmonic.envelope == 6 and codec.model.harmonic.decoder_gate == 1.0
    # the same envelope: the run's own last layer goes on (a gate alone is no new architecture)
    train_codec(CodecTrainConfig(**{**env, "decoder_gate": 0.5, "steps": 7}), data, tmp_path / "half", progress=False,
                init_from=tmp_path / "env")
    mh = load_file(str(tmp_path / "half" / "train_state" / "model.safetensors"))
    assert all(torch.equal(me[k], mh[k]) for k in me)
