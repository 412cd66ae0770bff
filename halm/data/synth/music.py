"""`halm synth music`: procedurally composed pieces rendered with real SoundFont samples.

Each clip draws tempo, key, mode, time signature, instrumentation (General MIDI), dynamics and a
texture; composes melody / chords / bass / drums with pretty_midi; renders the MIDI with the
TimGM6mb SoundFont that ships inside pretty_midi, through halm's own renderer (halm.data.synth.soundfont;
generator version 2) or `tinysoundfont` (version 1); and writes a natural caption built from the
attributes, which are also stored structured for controllability checks.
"""

from __future__ import annotations

import os

import numpy as np

from halm.data.synth.corpus import Clip
from halm.errors import UserError

VERSION = 2  # 1: the same compositions rendered by tinysoundfont
CLIP_SECONDS = 10.0
KEYS = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
SCALES = {"major": [0, 2, 4, 5, 7, 9, 11], "minor": [0, 2, 3, 5, 7, 8, 10]}
PROGRESSIONS = {
    "major": [[0, 4, 5, 3], [0, 3, 4, 0], [0, 5, 3, 4], [0, 3, 0, 4], [5, 3, 0, 4]],
    "minor": [[0, 5, 2, 6], [0, 3, 4, 0], [0, 6, 5, 6], [0, 3, 6, 2], [0, 5, 3, 4]],
}
# (General MIDI program, caption name, family)
LEADS = [
    (0, "piano", "keyboard"), (4, "electric piano", "keyboard"), (6, "harpsichord", "keyboard"),
    (11, "vibraphone", "mallet"), (12, "marimba", "mallet"), (16, "organ", "organ"),
    (24, "acoustic guitar", "guitar"), (27, "electric guitar", "guitar"), (40, "violin", "strings"),
    (42, "cello", "strings"), (46, "harp", "plucked"), (56, "trumpet", "brass"), (65, "saxophone", "reed"),
    (68, "oboe", "reed"), (71, "clarinet", "reed"), (73, "flute", "pipe"), (80, "synth lead", "synth"),
]
ACCOMPANIMENTS = [
    (48, "strings"), (89, "synth pad"), (0, "piano"), (16, "organ"), (24, "guitar"), (52, "choir"),
    (4, "electric piano"), (46, "harp"),
]
BASSES = [(32, "upright bass"), (33, "electric bass"), (38, "synth bass")]
MOODS = {
    ("major", "slow"): ["calm", "peaceful", "gentle", "tender"],
    ("major", "moderate"): ["warm", "hopeful", "relaxed", "sunny"],
    ("major", "fast"): ["cheerful", "upbeat", "playful", "energetic"],
    ("minor", "slow"): ["melancholic", "sad", "somber", "wistful"],
    ("minor", "moderate"): ["mysterious", "pensive", "dark", "brooding"],
    ("minor", "fast"): ["tense", "dramatic", "urgent", "restless"],
}
DYNAMICS = {"soft": (45, 62), "medium": (70, 88), "loud": (98, 118)}
# time signature -> (eighth notes per bar, eighths per beat, strong eighth positions)
METERS = {"4/4": (8, 2, (0, 4)), "3/4": (6, 2, (0,)), "6/8": (6, 3, (0, 3))}
RHYTHMS = {  # melody rhythms per bar, in eighth notes
    8: [[2, 2, 2, 2], [1, 1, 2, 2, 2], [3, 1, 2, 2], [2, 1, 1, 4], [4, 4], [1, 1, 1, 1, 2, 2], [2, 2, 4]],
    6: [[2, 2, 2], [3, 3], [1, 1, 2, 2], [2, 1, 3], [3, 1, 1, 1], [6], [4, 2]],
}


def tempo_word(bpm: int) -> str:
    return "slow" if bpm < 80 else "fast" if bpm >= 120 else "moderate"


def _soundfont_path() -> str:
    import pretty_midi

    path = os.path.join(os.path.dirname(pretty_midi.__file__), "TimGM6mb.sf2")
    if not os.path.exists(path):
        raise RuntimeError(f"the SoundFont {path} that ships with pretty_midi is missing; reinstall pretty_midi")
    return path


def sample_attributes(rng: np.random.Generator) -> dict:
    bpm = int(rng.integers(60, 161))
    mode = str(rng.choice(["major", "minor"]))
    lead = LEADS[int(rng.integers(len(LEADS)))]
    accomp = ACCOMPANIMENTS[int(rng.integers(len(ACCOMPANIMENTS)))]
    while accomp[0] == lead[0]:
        accomp = ACCOMPANIMENTS[int(rng.integers(len(ACCOMPANIMENTS)))]
    bass = BASSES[int(rng.integers(len(BASSES)))] if rng.random() < 0.75 else None
    meter = str(rng.choice(list(METERS), p=[0.6, 0.2, 0.2]))
    return {
        "bpm": bpm, "tempo": tempo_word(bpm), "key": KEYS[int(rng.integers(12))], "mode": mode,
        "time_signature": meter, "lead": lead[1], "lead_program": lead[0], "instrument_family": lead[2],
        "accompaniment": accomp[1], "accompaniment_program": accomp[0],
        "bass": bass[1] if bass else None, "bass_program": bass[0] if bass else None,
        "drums": bool(rng.random() < 0.55), "dynamics": str(rng.choice(list(DYNAMICS))),
        "texture": str(rng.choice(["block chords", "arpeggios"])),
        "mood": str(rng.choice(MOODS[(mode, tempo_word(bpm))])),
    }


def caption(a: dict, rng: np.random.Generator) -> str:
    extras = ""
    if a["bass"] and a["drums"]:
        extras = f", {a['bass']} and drums"
    elif a["bass"]:
        extras = f" and {a['bass']}"
    elif a["drums"]:
        extras = " and drums"
    dyn = {"soft": "soft ", "medium": "", "loud": "loud "}[a["dynamics"]]
    key = f"{a['key']} {a['mode']}"
    shape = int(rng.integers(4))
    if shape == 0:
        return f"a {a['tempo']} {a['mood']} {a['lead']} piece in {key} with {dyn}{a['accompaniment']}{extras}, {a['bpm']} bpm"
    if shape == 1:
        return (f"{a['mood']} {a['lead']} melody over {dyn}{a['accompaniment']} {a['texture']}{extras} in {key}, "
                f"{a['tempo']} tempo, {a['bpm']} bpm")
    if shape == 2:
        return f"{dyn}{a['mood']} music in {a['time_signature']} time: {a['lead']} with {a['accompaniment']}{extras}, {key}, {a['bpm']} bpm"
    volume = "softly" if dyn == "soft " else "loudly" if dyn else "at a moderate volume"
    return f"a {a['mood']} tune in {key} played {volume} by {a['lead']} and {a['accompaniment']}{extras}, {a['tempo']} ({a['bpm']} bpm)"


def compose(a: dict, rng: np.random.Generator, seconds: float):
    """Build a pretty_midi.PrettyMIDI for the attributes (covers at least `seconds`)."""
    import pretty_midi

    eighths_per_bar, eighths_per_beat, strong = METERS[a["time_signature"]]
    eighth = 60.0 / a["bpm"] / eighths_per_beat
    bar = eighths_per_bar * eighth
    n_bars = int(np.ceil(seconds / bar)) + 1
    tonic = 60 + KEYS.index(a["key"])
    scale = SCALES[a["mode"]]
    lo, hi = DYNAMICS[a["dynamics"]]

    def pitch(degree: int, base: int) -> int:
        octave, step = divmod(degree, 7)
        return base + 12 * octave + scale[step]

    def vel(accent: bool = False) -> int:
        return int(np.clip(rng.integers(lo, hi + 1) + (8 if accent else 0), 1, 127))

    pm = pretty_midi.PrettyMIDI(initial_tempo=float(a["bpm"]))
    lead = pretty_midi.Instrument(program=a["lead_program"], name="lead")
    chords = pretty_midi.Instrument(program=a["accompaniment_program"], name="accompaniment")
    bass = pretty_midi.Instrument(program=a["bass_program"] or 0, name="bass")
    drums = pretty_midi.Instrument(program=0, is_drum=True, name="drums")
    progression = PROGRESSIONS[a["mode"]][int(rng.integers(len(PROGRESSIONS[a["mode"]])))]
    motif = [RHYTHMS[eighths_per_bar][int(rng.integers(len(RHYTHMS[eighths_per_bar])))] for _ in range(2)]
    degree = int(rng.integers(0, 5))
    for b in range(n_bars):
        t0 = b * bar
        root = progression[b % len(progression)]
        chord = [root, root + 2, root + 4]
        # melody: the 2-bar rhythm motif repeats; pitches walk the scale, chord tones on strong beats
        pos = 0
        for length in motif[b % 2]:
            if pos in strong and rng.random() < 0.7:
                degree = int(rng.choice(chord)) + 7 * int(degree >= 7)
            else:
                degree += int(rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3]))
            degree = int(np.clip(degree, -2, 11))
            start, end = t0 + pos * eighth, t0 + (pos + length) * eighth * 0.95
            lead.notes.append(pretty_midi.Note(vel(pos in strong), pitch(degree, tonic), start, end))
            pos += length
        # accompaniment: block chords per beat or eighth-note arpeggios, an octave below
        if a["texture"] == "block chords":
            for beat in range(0, eighths_per_bar, eighths_per_beat):
                for d in chord:
                    chords.notes.append(pretty_midi.Note(vel() - 12, pitch(d, tonic - 12), t0 + beat * eighth,
                                                         t0 + (beat + eighths_per_beat) * eighth * 0.98))
        else:
            for k in range(eighths_per_bar):
                d = chord[[0, 1, 2, 1][k % 4]]
                chords.notes.append(pretty_midi.Note(vel() - 12, pitch(d, tonic - 12), t0 + k * eighth,
                                                     t0 + (k + 1) * eighth))
        if a["bass"]:
            for s in strong:
                d = root if s == 0 else root + 4
                bass.notes.append(pretty_midi.Note(vel(), pitch(d, tonic - 24), t0 + s * eighth,
                                                   t0 + (s + eighths_per_beat) * eighth * 0.9))
        if a["drums"]:
            for k in range(eighths_per_bar):
                t = t0 + k * eighth
                drums.notes.append(pretty_midi.Note(vel() - 15, 42, t, t + eighth * 0.5))  # closed hi-hat
                if k == 0 or (k in strong and a["time_signature"] == "6/8"):
                    drums.notes.append(pretty_midi.Note(vel(True), 36, t, t + eighth))  # kick
                elif k in strong or (a["time_signature"] != "6/8" and k == eighths_per_bar - eighths_per_beat):
                    drums.notes.append(pretty_midi.Note(vel(), 38, t, t + eighth))  # snare
    pm.instruments += [i for i in (lead, chords, bass, drums) if i.notes]
    return pm


def require_tinysoundfont():
    """The tinysoundfont module, or one message saying how to install it."""
    try:
        import tinysoundfont
    except ImportError as e:
        raise UserError(
            "--renderer tinysoundfont needs the package tinysoundfont: pip install --no-deps tinysoundfont "
            "(--no-deps skips pyaudio, which is only for live playback); the default --renderer halm needs nothing"
        ) from e
    return tinysoundfont


def render(pm, sample_rate: int, seconds: float, renderer: str = "halm") -> np.ndarray:
    """Render a PrettyMIDI to mono float32 of exactly `seconds`: with halm's own SoundFont renderer
    (halm.data.synth.soundfont), or with `tinysoundfont` (the renderer of corpora of generator version 1)."""
    if renderer == "halm":
        from halm.data.synth.soundfont import render_notes

        notes = [(128 if inst.is_drum else 0, 0 if inst.is_drum else inst.program, n.pitch, n.velocity, n.start, n.end)
                 for inst in pm.instruments for n in inst.notes]
        return _finish(render_notes(_soundfont_path(), notes, seconds, sample_rate, gain_db=-6.0), sample_rate)
    if renderer != "tinysoundfont":
        raise ValueError(f"unknown renderer {renderer!r} (halm or tinysoundfont)")
    tinysoundfont = require_tinysoundfont()
    synth = tinysoundfont.Synth(samplerate=sample_rate, gain=-6.0)
    sfid = synth.sfload(_soundfont_path())
    events = []  # (sample, order, kind, channel, key, velocity): note-offs before note-ons at one instant
    channel = 0
    for inst in pm.instruments:
        if inst.is_drum:
            ch = 9
            synth.program_select(ch, sfid, 128, 0, True)
        else:
            ch = channel if channel < 9 else channel + 1
            channel += 1
            synth.program_select(ch, sfid, 0, inst.program)
        for n in inst.notes:
            events.append((int(n.start * sample_rate), 1, "on", ch, n.pitch, n.velocity))
            events.append((int(n.end * sample_rate), 0, "off", ch, n.pitch, 0))
    events.sort()
    total = int(round(seconds * sample_rate))
    out, cursor = [], 0
    for when, _, kind, ch, key, velocity in events:
        when = min(when, total)
        if when > cursor:
            out.append(np.frombuffer(synth.generate(when - cursor), dtype=np.float32))
            cursor = when
        if when >= total:
            break
        if kind == "on":
            synth.noteon(ch, key, velocity)
        else:
            synth.noteoff(ch, key)
    if cursor < total:
        out.append(np.frombuffer(synth.generate(total - cursor), dtype=np.float32))
    return _finish(np.concatenate(out).reshape(-1, 2).mean(axis=1), sample_rate)  # stereo interleaved -> mono


def _finish(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """A fade-out over the last 50 ms (no click at the cut), and a peak limit of 0.95."""
    fade = min(len(wav), sample_rate // 20)
    wav[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)  # no click at the cut
    peak = float(np.abs(wav).max())
    return (wav * (0.95 / peak) if peak > 0.95 else wav).astype(np.float32)


def make_music_clip(index: int, rng: np.random.Generator, sample_rate: int, renderer: str = "halm") -> Clip:
    attrs = sample_attributes(rng)
    text = caption(attrs, rng)
    pm = compose(attrs, rng, CLIP_SECONDS)
    return Clip(render(pm, sample_rate, CLIP_SECONDS, renderer), text, attrs)
