"""Offline corpora made on the spot: speech (espeak-ng), music (SoundFont renders), sfx (procedural)."""

from __future__ import annotations

import functools
import os

from halm.data.synth.corpus import Clip, CorpusMismatch, CorpusStats, write_corpus
from halm.errors import UserError

KINDS = ("speech", "music", "sfx")
DEFAULT_SAMPLE_RATE = 24000


def _maker(kind: str):
    if kind == "speech":
        from halm.data.synth.speech import VERSION
        from halm.data.synth.speech import make_speech_clip as make
    elif kind == "music":
        from halm.data.synth.music import VERSION
        from halm.data.synth.music import make_music_clip as make
    elif kind == "sfx":
        from halm.data.synth.sfx import VERSION
        from halm.data.synth.sfx import make_sfx_clip as make
    else:
        raise UserError(f"unknown corpus kind {kind!r}; choose from {', '.join(KINDS)}")
    return make, VERSION


RENDERERS = ("halm", "tinysoundfont")  # music: halm's SoundFont renderer (generator version 2), or tinysoundfont (1)


def synthesize(
    kind: str, out: str | os.PathLike, minutes: float, seed: int = 0,
    sample_rate: int = DEFAULT_SAMPLE_RATE, progress: bool = True, renderer: str | None = None, workers: int = 1,
) -> CorpusStats:
    """Make (or continue) an offline corpus of at least `minutes` of audio in `out`.

    renderer (music only): "halm" (default; numpy, halm.data.synth.soundfont) or "tinysoundfont" (the
    renderer of music corpora of generator version 1, for remaking them; `pip install --no-deps tinysoundfont`).
    workers: processes making clips (the corpus is the same for any number)."""
    if minutes <= 0:
        raise UserError("--minutes must be positive")
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    make, version = _maker(kind)
    if kind == "music":
        renderer = renderer or "halm"
        if renderer not in RENDERERS:
            raise UserError(f"--renderer {renderer!r}: choose from {', '.join(RENDERERS)}")
        if renderer == "tinysoundfont":  # checked before the corpus folder is made
            from halm.data.synth.music import require_tinysoundfont

            require_tinysoundfont()
        make, version = functools.partial(make, renderer=renderer), 1 if renderer == "tinysoundfont" else version
    elif renderer is not None:
        raise UserError(f"--renderer is for music; {kind} has no SoundFont renderer")
    try:
        return write_corpus(kind, functools.partial(make, sample_rate=sample_rate), out, minutes, seed,
                            sample_rate, version, progress, workers)
    except CorpusMismatch as e:
        if kind == "music" and "generator_version" in str(e):
            raise CorpusMismatch(f"{e} (music generator version 1 is --renderer tinysoundfont, 2 is --renderer halm)") from None
        raise


__all__ = ["KINDS", "RENDERERS", "Clip", "CorpusMismatch", "CorpusStats", "synthesize", "write_corpus"]
