"""`halm synth sfx`: procedural sound events with controllable, checkable captions.

A clip holds one or two events in order ("a door knock then a bell"). Countable events (bounce,
knock, bell, beep, clap, footsteps) carry a count of 1-5; continuous ones (siren, engine, rain,
wind) a duration. Loudness (quiet / moderate / loud) sets the peak level, speed (slow / fast) the
spacing or modulation rate. Every attribute, including onset times, is stored in the manifest.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfilt

from halm.data.synth.corpus import Clip

VERSION = 1
COUNTABLE = ("bounce", "knock", "bell", "beep", "clap", "footsteps")
CONTINUOUS = ("siren", "engine", "rain", "wind")
EVENT_TYPES = COUNTABLE + CONTINUOUS
LOUDNESS = {"quiet": 0.12, "moderate": 0.35, "loud": 0.85}  # peak level of the event
NUMBER_WORDS = {1: "once", 2: "twice", 3: "three times", 4: "four times", 5: "five times"}
SURFACES = {"wooden floor": (180.0, 420.0, 0.05), "metal plate": (900.0, 2300.0, 0.25), "concrete floor": (120.0, 300.0, 0.02)}
MAX_SECONDS = 10.0


def _band(x: np.ndarray, sr: int, lo: float, hi: float) -> np.ndarray:
    sos = butter(2, [lo, min(hi, 0.45 * sr)], btype="bandpass", fs=sr, output="sos")
    return sosfilt(sos, x).astype(np.float32)


def _modes(sr: int, freqs, decay: float, dur: float, rng, amps=None) -> np.ndarray:
    """A struck object: a sum of exponentially decaying partials."""
    t = np.arange(int(dur * sr)) / sr
    amps = np.ones(len(freqs)) if amps is None else amps
    out = np.zeros_like(t)
    for f, a in zip(freqs, amps):
        out += a * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) * np.exp(-t / (decay * (1 + 0.3 * rng.random())))
    return out.astype(np.float32)


def _hit(sr, rng, lo, hi, decay, dur=0.25) -> np.ndarray:
    """A short impact: a click of filtered noise plus low resonances."""
    n = int(dur * sr)
    env = np.exp(-np.arange(n) / (0.004 * sr))
    click = _band(rng.standard_normal(n).astype(np.float32), sr, lo, hi * 3) * env
    body = _modes(sr, [lo, lo * 1.7, hi], decay, dur, rng, amps=[1.0, 0.5, 0.3])
    return (click * 0.6 + body).astype(np.float32)


def _place(hits: list[np.ndarray], onsets: list[float], sr: int) -> np.ndarray:
    n = max(int(o * sr) + len(h) for h, o in zip(hits, onsets))
    out = np.zeros(n, dtype=np.float32)
    for h, o in zip(hits, onsets):
        out[int(o * sr): int(o * sr) + len(h)] += h
    return out


def countable_event(kind: str, count: int, speed: str, sr: int, rng) -> tuple[np.ndarray, list[float], dict]:
    fast = speed == "fast"
    extra: dict = {}
    if kind == "bounce":
        surface = str(rng.choice(list(SURFACES)))
        lo, hi, decay = SURFACES[surface]
        gap = (0.35 if fast else 0.7) * rng.uniform(0.85, 1.15)
        onsets, t, amp, hits = [], 0.0, 1.0, []
        for _ in range(count):  # each bounce lower and sooner than the last, like a real ball
            onsets.append(t)
            hits.append(amp * _hit(sr, rng, lo, hi, decay))
            t += gap
            gap *= 0.75
            amp *= 0.75
        extra["surface"] = surface
    elif kind in ("knock", "clap", "footsteps"):
        gap = {"knock": (0.22, 0.5), "clap": (0.25, 0.6), "footsteps": (0.35, 0.7)}[kind][0 if fast else 1]
        onsets = [k * gap * rng.uniform(0.9, 1.1) for k in range(count)]
        if kind == "knock":
            hits = [_hit(sr, rng, 150.0, 500.0, 0.03, 0.2) for _ in onsets]
        elif kind == "clap":
            hits = []
            for _ in onsets:
                n = int(0.12 * sr)
                burst = np.zeros(n, dtype=np.float32)
                for k in range(3):  # a clap is a few micro-bursts within ~10 ms
                    s = int(k * 0.004 * sr)
                    m = n - s
                    burst[s:] += rng.standard_normal(m).astype(np.float32) * np.exp(-np.arange(m) / (0.012 * sr)) * (1.0 - 0.2 * k)
                hits.append(_band(burst, sr, 900.0, 3500.0))
        else:
            hits = [_hit(sr, rng, 80.0, 250.0, 0.02, 0.18)
                    + 0.3 * _band(rng.standard_normal(int(0.18 * sr)).astype(np.float32), sr, 1500, 5000)
                    * np.exp(-np.arange(int(0.18 * sr)) / (0.02 * sr)).astype(np.float32) for _ in onsets]
    elif kind == "bell":
        f0 = float(rng.uniform(400, 1200))
        gap = 0.6 if fast else 1.1
        onsets = [k * gap for k in range(count)]
        ratios = [0.56, 0.92, 1.19, 1.71, 2.0, 2.74, 3.0, 3.76]  # inharmonic partials of a bell
        hits = [_modes(sr, [f0 * r for r in ratios], 0.5, 1.2, rng, amps=[0.6, 0.4, 1.0, 0.5, 0.4, 0.3, 0.2, 0.15]) for _ in onsets]
        extra["pitch_hz"] = round(f0, 1)
    elif kind == "beep":
        f0 = float(rng.choice([600.0, 800.0, 1000.0, 1500.0, 2000.0]))
        length = 0.12 if fast else 0.25
        gap = length + (0.12 if fast else 0.3)
        onsets = [k * gap for k in range(count)]
        t = np.arange(int(length * sr)) / sr
        ramp = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.005)
        hits = [(np.sin(2 * np.pi * f0 * t) * ramp).astype(np.float32) for _ in onsets]
        extra["pitch_hz"] = f0
    else:
        raise ValueError(f"unknown countable event {kind!r}")
    return _place(hits, onsets, sr), onsets, extra


def continuous_event(kind: str, seconds: float, speed: str, sr: int, rng) -> tuple[np.ndarray, dict]:
    n = int(seconds * sr)
    t = np.arange(n) / sr
    fast = speed == "fast"
    if kind == "siren":
        rate = 1.2 if fast else 0.35
        lo, hi = float(rng.uniform(550, 750)), float(rng.uniform(1100, 1500))
        freq = lo + (hi - lo) * 0.5 * (1 - np.cos(2 * np.pi * rate * t))
        phase = 2 * np.pi * np.cumsum(freq) / sr
        x = np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.15 * np.sin(3 * phase)
    elif kind == "engine":
        f0 = float(rng.uniform(28, 45)) * (1.6 if fast else 1.0)  # firing rate; fast = revving
        f = f0 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))
        phase = 2 * np.pi * np.cumsum(f) / sr
        x = sum(np.sin(k * phase) / k for k in range(1, 12))
        x = x + 0.4 * _band(rng.standard_normal(n).astype(np.float32), sr, 60, 800) * (1 + np.sin(phase))
    elif kind == "rain":
        x = 0.5 * _band(rng.standard_normal(n).astype(np.float32), sr, 800, 8000)
        drops = rng.random(n) < (120 if fast else 40) / sr  # heavy vs light rain
        x = x + _band(drops.astype(np.float32) * rng.uniform(0.5, 3.0, n).astype(np.float32), sr, 2000, 9000) * 4
    elif kind == "wind":
        x = _band(rng.standard_normal(n).astype(np.float32), sr, 150, 1200)
        gust = 0.55 + 0.45 * np.sin(2 * np.pi * (0.6 if fast else 0.18) * t + rng.uniform(0, 6.28))
        x = x * gust
    else:
        raise ValueError(f"unknown continuous event {kind!r}")
    fade = min(n // 4, int(0.15 * sr))
    env = np.ones(n)
    env[:fade] = np.linspace(0, 1, fade)
    env[-fade:] = np.linspace(1, 0, fade)
    return (x * env).astype(np.float32), {"seconds": round(seconds, 2)}


_STEP_WORDS = {1: "a single", 2: "two", 3: "three", 4: "four", 5: "five"}
_TEMPLATES = {  # {loud}: " loudly" / " quietly" / ""; {adj}: "loud " / "quiet " / ""; {count}, {speed}
    "bounce": "a ball bounces{loud} {count}{speed} on a {surface}",
    "knock": "someone knocks{loud} on a door {count}{speed}",
    "bell": "a bell rings{loud} {count}{speed}",
    "beep": "a device beeps{loud} {count}{speed}",
    "clap": "a person claps{loud} {count}{speed}",
    "footsteps": "{steps} {adj}{footsteps} on a hard floor{speed}",
    "siren": "a {adj}siren wails {rate}",
    "engine": "a {adj}car engine {rate}",
    "rain": "{rate} rain falls{loud}",
    "wind": "wind blows {rate}{loud}",
}
_RATE_WORDS = {"siren": ("slowly", "quickly"), "engine": ("idles", "revs"), "rain": ("light", "heavy"),
               "wind": ("steadily", "in strong gusts")}


def describe(ev: dict) -> str:
    """The caption phrase of one event; every word maps back to a stored attribute."""
    count = ev.get("count", 0)
    loud = {"loud": " loudly", "quiet": " quietly", "moderate": ""}[ev["loudness"]]
    adj = {"loud": "loud ", "quiet": "quiet ", "moderate": ""}[ev["loudness"]]
    speed = "" if count < 2 else (" in quick succession" if ev["speed"] == "fast" else " slowly")
    rates = _RATE_WORDS.get(ev["type"], ("", ""))
    return _TEMPLATES[ev["type"]].format(
        loud=loud, adj=adj, count=NUMBER_WORDS.get(count, ""), speed=speed, surface=ev.get("surface", ""),
        steps=_STEP_WORDS.get(count, ""), footsteps="footstep" if count == 1 else "footsteps",
        rate=rates[ev["speed"] == "fast"],
    )


def make_sfx_clip(index: int, rng: np.random.Generator, sample_rate: int) -> Clip:
    sr = sample_rate
    n_events = 1 if rng.random() < 0.5 else 2
    kinds = [str(k) for k in rng.choice(EVENT_TYPES, size=n_events, replace=False)]
    pieces, events, t = [], [], float(rng.uniform(0.2, 0.6))
    for kind in kinds:
        speed = str(rng.choice(["slow", "fast"]))
        loud = str(rng.choice(list(LOUDNESS)))
        ev = {"type": kind, "speed": speed, "loudness": loud}
        if kind in COUNTABLE:
            count = int(rng.integers(1, 6))
            wav, onsets, extra = countable_event(kind, count, speed, sr, rng)
            ev.update(count=count, onsets=[round(t + o, 3) for o in onsets], **extra)
        else:
            wav, extra = continuous_event(kind, float(rng.uniform(1.5, 3.0)), speed, sr, rng)
            ev.update(onsets=[round(t, 3)], **extra)
        wav = wav * (LOUDNESS[loud] / (float(np.abs(wav).max()) or 1.0))
        pieces.append((int(t * sr), wav))
        ev["start"], ev["end"] = round(t, 3), round(t + len(wav) / sr, 3)
        events.append(ev)
        t += len(wav) / sr + float(rng.uniform(0.3, 0.8))
    total = min(int(MAX_SECONDS * sr), int((t + 0.2) * sr))
    out = np.zeros(total, dtype=np.float32)
    for start, wav in pieces:
        seg = wav[: max(0, total - start)]
        out[start: start + len(seg)] += seg
    # a faint room-noise floor so that no clip is digitally silent
    out += _band(rng.standard_normal(total).astype(np.float32), sr, 100, 6000) * float(rng.uniform(0.001, 0.004))
    out = np.clip(out, -0.99, 0.99).astype(np.float32)
    text = " then ".join(describe(e) for e in events)
    attrs = {"events": events, "order": kinds, "n_events": n_events}
    return Clip(out, text, attrs)
