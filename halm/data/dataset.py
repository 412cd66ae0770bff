"""Reading a prepared dataset: `open_dataset(DATA, split)` -> memory-mapped items.

Codes and mel stay on disk (np.load with mmap_mode="r"); only the small items.jsonl lists are read,
so a 100-hour dataset opens in a moment and uses RAM for what a batch touches.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from halm.audio.mel import MelConfig
from halm.errors import UserError


@dataclass
class Item:
    id: str
    codes: np.ndarray  # (K, T) uint16, memory-mapped
    mel: np.ndarray  # (T, r, M) float16, memory-mapped
    text: str | None
    attributes: dict
    split: str
    seconds: float


class PreparedDataset:
    def __init__(self, root: str | os.PathLike, split: str | None = None):
        self.root = Path(root)
        index_path = self.root / "index.json"
        if not index_path.exists():
            raise FileNotFoundError(f"{self.root}: no index.json — not a dataset made by `halm prepare`")
        from halm.checkpoint import DamagedFile, read_json_file

        self.index = read_json_file(index_path, "dataset index", "rerun the `halm prepare` command that made it "
                                    "(finished shards are kept)")
        missing = [k for k in ("complete", "mel", "codec") if k not in self.index]
        if missing:
            raise DamagedFile(f"{index_path}: damaged dataset index (no {', '.join(missing)}); rerun the `halm prepare` "
                              "command that made it")
        if not self.index.get("complete"):
            raise UserError(f"{self.root}: preparation did not finish; rerun the same `halm prepare` command")
        self.split = split
        self.mel_config = MelConfig.from_dict(self.index["mel"])
        self.codec = self.index["codec"]
        self._rows: list[tuple[int, dict]] = []
        for k in range(self.index["n_shards"]):
            for line in (self.root / "shards" / f"shard_{k:05d}" / "items.jsonl").read_text().splitlines():
                r = json.loads(line)
                if split is None or r["split"] == split:
                    self._rows.append((k, r))
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        from halm.data.prepare import shard_problem

        for k in sorted({k for k, _ in self._rows}):  # before any training starts: sizes against files.json
            d = self.root / "shards" / f"shard_{k:05d}"
            if why := shard_problem(d, checksums=False):
                raise DamagedFile(f"{d}: {why}; rerun the `halm prepare` command that made {self.root} "
                                  "(it encodes damaged shards again)")

    def _shard(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k not in self._arrays:
            d = self.root / "shards" / f"shard_{k:05d}"
            self._arrays[k] = (np.load(d / "codes.npy", mmap_mode="r"), np.load(d / "mel.npy", mmap_mode="r"))
        return self._arrays[k]

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> Item:
        k, r = self._rows[i]
        codes, mel = self._shard(k)
        a, b = r["offset"], r["offset"] + r["frames"]
        return Item(r["id"], codes[:, a:b], mel[a:b], r["text"], r["attributes"], r["split"], r["seconds"])

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def frames(self) -> np.ndarray:
        return np.array([r["frames"] for _, r in self._rows], dtype=np.int64)

    @property
    def n_codebooks(self) -> int:
        return int(self.codec["n_codebooks"])

    @property
    def frame_rate(self) -> float:
        return float(self.codec["frame_rate"])


def open_dataset(root: str | os.PathLike, split: str | None = None) -> PreparedDataset:
    """Items of one split ("train" / "dev" / "test"; None = all) of a prepared dataset."""
    return PreparedDataset(root, split)
