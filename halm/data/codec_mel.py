"""`halm prepare --source DATA --mel-source codec`: a prepared dataset's codec-mel version, from its codes.

The hybrid trained on the codec mel (`--mel-source codec`) sees in training what it sees when it
generates. A direct `prepare --mel-source codec` encodes the audio again; this reads DATA's codes and
decodes only codebook 0, and writes the dataset the direct command would (same index, same codes, the
mel equal up to float rounding), so either command continues the other.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from halm.audio.mel import MelConfig
from halm.checkpoint import file_sha256
from halm.codec.closed_loop import ClosedLoopMel
from halm.codec.model import Codec
from halm.data.prepare import (
    _CHECKED,
    _START_METHOD,
    _WORKER,
    SHARD_FILES,
    DatasetMismatch,
    PrepareConfig,
    _bad_features,
    _jsonl,
    _worker_init,
    shard_problem,
)
from halm.errors import UserError


def is_prepared(path: str | os.PathLike) -> bool:
    """Whether `path` is a halm dataset (index.json + shards/) rather than an audio source."""
    p = Path(path)
    return (p / "index.json").is_file() and (p / "shards").is_dir()


def derive_codec_mel(data: str | os.PathLike, out: str | os.PathLike, workers: int = 1, progress: bool = True,
                     batch_seconds: float = PrepareConfig.batch_seconds) -> dict:
    """`halm prepare --source DATA --mel-source codec`: DATA's dataset with the mel of the codec's coarse decoding.

    The audio is not read or encoded again: the codes, items and splits are DATA's; only the mel is decoded
    from codebook 0 (ClosedLoopMel.full, as prepare --mel-source codec does after encoding). The index equals
    the one a direct `prepare --mel-source codec` of DATA's source would write, so either command continues
    the other; `derived_from` names DATA. Resumable shard by shard, like prepare."""
    from halm.checkpoint import FolderLock

    data, out = Path(data), Path(out)
    src = json.loads((data / "index.json").read_text())
    if not src.get("complete"):
        raise UserError(f"{data}: not completely prepared; finish it first (rerun its halm prepare command)")
    if src.get("mel_source") == "codec":
        raise UserError(f"{data}: its mel is already the codec's (mel_source codec)")
    if out.resolve() == data.resolve():
        raise UserError(f"--out {out} is the source dataset; give another folder")
    codec = Codec.load(src["codec"]["name"])
    if codec.info().weights_sha256 != src["codec"]["weights_sha256"]:
        raise DatasetMismatch(f"{data} was prepared with other weights of codec {src['codec']['name']!r}; "
                              f"the codec mel must come from the codec that made the codes")
    mel_cfg = MelConfig.from_dict(src["mel"])
    expected = {k: v for k, v in src.items() if k not in ("complete", "n_shards", "splits", "n_skipped",
                                                          "n_without_text", "derived_from")}
    expected["mel_source"] = "codec"
    lock = FolderLock(out)
    lock.acquire()
    try:
        index_path = out / "index.json"
        if index_path.exists():
            old = json.loads(index_path.read_text())
            if diff := [k for k in _CHECKED if old.get(k) != expected.get(k)]:
                raise DatasetMismatch(f"{out} was prepared with other settings ({', '.join(diff)} differ); use another --out")
        (out / "shards").mkdir(parents=True, exist_ok=True)
        index_path.write_text(json.dumps({**expected, "derived_from": str(data), "complete": False}, indent=2) + "\n")
        names = [f"shard_{k:05d}" for k in range(src["n_shards"])]
        for n in names:
            if (out / "shards" / n).is_dir() and (why := shard_problem(out / "shards" / n)):
                print(f"halm prepare: {out / 'shards' / n}: {why}; decoding it again", file=sys.stderr)
                shutil.rmtree(out / "shards" / n)
        todo = [(str(data / "shards" / n), str(out / "shards" / n)) for n in names if not (out / "shards" / n).is_dir()]
        for s, _ in todo:  # a damaged source shard: one line naming it, before any decoding
            if not Path(s).is_dir() or (why := shard_problem(Path(s))):
                raise UserError(f"{s}: {why if Path(s).is_dir() else 'missing'}; rerun the halm prepare command that made "
                                f"{data} (it prepares that shard again), then this one")
        seconds = [sum(r["seconds"] for r in _jsonl(Path(s) / "items.jsonl")) for s, _ in todo]
        bar = tqdm(total=sum(seconds), unit="s", unit_scale=True, desc="codec mel", disable=not progress,
                   dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}{postfix}]")
        t0 = time.perf_counter()
        cfg = asdict(PrepareConfig(codec=src["codec"]["name"], mel_source="codec", batch_seconds=batch_seconds))
        init_args = (src["codec"]["name"], None, mel_cfg.to_dict(), cfg)
        if workers > 1 and len(todo) > 1:
            import multiprocessing as mp

            with mp.get_context(_START_METHOD).Pool(workers, initializer=_worker_init, initargs=init_args) as pool:
                for s in pool.imap_unordered(_derive_shard, todo):
                    bar.update(s)
                    bar.set_postfix_str(f"{bar.n / max(time.perf_counter() - t0, 1e-9):.1f}x real time")
        else:
            _WORKER.update(codec=codec, mel=mel_cfg, cfg=PrepareConfig(**cfg))
            for job in todo:
                bar.update(_derive_shard(job))
                bar.set_postfix_str(f"{bar.n / max(time.perf_counter() - t0, 1e-9):.1f}x real time")
        bar.close()
        elapsed = time.perf_counter() - t0
        splits: dict[str, dict] = {}
        skipped = []
        for n in names:
            for r in _jsonl(out / "shards" / n / "items.jsonl"):
                s = splits.setdefault(r["split"], {"items": 0, "frames": 0, "seconds": 0.0})
                s["items"], s["frames"] = s["items"] + 1, s["frames"] + r["frames"]
                s["seconds"] = round(s["seconds"] + r["seconds"], 3)
            skipped += _jsonl(out / "shards" / n / "skipped.jsonl")
        with open(out / "skipped.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in skipped)
        index = {**expected, "derived_from": str(data), "complete": True, "n_shards": len(names), "splits": splits,
                 "n_skipped": len(skipped), "n_without_text": src.get("n_without_text", 0)}
        tmp = index_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(index, indent=2) + "\n")
        os.replace(tmp, index_path)
    finally:
        lock.release()
    new_s = sum(seconds)
    return {"out": str(out), "derived_from": str(data), "items": sum(s["items"] for s in splits.values()),
            "skipped": len(skipped), "without_text": index["n_without_text"], "reencoded": [], "splits": splits,
            "new_seconds": round(new_s, 2), "elapsed_s": round(elapsed, 2),
            "realtime_factor": round(new_s / elapsed, 1) if todo and elapsed > 0 else None}


def _derive_shard(job) -> float:
    """One shard of derive_codec_mel: DATA's codes and items, the codec mel decoded from codebook 0, written
    to a temp folder and renamed. Returns the seconds of audio it covers."""
    src, final = Path(job[0]), Path(job[1])
    codec, mel_cfg, cfg = _WORKER["codec"], _WORKER["mel"], _WORKER["cfg"]
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows, codes = _jsonl(src / "items.jsonl"), np.load(src / "codes.npy")  # (K, sum T)
    skipped = _jsonl(src / "skipped.jsonl")
    mels: dict[int, np.ndarray] = {}
    order = sorted(range(len(rows)), key=lambda i: rows[i]["frames"])  # batches of similar length, as prepare
    budget = int(cfg.batch_seconds * codec.frame_rate)
    i = 0
    while i < len(order):
        group = [order[i]]
        while i + len(group) < len(order) and rows[order[i + len(group)]]["frames"] * (len(group) + 1) <= budget:
            group.append(order[i + len(group)])
        i += len(group)
        T = max(rows[j]["frames"] for j in group)
        batch = torch.zeros(len(group), T, dtype=torch.long)  # the causal decoder: padding after a clip never reaches it
        for b, j in enumerate(group):
            r = rows[j]
            batch[b, : r["frames"]] = torch.from_numpy(codes[0, r["offset"]: r["offset"] + r["frames"]].astype(np.int64))
        mel = ClosedLoopMel(codec, mel_cfg).full(batch)  # (B, T, r, M)
        for b, j in enumerate(group):
            mels[j] = mel[b, : rows[j]["frames"]].float()
    keep, out_rows, offset = [], [], 0
    for j, r in enumerate(rows):
        c = torch.from_numpy(codes[:, r["offset"]: r["offset"] + r["frames"]].astype(np.int64))
        if bad := _bad_features(c, mels[j], codec.codebook_size):
            skipped.append({"id": r["id"], "path": r["path"], "reason": bad})
            continue
        keep.append(j)
        out_rows.append({**r, "offset": offset})
        offset += r["frames"]
    if len(keep) == len(rows):
        shutil.copyfile(src / "codes.npy", tmp / "codes.npy")
    else:
        np.save(tmp / "codes.npy", np.concatenate([codes[:, rows[j]["offset"]: rows[j]["offset"] + rows[j]["frames"]]
                                                   for j in keep], axis=1) if keep else codes[:, :0])
    mel_all = (np.concatenate([mels[j].numpy().astype(np.float16) for j in keep], axis=0) if keep
               else np.zeros((0, mel_cfg.frames_per_token, mel_cfg.n_mels), np.float16))
    np.save(tmp / "mel.npy", mel_all)
    with open(tmp / "items.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in out_rows)
    with open(tmp / "skipped.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in skipped)
    record = {"files": {n: {"size": (tmp / n).stat().st_size, "sha256": file_sha256(tmp / n)} for n in SHARD_FILES},
              "sources": json.loads((src / "files.json").read_text())["sources"] if (src / "files.json").exists() else {}}
    (tmp / "files.json").write_text(json.dumps(record) + "\n")
    os.replace(tmp, final)
    return sum(r["seconds"] for r in rows)
