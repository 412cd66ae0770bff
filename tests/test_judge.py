"""The offline judge: attribute extraction, a short training on tiny corpora, save/load, evaluation."""

import json
import subprocess
import sys

import pytest
import torch

from halm.judge import attributes_of, embed_clips, evaluate_judge, load_clips, load_judge


def test_attributes_of_synth_manifests():
    sfx = {"events": [{"type": "bell", "loudness": "quiet", "count": 5}, {"type": "clap", "loudness": "loud"}],
           "order": ["bell", "clap"], "n_events": 2}
    assert attributes_of(sfx) == {"event": "bell", "n_events": "2", "second_event": "clap", "loudness": "quiet"}
    music = {"instrument_family": "keyboard", "tempo": "fast", "mode": "minor", "drums": False, "dynamics": "medium",
             "bpm": 137}
    assert attributes_of(music) == {"instrument_family": "keyboard", "tempo": "fast", "mode": "minor",
                                    "drums": "False", "dynamics": "medium"}
    assert attributes_of({"speaker": "x"}) == {}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    from halm.data.synth import synthesize

    root = tmp_path_factory.mktemp("judge")
    synthesize("music", root / "music", 0.5, seed=1, progress=False)
    synthesize("sfx", root / "sfx", 0.3, seed=1, progress=False)
    return [str(root / "music"), str(root / "sfx")]


def test_judge_trains_saves_loads_and_evaluates(corpora, tmp_path):
    out = tmp_path / "judge"
    r = subprocess.run([sys.executable, "-m", "halm", "judge", "train", "--data", *corpora, "--out", str(out), "--steps",
                        "12", "--batch-size", "6", "--heldout", *corpora, "--json"], check=True, capture_output=True,
                       text=True)
    res = json.loads(r.stdout)
    assert {"event", "instrument_family", "tempo"} <= set(res["attributes"])
    assert 0.0 <= res["heldout"]["r_at_1"] <= res["heldout"]["r_at_5"] <= 1.0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 12
    judge = load_judge(out)
    clips = load_clips(corpora, judge.cfg.n_mels, progress=False)
    emb, post = embed_clips(judge, clips[:5])
    emb2, _ = embed_clips(load_judge(out), clips[:5])
    torch.testing.assert_close(emb, emb2)  # deterministic in eval mode, and the saved weights are complete
    assert emb.shape == (5, judge.cfg.dim) and torch.allclose(emb.norm(dim=-1), torch.ones(5), atol=1e-5)
    for k, p in post.items():
        assert p.shape == (5, len(judge.cfg.attributes[k])) and torch.allclose(p.sum(-1), torch.ones(5), atol=1e-5)
    ev = evaluate_judge(judge, corpora, progress=False)
    assert ev["clips"] == len(clips) and set(ev["attribute_accuracy"]) <= set(judge.cfg.attributes)


def test_missing_judge_dir_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="halm judge train"):
        load_judge(tmp_path)
