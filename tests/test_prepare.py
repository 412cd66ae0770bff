import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from halm.audio import MelConfig, causal_log_mel, load_audio
from halm.codec.model import Codec
from halm.data import open_dataset
from halm.data.codec_mel import derive_codec_mel
from halm.data.prepare import DatasetMismatch, PrepareConfig, hash_split, prepare
from halm.data.synth import synthesize
from halm.errors import UserError
from tests.helpers import tiny_codec_dir


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    synthesize("sfx", d / "sfx", 0.4, seed=2, progress=False)
    return d / "sfx"


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory):
    return tiny_codec_dir(tmp_path_factory.mktemp("codec") / "tiny")


def digest(d):
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        if p.is_file() and p.name not in ("index.json", ".lock"):  # .lock: who wrote it last
            h.update(str(p.relative_to(d)).encode() + p.read_bytes())
    return h.hexdigest()


def test_prepare_writes_aligned_codes_and_mel(tmp_path, corpus, codec_dir):
    cfg = PrepareConfig(codec=str(codec_dir), shard_size=3, test_share=0.2, dev_share=0.2)
    r = prepare(str(corpus), tmp_path / "data", cfg, progress=False)
    n_items = len((corpus / "manifest.jsonl").read_text().splitlines())
    assert r["items"] == n_items and r["skipped"] == 0
    index = json.loads((tmp_path / "data" / "index.json").read_text())
    codec = Codec.load(codec_dir)
    assert index["codec"]["weights_sha256"] == codec.info().weights_sha256 and index["complete"]
    assert index["mel"]["hop_length"] == 320 and index["mel"]["frames_per_token"] == 2
    ds = open_dataset(tmp_path / "data")
    assert len(ds) == n_items
    mel_cfg = MelConfig.from_dict(index["mel"])
    for item in ds:
        wav, _ = load_audio(corpus / "audio" / f"{item.id}.wav", sample_rate=24000)
        T = -(-wav.shape[1] // 320)
        assert item.codes.shape == (4, T) and item.codes.dtype == np.uint16
        assert item.mel.shape == (T, 2, 80) and item.mel.dtype == np.float16
        # batched encoding gives each clip exactly its own codes and mel
        assert np.array_equal(item.codes, codec.encode(torch.from_numpy(wav)[None], 24000)[0].numpy())
        np.testing.assert_allclose(item.mel, causal_log_mel(torch.from_numpy(wav[0]), mel_cfg).numpy(), atol=2e-3)
        assert item.text and "events" in item.attributes
        assert isinstance(item.codes.base, np.memmap) or isinstance(item.codes, np.memmap)
    splits = {s: len(open_dataset(tmp_path / "data", s)) for s in ("train", "dev", "test")}
    assert sum(splits.values()) == n_items and min(splits.values()) > 0  # >= 3 items: no split left empty
    for name in ("dev", "test"):
        by_hash = [it for it in open_dataset(tmp_path / "data", name) if hash_split(it.id, 0.2, 0.2) == name]
        assert len(by_hash) == splits[name] or (not by_hash and splits[name] == 1)  # the hash, or one moved item


def test_bad_files_are_skipped_and_reported(tmp_path, corpus, codec_dir, write_audio):
    src = tmp_path / "src"
    shutil.copytree(corpus / "audio", src / "good")
    (src / "broken.wav").write_bytes(b"RIFF not really")
    write_audio("src/short.wav", np.zeros(100, dtype=np.float32), 24000)
    r = prepare(str(src), tmp_path / "data", PrepareConfig(codec=str(codec_dir), shard_size=4), progress=False)
    lines = (tmp_path / "data" / "skipped.jsonl").read_text().splitlines()
    reasons = {json.loads(line)["id"]: json.loads(line)["reason"] for line in lines}
    assert set(reasons) == {"broken", "short"} and r["skipped"] == 2
    assert reasons["broken"].startswith("unreadable audio") and reasons["short"].startswith("too short")
    assert r["items"] == len(list((src / "good").glob("*.wav")))
    r = prepare(str(src), tmp_path / "data_t", PrepareConfig(codec=str(codec_dir), require_text=True), progress=False)
    assert r["items"] == 0 and r["skipped"] == len(list((src / "good").glob("*.wav"))) + 2


def test_resume_recomputes_nothing_done_and_refuses_other_settings(tmp_path, corpus, codec_dir):
    cfg = PrepareConfig(codec=str(codec_dir), shard_size=2)
    prepare(str(corpus), tmp_path / "full", cfg, progress=False)
    prepare(str(corpus), tmp_path / "part", cfg, progress=False)
    shards = sorted((tmp_path / "part" / "shards").iterdir())
    assert len(shards) >= 3
    # as if killed while writing the last shard: its folder is a half-written temp folder
    shutil.rmtree(shards[-1])
    (tmp_path / "part" / "shards" / f".{shards[-1].name}.tmp").mkdir()
    before = {p.name: p.stat().st_mtime_ns for p in shards[:-1]}
    r = prepare(str(corpus), tmp_path / "part", cfg, progress=False)
    assert r["new_seconds"] > 0 and r["previously_done_seconds"] > 0
    assert {p.name: p.stat().st_mtime_ns for p in shards[:-1]} == before  # untouched
    assert not list((tmp_path / "part" / "shards").glob(".*.tmp"))
    assert digest(tmp_path / "part") == digest(tmp_path / "full")
    again = prepare(str(corpus), tmp_path / "part", cfg, progress=False)
    assert again["new_seconds"] == 0 and again["realtime_factor"] is None
    with pytest.raises(DatasetMismatch, match="mel"):
        prepare(str(corpus), tmp_path / "part", PrepareConfig(codec=str(codec_dir), shard_size=2, frames_per_token=4), progress=False)
    other = tiny_codec_dir(tmp_path / "other_codec", seed=5)
    with pytest.raises(DatasetMismatch, match="codec"):
        prepare(str(corpus), tmp_path / "part", PrepareConfig(codec=str(other), shard_size=2), progress=False)


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_same_dataset(tmp_path, corpus, codec_dir):
    args = [sys.executable, "-m", "halm", "prepare", "--source", str(corpus), "--codec", str(codec_dir),
            "--shard-size", "1", "--workers", "1", "--json"]  # one clip per shard, one at a time: the kill lands mid-run
    subprocess.run(args + ["--out", str(tmp_path / "full")], check=True, capture_output=True)
    proc = subprocess.Popen(args + ["--out", str(tmp_path / "killed")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = tmp_path / "killed" / "shards" / "shard_00000"
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.002)  # (with 2 workers and 50 ms polls a fast CPU finished all shards before the kill)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not json.loads((tmp_path / "killed" / "index.json").read_text())["complete"]
    with pytest.raises(ValueError, match="did not finish"):
        open_dataset(tmp_path / "killed")
    out = subprocess.run(args + ["--out", str(tmp_path / "killed")], check=True, capture_output=True, text=True).stdout
    assert json.loads(out)["previously_done_seconds"] > 0
    assert digest(tmp_path / "killed") == digest(tmp_path / "full")


@pytest.mark.slow
def test_parallel_workers_give_the_same_dataset(tmp_path, corpus, codec_dir):
    cfg = PrepareConfig(codec=str(codec_dir), shard_size=4)
    prepare(str(corpus), tmp_path / "one", cfg, workers=1, progress=False)
    prepare(str(corpus), tmp_path / "two", cfg, workers=2, progress=False)
    assert digest(tmp_path / "one") == digest(tmp_path / "two")


@pytest.mark.slow
def test_torchrun_splits_the_shards_across_ranks_and_gives_the_same_dataset(tmp_path, corpus, codec_dir):
    """torchrun, 2 gloo processes: shard k encoded by rank k mod 2, the index completed by rank 0 once both are
    done; the dataset equals one process's. A rerun resumes (nothing new), and other settings are refused on
    every rank (one clear line, no rank left waiting)."""
    args = ["prepare", "--source", str(corpus), "--codec", str(codec_dir), "--shard-size", "2", "--device", "cpu",
            "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "halm", *args, "--out", str(tmp_path / "one")], check=True, env=env,
                   capture_output=True)

    def torchrun(*extra):
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                               "29531", "-m", "halm", *args, "--out", str(tmp_path / "two"), *extra], env=env,
                              capture_output=True, text=True, timeout=300)

    r = torchrun()
    assert r.returncode == 0, r.stderr[:3000] + "\n...\n" + r.stderr[-1500:]  # the ranks' own lines come first
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == 1 and lines[0]["realtime_factor"] is not None  # rank 0 reports for both
    assert digest(tmp_path / "one") == digest(tmp_path / "two")
    one, two = (json.loads((tmp_path / d / "index.json").read_text()) for d in ("one", "two"))
    assert two["complete"] and {k: v for k, v in one.items() if k != "created"} == {k: v for k, v in two.items()
                                                                                      if k != "created"}
    r = torchrun()  # nothing left to do: the ranks exit at once (a rank that closed its group early aborted the other)
    assert r.returncode == 0, r.stderr[:3000] + "\n...\n" + r.stderr[-1500:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["realtime_factor"] is None
    r = torchrun("--n-mels", "64")
    assert r.returncode != 0 and "other settings" in r.stderr


def test_mel_source_codec_stores_the_closed_loop_mel(tmp_path, corpus, codec_dir):
    from halm.codec.closed_loop import ClosedLoopMel

    prepare(str(corpus), tmp_path / "audio_mel", PrepareConfig(codec=str(codec_dir)), progress=False)
    prepare(str(corpus), tmp_path / "codec_mel", PrepareConfig(codec=str(codec_dir), mel_source="codec"), progress=False)
    assert json.loads((tmp_path / "codec_mel" / "index.json").read_text())["mel_source"] == "codec"
    closed = ClosedLoopMel(Codec.load(codec_dir), MelConfig())
    for a, c in zip(open_dataset(tmp_path / "audio_mel"), open_dataset(tmp_path / "codec_mel")):
        assert np.array_equal(a.codes, c.codes)
        expected = closed.full(torch.from_numpy(c.codes[:1].astype(np.int64)))[0].numpy()
        np.testing.assert_allclose(c.mel.astype(np.float32), expected, atol=2e-3)  # float16 storage
        assert np.abs(c.mel.astype(np.float32) - a.mel.astype(np.float32)).mean() > 0.05


def test_the_codec_mel_derived_from_a_dataset_equals_a_direct_prepare_and_resumes(tmp_path, corpus, codec_dir):
    cfg = PrepareConfig(codec=str(codec_dir), shard_size=3)
    prepare(str(corpus), tmp_path / "audio_mel", cfg, progress=False)
    prepare(str(corpus), tmp_path / "direct", PrepareConfig(codec=str(codec_dir), shard_size=3, mel_source="codec"),
            progress=False)
    r = derive_codec_mel(tmp_path / "audio_mel", tmp_path / "derived", progress=False)
    assert r["realtime_factor"] and r["items"] == sum(s["items"] for s in r["splits"].values())
    direct, derived = (json.loads((tmp_path / n / "index.json").read_text()) for n in ("direct", "derived"))
    assert derived.pop("derived_from") == str(tmp_path / "audio_mel") and derived == direct
    for a, b in zip(open_dataset(tmp_path / "direct"), open_dataset(tmp_path / "derived"), strict=True):
        assert a.id == b.id and a.split == b.split and np.array_equal(a.codes, b.codes)
        # batches group other clips than the direct run's, so float rounding may differ by a float16 step
        np.testing.assert_allclose(b.mel.astype(np.float32), a.mel.astype(np.float32), atol=2e-2)
    shards = sorted((tmp_path / "derived" / "shards").glob("shard_*"))
    assert len(shards) >= 2
    assert (shards[0] / "codes.npy").read_bytes() == (tmp_path / "audio_mel" / "shards" / shards[0].name / "codes.npy").read_bytes()
    # a direct prepare accepts the derived folder as finished; a lost shard is decoded again (2 workers), no other
    again = prepare(str(corpus), tmp_path / "derived", PrepareConfig(codec=str(codec_dir), shard_size=3,
                                                                     mel_source="codec"), progress=False)
    assert again["realtime_factor"] is None
    kept = (shards[1] / "mel.npy").stat().st_mtime_ns
    shutil.rmtree(shards[0])
    r = derive_codec_mel(tmp_path / "audio_mel", tmp_path / "derived", workers=2, progress=False)
    assert (shards[1] / "mel.npy").stat().st_mtime_ns == kept and (shards[0] / "mel.npy").exists()
    assert r["new_seconds"] < sum(s["seconds"] for s in r["splits"].values())
    np.testing.assert_allclose(np.load(shards[0] / "mel.npy").astype(np.float32),
                               np.load(tmp_path / "direct" / "shards" / shards[0].name / "mel.npy").astype(np.float32), atol=2e-2)
    with pytest.raises(UserError, match="already the codec"):
        derive_codec_mel(tmp_path / "direct", tmp_path / "again", progress=False)
    bad = subprocess.run([sys.executable, "-m", "halm", "prepare", "--source", str(tmp_path / "audio_mel"), "--out",
                          str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode == 2 and "--mel-source codec" in bad.stderr and "Traceback" not in bad.stderr
    # a damaged source shard is named before anything is decoded; the shards derived so far stay
    src_codes = tmp_path / "audio_mel" / "shards" / shards[1].name / "codes.npy"
    src_codes.write_bytes(src_codes.read_bytes()[:-8])
    shutil.rmtree(shards[1])
    with pytest.raises(UserError, match=rf"{shards[1].name}: codes.npy has .* bytes"):
        derive_codec_mel(tmp_path / "audio_mel", tmp_path / "derived", progress=False)
    assert (shards[0] / "mel.npy").exists() and not shards[1].exists()


def test_captions_of_one_recording_share_a_split_and_other_items_keep_their_id_hash():
    from halm.audio.sources import SourceItem
    from halm.data.prepare import _ensure_splits

    shared = [SourceItem(id=f"rec{r}_cap{c}", path=Path(f"/a/rec{r}.wav"), text=f"caption {c}") for r in range(30)
              for c in range(5)]  # five captions per recording, as AudioCaps' test set has
    alone = [SourceItem(id=f"clip{i}", path=Path(f"/a/clip{i}.wav"), text="x") for i in range(40)]
    _ensure_splits(shared + alone, PrepareConfig(test_share=0.2, dev_share=0.2))
    for r in range(30):
        assert len({it.split for it in shared if it.path == Path(f"/a/rec{r}.wav")}) == 1
    assert {it.split for it in shared} == {"train", "dev", "test"}
    assert all(it.split == hash_split(it.id, 0.2, 0.2) for it in alone)  # unchanged for one clip per file
