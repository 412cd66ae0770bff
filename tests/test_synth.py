import hashlib
import json
import re

import numpy as np
import pytest
import soundfile as sf

from halm.data.synth import KINDS, CorpusMismatch, synthesize
from halm.data.synth import sfx as sfx_mod
from halm.data.synth.speech import vocabulary, voices


def corpus_digest(d):
    h = hashlib.sha256((d / "manifest.jsonl").read_bytes())
    for p in sorted((d / "audio").glob("*.wav")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_for_a_seed(tmp_path, kind):
    a = synthesize(kind, tmp_path / "a", 0.1, seed=7, progress=False)
    synthesize(kind, tmp_path / "b", 0.1, seed=7, progress=False, workers=2)  # the same corpus from two processes
    synthesize(kind, tmp_path / "c", 0.1, seed=8, progress=False)
    assert a.seconds >= 6 and a.items == len((tmp_path / "a" / "manifest.jsonl").read_text().splitlines())
    assert corpus_digest(tmp_path / "a") == corpus_digest(tmp_path / "b")
    assert corpus_digest(tmp_path / "a") != corpus_digest(tmp_path / "c")
    for row in map(json.loads, (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()):
        assert set(row) == {"id", "path", "text", "duration", "attributes"} and row["text"]
        info = sf.info(str(tmp_path / "a" / row["path"]))
        assert info.samplerate == 24000 and info.channels == 1
        assert abs(info.duration - row["duration"]) < 1e-3


@pytest.mark.parametrize("kind", ["speech", "sfx"])
def test_rerun_continues_and_survives_a_torn_manifest(tmp_path, kind):
    full = tmp_path / "full"
    synthesize(kind, full, 0.15, seed=1, progress=False)
    # in two steps: same corpus as in one
    part = tmp_path / "part"
    synthesize(kind, part, 0.05, seed=1, progress=False)
    again = synthesize(kind, part, 0.05, seed=1, progress=False)
    assert again.new_items == 0
    synthesize(kind, part, 0.15, seed=1, progress=False)
    assert corpus_digest(part) == corpus_digest(full)
    # killed while writing: the last manifest line is half written and its wav is missing
    man = part / "manifest.jsonl"
    lines = man.read_bytes().splitlines(keepends=True)
    last = json.loads(lines[-1])
    man.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    (part / last["path"]).unlink()
    resumed = synthesize(kind, part, 0.15, seed=1, progress=False)
    assert resumed.new_items == 1
    assert corpus_digest(part) == corpus_digest(full)


def test_other_settings_refuse_to_mix(tmp_path):
    synthesize("sfx", tmp_path / "c", 0.02, seed=1, progress=False)
    with pytest.raises(CorpusMismatch, match="seed: 1 there vs 2 asked"):
        synthesize("sfx", tmp_path / "c", 0.05, seed=2, progress=False)
    with pytest.raises(CorpusMismatch, match="kind"):
        synthesize("speech", tmp_path / "c", 0.05, seed=1, progress=False)


def test_speech_has_many_voices_and_a_large_vocabulary(tmp_path):
    from halm.data.synth.espeak import get_espeak

    assert len(voices(get_espeak())) >= 100
    vocab = vocabulary()
    assert len(vocab) >= 2000
    synthesize("speech", tmp_path / "s", 0.3, seed=0, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "s" / "manifest.jsonl").read_text().splitlines()]
    assert len({r["attributes"]["voice"] for r in rows}) > 1
    for r in rows:
        words = re.findall(r"[A-Za-z]+", r["text"])
        assert r["attributes"]["words"] == len(r["text"].split())
        assert all(w in vocab or w.lower() in vocab or w in ("Why", "If", "We", "Every", "said", "did", "will") or
                   w.lower() in {"a", "an", "the", "and", "then", "in", "it", "is", "was", "would", "should", "that",
                                 "my", "her", "his", "our", "their", "your", "this", "she", "he", "they", "you", "we",
                                 "why", "if", "every"}
                   for w in words), r["text"]
        wav, _ = sf.read(str(tmp_path / "s" / r["path"]))
        assert np.abs(wav).max() > 0.2  # speech, not silence
        assert 0.5 < r["duration"] < 30


def test_music_captions_follow_attributes(tmp_path):
    synthesize("music", tmp_path / "m", 0.5, seed=0, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "m" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for r in rows:
        a, text = r["attributes"], r["text"]
        assert f"{a['bpm']} bpm" in text and f"{a['key']} {a['mode']}" in text and a["lead"] in text
        assert a["mood"] in text and a["accompaniment"] in text
        assert (a["bass"] in text) if a["bass"] else True
        assert ("drums" in text) == a["drums"]
        assert a["tempo"] == ("slow" if a["bpm"] < 80 else "fast" if a["bpm"] >= 120 else "moderate")
        assert r["duration"] == 10.0
        wav, _ = sf.read(str(tmp_path / "m" / r["path"]))
        assert np.abs(wav).max() > 0.05


def test_sfx_captions_count_and_order_match_the_audio():
    rng_seeds = range(40)
    seen_types = set()
    for i in rng_seeds:
        clip = sfx_mod.make_sfx_clip(i, np.random.default_rng([5, i]), 24000)
        events = clip.attributes["events"]
        assert [e["type"] for e in events] == clip.attributes["order"]
        parts = clip.text.split(" then ")
        assert len(parts) == len(events)
        for part, ev in zip(parts, events):
            seen_types.add(ev["type"])
            assert part == sfx_mod.describe(ev)
            if ev["type"] in sfx_mod.COUNTABLE:
                assert len(ev["onsets"]) == ev["count"]
                word = {1: ("once", "single"), 2: ("twice", "two"), 3: ("three",), 4: ("four",), 5: ("five",)}[ev["count"]]
                assert any(w in part for w in word), part
            # the event's audio sits where the attributes say it does
            s, e = int(ev["start"] * 24000), int(ev["end"] * 24000)
            inside = np.abs(clip.wav[s:e]).max()
            assert inside > 0.5 * sfx_mod.LOUDNESS[ev["loudness"]]
        assert len(clip.wav) / 24000 <= sfx_mod.MAX_SECONDS
    assert len(seen_types) >= 8


def test_beep_onsets_are_audible_as_separate_events():
    wav, onsets, _ = sfx_mod.countable_event("beep", 4, "slow", 24000, np.random.default_rng(0))
    env = np.convolve(np.abs(wav), np.ones(240) / 240, mode="same") > 0.1
    rises = np.flatnonzero(np.diff(env.astype(int)) == 1)
    assert len(rises) + int(env[0]) == 4
    np.testing.assert_allclose(np.sort(np.r_[[0] if env[0] else [], rises]) / 24000, onsets, atol=0.01)


def test_ctrl_c_with_workers_is_one_line_and_the_rerun_completes_the_same_corpus(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    # 3 min of audio: ~1-3 s of work at 100-300x real time, so the interrupt after two clips lands mid-run
    cmd = [sys.executable, "-m", "halm", "synth", "sfx", "--minutes", "3", "--seed", "3", "--workers", "2"]
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "cut")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
                            # as from a terminal: a CI job started in the background inherits SIGINT ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    manifest, deadline = tmp_path / "cut" / "manifest.jsonl", time.time() + 120
    while proc.poll() is None and time.time() < deadline and not (manifest.exists() and manifest.read_text().count("\n") >= 2):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the writer and its workers
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted; rerun the same command" in err  # no worker's traceback either
    for out in ("cut", "whole"):
        subprocess.run([*cmd, "--out", str(tmp_path / out)], check=True, capture_output=True)
    assert corpus_digest(tmp_path / "cut") == corpus_digest(tmp_path / "whole")
