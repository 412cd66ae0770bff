"""Nothing silently corrupted, bad input gets one clear line: the cases of the reliability issue, as tables.

Each row names a hostile input and what must happen: a skip with its reason (nothing added to the
dataset), a refusal naming the field, or a report. What each check guards against is in the module
docstrings it tests (halm/audio/io.py, halm/data/prepare.py, halm/audio/sources.py, halm/train.py).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from halm.audio.sources import SourceError, manifest_source
from halm.checkpoint import DamagedFile
from halm.data import open_dataset
from halm.data.prepare import PrepareConfig, _bad_features, prepare
from halm.errors import UserError
from halm.train import RunMismatch, TrainingDiverged, train

FAST = ["threads=1", "batch_size=4", "warmup_steps=1", "eval_every=1000", "log_every=1"]


def _float_wav(path, data, sr=24000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.asarray(data, dtype=np.float32), sr, subtype="FLOAT")


def _tone(seconds=1.0, sr=24000, amp=0.3):
    t = np.arange(int(seconds * sr)) / sr
    return amp * np.sin(2 * np.pi * 220 * t)


# ---- what prepare reads, and what it produced ----------------------------------------------------
BAD_AUDIO = [  # (file, samples, the reason's words)
    ("huge.wav", _tone() * 1e30, "far above full scale"),
    ("float_max.wav", np.full(24000, 3.4e38), "far above full scale"),
    ("int16_as_float.wav", np.round(_tone() * 32767 / 0.3 * 0.5), "integer sample values stored as float"),
    ("nan.wav", np.r_[_tone(), np.nan], "NaN or infinite"),
    ("empty.wav", np.zeros(0), "empty audio"),
    ("short.wav", _tone(0.01), "too short"),
]


def test_prepare_skips_absurd_audio_with_its_reason_and_keeps_the_rest(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        _float_wav(src / f"good_{i}.wav", _tone(1.0 + 0.2 * i))
    for name, data, _ in BAD_AUDIO:
        _float_wav(src / name, data)
    (src / "not_audio.wav").write_bytes(b"RIFF....garbage")
    r = prepare(str(src), tmp_path / "data", PrepareConfig(codec="halm-small", min_seconds=0.1), progress=False)
    skipped = {json.loads(x)["id"]: json.loads(x)["reason"] for x in (tmp_path / "data" / "skipped.jsonl").read_text().splitlines()}
    for name, _, words in BAD_AUDIO:
        assert words in skipped[name[:-4]], (name, skipped.get(name[:-4]))
    assert "unreadable" in skipped["not_audio"]
    assert r["items"] == 3 and r["skipped"] == len(BAD_AUDIO) + 1
    items = [it for s in ("train", "dev", "test") for it in open_dataset(tmp_path / "data", s)]
    assert sorted(it.id for it in items) == ["good_0", "good_1", "good_2"]
    for it in items:  # what was stored is sane
        assert np.isfinite(it.mel.astype(np.float32)).all() and int(it.codes.max()) < 1024


BAD_FEATURES = [  # (codes, mel, the reason's words or None)
    (torch.zeros(4, 5, dtype=torch.long), torch.zeros(5, 2, 80), None),
    (torch.full((4, 5), 1024), torch.zeros(5, 2, 80), "outside [0, 1024)"),
    (torch.full((4, 5), -1), torch.zeros(5, 2, 80), "outside"),
    (torch.zeros(4, 5, dtype=torch.long), torch.full((5, 2, 80), float("nan")), "not finite (100%"),
    (torch.zeros(4, 5, dtype=torch.long), torch.full((5, 2, 80), 1e4), "out of range"),
]


@pytest.mark.parametrize("codes, mel, words", BAD_FEATURES)
def test_prepare_checks_the_features_it_produced(codes, mel, words):
    reason = _bad_features(codes, mel, 1024)
    assert reason is None if words is None else words in reason


# ---- sources that dropped data without a word ----------------------------------------------------
def test_librispeech_upper_case_flac_and_orphans_are_reported(tmp_path):
    chap = tmp_path / "train-clean-100" / "19" / "198"
    chap.mkdir(parents=True)
    sf.write(chap / "19-198-0000.FLAC", _tone().astype(np.float32), 16000)
    sf.write(chap / "19-198-0001.flac", _tone().astype(np.float32), 16000)
    sf.write(chap / "19-198-0003.flac", _tone().astype(np.float32), 16000)  # audio without a transcript line
    (chap / "19-198.trans.txt").write_text("19-198-0000 HELLO\n19-198-0001 WORLD\n19-198-0002 NO AUDIO\n")
    r = subprocess.run([sys.executable, "-m", "halm", "inspect", str(tmp_path), "--json"], capture_output=True, text=True)
    res = json.loads(r.stdout)
    assert res["items"] == 4 and res["with_text"] == 3  # the .FLAC kept with its text, both orphans listed
    assert res["n_missing_files"] == 1 and res["missing_files"][0].endswith("19-198-0002.flac") and r.returncode == 1


MANIFEST_SPLITS = [("val", "dev"), ("validation", "dev"), ("Eval", "dev"), ("valid", "dev"), ("dev", "dev"),
                   ("train", "train"), ("training", "train"), ("test", "test"), (None, None), ("", None)]


@pytest.mark.parametrize("given, kept", MANIFEST_SPLITS)
def test_manifest_split_names_map_to_train_dev_test(tmp_path, given, kept):
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"path": "a.wav", "text": "x", **({"split": given} if given is not None else {})}) + "\n")
    assert next(manifest_source(m)).split == kept


@pytest.mark.parametrize("given", ["holdout", "trian", 3])
def test_an_unknown_split_name_is_an_error_naming_the_line(tmp_path, given):
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"path": "a.wav"}) + "\n" + json.dumps({"path": "b.wav", "split": given}) + "\n")
    with pytest.raises(SourceError, match=r"m.jsonl:2: unknown split"):
        list(manifest_source(m))
    r = subprocess.run([sys.executable, "-m", "halm", "inspect", str(m)], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "m.jsonl:2" in r.stderr


def test_a_small_corpus_gets_every_split_and_training_without_dev_says_so(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        _float_wav(src / f"c{i}.wav", _tone(0.5 + 0.1 * i))
    r = prepare(str(src), tmp_path / "data", PrepareConfig(codec="halm-small", test_share=0.05, dev_share=0.05),
                progress=False)
    assert set(r["splits"]) == {"train", "dev", "test"}  # with 5% shares a hash split of 3 clips leaves two empty
    m = tmp_path / "m.jsonl"
    m.write_text("".join(json.dumps({"path": str(src / f"c{i}.wav"), "split": "train"}) + "\n" for i in range(3)))
    subprocess.run([sys.executable, "-m", "halm", "prepare", "--source", str(m), "--out", str(tmp_path / "nodev")],
                   check=True, capture_output=True)
    p = subprocess.run([sys.executable, "-m", "halm", "train", "--preset", "tiny-gpt", "--data", str(tmp_path / "nodev"),
                        "--out", str(tmp_path / "run"), "--steps", "1", "--set", *FAST, "context=16"],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "no dev split: training without validation" in p.stderr


# ---- runs ------------------------------------------------------------------------------------------
def test_resume_refuses_other_data_and_names_the_fields_but_more_steps_extend(tmp_path, lm_data, t2a_data):
    run = tmp_path / "run"
    train("tiny-gpt", str(lm_data), run, steps=2, overrides=FAST, progress=False)
    refused = [  # (data, overrides, the message's words)
        (t2a_data, FAST, "data.path: "),
        (lm_data, [*FAST, "lr=0.002"], "train.lr: 0.001 there vs 0.002 asked"),
        (lm_data, [*FAST, "n_layer=3"], "model.n_layer: 2 there vs 3 asked"),
    ]
    for data, over, words in refused:
        with pytest.raises(RunMismatch, match=words.replace(".", r"\.")):
            train("tiny-gpt", str(data), run, steps=2, overrides=over, progress=False)
    r = train("tiny-gpt", str(lm_data), run, steps=4, overrides=FAST, progress=False)  # a higher --steps extends
    assert r["steps"] == 4 and r["new_tokens"] == 2 * 4 * 128
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 4
    r = train("tiny-gpt", str(lm_data), run, overrides=FAST, progress=False)  # no --steps: the run's own length
    assert r["steps"] == 4 and r["new_tokens"] == 0 and json.loads((run / "config.json").read_text())["train"]["steps"] == 4
    with pytest.raises(UserError, match="is at step 4; --steps 3 would end it"):
        train("tiny-gpt", str(lm_data), run, steps=3, overrides=FAST, progress=False)
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 4  # a refused command records nothing
    # how the run executes may change on a resume (and is recorded): threads, logging and checkpoint intervals
    r = train("tiny-gpt", str(lm_data), run, steps=5, overrides=[*FAST, "threads=2", "ckpt_every=3", "log_every=2"],
              progress=False)
    assert r["steps"] == 5 and json.loads((run / "config.json").read_text())["train"]["threads"] == 2


def test_the_nan_stop_does_not_name_a_checkpoint_that_does_not_exist(tmp_path, lm_data):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(lm_data, bad)
    for mel_path in (bad / "shards").glob("*/mel.npy"):
        np.save(mel_path, np.full(np.load(mel_path).shape, np.nan, dtype=np.float16))
    with pytest.raises(TrainingDiverged, match="no checkpoint was written yet"):
        train("tiny-whisper-gpt", str(bad), tmp_path / "run", steps=3, overrides=FAST, progress=False)


def test_weights_and_wavs_get_the_usual_permissions(tmp_path, lm_data):
    from halm.audio import save_audio

    old = os.umask(0o022)
    try:
        train("tiny-gpt", str(lm_data), tmp_path / "run", steps=1, overrides=FAST, progress=False)
        wav = save_audio(tmp_path / "x.wav", _tone(0.1), 24000)
    finally:
        os.umask(old)
    for f in (tmp_path / "run" / "checkpoint" / "model.safetensors", wav):
        assert oct(f.stat().st_mode & 0o777) == "0o644", f


def test_a_run_or_dataset_folder_is_locked_while_written(tmp_path, lm_data):
    from halm.checkpoint import FolderInUse, FolderLock

    run = tmp_path / "run"
    with FolderLock(run):  # another job holds the run: refused, naming the holder
        with pytest.raises(FolderInUse, match=f"in use by process {os.getpid()} on "):
            train("tiny-gpt", str(lm_data), run, steps=1, overrides=FAST, progress=False)
        src = tmp_path / "src"
        _float_wav(src / "a.wav", _tone())
        r = subprocess.run([sys.executable, "-m", "halm", "prepare", "--source", str(src), "--out", str(run)],
                           capture_output=True, text=True)
        assert r.returncode == 2 and f"in use by process {os.getpid()}" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    train("tiny-gpt", str(lm_data), run, steps=1, overrides=FAST, progress=False)  # free again
    # the lock dies with its process (kill -9 included)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from halm.checkpoint import FolderLock; "
                               f"FolderLock({str(run)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(FolderInUse):
        FolderLock(run).acquire()
    holder.kill()
    holder.wait()
    FolderLock(run).acquire().release()
    # a refused command leaves no empty folder behind
    with pytest.raises(FileNotFoundError, match="no index.json"):
        train("tiny-gpt", str(tmp_path / "no_data"), tmp_path / "never", steps=1, overrides=FAST, progress=False)
    assert not (tmp_path / "never").exists()


GENERATE_MISUSE = [  # (flags, the message's words)
    (["--seconds", "0"], "--seconds must be > 0"), (["--seconds", "-1"], "--seconds must be > 0"),
    (["--n", "0"], "--n must be >= 1"), (["--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1]"), (["--top-k", "-3"], "--top-k must be >= 0"),
    (["--temperature", "-1"], "--temperature must be >= 0"), (["--prompt-seconds", "0"], "--prompt-seconds must be > 0"),
    (["--out", "{tmp}/x.mp3"], "give a .wav file name"), (["--out", "{tmp}/dir.wav"], "is a folder"),
]


@pytest.mark.parametrize("flags, words", GENERATE_MISUSE)
def test_generate_misuse_is_one_line_and_exit_code_2(tmp_path, flags, words):
    (tmp_path / "dir.wav").mkdir()
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    args = {"--run": "halm-sfx-small", "--text": "a bell rings twice", "--out": str(tmp_path / "o.wav")}
    for k, v in zip(flags[::2], flags[1::2]):
        args[k] = v
    r = subprocess.run([sys.executable, "-m", "halm", "generate", *[x for kv in args.items() for x in kv]],
                       capture_output=True, text=True)
    assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o.wav").exists()


def test_eval_misuse_is_one_line(tmp_path, t2a_data):
    train("tiny-t2a", str(t2a_data), tmp_path / "t2a", steps=1, overrides=["batch_size=2", "eval_every=100"], progress=False)
    prepare(str(t2a_data.parent / "sfx"), tmp_path / "two", PrepareConfig(codec="halm-small", n_codebooks=2), progress=False)
    cases = [(["--run", str(tmp_path / "t2a"), "--max-tokens", "0"], "--max-tokens) must be >= 1"),
             (["--run", str(tmp_path / "t2a"), "--max-tokens", "-5"], "must be >= 1"),
             (["--run", str(tmp_path / "t2a"), "--data", str(tmp_path / "two")], "holds 2 codebooks but")]
    for flags, words in cases:
        r = subprocess.run([sys.executable, "-m", "halm", "eval", *flags], capture_output=True, text=True)
        assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, (flags, r.stderr)


def _edit_json(path, change):
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))


CORRUPTIONS = [  # (what to break, how, the message's words) — each gives one line naming the file
    ("checkpoint/model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:100]), "damaged weights file"),
    ("config.json", lambda p: _edit_json(p, lambda d: d["model"].update(n_layer=-1)), "n_layer must be >= 1"),
    ("config.json", lambda p: _edit_json(p, lambda d: d["model"].update(d_model="abc")), "d_model: expected int"),
    ("config.json", lambda p: _edit_json(p, lambda d: d.pop("model")), "no valid 'model'"),
    ("config.json", lambda p: _edit_json(p, lambda d: d["model"].update(context=4096)), "do not fit"),
    ("config.json", lambda p: p.write_text("{not json"), "not valid JSON"),
]


@pytest.mark.parametrize("name, damage, words", CORRUPTIONS)
def test_a_damaged_run_gives_one_line_naming_the_file(tmp_path, lm_data, name, damage, words):
    run = tmp_path / "run"
    train("tiny-gpt", str(lm_data), run, steps=1, overrides=FAST, progress=False)
    damage(run / name)
    r = subprocess.run([sys.executable, "-m", "halm", "eval", "--run", str(run)], capture_output=True, text=True)
    assert r.returncode == 2 and words in r.stderr and name.split("/")[-1] in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.write_bytes(p.read_bytes()[:50]), "damaged trainer state"),
    (lambda p: p.write_bytes(__import__("pickle").dumps({"step": 1, "x": os.system})), "does not unpickle code"),
])
def test_a_damaged_trainer_state_is_named_on_resume_without_suggesting_unsafe_loading(tmp_path, lm_data, damage, words):
    run = tmp_path / "run"
    train("tiny-gpt", str(lm_data), run, steps=1, overrides=FAST, progress=False)
    damage(run / "checkpoint" / "state.pt")
    r = subprocess.run([sys.executable, "-m", "halm", "train", "--preset", "tiny-gpt", "--data", str(lm_data), "--out",
                        str(run), "--steps", "2", "--set", *FAST], capture_output=True, text=True)
    assert r.returncode == 2 and words in r.stderr and "state.pt" in r.stderr and "weights_only" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_an_emptied_dataset_index_is_named(tmp_path, lm_data):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(lm_data, data)
    (data / "index.json").write_text("")
    r = subprocess.run([sys.executable, "-m", "halm", "train", "--preset", "tiny-gpt", "--data", str(data), "--out",
                        str(tmp_path / "run"), "--steps", "1"], capture_output=True, text=True)
    assert r.returncode == 2 and "index.json: damaged dataset index" in r.stderr and "halm prepare" in r.stderr


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys):
    import halm.cli as cli
    from halm.errors import UserError

    def user_error(args):
        raise UserError("bad flag --x: use --y")

    def bug(args):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(cli.lm, "cmd_presets", user_error)
    assert cli.main(["presets"]) == 2
    assert capsys.readouterr().err.strip() == "halm presets: error: bad flag --x: use --y"
    monkeypatch.setattr(cli.lm, "cmd_presets", bug)
    with pytest.raises(ValueError, match="internal invariant"):  # not turned into a user's mistake
        cli.main(["presets"])
    # every user-facing error class is a UserError
    from halm.audio import AudioError
    from halm.checkpoint import DamagedFile, FolderInUse
    from halm.data import SourceError
    from halm.data.prepare import DatasetMismatch
    from halm.listen import ListenError

    assert all(issubclass(c, UserError) for c in (AudioError, DamagedFile, FolderInUse, SourceError, DatasetMismatch,
                                                   ListenError, RunMismatch))


def test_damaged_shards_are_detected_and_changed_sources_encoded_again(tmp_path):
    src = tmp_path / "src"
    for i in range(6):
        _float_wav(src / f"c{i}.wav", _tone(0.5 + 0.1 * i))
    cfg = PrepareConfig(codec="halm-small", shard_size=2)
    prepare(str(src), tmp_path / "data", cfg, progress=False)
    shards = sorted((tmp_path / "data" / "shards").iterdir())
    assert len(shards) == 3 and all((d / "files.json").exists() for d in shards)
    codes = shards[0] / "codes.npy"
    codes.write_bytes(codes.read_bytes()[:-40])  # truncated
    with pytest.raises(DamagedFile, match="shard_00000: codes.npy has .* bytes"):
        [it.codes for s in ("train", "dev", "test") for it in open_dataset(tmp_path / "data", s)]
    r = subprocess.run([sys.executable, "-m", "halm", "train", "--preset", "tiny-gpt", "--data", str(tmp_path / "data"),
                        "--out", str(tmp_path / "run"), "--steps", "2", "--set", *FAST, "context=8"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "codes.npy has" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    untouched = {d.name: (d / "codes.npy").stat().st_mtime_ns for d in shards[1:]}
    r = prepare(str(src), tmp_path / "data", cfg, progress=False)
    assert [x["shard"] for x in r["reencoded"]] == [0] and "codes.npy" in r["reencoded"][0]["reason"]
    assert {d.name: (d / "codes.npy").stat().st_mtime_ns for d in shards[1:]} == untouched
    # a source changed in place: its shard is encoded again, the others are not
    _float_wav(src / "c5.wav", _tone(1.5, amp=0.1))
    r = prepare(str(src), tmp_path / "data", cfg, progress=False)
    assert len(r["reencoded"]) == 1 and "c5.wav changed since it was encoded" in r["reencoded"][0]["reason"]
    item = next(it for s in ("train", "dev", "test") for it in open_dataset(tmp_path / "data", s) if it.id == "c5")
    assert item.codes.shape[1] == -(-int(1.5 * 24000) // 320)
    assert prepare(str(src), tmp_path / "data", cfg, progress=False)["reencoded"] == []  # now all verified
    # a source file that is gone (a manifest still listing it) keeps its shard: nothing is lost
    from halm.audio.sources import SourceItem
    from halm.data.prepare import shard_problem

    listed = [SourceItem(f"c{i}", src / f"c{i}.wav") for i in (0, 1)]
    (src / "c0.wav").rename(tmp_path / "away.wav")
    assert shard_problem(shards[0], listed) is None


def test_fuzzed_manifests_and_transcripts_never_crash_with_a_traceback(tmp_path):
    """Random bytes and random JSON-ish lines: a reader yields items or raises SourceError, nothing else."""
    from halm.audio.sources import librispeech_source

    rng = np.random.default_rng(0)
    pieces = ['{"path": "a.wav"}', '{"path": 3}', '{"path": "b.wav", "split": "val"}', '{"text": 1, "path": "c"}',
              '[]', 'null', '{"path": "d.wav", "attributes": 5}', '{"path": "e.wav", "split": ["x"]}', '{', '"x"',
              '{"path": "f.wav", "id": "f"}', '{"path": "f.wav", "id": "f"}', '\ufeff{"path": "g.wav"}', '']
    chap = tmp_path / "train-clean-5" / "1" / "2"
    chap.mkdir(parents=True)
    sf.write(chap / "1-2-0000.flac", _tone().astype(np.float32), 16000)
    for trial in range(200):
        m = tmp_path / "m.jsonl"
        if trial % 2:
            m.write_bytes(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes())
        else:
            m.write_text("\n".join(str(rng.choice(pieces)) for _ in range(int(rng.integers(1, 8)))))
        trans = chap / "1-2.trans.txt"
        if trial % 3 == 0:
            trans.write_bytes(rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes())
        else:
            trans.write_text("\n".join(rng.choice(["1-2-0000 HELLO", "1-2-0001", "", "   ", "1-2-0009 X Y"], 3)))
        for reader, arg in ((manifest_source, m), (librispeech_source, tmp_path)):
            try:
                list(reader(arg))
            except SourceError:
                pass


def test_inspect_check_opens_the_audio(tmp_path):
    src = tmp_path / "src"
    _float_wav(src / "good.wav", _tone())
    for name, data, _ in BAD_AUDIO:
        _float_wav(src / name, data)
    r = subprocess.run([sys.executable, "-m", "halm", "inspect", str(src), "--check", "--json"], capture_output=True,
                       text=True)
    res = json.loads(r.stdout)
    assert r.returncode == 1 and res["n_bad_files"] == len(BAD_AUDIO) and res["sample_rates"] == {"24000": 1}
    reasons = {Path(b["path"]).name: b["reason"] for b in res["bad_files"]}
    assert all(words in reasons[name] for name, _, words in BAD_AUDIO) and res["seconds"] == pytest.approx(1.0)
