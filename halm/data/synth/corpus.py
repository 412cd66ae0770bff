"""Deterministic, resumable writer shared by the three offline corpora.

A corpus folder holds audio/*.wav, manifest.jsonl (one JSON object per clip: id, path, text,
duration, attributes) and corpus.json (kind, seed, sample rate, generator version). Clip i is made
from its own RNG seeded with (seed, i), so the same seed gives the same corpus and a rerun simply
continues after the last clip in the manifest: a clip whose manifest line was not written (the run
was killed while writing it) is made again, a half-written last line is dropped.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from halm.audio.io import save_audio
from halm.errors import UserError


@dataclass
class Clip:
    wav: np.ndarray  # (N,) float32 mono at the corpus rate
    text: str
    attributes: dict = field(default_factory=dict)


@dataclass
class CorpusStats:
    out: str
    kind: str
    items: int
    seconds: float
    new_items: int
    new_seconds: float
    elapsed: float

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio made per second of wall time in this run (0 when nothing was made)."""
        return self.new_seconds / self.elapsed if self.elapsed > 0 and self.new_items else 0.0


class CorpusMismatch(UserError):
    pass


def _read_manifest(path: Path) -> list[dict]:
    """Rows of a manifest being written; a torn last line (killed mid-write) is cut off the file."""
    if not path.exists():
        return []
    rows, good_bytes = [], 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                rows.append(json.loads(raw))
            except json.JSONDecodeError:
                break
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
    return rows


def _make(make_clip: Callable[[int, np.random.Generator], Clip], seed: int, i: int) -> Clip:
    return make_clip(i, np.random.default_rng([seed, i]))


def _ignore_sigint() -> None:  # Ctrl-C reaches the writer, which stops the workers (no traceback from each)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _clips(make_clip, seed: int, start: int, workers: int) -> Iterator[tuple[int, Clip]]:
    """Clips start, start + 1, ... in order; with workers > 1 made by that many processes up to 4 clips each
    ahead of the writer (each clip depends on (seed, i) only, so the corpus is the same for any number of
    workers). Closing the generator stops the workers and drops the clips made ahead."""
    if workers <= 1:
        i = start
        while True:
            yield i, _make(make_clip, seed, i)
            i += 1
    pool = ProcessPoolExecutor(workers, initializer=_ignore_sigint)
    try:
        ahead: collections.deque = collections.deque()
        i = start
        while True:
            while len(ahead) < 4 * workers:  # a rolling window: no worker waits for the slowest clip of a batch
                ahead.append((i, pool.submit(_make, make_clip, seed, i)))
                i += 1
            k, clip = ahead.popleft()
            yield k, clip.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def write_corpus(
    kind: str,
    make_clip: Callable[[int, np.random.Generator], Clip],
    out: str | os.PathLike,
    minutes: float,
    seed: int,
    sample_rate: int,
    version: int,
    progress: bool = True,
    workers: int = 1,
) -> CorpusStats:
    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    meta = {"kind": kind, "seed": seed, "sample_rate": sample_rate, "generator_version": version}
    meta_path = out / "corpus.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old != meta:
            diff = ", ".join(f"{k}: {old.get(k)!r} there vs {v!r} asked" for k, v in meta.items() if old.get(k) != v)
            raise CorpusMismatch(f"{out} holds a different corpus ({diff}); use another --out or the same settings")
    else:
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")

    manifest = out / "manifest.jsonl"
    rows = _read_manifest(manifest)
    done_seconds = sum(r["duration"] for r in rows)
    target = minutes * 60.0
    stats = CorpusStats(str(out), kind, len(rows), done_seconds, 0, 0.0, 0.0)
    start = time.perf_counter()
    bar = tqdm(total=round(target, 1), initial=round(min(done_seconds, target), 1), unit="s", unit_scale=True,
               desc=f"synth {kind}", disable=not progress, dynamic_ncols=True)
    clips = _clips(make_clip, seed, len(rows), workers)
    with open(manifest, "a", encoding="utf-8") as f, contextlib.closing(clips):
        while stats.seconds < target:
            i, clip = next(clips)
            wav = np.asarray(clip.wav, dtype=np.float32)
            name = f"{kind}_{i:06d}"
            save_audio(out / "audio" / f"{name}.wav", wav, sample_rate)
            duration = round(len(wav) / sample_rate, 4)
            row = {"id": name, "path": f"audio/{name}.wav", "text": clip.text, "duration": duration,
                   "attributes": clip.attributes}
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
            stats.items += 1
            stats.seconds += duration
            stats.new_items += 1
            stats.new_seconds += duration
            stats.elapsed = time.perf_counter() - start
            bar.update(round(min(duration, target - bar.n), 1) if bar.n < target else 0)
            bar.set_postfix_str(f"{stats.realtime_factor:.0f}x real time, {stats.items} clips")
    bar.close()  # (the workers' clips made ahead of the target are not written)
    stats.elapsed = time.perf_counter() - start
    return stats
