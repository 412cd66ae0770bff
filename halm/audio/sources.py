"""Readers that yield (id, audio path, text, attributes, split) from where users keep audio.

- LibriSpeech tree: <root>/<subset>/<speaker>/<chapter>/*.flac + <speaker>-<chapter>.trans.txt;
  split = "train" | "dev" | "test" from the subset name (train-clean-100 -> train), subset kept in
  attributes. root may be the LibriSpeech folder (holding subsets) or one subset folder.
- Folder: every audio file below root (recursive); text from a sidecar <name>.txt when present;
  no split (a preparer assigns one).
- JSONL manifest (MusicCaps/AudioCaps style): one object per line with "path" (relative paths are
  resolved against the manifest's folder), "text" or "caption", optional "id", "split",
  "attributes" (an object) and any other keys (also kept as attributes). Splits: train / dev / test;
  val, valid, validation, eval and development mean dev (training, testing likewise); any other name
  is an error naming the line.
Audio extensions are matched without regard to case (.FLAC, .Wav). A LibriSpeech transcript line
without its audio file is yielded with the missing path, and audio without a line with text None,
so that `inspect` and `prepare` report both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from halm.errors import UserError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif")
_RESERVED = {"path", "text", "caption", "id", "split", "attributes"}
# split names of manifests: the usual names of a validation split all mean dev
SPLIT_NAMES = {"train": "train", "training": "train", "dev": "dev", "val": "dev", "valid": "dev", "validation": "dev",
               "eval": "dev", "development": "dev", "test": "test", "testing": "test"}


class SourceError(UserError):
    """A source that cannot be read as asked: the message names the file (and line)."""


@dataclass
class SourceItem:
    id: str
    path: Path
    text: str | None = None
    attributes: dict = field(default_factory=dict)
    split: str | None = None


def _split_of_subset(subset: str) -> str | None:
    for name in ("train", "dev", "test"):
        if subset.lower().startswith(name):
            return name
    return None


def _is_librispeech_subset(d: Path) -> bool:
    return next(d.glob("*/*/*.trans.txt"), None) is not None


def librispeech_source(root: str | os.PathLike) -> Iterator[SourceItem]:
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"{root}: not a directory")
    subsets = [root] if _is_librispeech_subset(root) else sorted(d for d in root.iterdir() if d.is_dir() and _is_librispeech_subset(d))
    if not subsets:
        raise SourceError(f"{root}: no LibriSpeech layout found (<subset>/<speaker>/<chapter>/*.trans.txt)")
    for subset_dir in subsets:
        subset = subset_dir.name
        split = _split_of_subset(subset)
        for trans in sorted(subset_dir.glob("*/*/*.trans.txt")):
            chapter_dir = trans.parent
            texts: dict[str, str] = {}
            try:
                lines = trans.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as e:
                raise SourceError(f"{trans}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            for lineno, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                parts = line.strip().split(maxsplit=1)
                if len(parts) != 2:
                    raise SourceError(f"{trans}:{lineno}: expected '<utterance-id> <transcript>', got {line!r}")
                texts[parts[0]] = parts[1]
            speaker, chapter = chapter_dir.parent.name, chapter_dir.name
            audio = {p.stem: p for p in sorted(chapter_dir.iterdir()) if p.suffix.lower() == ".flac"}  # .flac, .FLAC
            # a transcript line without its audio is yielded too: batch jobs report it ("file not found")
            for uid in sorted(set(audio) | set(texts)):
                yield SourceItem(
                    id=uid,
                    path=audio.get(uid, chapter_dir / f"{uid}.flac"),
                    text=texts.get(uid),  # None (audio without a transcript line) -> reported by batch jobs
                    attributes={"speaker": speaker, "chapter": chapter, "subset": subset},
                    split=split,
                )


def folder_source(root: str | os.PathLike, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> Iterator[SourceItem]:
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"{root}: not a directory")
    exts = tuple(e.lower() for e in extensions)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if name.startswith(".") or p.suffix.lower() not in exts:
                continue
            rel = p.relative_to(root).with_suffix("").as_posix()
            sidecar = p.with_suffix(".txt")
            text = sidecar.read_text(encoding="utf-8").strip() if sidecar.exists() else None
            yield SourceItem(id=rel, path=p, text=text, attributes={}, split=None)


def manifest_source(path: str | os.PathLike) -> Iterator[SourceItem]:
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: manifest not found")
    base = path.parent
    seen: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8-sig").split("\n")  # -sig: a leading byte-order mark is allowed
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SourceError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise SourceError(f"{where}: expected a JSON object, got {type(row).__name__}")
        if not isinstance(row.get("path"), str) or not row["path"]:
            raise SourceError(f"{where}: missing \"path\" (a string)")
        text = row.get("text", row.get("caption"))
        if text is not None and not isinstance(text, str):
            raise SourceError(f"{where}: \"text\" must be a string, got {type(text).__name__}")
        attrs = row.get("attributes", {})
        if not isinstance(attrs, dict):
            raise SourceError(f"{where}: \"attributes\" must be an object")
        attrs = {**{k: v for k, v in row.items() if k not in _RESERVED}, **attrs}
        audio = Path(row["path"])
        audio = audio if audio.is_absolute() else base / audio
        uid = str(row.get("id") or Path(row["path"]).with_suffix("").as_posix())
        if uid in seen:
            raise SourceError(f"{where}: duplicate id {uid!r}")
        seen.add(uid)
        split = row.get("split")
        if split is not None and split != "":
            if not isinstance(split, str) or split.strip().lower() not in SPLIT_NAMES:
                raise SourceError(f"{where}: unknown split {split!r}; use train, dev (or val / validation / eval) "
                                  "or test, or leave it out for a hash split")
            split = SPLIT_NAMES[split.strip().lower()]
        yield SourceItem(id=uid, path=audio, text=text, attributes=attrs, split=split or None)


def open_source(spec: str | os.PathLike) -> Iterator[SourceItem]:
    """Pick the reader: a .jsonl file -> manifest; a folder holding manifest.jsonl (a halm synth
    corpus) -> that manifest; a LibriSpeech tree -> librispeech; any other folder -> folder."""
    p = Path(spec)
    if p.is_file():
        if p.suffix.lower() in (".jsonl", ".json"):
            return manifest_source(p)
        raise SourceError(f"{p}: a source is a folder or a .jsonl manifest")
    if not p.is_dir():
        raise SourceError(f"{p}: no such file or folder")
    if (p / "manifest.jsonl").is_file():
        return manifest_source(p / "manifest.jsonl")
    if _is_librispeech_subset(p) or any(_is_librispeech_subset(d) for d in p.iterdir() if d.is_dir()):
        return librispeech_source(p)
    return folder_source(p)
