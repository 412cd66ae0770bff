"""Text encoders, t2a training (CFG + RR logging), evaluation and `halm generate --text` on a tiny corpus."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from halm.models.text import CaptionCache, TextEncoder


@pytest.fixture(scope="module")
def minilm():
    return TextEncoder("minilm")


def test_minilm_encodes_per_token_states_with_a_mask(minilm):
    emb, mask = minilm.encode(["a slow piano piece in A minor", "a dog barks"])
    assert minilm.dim == 384 and emb.shape[:2] == mask.shape and emb.shape[2] == 384
    assert mask[0].all() and not mask[1].all()
    assert (emb[1][~mask[1]] == 0).all()
    cache = CaptionCache(minilm)
    e2, m2 = cache.batch(["a dog barks", "a slow piano piece in A minor"])
    torch.testing.assert_close(e2[1], emb[0], atol=1e-5, rtol=1e-5)
    assert len(cache.store) == 2
    with pytest.raises(ValueError, match="non-empty"):
        minilm.encode([""])


def test_local_t5_directory(tmp_path, minilm):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    d = tmp_path / "t5-tiny"
    T5EncoderModel(T5Config(vocab_size=len(minilm.tokenizer), d_model=16, d_kv=4, d_ff=32, num_layers=2,
                            num_heads=4)).save_pretrained(d)
    minilm.tokenizer.save_pretrained(d)
    enc = TextEncoder(f"t5:{d}")
    emb, mask = enc.encode(["two bells", "a long synth pad in D major"])
    assert enc.dim == 16 and emb.shape == (2, mask.shape[1], 16) and torch.isfinite(emb).all()


def test_hub_names_and_missing_dirs_get_a_clear_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        TextEncoder("t5:google-t5/t5-base")
    with pytest.raises(ValueError, match="minilm"):
        TextEncoder("google-t5/t5-base")


def test_item_sampler_is_resumable_and_draws_cfg_decisions(t2a_data, minilm):
    from halm.data import open_dataset
    from halm.train import ItemCropSampler

    ds = open_dataset(t2a_data, "train")
    s = ItemCropSampler(ds, 50, 4, seed=1, with_mel=True, captions=CaptionCache(minilm), cfg_dropout=0.5,
                        cfg_mode="batch")
    s.draw(8)
    state = s.state()
    a = s.draw(8)
    s.set_state(state)
    assert np.array_equal(a, s.draw(8))
    assert len(set(a[:, 2])) == 1  # batch mode: one decision for the whole batch
    b = s.read(a)
    assert b["codes"].shape == (8, 4, 50) and b["mel"].shape[:2] == (8, 50) and b["text_emb"].shape[2] == 384
    assert (b["lengths"] <= 50).all() and b["drop"].dtype == torch.bool
    s2 = ItemCropSampler(ds, 50, 4, seed=1, with_mel=False, captions=CaptionCache(minilm), cfg_dropout=0.5,
                         cfg_mode="sample")
    assert len(set(s2.draw(64)[:, 2])) == 2  # per-sample decisions


def test_train_t2a_logs_cfg_and_rr_terms_then_eval_and_generate(t2a_data, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "halm", "train", "--preset", "tiny-t2a", "--data", str(t2a_data), "--out", str(run),
           "--steps", "12", "--set", "batch_size=4", "log_every=4", "eval_every=6", "cfg_dropout=0.5", "seed=3"]
    subprocess.run(cmd, check=True, capture_output=True)
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if "loss" in r]
    keys = set().union(*train)
    assert {"l_cond", "l_uncond", "l_rr", "nll_k0", "acc_k3"} <= keys
    assert train[-1]["loss"] < train[0]["loss"]
    val = [r for r in recs if "val_nll" in r]
    assert len(val) == 2 and "val_nll_uncond" in val[-1]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["family"] == "t2a" and cfg["model"]["rr_weight"] == 3.0 and cfg["model"]["text_encoder"] == "minilm"

    out = subprocess.run([sys.executable, "-m", "halm", "eval", "--run", str(run), "--json"], check=True,
                         capture_output=True, text=True)
    r = json.loads(out.stdout)
    assert r["family"] == "t2a" and len(r["nll_k"]) == 4 and r["tokens"] > 0 and np.isfinite(r["nll_uncond"])

    caps = tmp_path / "caps.txt"
    caps.write_text("a bell rings twice\n\na dog barks\n")
    gen = [sys.executable, "-m", "halm", "generate", "--run", str(run), "--captions", str(caps), "--seconds", "1",
           "--out", str(tmp_path / "g" / "x.wav"), "--seed", "4", "--json"]
    r1 = json.loads(subprocess.run(gen, check=True, capture_output=True, text=True).stdout)
    assert [s["caption"] for s in r1["samples"]] == ["a bell rings twice", "a dog barks"]
    import soundfile as sf

    a, sr = sf.read(r1["samples"][0]["out"])
    assert sr == 24000 and abs(len(a) - 24000) <= 320
    first = a.copy()
    subprocess.run(gen, check=True, capture_output=True)
    assert np.array_equal(sf.read(r1["samples"][0]["out"])[0], first)  # same seed, same audio
    assert (tmp_path / "g" / "x_001.png").exists()

    bad = subprocess.run([sys.executable, "-m", "halm", "generate", "--run", str(run), "--seconds", "1", "--out",
                          str(tmp_path / "y.wav")], capture_output=True, text=True)
    assert bad.returncode != 0 and "--text" in bad.stderr and "Traceback" not in bad.stderr


def test_t2a_with_the_mel_path_trains_and_evaluates(t2a_data, tmp_path):
    run = tmp_path / "mel"
    cmd = [sys.executable, "-m", "halm", "train", "--preset", "tiny-t2a", "--mel", "--data", str(t2a_data), "--out",
           str(run), "--steps", "3", "--json", "--set", "batch_size=2", "eval_every=3", "mel_d=16", "mel_heads=2"]
    r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    assert np.isfinite(r["val_nll"])
    assert json.loads((run / "config.json").read_text())["model"]["mel"] is True
    bad = subprocess.run([sys.executable, "-m", "halm", "train", "--preset", "tiny-gpt", "--mel", "--data",
                          str(t2a_data), "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode != 0 and "t2a" in bad.stderr


def test_t2a_refuses_uncaptioned_items(t2a_data, minilm):
    from halm.data import open_dataset
    from halm.train import ItemCropSampler

    ds = open_dataset(t2a_data, "train")
    ds._rows[1][1]["text"] = None  # as if one item of the split had no caption
    with pytest.raises(ValueError, match="no caption"):
        ItemCropSampler(ds, 50, 4, 0, False, CaptionCache(minilm), 0.1, "batch")


@pytest.mark.slow
@pytest.mark.parametrize("cfg_mode,fsdp", [("batch", False), ("sample", False), ("batch", True), ("sample", True)])
def test_two_process_ddp_with_gathered_rr_matches_one_process(t2a_data, tmp_path, cfg_mode, fsdp):
    """torchrun, 2 gloo processes x 2 crops vs 1 process x 4, with CFG (and RR) on half of the steps; DDP, or FSDP
    (whose validation at step 2 conditions on text outside the forward, with the root's shards gathered).

    With rr_gather the similarity matrices span the global batch, so the two runs optimise the same
    loss; crops of 61 frames are shorter than every clip, so the per-rank CE means average to the global one.
    With per-sample dropping the ranks drop different numbers of rows (0, 1 or 2 each): every rank still
    enters the gather (this deadlocked before) and the pairs are the global batch's.
    """
    from safetensors.torch import load_file

    from halm.data import open_dataset
    from halm.models import preset_config
    from halm.train import ItemCropSampler

    seed = 2 if cfg_mode == "sample" else 1
    if cfg_mode == "sample":  # the seed gives a step where one rank drops no row and the other does (so only one
        # uses the null condition: FSDP must still reduce its gradient on both, or the collective mismatches)
        mcfg = preset_config("tiny-t2a", ["context=64"])[1]
        sampler = ItemCropSampler(open_dataset(t2a_data, "train"), mcfg.frames, mcfg.n_q, seed, False, None, 0.5,
                                  "sample", need_text=False)
        per_rank = [sampler.draw(4)[:, 2].reshape(2, 2).sum(1) for _ in range(4)]
        assert any((a == 0) != (b == 0) for a, b in per_rank)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--preset", "tiny-t2a", "--data", str(t2a_data), "--steps", "4", "--json", "--set", "batch_size=4",
              "context=64", "cfg_dropout=0.5", "rr_gather=true", "eval_every=100", "log_every=1", f"seed={seed}", "lr=3e-3",
              "warmup_steps=1", "amp=none", f"cfg_mode={cfg_mode}", "eval_tokens=400"]
    # (amp=none: bf16 autocast, on by default on AVX-512-BF16/AMX CPUs, rounds too coarsely to compare)
    subprocess.run([sys.executable, "-m", "halm", "train", "--out", str(tmp_path / "one"), *common], check=True,
                   env=env, capture_output=True)
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519",
                        "-m", "halm", "train", "--out", str(tmp_path / "two"), *common,
                        *(["fsdp=true", "eval_every=2"] if fsdp else [])], env=env, capture_output=True,
                       text=True, timeout=300)  # a deadlocked collective fails the test instead of hanging it
    assert p.returncode == 0, p.stderr[-2000:]

    def train_lines(run):
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "loss" in line]

    one, two = train_lines(tmp_path / "one"), train_lines(tmp_path / "two")
    if fsdp:
        assert "val_nll" in (tmp_path / "two" / "metrics.jsonl").read_text()
    assert any("l_rr" in r for r in one)  # RR acted
    if cfg_mode == "batch":
        assert any("l_cond" in r for r in one)  # both kinds of step happened
    for r1, r2 in zip(one, two, strict=True):
        assert r1["loss"] == pytest.approx(r2["loss"], rel=1e-5)  # the global losses, RR included, agree
        assert r1.get("l_rr", 0.0) == pytest.approx(r2.get("l_rr", 0.0), rel=1e-4)
    a = load_file(str(tmp_path / "one" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "checkpoint" / "model.safetensors"))
    # Adam normalises each step, so a float-rounding difference in a near-zero gradient can move an
    # element by a fair share of lr (seen: 1.3e-4 = lr/24 on 1 of 65,600 entries). The same
    # optimisation keeps every element within lr/10 and all but a handful within 1e-5; a real
    # difference between the runs (a lost gradient, another batch) moves most of them.
    for k in a:
        d = (a[k] - b[k]).abs()
        assert float(d.max()) <= 3e-3 / 10, (k, float(d.max()))
        assert int((d > 1e-5).sum()) <= max(2, d.numel() // 1000), (k, int((d > 1e-5).sum()), d.numel())


def test_second_stage_trains_without_text_and_generate_full_decodes_every_codebook(t2a_data, tmp_path):
    import soundfile as sf

    from halm.data import open_dataset
    from halm.models.text import NoText
    from halm.train import ItemCropSampler

    halm = [sys.executable, "-m", "halm"]
    ds = open_dataset(t2a_data, "train")
    ds._rows[0][1]["text"] = None  # a second stage needs no caption
    sampler = ItemCropSampler(ds, 50, 4, 0, False, NoText(384), 0.0, "batch", need_text=False)
    batch = sampler.read(sampler.draw(3))
    assert batch["text_emb"].shape == (3, 1, 384) and not batch["drop"].any()
    fine, gpt = tmp_path / "fine", tmp_path / "gpt"
    subprocess.run([*halm, "train", "--preset", "tiny-fine", "--data", str(t2a_data), "--out", str(fine), "--steps", "6",
                    "--set", "batch_size=2", "eval_every=6", "log_every=2"], check=True, capture_output=True)
    recs = [json.loads(line) for line in (fine / "metrics.jsonl").read_text().splitlines()]
    assert "nll_k1" in recs[0] and "nll_k0" not in recs[0] and "l_rr" not in recs[0]
    r = json.loads(subprocess.run([*halm, "eval", "--run", str(fine), "--json"], check=True, capture_output=True,
                                  text=True).stdout)
    assert len(r["nll_k"]) == 3 and r["nll_uncond"] == r["nll"]  # codebooks 1..3 scored; no text to drop
    subprocess.run([*halm, "train", "--preset", "tiny-gpt", "--data", str(t2a_data), "--out", str(gpt), "--steps", "3",
                    "--set", "batch_size=2", "eval_every=3"], check=True, capture_output=True)
    prompt = sorted((t2a_data.parent / "sfx" / "audio").glob("*.wav"))[0]
    gen = [*halm, "generate", "--run", str(gpt), "--prompt", str(prompt), "--prompt-seconds", "0.5", "--seconds",
           "0.5", "--seed", "2", "--json"]
    full = json.loads(subprocess.run([*gen, "--full", str(fine), "--out", str(tmp_path / "full.wav")], check=True,
                                     capture_output=True, text=True).stdout)
    coarse = json.loads(subprocess.run([*gen, "--out", str(tmp_path / "coarse.wav")], check=True, capture_output=True,
                                       text=True).stdout)
    assert full["codebooks"] == 4 and coarse["codebooks"] == 1
    a, b = sf.read(full["out"])[0], sf.read(coarse["out"])[0]
    assert len(a) == len(b) and not np.allclose(a, b)  # same coarse tokens (same seed), other fine codebooks
    again = subprocess.run([*gen, "--full", str(fine), "--out", str(tmp_path / "again.wav")], check=True, capture_output=True)
    assert again.returncode == 0 and np.array_equal(sf.read(tmp_path / "again.wav")[0], a)
    bad = subprocess.run([*gen, "--full", str(gpt), "--out", str(tmp_path / "bad.wav")], capture_output=True, text=True)
    assert bad.returncode == 2 and "not a second-stage run" in bad.stderr and "Traceback" not in bad.stderr
    # a second stage saved when it had a head for its given codebook: the weights load (for --init-from), the
    # training state is not resumed (its optimizer holds that head), and the message says what to do instead
    from safetensors.torch import load_file, save_file

    ck = fine / "checkpoint" / "model.safetensors"
    w = load_file(str(ck))
    save_file({**w, "heads.0.weight": torch.zeros_like(w["heads.1.weight"])}, str(ck))
    old = subprocess.run([*halm, "train", "--preset", "tiny-fine", "--data", str(t2a_data), "--out", str(fine), "--steps",
                          "8", "--set", "batch_size=2", "eval_every=6", "log_every=2"], capture_output=True, text=True)
    assert old.returncode == 2 and "--init-from" in old.stderr and "heads.0.weight" in old.stderr
