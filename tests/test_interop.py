"""MusicGen in and out (a tiny random MusicgenForConditionalGeneration saved to disk), GPT-2 export, fine-tuning
an imported model with `halm train --init-from`."""

import json
import subprocess
import sys

import pytest
import torch

from halm.errors import UserError

CAPTIONS = ["a slow piano piece in A minor", "a dog barks twice"]


def tiny_musicgen_dir(path, text_width: int = 16, seed: int = 0):
    """A tiny random MusicGen (T5 text encoder, 32 kHz / 50 Hz EnCodec with 4 codebooks of 32, 2-layer decoder) in the
    layout `save_pretrained` + the processor's tokenizer give."""
    from transformers import MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration, T5Config
    from transformers.utils import logging as hf_logging

    from halm.models.text import load_text_encoder
    from tests.helpers import tiny_encodec

    hf_logging.set_verbosity_error()
    tok = load_text_encoder("minilm").tokenizer
    codec = tiny_encodec(n_codebooks=4, codebook_size=32, seed=seed, sample_rate=32000)
    torch.manual_seed(seed)
    t5 = T5Config(vocab_size=len(tok), d_model=text_width, d_kv=4, d_ff=32, num_layers=2, num_heads=4)
    dec = MusicgenDecoderConfig(vocab_size=32, max_position_embeddings=160, num_hidden_layers=2, ffn_dim=48,
                                num_attention_heads=4, hidden_size=32, num_codebooks=4, pad_token_id=32, bos_token_id=32)
    cfg = MusicgenConfig(text_encoder=t5, audio_encoder=codec.config, decoder=dec)
    hf = MusicgenForConditionalGeneration(cfg, audio_encoder=codec).eval()
    with torch.no_grad():  # LayerNorms start at (1, 0): make them random, so a swapped norm shows
        for name, p in hf.named_parameters():
            if "layer_norm" in name:
                p.copy_(torch.randn_like(p) * 0.2 + (1.0 if name.endswith("weight") else 0.0))
    hf.save_pretrained(path)
    tok.save_pretrained(path)
    return path, hf


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    from halm.interop import import_musicgen

    root = tmp_path_factory.mktemp("musicgen")
    src, hf = tiny_musicgen_dir(root / "musicgen-tiny")
    summary = import_musicgen(src, root / "run")
    return root / "run", hf, summary


def _halm_logits(run, inputs, captions, null=False):
    from halm.models.text import TextEncoder
    from halm.runs import load_run

    model, _ = load_run(run)
    if null:
        ctx, mask = model.null_condition(inputs.shape[0])
    else:
        emb, m = TextEncoder(model.cfg.text_encoder, max_tokens=model.cfg.text_max_tokens).encode(captions)
        ctx, mask = model.condition(emb, m)
    with torch.no_grad():
        return model(inputs, ctx, mask), model


def _pattern_inputs(model, B=2, T=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, model.cfg.vocab_size, (B, model.cfg.n_q, T), generator=g)
    inputs, _, _ = model.pattern_inputs(codes)
    return inputs  # (B, K, S)


def test_imported_musicgen_gives_transformers_logits(imported):
    run, hf, summary = imported
    from halm.runs import load_run

    model, rc = load_run(run)
    assert rc["imported"]["format"] == "musicgen" and summary["codebooks"] == 4
    assert model.cfg.positions == "sinusoidal" and not model.cfg.bias and model.cfg.activation == "gelu"
    inputs = _pattern_inputs(model)
    ours, _ = _halm_logits(run, inputs, CAPTIONS)  # (B, K, S, V)
    tok = __import__("transformers").AutoTokenizer.from_pretrained(str(run / "text_encoder"))
    enc = tok(CAPTIONS, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                    decoder_input_ids=inputs.reshape(-1, inputs.shape[-1])).logits
    theirs = theirs.reshape(ours.shape)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_imported_null_condition_is_musicgens_unconditional_input(imported):
    """transformers' CFG pairs each caption with zeroed, fully masked text; halm's null condition must give the same."""
    run, hf, _ = imported
    from halm.runs import load_run

    model, _ = load_run(run)
    inputs = _pattern_inputs(model, seed=2)
    ours, _ = _halm_logits(run, inputs, None, null=True)
    zeros = torch.zeros(inputs.shape[0], 3, hf.config.text_encoder.d_model)
    with torch.no_grad():
        theirs = hf(encoder_outputs=(zeros,), attention_mask=torch.zeros(inputs.shape[0], 3, dtype=torch.long),
                    decoder_input_ids=inputs.reshape(-1, inputs.shape[-1])).logits.reshape(ours.shape)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_equal_widths_without_a_projection_and_cached_decoding(tmp_path):
    """A MusicGen whose text width equals the decoder's has no enc_to_dec_proj: the import uses the identity. The
    sinusoidal, bias-free stack decodes step by step with its KV cache as the full forward does."""
    from halm.interop import import_musicgen

    src, hf = tiny_musicgen_dir(tmp_path / "mg", text_width=32, seed=3)
    assert not hasattr(hf, "enc_to_dec_proj")
    import_musicgen(src, tmp_path / "run")
    from halm.runs import load_run

    inputs = _pattern_inputs(load_run(tmp_path / "run")[0])
    full, model = _halm_logits(tmp_path / "run", inputs, CAPTIONS)
    tok = __import__("transformers").AutoTokenizer.from_pretrained(str(tmp_path / "run" / "text_encoder"))
    enc = tok(CAPTIONS, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                    decoder_input_ids=inputs.reshape(-1, inputs.shape[-1])).logits.reshape(full.shape)
        torch.testing.assert_close(full, theirs, atol=1e-4, rtol=1e-4)
        from halm.models.text import TextEncoder

        emb, m = TextEncoder(model.cfg.text_encoder).encode(CAPTIONS)
        ctx, mask = model.condition(emb, m)
        cache = model.new_cache(2)
        steps = [model(inputs[:, :, s:s + 1], ctx, mask, cache=cache) for s in range(inputs.shape[2])]
    torch.testing.assert_close(torch.cat(steps, dim=2), full, atol=1e-5, rtol=1e-5)


def test_export_round_trip_is_bit_identical_and_transformers_loads_it(imported, tmp_path):
    from transformers import MusicgenForConditionalGeneration

    from halm.interop import export_run

    run, hf, _ = imported
    r = export_run(run, tmp_path / "out")
    assert r["class"] == "MusicgenForConditionalGeneration"
    back = MusicgenForConditionalGeneration.from_pretrained(tmp_path / "out")
    src, got = hf.state_dict(), back.state_dict()
    keys = [k for k in src if k.startswith(("decoder.", "enc_to_dec_proj."))]
    assert keys and all(torch.equal(src[k], got[k]) for k in keys)
    assert all(torch.equal(src[k], got[k]) for k in src if k.startswith("text_encoder."))
    with pytest.raises(UserError, match="not empty"):
        export_run(run, tmp_path / "out")


def test_imported_run_generates_audio_and_fine_tunes(imported, tmp_path):
    """`halm generate` samples the imported model with CFG; data tokenized with its codec fine-tunes it with
    --init-from (the first weights are the imported ones); data of another codec gets one clear line."""
    from halm.data.prepare import PrepareConfig, prepare
    from halm.data.synth import synthesize
    from halm.runs import load_run

    run, _, _ = imported
    r = subprocess.run([sys.executable, "-m", "halm", "generate", "--run", str(run), "--text", "a bell rings",
                        "--seconds", "0.4", "--out", str(tmp_path / "gen.wav"), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    wav, sr = __import__("soundfile").read(out["samples"][0]["out"])
    assert sr == out["sample_rate"] == 32000 and len(wav) >= 0.3 * sr and abs(wav).max() > 0
    synthesize("sfx", tmp_path / "sfx", 0.3, seed=5, progress=False)
    prepare(str(tmp_path / "sfx"), tmp_path / "data", PrepareConfig(codec=str(run / "codec"), shard_size=8,
                                                                    dev_share=0.2, test_share=0.1, require_text=True),
            progress=False)
    for cmd in (["eval", "--run", str(run), "--data", str(tmp_path / "data")],
                ["eval-t2a", "--run", str(run), "--captions", str(tmp_path / "sfx"), "--n", "2", "--seconds", "1",
                 "--out", str(tmp_path / "ev")]):
        r = subprocess.run([sys.executable, "-m", "halm", *cmd, "--json"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-1500:]
        assert json.loads(r.stdout.strip().splitlines()[-1])["run"] == str(run)
    from halm.train import train

    with pytest.raises(UserError, match="no --preset"):
        train("t2a-s", str(tmp_path / "data"), str(tmp_path / "ft0"), steps=1, init_from=str(run))
    overrides = ["batch_size=2", "eval_every=2", "ckpt_every=2", "eval_tokens=200", "cfg_dropout=0.5", "rr_weight=1.0",
                 "threads=1", "lr=1e-4"]
    s = train(None, str(tmp_path / "data"), str(tmp_path / "ft"), steps=0, overrides=overrides, progress=False,
              init_from=str(run))
    assert s["preset"] == "musicgen" and s["steps"] == 0
    rc = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert rc["init_from"]["run"] == str(run) and rc["model"]["rr_weight"] == 1.0
    s = train(None, str(tmp_path / "data"), str(tmp_path / "ft"), steps=2, overrides=overrides, progress=False,
              init_from=str(run))
    assert s["steps"] == 2 and s["val_nll"] > 0
    tuned, _ = load_run(tmp_path / "ft")
    base, _ = load_run(run)
    base_p = dict(base.named_parameters())
    shift = {n: float((p.detach() - base_p[n].detach()).abs().max()) for n, p in tuned.named_parameters()}
    assert max(shift.values()) < 1e-3  # two Adam steps of lr 1e-4 from the imported weights (a fresh init: ~0.05)
    assert sum(v > 0 for v in shift.values()) > len(shift) // 2  # and they did train
    r = subprocess.run([sys.executable, "-m", "halm", "train", "--init-from", str(run), "--data", str(tmp_path / "data"),
                        "--out", str(tmp_path / "ft"), "--steps", "2", "--set", *overrides[:-1]],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "other settings" in r.stderr and "lr" in r.stderr


def test_init_from_refuses_data_of_another_codec(imported, t2a_data, tmp_path):
    from halm.train import train

    run, _, _ = imported
    with pytest.raises(UserError, match="prepare the data with --codec"):
        train(None, str(t2a_data), str(tmp_path / "ft"), steps=1, init_from=str(run), progress=False)


def test_gpt_exports_as_gpt2_with_the_same_logits(tmp_path):
    from transformers import GPT2LMHeadModel

    from halm.checkpoint import save_weights
    from halm.interop import export_run
    from halm.models import build_model, preset_config

    family, cfg = preset_config("tiny-gpt")
    torch.manual_seed(0)
    model = build_model(family, cfg).eval()
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    save_weights({k: v.contiguous() for k, v in model.state_dict().items()}, run / "checkpoint" / "model.safetensors")
    (run / "checkpoint" / "state.pt").write_bytes(b"")
    (run / "config.json").write_text(json.dumps({"family": family, "preset": "tiny-gpt", "model": cfg.to_dict(),
                                                 "train": {}, "data": {"codec": {}}}))
    export_run(run, tmp_path / "gpt2")
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2").eval()
    tokens = torch.randint(0, cfg.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, model(tokens), atol=1e-5, rtol=1e-5)


def test_what_does_not_fit_gets_one_clear_line(tmp_path, imported):
    from halm.interop import import_musicgen

    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, "-m", "halm", "import", "musicgen", str(tmp_path / "empty"), "--out",
                        str(tmp_path / "run")], capture_output=True, text=True)
    assert r.returncode == 2 and "no config.json" in r.stderr and "never downloads" in r.stderr
    run, _, _ = imported
    with pytest.raises(UserError, match="not empty"):
        import_musicgen(run.parent / "musicgen-tiny", run)
    from halm.checkpoint import save_weights
    from halm.models import build_model, preset_config

    family, cfg = preset_config("tiny-whisper-gpt")
    wg = tmp_path / "wg"
    (wg / "checkpoint").mkdir(parents=True)
    save_weights(dict(build_model(family, cfg).state_dict()), wg / "checkpoint" / "model.safetensors")
    (wg / "checkpoint" / "state.pt").write_bytes(b"")
    (wg / "config.json").write_text(json.dumps({"family": family, "model": cfg.to_dict(), "train": {}, "data": {}}))
    r = subprocess.run([sys.executable, "-m", "halm", "export", str(wg), "--out", str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not representable" in r.stderr and len(r.stderr.strip().splitlines()) == 1
