"""`halm synth speech`: English sentences spoken by espeak-ng with many voices, rates and pitches.

Sentences come from a small grammar over the word lists in words.py; `text` is the exact transcript
(upper-cased without punctuation, as LibriSpeech writes it, is left to the user: we keep normal case).
"""

from __future__ import annotations

import functools

import numpy as np

from halm.audio.io import resample
from halm.data.synth import words
from halm.data.synth.corpus import Clip

VERSION = 1
_SKIP_VARIANTS = {"Demonic", "UniversalRobot", "Half-LifeAnnouncementSystem"}


def _split(s: str) -> list[str]:
    return s.split()


def _pairs(s: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for tok in s.split():
        base, _, irregular = tok.partition(":")
        out[base] = irregular or None
    return out


NOUNS = sorted(set(_split(words.NOUNS)))
PLURALS = dict(p.split(":") for p in _split(words.PLURAL_IRREGULAR))
ADJECTIVES = sorted(set(_split(words.ADJECTIVES)))
VERBS_T = _pairs(words.VERBS_TRANSITIVE)
VERBS_I = _pairs(words.VERBS_INTRANSITIVE)
ADVERBS = sorted(set(_split(words.ADVERBS)))
NAMES = sorted(set(_split(words.NAMES)))
PLACES = sorted(set(_split(words.PLACES)))
PREPOSITIONS = _split(words.PREPOSITIONS)
TIMES = [t.strip() for t in words.TIMES.replace("\n", "").split("|") if t.strip()]
NUMBERS = _split(words.NUMBERS)


def plural(noun: str) -> str:
    if noun in PLURALS:
        return PLURALS[noun]
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def past(verb: str, table: dict[str, str | None]) -> str:
    if table.get(verb):
        return table[verb]
    if verb.endswith("e"):
        return verb + "d"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ied"
    if len(verb) >= 3 and verb[-1] in "bdgmnpt" and verb[-2] in "aeiou" and verb[-3] not in "aeiou" and len(verb) <= 4:
        return verb + verb[-1] + "ed"  # hop -> hopped, grab -> grabbed
    return verb + "ed"


def third_person(verb: str) -> str:
    if verb.endswith(("s", "x", "z", "ch", "sh", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def vocabulary() -> set[str]:
    """Every word form the generator can produce (for the docs and the tests)."""
    v: set[str] = set()
    v.update(NOUNS, map(plural, NOUNS), ADJECTIVES, ADVERBS, NAMES, PLACES, PREPOSITIONS, NUMBERS)
    for table in (VERBS_T, VERBS_I):
        v.update(table, (past(x, table) for x in table), map(third_person, table))
    for t in TIMES:
        v.update(t.split())
    return v


class SentenceMaker:
    """A tiny grammar: several sentence shapes filled from the word lists."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def pick(self, xs):
        return xs[int(self.rng.integers(len(xs)))]

    def article(self, word: str) -> str:
        return "an" if word[0] in "aeiou" else "a"

    def noun_phrase(self, plural_ok: bool = True) -> str:
        noun = self.pick(NOUNS)
        r = self.rng.random()
        if plural_ok and r < 0.25:
            return f"{self.pick(NUMBERS)} {self.pick(ADJECTIVES)} {plural(noun)}" if self.rng.random() < 0.5 else f"the {plural(noun)}"
        if r < 0.6:
            adj = self.pick(ADJECTIVES)
            det = self.pick(["the", self.article(adj), "my", "her", "his", "our", "that"])
            return f"{det} {adj} {noun}"
        det = self.pick(["the", self.article(noun), "this", "their", "your"])
        return f"{det} {noun}"

    def subject(self) -> str:
        return self.pick(NAMES) if self.rng.random() < 0.4 else self.noun_phrase(plural_ok=False)

    def sentence(self) -> str:
        vt, vi = self.pick(list(VERBS_T)), self.pick(list(VERBS_I))
        shape = int(self.rng.integers(9))
        s = self.subject()
        if shape == 0:
            out = f"{s} {past(vt, VERBS_T)} {self.noun_phrase()} {self.pick(PREPOSITIONS)} {self.noun_phrase()}."
        elif shape == 1:
            out = f"{s} {past(vi, VERBS_I)} {self.pick(ADVERBS)} {self.pick(TIMES)}."
        elif shape == 2:
            out = f"Why did {self.pick(NAMES)} {vt} {self.noun_phrase()} in {self.pick(PLACES)}?"
        elif shape == 3:
            out = f"{s} {past(vi, VERBS_I)}, and then {self.pick(NAMES)} {past(vt, VERBS_T)} {self.noun_phrase()}."
        elif shape == 4:
            out = f"We will {vt} {self.noun_phrase()} in {self.pick(PLACES)} {self.pick(TIMES)}."
        elif shape == 5:
            noun = self.pick(NOUNS)
            out = (f"If the {noun} is {self.pick(ADJECTIVES)}, {self.pick(['she', 'he', 'they', 'you', 'we'])} should {vt} it "
                   f"{self.pick(ADVERBS)}.")
        elif shape == 6:
            out = f"{s} {third_person(vt)} {self.noun_phrase()} {self.pick(TIMES)}."
        elif shape == 7:
            out = (f"Every {self.pick(NOUNS)} {self.pick(PREPOSITIONS)} the {self.pick(NOUNS)} was {self.pick(ADJECTIVES)} and "
                   f"{self.pick(ADJECTIVES)}.")
        else:
            out = f"{self.pick(NAMES)} said that {self.noun_phrase()} would {vi} {self.pick(ADVERBS)}."
        return out[0].upper() + out[1:]

    def utterance(self) -> str:
        n = 1 + int(self.rng.choice(3, p=[0.5, 0.35, 0.15]))
        return " ".join(self.sentence() for _ in range(n))


@functools.lru_cache(maxsize=1)
def voices(espeak) -> list[str]:
    """Every English voice combined with every usable timbre variant: several hundred voices."""
    variants = [v for v in espeak.variants() if " " not in v and v not in _SKIP_VARIANTS]
    return [f"{lang}+{var}" for lang in espeak.english_voices() for var in variants]


def make_speech_clip(index: int, rng: np.random.Generator, sample_rate: int) -> Clip:
    from halm.data.synth.espeak import get_espeak

    espeak = get_espeak()
    text = SentenceMaker(rng).utterance()
    all_voices = voices(espeak)
    voice = all_voices[int(rng.integers(len(all_voices)))]
    rate = int(rng.integers(120, 221))  # words per minute
    pitch = int(rng.integers(20, 81))  # 0..100, 50 = voice default
    pitch_range = int(rng.integers(20, 91))  # intonation: 0 monotone .. 100 lively
    wav = espeak.synth(text, voice, rate, pitch, pitch_range, seed=int(rng.integers(2**31)))
    if len(wav) == 0:
        raise RuntimeError(f"espeak-ng produced no audio for voice {voice!r}")
    nz = np.flatnonzero(np.abs(wav) > 1e-3)  # trim espeak's silences, keep 100 ms margins
    pad = espeak.sample_rate // 10
    wav = wav[max(0, nz[0] - pad): nz[-1] + pad] if len(nz) else wav
    wav = resample(wav, espeak.sample_rate, sample_rate)
    peak = float(np.abs(wav).max()) or 1.0
    wav = wav * (float(rng.uniform(0.3, 0.9)) / peak)  # varied but never clipping levels
    return Clip(wav.astype(np.float32), text, {
        "voice": voice, "rate_wpm": rate, "pitch": pitch, "pitch_range": pitch_range,
        "words": len(text.split()),
    })
