"""`halm prepare`: audio source -> tokenized dataset (codec codes + causal mel), resumable.

DATA/
  index.json                codec identity (name + weights hash) and settings, mel settings, splits, source
  shards/shard_00000/       one folder per `shard_size` items, written to a temp folder then renamed
      codes.npy             (K, sum T) uint16: the items' codes laid end to end
      mel.npy               (sum T, r, M) float16: their causal mel slices
      items.jsonl           id, text, attributes, split, offset, frames, seconds, path
      skipped.jsonl         files of this shard that could not be used, with the reason
  skipped.jsonl             all skipped files (rewritten at the end of every run)

Items are cut into shards in the order the source yields them, so a rerun skips every finished
shard and redoes only the one that was interrupted: nothing recomputed, lost or duplicated. A
DATA folder refuses a second codec, mel setting or a changed source.

Alignment: each clip is padded with zeros to whole codec frames (T = ceil(N / hop)) before
encoding, so the codes of a clip do not depend on the batch it was encoded in, and slice t of the
causal mel covers exactly the audio of codec frame t.

Splits: a source's own split (LibriSpeech train/dev/test; a manifest's "split") is kept; other items
get a deterministic split from a hash of their id: `test_share` test, `dev_share` dev, rest train.
Items that share one audio file (several captions of a recording) hash the file instead: all in one split.
With >= 3 items no asked-for split is left empty (the nearest train item by hash moves there); an
empty split is reported. Items are checked after encoding too: codes outside the codebook or a
non-finite / absurd mel skip the item with the reason.

Integrity: each shard records the size and sha256 of its files and the size and mtime of its source
files (shard_*/files.json). A rerun checks every finished shard against it and encodes again a shard
whose files were damaged or whose sources changed in place; opening a dataset checks the sizes.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from halm.audio.io import AudioError, load_audio
from halm.audio.mel import MelConfig, causal_log_mel
from halm.checkpoint import file_sha256
from halm.codec.closed_loop import ClosedLoopMel
from halm.codec.model import DEFAULT_CODEC, Codec
from halm.errors import UserError

INDEX_VERSION = 1


@dataclass
class PrepareConfig:
    codec: str = DEFAULT_CODEC
    n_codebooks: int | None = None  # None: all codebooks of the codec
    frames_per_token: int = 2
    n_mels: int = 80
    mel_source: str = "audio"  # "audio": mel of the real audio; "codec": mel of the coarse-only codec decoding
    shard_size: int = 128
    test_share: float = 0.05
    dev_share: float = 0.05
    min_seconds: float = 0.1
    require_text: bool = False
    batch_seconds: float = 8.0  # audio per encoder batch: 8 s ran 2.2x faster than 60 s on CPU (cache-sized activations)

    def __post_init__(self):
        if self.mel_source not in ("audio", "codec"):
            raise UserError(f"mel_source must be 'audio' or 'codec', got {self.mel_source!r}")


def hash_split(item_id: str, test_share: float, dev_share: float) -> str:
    u = int(hashlib.sha1(item_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if u < test_share else "dev" if u < test_share + dev_share else "train"


def _ensure_splits(items, cfg: PrepareConfig) -> None:
    """Hash splits of >= 3 items leave no asked-for split empty: the train items whose hashes lie nearest
    the test (then dev) range move there. Sources with their own splits are left as they are."""
    if len(items) < 3 or any(it.split for it in items):
        return
    # what is hashed: the id; but clips of one audio file (several captions of a recording, as in AudioCaps)
    # hash their file, so that no recording is in two splits
    uses = collections.Counter(str(it.path) for it in items)
    key = {it.id: str(it.path) if uses[str(it.path)] > 1 else it.id for it in items}
    u = {it.id: int(hashlib.sha1(key[it.id].encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for it in items}
    for it in items:
        it.split = hash_split(key[it.id], cfg.test_share, cfg.dev_share)
    for name, share, target in (("test", cfg.test_share, 0.0), ("dev", cfg.dev_share, cfg.test_share)):
        if share > 0 and not any(it.split == name for it in items):
            train = [it for it in items if it.split == "train"]
            if len(train) > 1:
                nearest = min(train, key=lambda it: abs(u[it.id] - target))
                for it in train:  # the whole recording moves
                    if key[it.id] == key[nearest.id]:
                        it.split = name


def _source_digest(items) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.id}\t{it.path}\n".encode())
    return h.hexdigest()[:16]


def _expected_index(cfg: PrepareConfig, codec: Codec, mel: MelConfig, source: str, items) -> dict:
    return {
        "version": INDEX_VERSION,
        "codec": asdict(codec.info()),
        "mel": mel.to_dict(),
        "mel_source": cfg.mel_source,
        "source": str(source),
        "source_digest": _source_digest(items),
        "n_items": len(items),
        "shard_size": cfg.shard_size,
        "test_share": cfg.test_share,
        "dev_share": cfg.dev_share,
        "min_seconds": cfg.min_seconds,
        "require_text": cfg.require_text,
    }


_CHECKED = ("version", "codec", "mel", "mel_source", "source_digest", "shard_size", "test_share", "dev_share",
            "min_seconds", "require_text")


class DatasetMismatch(UserError):
    pass


def _encode_shard(codec: Codec, mel_cfg: MelConfig, cfg: PrepareConfig, items, shard_dir: Path,
                  on_clips=None) -> tuple[float, int]:
    """Encode one shard into shard_dir (a temp folder). Returns (seconds of audio, items written).
    on_clips(n, seconds): called as clips are done (skipped ones at once, encoded ones per batch)."""
    on_clips = on_clips or (lambda n, seconds: None)
    sr, hop = codec.sample_rate, codec.hop_length
    loaded, skipped = [], []
    for it in items:
        reason = None
        if cfg.require_text and not (it.text or "").strip():
            reason = "missing text"
        else:
            try:
                wav, _ = load_audio(it.path, sample_rate=sr, min_seconds=cfg.min_seconds, warn_silent=False)
                loaded.append((it, wav[0]))
            except AudioError as e:
                reason = e.reason
        if reason:
            skipped.append({"id": it.id, "path": str(it.path), "reason": reason})
            on_clips(1, 0.0)
    # batch clips of similar length; pad each to whole frames so its codes do not depend on the batch
    order = sorted(range(len(loaded)), key=lambda i: len(loaded[i][1]))
    codes_out: dict[int, np.ndarray] = {}
    mels_out: dict[int, np.ndarray] = {}
    budget = int(cfg.batch_seconds * sr)
    i = 0
    while i < len(order):
        group = [order[i]]
        while i + len(group) < len(order) and len(loaded[order[i + len(group)]][1]) * (len(group) + 1) <= budget:
            group.append(order[i + len(group)])
        i += len(group)
        frames = [-(-len(loaded[j][1]) // hop) for j in group]
        batch = torch.zeros(len(group), 1, max(frames) * hop)
        for b, j in enumerate(group):
            batch[b, 0, : len(loaded[j][1])] = torch.from_numpy(loaded[j][1])
        codes = codec.encode(batch, sr).cpu()  # (B, K, T)
        if cfg.mel_source == "codec":
            # the causal mel of the coarse-only decoding: what the hybrid sees when it generates
            mel = ClosedLoopMel(codec, mel_cfg).full(codes[:, 0])  # (B, T, r, M)
        else:
            mel = causal_log_mel(batch[:, 0], mel_cfg)  # (B, T, r, M)
        for b, j in enumerate(group):
            c, m = codes[b, :, : frames[b]], mel[b, : frames[b]].float()
            if bad := _bad_features(c, m, codec.codebook_size):  # check what was produced, not only what was read
                skipped.append({"id": loaded[j][0].id, "path": str(loaded[j][0].path), "reason": bad})
                continue
            codes_out[j] = c.numpy().astype(np.uint16)
            mels_out[j] = m.numpy().astype(np.float16)
        on_clips(len(group), sum(len(loaded[j][1]) for j in group) / sr)
    loaded = [x for j, x in enumerate(loaded) if j in codes_out]
    codes_out = dict(enumerate(codes_out[j] for j in sorted(codes_out)))
    mels_out = dict(enumerate(mels_out[j] for j in sorted(mels_out)))
    rows, offset, seconds = [], 0, 0.0
    for j, (it, wav) in enumerate(loaded):
        T = codes_out[j].shape[1]
        split = it.split or hash_split(it.id, cfg.test_share, cfg.dev_share)
        rows.append({"id": it.id, "text": it.text, "attributes": it.attributes, "split": split, "offset": offset,
                     "frames": T, "seconds": round(len(wav) / sr, 4), "path": str(it.path)})
        offset += T
        seconds += len(wav) / sr
    K = codec.n_codebooks
    codes_all = np.concatenate([codes_out[j] for j in range(len(loaded))], axis=1) if loaded else np.zeros((K, 0), np.uint16)
    mel_all = (np.concatenate([mels_out[j] for j in range(len(loaded))], axis=0) if loaded
               else np.zeros((0, mel_cfg.frames_per_token, mel_cfg.n_mels), np.float16))
    np.save(shard_dir / "codes.npy", codes_all)
    np.save(shard_dir / "mel.npy", mel_all)
    with open(shard_dir / "items.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    with open(shard_dir / "skipped.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in skipped)
    return seconds, len(rows)


MEL_LIMIT = 1000.0  # |log-mel| beyond this (or beyond float16) is not a spectrum of real audio


def _bad_features(codes: torch.Tensor, mel: torch.Tensor, codebook_size: int) -> str | None:
    """Why an item's codes (K, T) / mel (T, r, M) cannot be stored, or None."""
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= codebook_size):
        return f"the codec produced codes outside [0, {codebook_size})"
    if not torch.isfinite(mel).all():
        return f"the mel of this audio is not finite ({100 * float((~torch.isfinite(mel)).float().mean()):.0f}% of values)"
    if mel.numel() and float(mel.abs().max()) > MEL_LIMIT:
        return f"the mel of this audio is out of range (|value| up to {float(mel.abs().max()):.3g})"
    return None


def _jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


_WORKER: dict = {}
# Workers forked from this process start at once: torch and transformers are already imported, while a
# spawned worker spent ~6 s importing them (benchmarks/prepare_throughput.py --profile). They run one
# thread each, so the parent's thread pool is never used in a child. Elsewhere (macOS, Windows) fork is
# unsafe or missing: spawn.
_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


def _worker_init(codec_spec: str, n_codebooks, mel_cfg: dict, cfg: dict) -> None:
    torch.set_num_threads(1)
    _WORKER["codec"] = Codec.load(codec_spec, n_codebooks=n_codebooks)
    _WORKER["mel"] = MelConfig.from_dict(mel_cfg)
    _WORKER["cfg"] = PrepareConfig(**cfg)


SHARD_FILES = ("codes.npy", "mel.npy", "items.jsonl", "skipped.jsonl")


def _source_stamp(path) -> dict | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_shard_record(shard_dir: Path, items) -> None:
    """shard_dir/files.json: size + sha256 of each shard file, size + mtime of each source file."""
    record = {"files": {n: {"size": (shard_dir / n).stat().st_size, "sha256": file_sha256(shard_dir / n)} for n in SHARD_FILES},
              "sources": {it.id: {"path": str(it.path), **(_source_stamp(it.path) or {"missing": True})} for it in items}}
    (shard_dir / "files.json").write_text(json.dumps(record) + "\n")


def shard_problem(shard_dir: Path, items=None, checksums: bool = True) -> str | None:
    """Why a finished shard cannot be trusted (a damaged file, a source changed since), or None.
    Shards made before files.json existed are checked for consistent array lengths only."""
    rec_path = shard_dir / "files.json"
    if rec_path.exists():
        try:
            rec = json.loads(rec_path.read_text())
            files, sources = dict(rec["files"]), dict(rec["sources"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
            return "files.json is damaged"
        for name, want in files.items():
            f = shard_dir / name
            if not f.exists() or f.stat().st_size != want.get("size"):
                return f"{name} has {f.stat().st_size if f.exists() else 'no'} bytes, {want.get('size')} were written"
            if checksums and file_sha256(f) != want.get("sha256"):
                return f"{name} changed since it was written (sha256)"
        for it in items or []:
            old, now = sources.get(it.id), _source_stamp(it.path)
            # a source that is gone keeps its encoding (nothing is lost); one rewritten in place is encoded again
            if isinstance(old, dict) and now is not None and now != {k: old.get(k) for k in ("size", "mtime_ns")}:
                return f"source {it.path} changed since it was encoded"
        return None
    try:
        rows = _jsonl(shard_dir / "items.jsonl")
        frames = sum(r["frames"] for r in rows)
        codes, mel = np.load(shard_dir / "codes.npy", mmap_mode="r"), np.load(shard_dir / "mel.npy", mmap_mode="r")
    except (OSError, ValueError, json.JSONDecodeError, KeyError) as e:
        return f"unreadable ({e})"
    if codes.shape[1] != frames or mel.shape[0] != frames:
        return f"arrays hold {codes.shape[1]} / {mel.shape[0]} frames, its items {frames}"
    return None


def _worker_shard(args):
    shard_idx, items, out = args
    final, tmp = Path(out) / "shards" / f"shard_{shard_idx:05d}", Path(out) / "shards" / f".shard_{shard_idx:05d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    seconds, n = _encode_shard(_WORKER["codec"], _WORKER["mel"], _WORKER["cfg"], items, tmp, _WORKER.get("on_clips"))
    _write_shard_record(tmp, items)
    os.replace(tmp, final)
    return shard_idx, seconds, n


def prepare(source: str, out: str | os.PathLike, cfg: PrepareConfig | None = None, workers: int = 1,
            progress: bool = True, device="cpu") -> dict:
    """Tokenize `source` into `out` (see the module doc); `out` is locked (OUT/.lock) while it is written.

    device: where the codec encodes ("cpu", "cuda[:N]", "auto"). On a GPU one process encodes each shard
    as one batch (workers is then 1). The device is not a dataset setting: a dataset may be continued on
    another device (GPU and CPU kernels can round differently, so a rare code may differ).

    Under torchrun (`torchrun --nproc_per_node N [--nnodes M ...] -m halm prepare ...`) the shards are split
    across the processes (shard k goes to rank k mod N; each rank encodes on its own GPU, cuda:LOCAL_RANK,
    when the device is auto or cuda), rank 0 holds the lock, checks and writes the index, and the index is
    completed once every rank is done. The dataset is the one a single process makes; a rerun resumes."""
    from halm.checkpoint import FolderLock
    from halm.config import resolve_device

    rank, world = _dist_init()
    device = resolve_device(device)
    if device.type == "cuda":
        workers = 1
        if world > 1 and device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    lock = FolderLock(out)
    _on_rank0(lambda: lock.acquire() and None, world)
    try:
        return _prepare(source, out, cfg, workers, progress and rank == 0, device, rank, world)
    finally:
        if rank == 0:
            lock.release()


def _dist_init() -> tuple[int, int]:
    """(rank, world size): torchrun's environment, with a gloo group for the few collectives prepare needs."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _on_rank0(fn, world: int):
    """fn() on rank 0 only; its result, or the user error it raised, reaches every rank (so no rank waits forever
    at the next collective for a rank that stopped)."""
    import torch.distributed as dist

    rank = dist.get_rank() if world > 1 else 0
    result, error = None, None
    if rank == 0:
        try:
            result = fn()
        except (UserError, FileNotFoundError) as e:
            error = e
    if world > 1:
        box = [(result, error)]
        dist.broadcast_object_list(box, src=0)
        result, error = box[0]
    if error is not None:
        raise error
    return result


def _prepare(source: str, out: str | os.PathLike, cfg: PrepareConfig | None, workers: int, progress: bool,
             device, rank: int = 0, world: int = 1) -> dict:
    from halm.audio.sources import open_source

    cfg = cfg or PrepareConfig()
    out = Path(out)
    items = list(open_source(source))
    if not items:
        raise UserError(f"{source}: no items")
    codec = Codec.load(cfg.codec, n_codebooks=cfg.n_codebooks).to(device)
    if codec.codebook_size > 1 << 16:  # the shards store codes as uint16
        raise UserError(f"{cfg.codec}: codebooks of {codec.codebook_size} entries; halm's datasets hold at most 65,536")
    mel_cfg = MelConfig(sample_rate=codec.sample_rate, hop_length=codec.hop_length,
                        frames_per_token=cfg.frames_per_token, n_mels=cfg.n_mels)
    expected = _expected_index(cfg, codec, mel_cfg, source, items)
    index_path = out / "index.json"
    _ensure_splits(items, cfg)
    shards = [items[i: i + cfg.shard_size] for i in range(0, len(items), cfg.shard_size)]

    def check_and_start() -> list[dict]:  # rank 0: the settings check, the index, damaged shards removed
        if index_path.exists():
            old = json.loads(index_path.read_text())
            diff = [k for k in _CHECKED if old.get(k) != expected.get(k)]
            if diff:
                raise DatasetMismatch(
                    f"{out} was prepared with other settings ({', '.join(diff)} differ); it refuses to mix features. "
                    f"Use another --out, or the same codec / mel settings / source.")
        (out / "shards").mkdir(parents=True, exist_ok=True)
        index_path.write_text(json.dumps({**expected, "complete": False}, indent=2) + "\n")
        redo = []
        for k, s_items in enumerate(shards):  # a finished shard that is damaged, or whose sources changed, is redone
            d = out / "shards" / f"shard_{k:05d}"
            if d.is_dir() and (why := shard_problem(d, s_items)):
                redo.append({"shard": k, "reason": why})
                print(f"halm prepare: {d}: {why}; encoding it again", file=sys.stderr)
                shutil.rmtree(d)
        return redo

    reencoded = _on_rank0(check_and_start, world)
    todo = [(k, s, str(out)) for k, s in enumerate(shards)
            if k % world == rank and not (out / "shards" / f"shard_{k:05d}").is_dir()]
    total_s = sum(r["seconds"] for k in range(len(shards)) if (out / "shards" / f"shard_{k:05d}").is_dir()
                  for r in _jsonl(out / "shards" / f"shard_{k:05d}" / "items.jsonl"))
    done_clips = sum(len(shards[k]) for k in range(len(shards)) if (out / "shards" / f"shard_{k:05d}").is_dir())
    bar = tqdm(total=len(items), initial=done_clips, unit="clip", desc="prepare", disable=not progress,
               dynamic_ncols=True)
    t0, new_s = time.perf_counter(), 0.0
    clip_s = [0.0]

    def on_clips(n: int, seconds: float):
        clip_s[0] += seconds
        bar.update(n)
        bar.set_postfix_str(f"{clip_s[0] / max(time.perf_counter() - t0, 1e-9):.0f}x real time")
    init_args = (cfg.codec, cfg.n_codebooks, mel_cfg.to_dict(), asdict(cfg))
    if workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        ctx = mp.get_context(_START_METHOD)
        with ctx.Pool(workers, initializer=_worker_init, initargs=init_args) as pool:
            for k, seconds, _n in pool.imap_unordered(_worker_shard, todo):
                new_s += seconds
                on_clips(len(shards[k]), seconds)
    else:
        _WORKER.update(codec=codec, mel=mel_cfg, cfg=cfg, on_clips=on_clips)
        for job in todo:
            _, seconds, _n = _worker_shard(job)
            new_s += seconds
        _WORKER.pop("on_clips")
    bar.close()
    if world > 1:  # every rank's shards are written before rank 0 reads them
        import torch.distributed as dist

        per_rank = [None] * world
        dist.all_gather_object(per_rank, (new_s, len(todo)))
        new_s, n_todo = sum(r[0] for r in per_rank), sum(r[1] for r in per_rank)
    else:
        n_todo = len(todo)
    elapsed = time.perf_counter() - t0
    return _on_rank0(lambda: _finish(out, index_path, expected, items, shards, reencoded, new_s, n_todo, elapsed,
                                     total_s), world)


def _finish(out: Path, index_path: Path, expected: dict, items, shards, reencoded, new_s: float, n_todo: int,
            elapsed: float, total_s: float) -> dict:
    """The summary of a finished dataset (splits, skip report) and its completed index."""
    splits: dict[str, dict] = {}
    skipped = []
    for k in range(len(shards)):
        d = out / "shards" / f"shard_{k:05d}"
        for r in _jsonl(d / "items.jsonl"):
            s = splits.setdefault(r["split"], {"items": 0, "frames": 0, "seconds": 0.0})
            s["items"] += 1
            s["frames"] += r["frames"]
            s["seconds"] = round(s["seconds"] + r["seconds"], 3)
        skipped += _jsonl(d / "skipped.jsonl")
    with open(out / "skipped.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in skipped)
    for name in ("train", "dev", "test"):
        if name not in splits:
            print(f"halm prepare: warning: {out} has no {name} items", file=sys.stderr)
    without_text = sum(1 for it in items if not (it.text or "").strip())
    index = {**expected, "complete": True, "n_shards": len(shards), "splits": splits, "n_skipped": len(skipped),
             "n_without_text": without_text}
    tmp = index_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(index, indent=2) + "\n")
    os.replace(tmp, index_path)
    return {"out": str(out), "items": sum(s["items"] for s in splits.values()), "skipped": len(skipped),
            "without_text": without_text, "reencoded": reencoded,
            "splits": splits, "new_seconds": round(new_s, 2), "elapsed_s": round(elapsed, 2),
            "realtime_factor": round(new_s / elapsed, 1) if n_todo and elapsed > 0 else None,
            "previously_done_seconds": round(total_s, 2)}

