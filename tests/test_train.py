"""The one trainer: learning, resume after SIGKILL, accumulation, DDP, divergence, run-dir safety."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from halm.errors import UserError
from halm.models import build_model, preset_config
from halm.runs import load_run
from halm.train import RunMismatch, TrainConfig, TrainingDiverged, lr_at, param_groups, train

FAST = ["threads=1", "amp=none", "batch_size=4", "warmup_steps=5", "log_every=1", "eval_every=1000", "eval_tokens=300"]


def weights(run, name="model"):
    return load_file(str(run / "checkpoint" / f"{name}.safetensors"))


def assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


@pytest.mark.parametrize("preset", ["tiny-gpt", "tiny-whisper-gpt"])
def test_training_lowers_validation_nll(tmp_path, lm_data, preset):
    r = train(preset, str(lm_data), tmp_path / "run", steps=40,
              overrides=["threads=1", "batch_size=8", "warmup_steps=5", "eval_every=20", "lr=3e-3"], progress=False)
    vals = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    vals = [v["val_nll"] for v in vals if "val_nll" in v]
    assert len(vals) == 2 and r["val_nll"] == vals[-1]
    # still falling, and well below the uniform guess over 1024 codes (the v1 codec's coarse tokens have a
    # perplexity of ~600 on held-out audio, so 40 steps do not get near v0's 2-nat margin)
    assert vals[-1] < vals[0] < np.log(1024) and vals[-1] < np.log(1024) - 0.7
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["family"] == preset_config(preset)[0] and cfg["model"]["context"] == 128
    assert cfg["data"]["codec"]["name"] == "halm-small" and cfg["train"]["steps"] == 40
    assert any((tmp_path / "run" / "tb").iterdir())  # TensorBoard events
    # RUN/best holds the step of the lowest dev NLL: a run folder of its own that loads like any run
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert best == {"step": 20 * (1 + int(vals[1] < vals[0])), "val_nll": min(vals)}
    model, rc = load_run(tmp_path / "run" / "best")
    assert rc == cfg and model.training is False


def _train_cmd(data, out, steps):
    return [sys.executable, "-m", "halm", "train", "--preset", "tiny-gpt-l", "--data", str(data), "--out", str(out),
            "--steps", str(steps), "--json", "--set", *FAST, "ckpt_every=5", "ema_decay=0.9"]


@pytest.mark.slow
def test_sigkill_then_rerun_reaches_the_same_weights(tmp_path, lm_data):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(lm_data, ref, 40), check=True, env=env, capture_output=True)
    run = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(lm_data, run, 40), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it between two checkpoints, after at least two of them
        lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
        if lines and json.loads(lines[-1])["step"] >= 12:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_at_kill = torch.load(run / "checkpoint" / "state.pt", weights_only=True)["step"]
    assert 10 <= step_at_kill < 40, "the run was not interrupted mid-way; the test proves nothing"
    subprocess.run(_train_cmd(lm_data, run, 40), check=True, env=env, capture_output=True)
    assert_same_weights(weights(run), weights(ref))
    assert_same_weights(weights(run, "ema"), weights(ref, "ema"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 41))  # no lost or repeated lines
    # the state holds only tensors and plain values: it loads without executing pickled code
    state = torch.load(run / "checkpoint" / "state.pt", weights_only=True)
    assert state["step"] == 40 and "optimizer" in state


def test_gradient_accumulation_matches_one_big_batch(tmp_path, lm_data):
    a = train("tiny-gpt", str(lm_data), tmp_path / "a", steps=6, overrides=[*FAST, "batch_size=8"], progress=False)
    b = train("tiny-gpt", str(lm_data), tmp_path / "b", steps=6, overrides=[*FAST, "batch_size=8", "accum=2"],
              progress=False)
    assert a["tokens"] == b["tokens"]
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"), atol=2e-6)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path, lm_data):
    """torchrun, 2 CPU processes on gloo, global batch 8 (4 each) vs one process with 8: equal to 1e-5."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--preset", "tiny-whisper-gpt", "--data", str(lm_data), "--steps", "6", "--json", "--set", *FAST,
              "batch_size=8"]
    subprocess.run([sys.executable, "-m", "halm", "train", "--out", str(tmp_path / "one"), *common], check=True,
                   env=env, capture_output=True)
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                        "-m", "halm", "train", "--out", str(tmp_path / "two"), *common], env=env, capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert_same_weights(weights(tmp_path / "one"), weights(tmp_path / "two"), atol=1e-5)
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines if "loss" in json.loads(line)] == [1, 2, 3, 4, 5, 6]
    # the two ranks validated half of the dev batches each; the all-reduced NLL is the one process's
    val = [[json.loads(x)["val_nll"] for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines() if "val_nll" in x]
           for r in ("one", "two")]
    assert len(val[0]) == len(val[1]) == 1 and val[1][0] == pytest.approx(val[0][0], abs=1e-4)


@pytest.mark.slow
def test_two_process_fsdp_matches_one_process_and_resumes(tmp_path, lm_data):
    """torchrun, 2 gloo processes with FSDP (fully_shard per block; checkpoints gathered, dev NLL on both ranks,
    activation checkpointing) vs one plain process, same global batch: weights equal to 1e-5 after 6 steps, and a
    sharded run stopped at step 3 and resumed (the full optimizer state scattered back) lands on the same weights."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--preset", "tiny-whisper-gpt", "--data", str(lm_data), "--json", "--set", *FAST, "batch_size=8",
              "eval_every=3", "ckpt_every=3"]
    sharded = [*common, "fsdp=true", "checkpoint_activations=true"]
    subprocess.run([sys.executable, "-m", "halm", "train", "--out", str(tmp_path / "one"), "--steps", "6", *common],
                   check=True, env=env, capture_output=True)

    def torchrun(out, steps):
        p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                            "29523", "-m", "halm", "train", "--out", str(out), "--steps", str(steps), *sharded], env=env,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        summaries = [line for line in p.stdout.splitlines() if line.startswith("{")]
        assert len(summaries) == 1  # rank 0 reports for both
        return json.loads(summaries[0])

    r = torchrun(tmp_path / "two", 6)
    assert_same_weights(weights(tmp_path / "one"), weights(tmp_path / "two"), atol=1e-5)
    one = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines() if "val_nll" in x]
    two = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines() if "val_nll" in x]
    assert [x["step"] for x in two] == [3, 6] and r["val_nll"] == pytest.approx(one[-1]["val_nll"], rel=1e-5)
    torchrun(tmp_path / "resumed", 3)
    torchrun(tmp_path / "resumed", 6)
    assert_same_weights(weights(tmp_path / "two"), weights(tmp_path / "resumed"), atol=1e-6)


def test_activation_checkpointing_gives_the_same_training(tmp_path, lm_data):
    for name, extra in (("plain", []), ("recompute", ["checkpoint_activations=true"])):
        train("tiny-whisper-gpt", str(lm_data), tmp_path / name, steps=3, overrides=[*FAST, *extra], progress=False)
    assert_same_weights(weights(tmp_path / "plain"), weights(tmp_path / "recompute"), atol=1e-6)


def test_nan_loss_stops_with_the_step_and_the_items(tmp_path, lm_data):
    bad = tmp_path / "bad"
    shutil.copytree(lm_data, bad)
    for mel_path in (bad / "shards").glob("*/mel.npy"):
        np.save(mel_path, np.full(np.load(mel_path).shape, np.nan, dtype=np.float16))
    with pytest.raises(TrainingDiverged, match=r"step 1: loss is nan; items in this process's batch: \['"):
        train("tiny-whisper-gpt", str(bad), tmp_path / "run", steps=3, overrides=FAST, progress=False)


def test_an_infinite_gradient_stops_before_the_step_and_the_last_checkpoint_stays_good(tmp_path, lm_data, monkeypatch):
    from safetensors.torch import load_file

    real, calls = torch.nn.utils.clip_grad_norm_, []

    def poisoned(params, max_norm):  # the second step's gradient overflows, its loss is finite
        params = list(params)
        calls.append(1)
        if len(calls) == 2:
            params[0].grad[0] = float("inf")
        return real(params, max_norm)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", poisoned)
    with pytest.raises(TrainingDiverged, match=r"step 2: the gradient norm is inf .*last good checkpoint is in"):
        train("tiny-gpt", str(lm_data), tmp_path / "run", steps=3, overrides=[*FAST, "ckpt_every=1"], progress=False)
    w = load_file(str(tmp_path / "run" / "checkpoint" / "model.safetensors"))
    assert all(bool(torch.isfinite(v).all()) for v in w.values())


@pytest.mark.parametrize("setting", ["eval_every=0", "log_every=0", "ckpt_every=-1", "ema_decay=1.0"])
def test_intervals_and_the_ema_decay_are_checked_before_anything_is_written(tmp_path, lm_data, setting):
    with pytest.raises(UserError, match=setting.split("=")[0]):
        train("tiny-gpt", str(lm_data), tmp_path / "run", steps=2, overrides=[*FAST, setting], progress=False)
    assert not (tmp_path / "run").exists()


def test_rerun_with_other_settings_is_refused(tmp_path, lm_data):
    train("tiny-gpt", str(lm_data), tmp_path / "run", steps=2, overrides=FAST, progress=False)
    with pytest.raises(RunMismatch, match="train"):
        train("tiny-gpt", str(lm_data), tmp_path / "run", steps=2, overrides=[*FAST, "lr=0.01"], progress=False)
    r = train("tiny-gpt", str(lm_data), tmp_path / "run", steps=2, overrides=FAST, progress=False)
    assert r["new_tokens"] == 0  # already complete: nothing to do
    assert r["precision"] == "fp32"  # amp=none; the experiment scripts key their rows on it


def test_load_run_and_mismatched_mel_settings(tmp_path, lm_data):
    train("tiny-whisper-gpt", str(lm_data), tmp_path / "run", steps=1, overrides=FAST, progress=False)
    model, rc = load_run(tmp_path / "run")
    assert not model.training and rc["preset"] == "tiny-whisper-gpt"
    with pytest.raises(ValueError, match="n_mels"):
        train("tiny-whisper-gpt", str(lm_data), tmp_path / "r2", steps=1, overrides=[*FAST, "n_mels=64"], progress=False)


def test_weight_decay_only_on_linear_weights_and_schedule():
    model = build_model(*preset_config("tiny-whisper-gpt"))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("weight") and "ln" not in names[id(p)] and "wte" not in names[id(p)]
               and "wpe" not in names[id(p)] for p in decay["params"])
    assert any("wte" in names[id(p)] for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0) and lr_at(100, cfg) == pytest.approx(0.1)
    assert lr_at(55, cfg) == pytest.approx(0.55)


def test_an_ema_that_cannot_leave_its_init_is_warned_about(tmp_path, lm_data, capsys):
    train("tiny-gpt", str(lm_data), tmp_path / "run", steps=2, overrides=[*FAST, "ema_decay=0.99"], progress=False)
    assert "the EMA still holds 98% of the initial weights after 2 steps" in capsys.readouterr().err
