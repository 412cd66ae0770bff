"""`halm eval` / `halm compare`: the window protocol, the JSON keys, mismatches, the report."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from halm.data import open_dataset
from halm.evaluate import compare_runs, evaluate_run
from halm.metrics.lm import evaluate_lm
from halm.runs import load_run
from halm.train import train

FAST = ["threads=1", "batch_size=4", "eval_every=1000", "eval_tokens=200"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, lm_data):
    d = tmp_path_factory.mktemp("runs")
    for preset in ("tiny-gpt", "tiny-whisper-gpt"):
        train(preset, str(lm_data), d / preset, steps=15, overrides=[*FAST, "eval_every=5"], progress=False)
    return d


def test_every_target_is_scored_once_in_item_windows(runs, lm_data):
    """The protocol by hand: per item, windows of C inputs; token 0 of an item is never a target."""
    model, _ = load_run(runs / "tiny-whisper-gpt")
    ds = open_dataset(lm_data, "test")
    r = evaluate_lm(model, ds, batch_size=3, progress=False)
    C, nll, correct, n = model.cfg.context, 0.0, 0, 0
    with torch.no_grad():
        for item in ds:
            codes = torch.from_numpy(item.codes[0].astype(np.int64))
            mel = torch.from_numpy(item.mel.astype(np.float32))
            for j in range(0, len(codes) - 1, C):
                x, y = codes[j:j + C], codes[j + 1:j + C + 1]
                logits = model(x[None, : len(y)], mel[None, j:j + len(y)])[0]
                nll += F.cross_entropy(logits, y, reduction="sum").item()
                correct += int((logits.argmax(-1) == y).sum())
                n += len(y)
    assert r["tokens"] == n == int((ds.frames - 1).sum())
    assert r["nll"] == pytest.approx(nll / n, rel=1e-5) and r["accuracy"] == pytest.approx(correct / n)
    assert r["ppl"] == pytest.approx(math.exp(r["nll"]))
    assert r["bits_per_second"] == pytest.approx(nll / math.log(2) / (ds.frames.sum() / ds.frame_rate), rel=1e-5)


def test_halm_eval_json_and_codec_mel(runs, lm_data):
    cmd = [sys.executable, "-m", "halm", "eval", "--run", str(runs / "tiny-whisper-gpt"), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(p.stdout)
    assert {"nll", "accuracy", "ppl", "bits_per_second", "tokens", "params"} <= set(r)
    assert r["split"] == "test" and r["mel_source"] == "audio" and r["params"] == 267584
    c = evaluate_run(str(runs / "tiny-whisper-gpt"), mel_source="codec", progress=False)
    assert c["mel_source"] == "codec" and c["tokens"] == r["tokens"] and c["nll"] != pytest.approx(r["nll"], abs=1e-6)
    g = evaluate_run(str(runs / "tiny-gpt"), mel_source="codec", progress=False)
    assert g["mel_source"] is None


def test_eval_refuses_a_dataset_of_another_codec(runs, lm_data, tmp_path):
    from halm.data.prepare import DatasetMismatch, PrepareConfig, prepare
    from tests.helpers import tiny_codec_dir

    codec = tiny_codec_dir(tmp_path / "codec", codebook_size=1024)
    prepare(str(lm_data.parent / "speech"), tmp_path / "other", PrepareConfig(codec=str(codec), test_share=0.5, dev_share=0.0),
            progress=False)
    with pytest.raises(DatasetMismatch, match="tokenized with codec"):
        evaluate_run(str(runs / "tiny-gpt"), str(tmp_path / "other"), progress=False)


def test_compare_writes_the_table_and_curves(runs, tmp_path):
    r = compare_runs([str(runs / "tiny-gpt"), str(runs / "tiny-whisper-gpt")], str(tmp_path / "cmp"),
                     names=["GPT-S", "hybrid"], progress=False)
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "| GPT-S | tiny-gpt |" in report and "| hybrid | tiny-whisper-gpt |" in report
    assert "| +0.000 | +0.00 | +0.00 |" in report.splitlines()[4]  # the baseline's own Δ
    h = r["runs"][1]
    assert f"{h['nll'] - r['runs'][0]['nll']:+.3f}" in report.splitlines()[5]
    assert (tmp_path / "cmp" / "curves.png").stat().st_size > 10_000


def _scored(family, data, part=(0, 1)):
    """A seeded tiny model of `family` scores (its share of) the train split's windows, one window a batch."""
    from halm.metrics.lm import evaluate_t2a
    from halm.models import build_model, preset_config
    from halm.models.text import NoText

    torch.manual_seed(0)
    ds = open_dataset(data, "train")
    if family == "t2a":
        model = build_model(*preset_config("tiny-t2a", ["text_dim=16"])).eval()
        return evaluate_t2a(model, ds, NoText(16), batch_size=1, uncond=True, progress=False, part=part)
    model = build_model(*preset_config("tiny-whisper-gpt")).eval()
    return evaluate_lm(model, ds, batch_size=1, progress=False, part=part)


def _rank(rank, world, port, jobs, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        r = {family: _scored(family, data, (rank, world)) for family, data in jobs}
        if rank == 0:
            out.write_text(json.dumps(r))
    finally:
        dist.destroy_process_group()


def test_a_data_parallel_evaluation_scores_the_same_windows_as_one_process(tmp_path, lm_data, t2a_data):
    """part=(rank, world): two gloo ranks each score every other batch and all-reduce the sums (DDP validation)."""
    import socket

    import torch.multiprocessing as mp

    jobs = [("gpt", str(lm_data)), ("t2a", str(t2a_data))]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(2, port, jobs, tmp_path / "two.json"), nprocs=2)
    two = json.loads((tmp_path / "two.json").read_text())
    for family, data in jobs:
        a, b = _scored(family, data), two[family]
        assert a["tokens"] == b["tokens"] > 0 and a["items"] == b["items"] > 2  # several batches: both ranks scored
        for key in ("nll", "accuracy", "bits_per_second", *(("nll_uncond",) if family == "t2a" else ())):
            assert b[key] == pytest.approx(a[key], rel=1e-12, abs=1e-12), (family, key)
    with pytest.raises(ValueError, match="rank"):
        evaluate_lm(None, open_dataset(str(lm_data), "train"), part=(2, 2))
