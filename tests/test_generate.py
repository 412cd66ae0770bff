"""Sampling: logit filters, determinism, cached = uncached generation, the closed-loop mel, `halm generate`."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from halm.generate import generate, sample_next, top_k_filter, top_p_filter
from halm.models import build_model, preset_config


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(top_k_filter(logits, 2))
    assert kept.tolist() == [[False, True, False, True, False]]
    assert torch.equal(top_k_filter(logits, 0), logits) and torch.equal(top_k_filter(logits, 5), logits)


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert torch.isfinite(top_p_filter(logits, 0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.6)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(top_p_filter(logits, 0.01)).sum() == 1  # never empty
    shuffled = logits[:, [2, 0, 3, 1]]  # order of the vocabulary does not matter
    assert torch.isfinite(top_p_filter(shuffled, 0.6)).tolist() == [[False, True, False, True]]


def test_sampling_follows_the_filtered_distribution_and_greedy():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    s = sample_next(logits, temperature=1.0, top_k=2, generator=g)
    assert set(s.tolist()) == {2, 3}
    share3 = (s == 3).float().mean().item()
    assert abs(share3 - 1 / (1 + np.exp(-1))) < 0.03  # softmax over the two kept logits
    assert sample_next(logits[:2], temperature=0).tolist() == [3, 3]


@pytest.mark.parametrize("top_k", [0, 2, 4, 6])
def test_a_near_tie_that_swaps_under_rounding_draws_the_same_token(top_k):
    # a cached and a full forward (or two CPUs) differ by rounding; where two kept logits are tied within it
    # and swap their order, the draw must not change (it did when top-k drew over ids in descending order)
    base = torch.tensor([[0.5, 1.0, 1.0 + 1e-6, 0.2, 0.7, 0.7 - 1e-6, 0.1, 0.0]]).repeat(2000, 1)
    swapped = base.clone()
    swapped[:, 2] -= 2e-6  # ids 1 and 2 swap places, and so do 4 and 5 (no k cuts between a tied pair)
    swapped[:, 5] += 2e-6
    assert swapped.argsort(-1, descending=True)[0, :4].tolist() == [1, 2, 5, 4]
    draws = [sample_next(x, top_k=top_k, generator=torch.Generator().manual_seed(3)) for x in (base, swapped)]
    assert torch.equal(*draws)
    assert len(set(draws[0].tolist())) == (top_k or 8)  # every kept id drawn, so the swaps mattered


class FakeMel:
    """A deterministic function of the tokens standing in for the codec decode (tests of the loop only)."""

    def __init__(self, r=2, M=80):
        self.table = torch.randn(1024, r, M, generator=torch.Generator().manual_seed(1))

    def __call__(self, tokens):
        return self.table[tokens[:, -1]]


@pytest.mark.parametrize("preset", ["tiny-gpt", "tiny-whisper-gpt"])
def test_cached_generation_equals_uncached_and_is_seeded(preset):
    torch.manual_seed(0)
    model = build_model(*preset_config(preset, ["fuse_init=random"] if "whisper" in preset else [])).eval()  # mel used from step 0
    fake = FakeMel()
    prompt = torch.randint(0, 1024, (2, 10))
    mel = fake.table[prompt] if model.uses_mel else None
    kw = dict(mel=mel, mel_fn=fake if model.uses_mel else None, temperature=1.0, top_k=50)
    a = generate(model, prompt, 60, seed=3, **kw)
    b = generate(model, prompt, 60, seed=3, use_cache=False, **kw)
    c = generate(model, prompt, 60, seed=4, **kw)
    assert a.shape == (2, 70) and torch.equal(a[:, :10], prompt)
    assert torch.equal(a, b)  # within the context, the cache changes nothing
    assert not torch.equal(a, c)
    assert torch.equal(a, generate(model, prompt, 60, seed=3, **kw))


def test_generation_slides_past_the_context():
    torch.manual_seed(0)
    model = build_model(*preset_config("tiny-whisper-gpt")).eval()  # context 128
    fake = FakeMel()
    prompt = torch.randint(0, 1024, (1, 100))
    out = generate(model, prompt, 300, mel=fake.table[prompt], mel_fn=fake, seed=0)
    assert out.shape == (1, 400) and int(out.max()) < 1024
    # past the context too, decoding without the cache takes the same windows: the same tokens
    assert torch.equal(out, generate(model, prompt, 300, mel=fake.table[prompt], mel_fn=fake, seed=0, use_cache=False))


def test_halm_generate_cli_writes_wav_png_and_is_deterministic(tmp_path, lm_data):
    from halm.data import open_dataset
    from halm.train import train

    train("tiny-whisper-gpt", str(lm_data), tmp_path / "run", steps=3, progress=False,
          overrides=["threads=1", "batch_size=4", "eval_every=1000", "eval_tokens=100"])
    item = open_dataset(lm_data, "test")[0]
    prompt = lm_data.parent / "speech" / "audio" / f"{item.id}.wav"
    outs = []
    for name in ("a", "b"):
        cmd = [sys.executable, "-m", "halm", "generate", "--run", str(tmp_path / "run"), "--prompt", str(prompt),
               "--prompt-seconds", "1", "--seconds", "0.5", "--out", str(tmp_path / f"{name}.wav"), "--seed", "7",
               "--top-k", "50", "--json"]
        p = subprocess.run(cmd, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-2000:]
        r = json.loads(p.stdout)
        assert r["prompt_tokens"] == 75 and r["new_tokens"] == 38 and (tmp_path / f"{name}.png").stat().st_size > 0
        outs.append(sf.read(tmp_path / f"{name}.wav")[0])
    assert len(outs[0]) == 113 * 320 and np.array_equal(outs[0], outs[1])


def test_public_load_and_generate(tmp_path, lm_data):
    import halm
    from halm.train import train

    train("tiny-gpt", str(lm_data), tmp_path / "run", steps=2, progress=False,
          overrides=["threads=1", "batch_size=4", "eval_every=1000", "eval_tokens=100"])
    model = halm.load(tmp_path / "run")
    assert model.run_config["preset"] == "tiny-gpt" and not model.training
    prompt = torch.randint(0, 1024, (1, 5))
    out = model.generate(prompt, 10, seed=1, top_k=20)
    assert out.shape == (1, 15) and torch.equal(out, model.generate(prompt, 10, seed=1, top_k=20))


def test_a_vocab_larger_than_the_codebook_never_samples_past_it():
    """`halm train` allows vocab_size > the codec's codebook size; the sampler keeps to the codebook."""
    torch.manual_seed(0)
    model = build_model(*preset_config("tiny-gpt", ["vocab_size=64"])).eval()
    with torch.no_grad():
        model.head.weight[40:] += 5 * model.head.weight[40:].sign()  # the ids the codec lacks dominate...
    prompt = torch.randint(0, 40, (2, 5))
    free = generate(model, prompt, 50, seed=0)
    assert int((free[:, 5:] >= 40).sum()) > 50  # ...so an unmasked sampler draws them
    kept = generate(model, prompt, 50, seed=0, n_codes=40)
    assert int(kept.max()) < 40
    assert torch.equal(kept, generate(model, prompt, 50, seed=0, n_codes=40, use_cache=False))
    # n_codes equal to the vocab is the unmasked sampler
    assert torch.equal(free, generate(model, prompt, 50, seed=0, n_codes=64))
    # a loaded run's `.generate` takes the codebook size from the run's data
    from halm.generate import bind_generate

    model.run_config = {"data": {"codec": {"codebook_size": 40}}}
    assert torch.equal(bind_generate(model).generate(prompt, 50, seed=0), kept)


def test_continuation_experiment_scores_voices_with_the_shipped_judges_speech_heads(tmp_path, lm_data, monkeypatch):
    """benchmarks/continuation_experiment.py end to end on tiny runs: the ceilings, a hybrid decoded from all
    codebooks by a second stage, the F0 / voicing / judge rows, the WAVs, the PNG and the judge's hashes."""
    from pathlib import Path

    from halm.judge import judge_hash, probes_hash
    from halm.train import train

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import continuation_experiment

    monkeypatch.setattr(continuation_experiment, "REST_MIN_S", 0.3)  # the tiny corpus's clips are short
    fast = ["threads=1", "batch_size=4", "eval_every=1000", "eval_tokens=100"]
    train("tiny-whisper-gpt", str(lm_data), tmp_path / "hybrid", steps=2, progress=False, overrides=fast)
    train("tiny-fine", str(lm_data), tmp_path / "fine", steps=2, progress=False, overrides=fast)
    out = tmp_path / "cont"
    r = continuation_experiment.main(["--data", str(lm_data), "--runs", f"hybrid={tmp_path / 'hybrid'}", "--fine",
                                      str(tmp_path / "fine"), "--references", "--n", "3", "--prompt-seconds", "1",
                                      "--seconds", "0.5", "--out", str(out), "--results", str(tmp_path / "c.json")])
    assert r["judge_sha256"] == judge_hash() and r["judge_probes_sha256"] == probes_hash() is not None
    assert set(r["judge_speech_heads"]) == {"accent", "timbre", "pitch", "rate"}  # the shipped judge reads speech
    rows = {row["model"]: row for row in r["rows"]}
    assert len(rows) == 4 and rows["hybrid"]["codebooks"] == 4 and rows["hybrid"]["n_prompts"] == 3
    for row in rows.values():
        assert set(row["judge_agrees_with_prompt"]) == set(r["judge_speech_heads"])
        assert all(0 <= v <= 1 for v in row["judge_agrees_with_prompt"].values()) and 0 <= row["voicing_share"] <= 1
    assert sorted(p.name for p in (out / "hybrid").iterdir()) == [f"{i:03d}.wav" for i in range(3)] and Path(r["png"]).is_file()
    assert json.loads((tmp_path / "c.json").read_text())["runs"] == [json.loads(json.dumps(r))]  # --results adds the run
