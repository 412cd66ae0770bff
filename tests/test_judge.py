"""The offline judge: attribute extraction, a short training on tiny corpora, save/load, evaluation."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from halm.errors import UserError
from halm.judge import (
    ChromaHead,
    _out_of_window,
    attributes_of,
    embed_clips,
    evaluate_judge,
    load_clips,
    load_judge,
)


def test_attributes_of_synth_manifests():
    sfx = {"events": [{"type": "bell", "loudness": "quiet", "count": 5, "speed": "fast", "onsets": [0.3, 0.9]},
                      {"type": "clap", "loudness": "loud", "count": 1, "speed": "slow", "onsets": [6.5]}],
           "order": ["bell", "clap"], "n_events": 2}
    assert attributes_of(sfx) == {"event": "bell", "n_events": "2", "second_event": "clap", "loudness": "quiet",
                                  "count": "5", "speed": "fast", "second_count": "1"}
    # a continuous event has no count but states its speed; a single hit states no speed
    rain = {"events": [{"type": "rain", "loudness": "loud", "speed": "slow", "onsets": [0.2]}], "n_events": 1}
    assert attributes_of(rain) == {"event": "rain", "n_events": "1", "second_event": "none", "loudness": "loud",
                                   "speed": "slow"}
    one = {"events": [{"type": "knock", "loudness": "loud", "count": 1, "speed": "fast", "onsets": [0.2]}]}
    assert "speed" not in attributes_of(one) and attributes_of(one)["count"] == "1"
    # the clap's hit at 6.5 s is after the judge's 6 s window: its count gets no training label
    assert _out_of_window(sfx, 6.0) == {"second_count"} and _out_of_window(one, 6.0) == set()
    music = {"instrument_family": "keyboard", "tempo": "fast", "mode": "minor", "drums": False, "dynamics": "medium",
             "bpm": 137}
    assert attributes_of(music) == {"instrument_family": "keyboard", "tempo": "fast", "mode": "minor",
                                    "drums": "False", "dynamics": "medium"}
    assert attributes_of({"speaker": "x"}) == {}  # LibriSpeech: no judged attribute
    speech = {"voice": "en-gb-scotland+klatt5", "rate_wpm": 149, "pitch": 61, "pitch_range": 30, "words": 12}
    assert attributes_of(speech) == {"accent": "en-gb-scotland", "timbre": "klatt5", "rate": "slow", "pitch": "high"}
    assert attributes_of({"voice": "en-us", "rate_wpm": 185, "pitch": 40}) == {"accent": "en-us", "rate": "medium",
                                                                              "pitch": "medium"}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    from halm.data.synth import synthesize

    root = tmp_path_factory.mktemp("judge")
    synthesize("music", root / "music", 0.5, seed=1, progress=False)
    synthesize("sfx", root / "sfx", 0.3, seed=1, progress=False)
    synthesize("speech", root / "speech", 0.3, seed=1, progress=False)
    return [str(root / "music"), str(root / "sfx"), str(root / "speech")]


def test_judge_trains_saves_loads_and_evaluates(corpora, tmp_path):
    out = tmp_path / "judge"
    r = subprocess.run([sys.executable, "-m", "halm", "judge", "train", "--data", *corpora, "--out", str(out), "--steps",
                        "12", "--batch-size", "6", "--heldout", *corpora, "--json"], check=True, capture_output=True,
                       text=True)
    res = json.loads(r.stdout)
    assert {"event", "instrument_family", "tempo", "accent", "rate", "pitch"} <= set(res["attributes"])
    assert 0.0 <= res["heldout"]["r_at_1"] <= res["heldout"]["r_at_5"] <= 1.0
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 12 and (out / "train_state" / "model.safetensors").exists() and any((out / "tb").iterdir())
    judge = load_judge(out)
    clips = load_clips(corpora, judge.cfg.n_mels, progress=False)
    emb, post = embed_clips(judge, clips[:5])
    emb2, _ = embed_clips(load_judge(out), clips[:5])
    torch.testing.assert_close(emb, emb2)  # deterministic in eval mode, and the saved weights are complete
    assert emb.shape == (5, judge.cfg.dim) and torch.allclose(emb.norm(dim=-1), torch.ones(5), atol=1e-5)
    for k, p in post.items():
        assert p.shape == (5, len(judge.cfg.attributes[k])) and torch.allclose(p.sum(-1), torch.ones(5), atol=1e-5)
    ev = evaluate_judge(judge, corpora, progress=False)
    assert ev["clips"] == len(clips) and set(ev["attribute_accuracy"]) <= set(judge.cfg.attributes) | {"order"}
    assert "accent" in ev["attribute_accuracy"]
    n_speech = sum(not c["describes"] for c in clips)  # transcripts are not descriptions: no retrieval score
    assert n_speech > 0 and ev["described_clips"] == len(clips) - n_speech
    only_speech = evaluate_judge(judge, corpora[2:], progress=False)
    assert only_speech["r_at_1"] is None and "rate" in only_speech["attribute_accuracy"]


def test_chroma_head_is_invariant_to_transposition_and_sees_the_mode():
    torch.manual_seed(0)
    head = ChromaHead(2, 8)
    chroma = torch.rand(3, 24, 50)
    frames = torch.tensor([50, 30, 10])
    out = head(chroma, frames)
    for k in (1, 5, 11):  # every pitch class moved up k semitones (both profiles): the same logits
        moved = torch.cat([chroma[:, :12].roll(k, 1), chroma[:, 12:].roll(k, 1)], dim=1)
        torch.testing.assert_close(head(moved, frames), out)
    # padded frames are not part of the profile
    padded = chroma.clone()
    padded[1, :, 30:] = 100.0
    torch.testing.assert_close(head(padded, frames)[1], out[1])
    # a C major and a C minor triad (in both profiles) give different logits
    major, minor = torch.zeros(1, 24, 4), torch.zeros(1, 24, 4)
    for pc in (0, 4, 7):
        major[0, [pc, 12 + pc]] = 1.0
    for pc in (0, 3, 7):
        minor[0, [pc, 12 + pc]] = 1.0
    assert not torch.allclose(head(major, torch.tensor([4])), head(minor, torch.tensor([4])))


def test_chroma_reads_the_pitch_class_of_a_tone():
    from halm.judge import SAMPLE_RATE, chroma16

    t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
    for hz, pc in ((523.25, 0), (440.0, 9), (110.0, 9), (196.0, 7)):  # C5, A4, A2, G3
        c = chroma16(torch.sin(2 * torch.pi * hz * t)).sum(-1)
        assert int(c[:12].argmax()) == pc
        assert (int(c[12:].argmax()) == pc) == (hz <= 260)  # the bass profile holds only tones below 260 Hz
        if hz > 260:
            assert float(c[12:].sum()) < 0.05 * float(c[:12].sum())  # only the window's side lobes


def test_missing_judge_dir_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="halm judge train"):
        load_judge(tmp_path)


@pytest.mark.filterwarnings("ignore:FAD from")
def test_eval_t2a_scores_generated_audio_deterministically(t2a_data, tmp_path):
    from halm.eval_t2a import eval_t2a
    from halm.judge import train_judge
    from halm.train import train

    corpus = str(t2a_data.parent / "sfx")
    train_judge([corpus], str(tmp_path / "judge"), steps=3, batch_size=4, progress=False)
    train("tiny-t2a", str(t2a_data), str(tmp_path / "run"), steps=2,
          overrides=["batch_size=2", "eval_every=100"], progress=False)
    kw = dict(n=6, seconds=1.0, judge_dir=str(tmp_path / "judge"), batch=2, progress=False)
    a = eval_t2a(str(tmp_path / "run"), corpus, str(tmp_path / "report"), **kw)
    assert {"fad", "kl", "clap", "controllability", "reference"} <= set(a)
    assert set(a["reference"]) == {"clap", "controllability"} and "event" in a["controllability"]
    assert a["fad"] >= 0 and a["kl"] >= 0 and -1 <= a["clap"] <= 1
    assert (tmp_path / "report" / "report.md").exists() and len(list((tmp_path / "report" / "samples").glob("*.wav"))) == 6
    codec = a["reference_codec"]  # the references through the run's codec with its 4 codebooks
    assert codec["n_q"] == 4 and codec["fad"] > 0 and set(codec["controllability"]) == set(a["controllability"])
    assert a["judge_version"] == 2 and len(a["judge_sha256"]) == 64 and a["fad_inf"] is not None
    # benchmarks/codec_ceiling.py scores the references through the codec as eval-t2a does, for any K
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import codec_ceiling

    codec_ceiling.main(["--captions", corpus, "--n", "6", "--codebooks", "2", "4", "--judge", str(tmp_path / "judge"),
                        "--results", str(tmp_path / "ceiling.json")])
    by_k = {r["codebooks"]: r for r in json.loads((tmp_path / "ceiling.json").read_text())["rows"]}
    assert by_k[4]["controllability"] == codec["controllability"] and by_k[4]["fad"] == pytest.approx(codec["fad"])
    assert by_k[4]["clap"] == pytest.approx(codec["clap"])
    assert set(by_k[2]["controllability"]) == set(codec["controllability"]) and by_k[2]["kbps"] == by_k[4]["kbps"] / 2
    assert by_k[None]["controllability"] == a["reference"]["controllability"] and by_k[None]["n_clips"] == 6
    rows = a["per_caption"]
    assert len(rows) == 6 and set(rows[0]) == {"id", "text", "target", "generated", "reference", "clap", "reference_clap"}
    hits = [r["generated"]["event"] == r["target"]["event"] for r in rows]
    assert a["controllability"]["event"] == pytest.approx(sum(hits) / len(hits))  # the rows add up to the table
    b = eval_t2a(str(tmp_path / "run"), corpus, None, **kw)
    assert a["fad"] == b["fad"] and a["clap"] == b["clap"]  # same seed, same clips, same scores
    assert a["models"] == {k: f"judge:{tmp_path / 'judge'}" for k in ("fad", "kl", "clap")} and "judge" not in a
    # pretrained scorers (tiny random weights in the official layouts) replace the judge score by score
    from tests.helpers import tiny_ast_dir, tiny_clap_dir, tiny_vggish_file

    ext = dict(fad_model=f"vggish:{tiny_vggish_file(tmp_path / 'v.pth')}", kl_model=f"ast:{tiny_ast_dir(tmp_path / 'ast')}",
               clap_model=f"clap:{tiny_clap_dir(tmp_path / 'clap')}")
    c = eval_t2a(str(tmp_path / "run"), corpus, str(tmp_path / "report2"), **kw, **ext)
    assert c["models"] == {"fad": "vggish:v.pth", "kl": "ast:ast", "clap": "clap:clap"}
    assert c["judge"]["fad"] == a["fad"] and c["judge"]["clap"] == a["clap"] and c["controllability"] == a["controllability"]
    assert c["fad"] != a["fad"] and c["kl"] >= 0 and -1 <= c["clap"] <= 1 and -1 <= c["reference"]["clap"] <= 1
    assert "vggish:v.pth" in (tmp_path / "report2" / "report.md").read_text()
    train("tiny-gpt", str(t2a_data), str(tmp_path / "gpt"), steps=1, overrides=["batch_size=2"], progress=False)
    with pytest.raises(ValueError, match="t2a"):
        eval_t2a(str(tmp_path / "gpt"), corpus, None, **kw)


def test_judge_training_is_deterministic_for_a_seed(corpora, tmp_path):
    from safetensors.torch import load_file

    from halm.judge import train_judge

    for name in ("a", "b"):
        train_judge(corpora, str(tmp_path / name), steps=4, batch_size=6, seed=3, progress=False)
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_judge_training_resumes_the_same_trajectory_after_a_kill(corpora, tmp_path, monkeypatch):
    """Killed right after its checkpoint at step 3, the rerun continues from there and lands on the weights of
    the uninterrupted run; other settings are refused, naming them."""
    from safetensors.torch import load_file

    from halm.judge import train_judge
    from halm.runkit import RunMismatch, TrainingRun

    kw = dict(steps=6, batch_size=6, seed=1, progress=False, ckpt_every=3)
    train_judge(corpora, str(tmp_path / "one"), **kw)
    save = TrainingRun.save

    def save_then_die(self, weights, state, root=None):
        save(self, weights, state, root)
        raise KeyboardInterrupt  # the process dies after its first checkpoint

    monkeypatch.setattr(TrainingRun, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_judge(corpora, str(tmp_path / "two"), **kw)
    monkeypatch.setattr(TrainingRun, "save", save)
    assert not (tmp_path / "two" / "model.safetensors").exists()
    assert torch.load(tmp_path / "two" / "train_state" / "state.pt", weights_only=True)["step"] == 3
    train_judge(corpora, str(tmp_path / "two"), **kw)
    a, b = (load_file(str(tmp_path / r / "model.safetensors")) for r in ("one", "two"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(RunMismatch, match=r"lr: 0\.002 there vs 0\.001 asked"):
        train_judge(corpora, str(tmp_path / "two"), **{**kw, "lr": 1e-3})


def test_the_shipped_judge_loads_and_knows_the_offline_attributes():
    judge = load_judge()
    assert judge.cfg.version == 2 and set(judge.chroma_heads) == {"mode"}
    assert {"event", "count", "second_count", "speed", "loudness", "n_events", "second_event", "instrument_family",
            "tempo", "drums", "dynamics", "mode"} <= set(judge.cfg.attributes)
    mel = torch.full((2, judge.cfg.n_mels, 300), -3.0)
    emb = judge.audio_embed(mel, torch.tensor([300, 150]))
    assert emb.shape == (2, judge.cfg.dim) and torch.isfinite(emb).all()
    # the speech heads: linear probes on the frozen v2 embedding (`halm judge extend`), v2's own weights untouched
    from halm.judge import judge_hash, probes_hash

    assert judge.cfg.probes == ("accent", "pitch", "rate", "timbre") and len(judge.cfg.attributes["timbre"]) == 102
    record = json.loads((Path(__file__).resolve().parents[1] / "docs" / "results" / "judge_speech.json").read_text())
    assert record["base_sha256"] == judge_hash() and record["probes_sha256"] == probes_hash()
    post = judge.posteriors(mel, torch.tensor([300, 150]), torch.zeros(2, 24, 300))  # 24: chroma + bass
    assert post["timbre"].shape == (2, 102) and torch.allclose(post["accent"].sum(-1), torch.ones(2))


def test_judge_refuses_a_shorter_run_and_a_remade_corpus(corpora, tmp_path):
    import shutil

    from halm.judge import train_judge
    from halm.runkit import RunMismatch

    src = [str(shutil.copytree(c, tmp_path / f"src{i}")) for i, c in enumerate(corpora)]
    kw = dict(batch_size=6, seed=0, progress=False, ckpt_every=2)
    train_judge(src, str(tmp_path / "j"), steps=2, **kw)
    with pytest.raises(ValueError, match="is at step 2"):
        train_judge(src, str(tmp_path / "j"), steps=1, **kw)
    assert json.loads((tmp_path / "j" / "train_config.json").read_text())["steps"] == 2  # the refusal recorded nothing
    info = tmp_path / "src0" / "corpus.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "generator_version": 99}))  # remade in place
    with pytest.raises(RunMismatch, match="generator_version: .* there vs 99 asked"):
        train_judge(src, str(tmp_path / "j"), steps=2, **kw)


def test_judge_extend_adds_speech_heads_and_keeps_the_base_exactly(corpora, tmp_path):
    """`halm judge extend`: linear heads for the attributes the base lacks, on its frozen embedding; the base's
    weights, hash, embeddings and old heads unchanged; deterministic; nothing new to add is refused."""
    from halm.judge import judge_hash, probes_hash, train_judge
    from halm.judge_extend import extend_judge

    base = tmp_path / "base"
    train_judge(corpora[:2], str(base), steps=6, batch_size=6, progress=False)  # music + sfx: no speech heads
    assert not {"accent", "timbre", "rate", "pitch"} & set(load_judge(base).cfg.attributes)
    out = tmp_path / "ext"
    r = subprocess.run([sys.executable, "-m", "halm", "judge", "extend", "--judge", str(base), "--data", corpora[2],
                        "--out", str(out), "--steps", "200", "--heldout", corpora[2], "--json"], check=True,
                       capture_output=True, text=True)
    res = json.loads(r.stdout)
    assert {"accent", "rate", "pitch"} <= set(res["heads"]) <= {"accent", "timbre", "rate", "pitch"}
    assert res["base_sha256"] == judge_hash(base) == judge_hash(out) and res["probes_sha256"] == probes_hash(out)
    assert probes_hash(base) is None
    for h in res["heads"].values():
        assert h["train_accuracy"] > 1 / h["classes"] + 0.2  # a fitted head, not its initialisation
    assert set(res["heads"]) <= set(res["heldout"]["attribute_accuracy"])
    b, e = load_judge(base), load_judge(out)
    assert e.cfg.probes == tuple(res["heads"]) and set(e.cfg.attributes) == set(b.cfg.attributes) | set(res["heads"])
    clips = load_clips(corpora, b.cfg.n_mels, progress=False)[::3]
    (emb_b, post_b), (emb_e, post_e) = embed_clips(b, clips), embed_clips(e, clips)
    assert torch.equal(emb_b, emb_e) and all(torch.equal(post_b[k], post_e[k]) for k in post_b)
    assert set(post_e) - set(post_b) == set(res["heads"])
    # deterministic for a thread count: the same call, the same heads (this process may run other threads than the CLI)
    again = [extend_judge([corpora[2]], tmp_path / f"again{i}", base=base, steps=200, progress=False) for i in (0, 1)]
    assert again[0]["probes_sha256"] == again[1]["probes_sha256"]
    # nothing new to add: one clear line; the base itself is not overwritten
    with pytest.raises(UserError, match="lacks"):
        extend_judge([corpora[2]], tmp_path / "twice", base=out, progress=False)
    with pytest.raises(UserError, match="base judge"):
        extend_judge([corpora[2]], base, base=base, progress=False)
    # a missing probes file says how to remake it
    (out / "probes.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="judge extend"):
        load_judge(out)


def test_t2a_baseline_rows_name_one_judge_and_codec_per_results_file(t2a_data, tmp_path, capsys):
    """benchmarks/t2a_baseline.py: a row per (run, cfg) with NLL and the judged scores, the reference ceiling, the
    judge's and codec's hashes; a results file holding another judge's rows is refused, not silently relabelled."""
    from halm.judge import judge_hash
    from halm.train import train

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import t2a_baseline

    train("tiny-t2a", str(t2a_data), str(tmp_path / "run"), steps=2, overrides=["batch_size=2", "eval_every=100"],
          progress=False)
    res = tmp_path / "rows.json"
    argv = ["--run", str(tmp_path / "run"), "--captions", str(t2a_data.parent / "sfx"), "--n", "2", "--cfgs", "3",
            "--out", str(tmp_path / "evals"), "--results", str(res)]
    t2a_baseline.main(argv)
    r = json.loads(res.read_text())
    assert [row["cfg"] for row in r["rows"]] == [3.0] and r["rows"][0]["n_clips"] == 2 and r["rows"][0]["nll"] > 0
    assert r["judge"]["weights_sha256"] == judge_hash() and set(r["reference"]) == {"sfx"}
    assert "| no RR, CFG 3 | 2 |" in capsys.readouterr().out  # the printed table: FAD∞ "—" below 6 clips
    r["judge"]["weights_sha256"] = "0" * 64  # rows of another judge
    res.write_text(json.dumps(r))
    with pytest.raises(SystemExit, match="judge weights 0000"):  # before any scoring
        t2a_baseline.main(argv)
    assert json.loads(res.read_text()) == r
