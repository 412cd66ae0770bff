"""The run kit every trainer uses: lr schedule, settings check on resume, checkpoints, metrics, the lock."""

import json
import math

import pytest
import torch

from halm.checkpoint import FolderInUse
from halm.runkit import RunMismatch, TrainingRun, settings_differences, warmup_cosine


class PickledObject:  # what a state file must never make the loader run
    pass


def test_warmup_cosine_ramps_then_decays_to_the_floor():
    lrs = [warmup_cosine(s, 1.0, 10, 110, 0.1) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.55) and lrs[110] == pytest.approx(0.1)
    assert lrs[119] == pytest.approx(0.1)  # flat after the end (an extended run)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # monotone after the warm-up
    assert warmup_cosine(50, 2.0, 0, 100) == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_settings_differences_walk_nested_dicts_and_skip_what_may_change():
    old = {"model": {"n_layer": 2, "d": 8}, "train": {"lr": 0.001, "steps": 10}, "family": "gpt"}
    new = {"model": {"n_layer": 3, "d": 8}, "train": {"lr": 0.001, "steps": 20}, "family": "gpt", "extra": 1}
    assert settings_differences(old, new, skip=("train.steps",)) == [
        "extra: null there vs 1 asked", "model.n_layer: 2 there vs 3 asked"]
    assert settings_differences(old, old) == []


def test_settings_are_written_once_compared_on_resume_and_record_what_may_change(tmp_path):
    run = TrainingRun(tmp_path / "run")
    cfg = {"model": {"n_layer": 2}, "train": {"lr": 0.001, "steps": 10}, "note": "a"}
    assert run.settings(cfg, may_change=("train.steps",)) is None
    assert not (tmp_path / "run").exists()  # recorded only once the trainer's other checks passed
    run.record_settings()
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == cfg
    assert run.settings(cfg, may_change=("train.steps",)) == cfg  # the identical command resumes
    longer = {**cfg, "train": {"lr": 0.001, "steps": 30}, "note": "b"}
    run.settings(longer, may_change=("train.steps",), skip=("note",))
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == cfg  # a command refused later changes nothing
    run.metrics(0).close()  # the run starts: what may change is recorded
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["steps"] == 30 and saved["note"] == "a"  # the new length recorded, skipped keys kept
    with pytest.raises(RunMismatch, match=r"train\.lr: 0\.001 there vs 0\.01 asked.*as --set: lr=0\.001"):
        run.settings({**cfg, "train": {"lr": 0.01, "steps": 10}}, may_change=("train.steps",))
    # a saved config made before a field existed: normalize fills in the value it was trained with
    with pytest.raises(RunMismatch, match="new_field"):
        run.settings({**saved, "new_field": True})
    run.settings({**saved, "new_field": False}, normalize=lambda old: {**old, "new_field": False})


def test_checkpoints_round_trip_without_pickled_code_and_survive_a_half_written_folder(tmp_path):
    run = TrainingRun(tmp_path / "run", state_dir="train_state", state_file="trainer.pt")
    assert run.last_checkpoint() is None
    w = {"model": {"a": torch.arange(6.0).view(2, 3).t()}, "ema": {"a": torch.ones(2)}}  # a non-contiguous tensor
    run.save(w, {"step": 3, "rng": "{}", "t": torch.zeros(2)})
    ck = run.last_checkpoint()
    assert ck == tmp_path / "run" / "train_state"
    weights, state = run.load(ck)
    assert set(weights) == {"model", "ema"} and torch.equal(weights["model"]["a"], w["model"]["a"])
    assert state["step"] == 3 and torch.equal(state["t"], torch.zeros(2))
    # a kill between the two renames leaves train_state.old/: still found
    (tmp_path / "run" / "train_state").rename(tmp_path / "run" / "train_state.old")
    assert run.last_checkpoint() == tmp_path / "run" / "train_state.old"
    run.save({"model": {"a": torch.zeros(1)}}, {"step": 4}, root=tmp_path / "run" / "best")
    assert run.last_checkpoint(tmp_path / "run" / "best") == tmp_path / "run" / "best" / "train_state"
    torch.save({"step": 5, "obj": PickledObject()}, tmp_path / "run" / "train_state.old" / "trainer.pt")
    with pytest.raises(ValueError, match="does not unpickle code"):
        run.load(run.last_checkpoint())


def test_metrics_drop_rows_after_the_resumed_step_and_write_tensorboard(tmp_path):
    run = TrainingRun(tmp_path / "run")
    log = run.metrics(0)
    for s in (1, 2, 3, 4):
        log({"step": s, "loss": 1.0 / s, "val_nll": 2.0, "flag": True})
    log.close()
    log = run.metrics(2)  # resumed from the checkpoint at step 2: steps 3-4 are trained and logged again
    log({"step": 3, "loss": 0.5})
    log.close()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["loss"] == 0.5
    assert any((tmp_path / "run" / "tb").iterdir())
    quiet = TrainingRun(tmp_path / "other", rank=1).metrics(0)  # not the writing rank: nothing written
    quiet({"step": 1, "loss": 1.0})
    assert not (tmp_path / "other").exists()


def test_one_process_trains_a_folder_at_a_time(tmp_path):
    with TrainingRun(tmp_path / "run"):
        with pytest.raises(FolderInUse, match="in use"):
            with TrainingRun(tmp_path / "run"):
                pass
    with TrainingRun(tmp_path / "run"):  # released
        pass
