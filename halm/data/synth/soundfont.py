"""A SoundFont 2 (.sf2) renderer in numpy: MIDI notes to audio with a SoundFont's own samples.

halm's music corpora render with it (`halm synth music`, the default `--renderer halm`), so a plain
`pip install` needs no compiled synthesizer. What it plays, following the SoundFont 2.04 specification:
- presets -> instruments -> samples, with global zones, key and velocity ranges (the preset's and the
  instrument's intersected), and the preset's generators added to the instrument's;
- each sample at its pitch (root key or overridingRootKey, scaleTuning, coarse/fine tune, the sample's
  pitch correction and rate), read with linear interpolation; sampleModes 0 (no loop), 1 (loop) and
  3 (loop while the key is held, then to the sample's end); the address offsets of the zone;
- the volume envelope (delay, attack linear in amplitude, hold, decay and release linear in dB, sustain;
  keynumToVolEnvHold/Decay), initialAttenuation, velocity as amplitude (vel / 127), pan (equal power,
  then the mean of the two channels), and the initial low-pass filter (initialFilterFc / Q, a biquad).
  The modulation envelope moves that cutoff (modEnvToFilterFc): the voice is filtered at the envelope's
  two ends and cross-faded by it (one filter per end, not one per sample).
Not played: the modulation envelope's pitch depth, the LFOs (vibrato, tremolo), exclusive classes, chorus
and reverb sends, and the modulators of the file (the default velocity-to-attenuation curve is replaced
by vel / 127).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import numpy as np

# generator numbers (SoundFont 2.04, section 8.1.2)
START, END, LOOP_START, LOOP_END, START_COARSE = 0, 1, 2, 3, 4
FILTER_FC, FILTER_Q, MOD_ENV_TO_FC, END_COARSE, PAN = 8, 9, 11, 12, 17
MOD_DELAY, MOD_ATTACK, MOD_HOLD, MOD_DECAY, MOD_SUSTAIN, MOD_RELEASE = 25, 26, 27, 28, 29, 30
DELAY, ATTACK, HOLD, DECAY, SUSTAIN, RELEASE, KEY_TO_HOLD, KEY_TO_DECAY = 33, 34, 35, 36, 37, 38, 39, 40
INSTRUMENT, KEY_RANGE, VEL_RANGE, LOOP_START_COARSE, KEYNUM, VELOCITY = 41, 43, 44, 45, 46, 47
ATTENUATION, LOOP_END_COARSE, COARSE_TUNE, FINE_TUNE, SAMPLE_ID, SAMPLE_MODES = 48, 50, 51, 52, 53, 54
SCALE_TUNING, ROOT_KEY = 56, 58
RANGES = (KEY_RANGE, VEL_RANGE)
DEFAULTS = {FILTER_FC: 13500, DELAY: -12000, ATTACK: -12000, HOLD: -12000, DECAY: -12000, RELEASE: -12000,
            MOD_DELAY: -12000, MOD_ATTACK: -12000, MOD_HOLD: -12000, MOD_DECAY: -12000, MOD_RELEASE: -12000,
            SCALE_TUNING: 100, ROOT_KEY: -1, KEYNUM: -1, VELOCITY: -1}
# generators a preset zone may not set (they describe the sample itself): the instrument's value stands
INSTRUMENT_ONLY = {START, END, LOOP_START, LOOP_END, START_COARSE, END_COARSE, LOOP_START_COARSE, LOOP_END_COARSE,
                   KEYNUM, VELOCITY, SAMPLE_ID, SAMPLE_MODES, 57, ROOT_KEY}
SILENT_DB = -80.0  # a voice below this is over
CONTROL = 32  # envelopes are evaluated every CONTROL samples, and interpolated in between


@dataclass(frozen=True)
class Sample:
    start: int
    end: int
    loop_start: int
    loop_end: int
    rate: int
    root: int
    correction: int  # cents


@dataclass
class SoundFont:
    samples: np.ndarray  # (N,) float32 in [-1, 1): every sample of the file, one after the other
    headers: list[Sample]
    presets: dict[tuple[int, int], list[dict]]  # (bank, program) -> zones {gen: value}, global zone first (or {})
    instruments: list[list[dict]]  # zones {gen: value}, global zone first (or {})


def _chunks(data: bytes, start: int, end: int):
    while start + 8 <= end:
        cid, size = data[start:start + 4], struct.unpack_from("<I", data, start + 4)[0]
        yield cid, start + 8, size
        start += 8 + size + (size & 1)


def _zones(bags: list[tuple[int, int]], gens: list[tuple[int, int]], first: int, last: int, terminal: int) -> list[dict]:
    """The zones of bags first..last-1 as {generator: amount}; the first zone is the global one when it lacks
    the terminal generator (an empty dict when there is none)."""
    zones = []
    for b in range(first, last):
        z = {}
        for oper, amount in gens[bags[b][0]:bags[b + 1][0]]:
            if oper in RANGES:
                z[oper] = (amount & 0xFF, amount >> 8)
            elif oper in (INSTRUMENT, SAMPLE_ID):  # indices are unsigned
                z[oper] = amount
            else:
                z[oper] = amount - 0x10000 if amount >= 0x8000 else amount
        zones.append(z)
    if zones and terminal in zones[0]:
        zones.insert(0, {})
    return zones or [{}]


@functools.lru_cache(maxsize=4)
def load_soundfont(path: str) -> SoundFont:
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"RIFF" or data[8:12] != b"sfbk":
        raise ValueError(f"{path}: not a SoundFont 2 file (no RIFF sfbk header)")
    parts = {}
    for cid, off, size in _chunks(data, 12, len(data)):
        if cid == b"LIST":
            for sub, soff, ssize in _chunks(data, off + 4, off + size):
                parts[sub] = data[soff:soff + ssize]
    samples = np.frombuffer(parts[b"smpl"], dtype="<i2").astype(np.float32) / 32768.0

    def records(name: bytes, fmt: str) -> list[tuple]:
        return [r for r in struct.iter_unpack(fmt, parts[name])]

    phdr = records(b"phdr", "<20sHHHIII")
    pbag, pgen = records(b"pbag", "<HH"), records(b"pgen", "<HH")
    inst, ibag, igen = records(b"inst", "<20sH"), records(b"ibag", "<HH"), records(b"igen", "<HH")
    shdr = records(b"shdr", "<20sIIIIIBbHH")
    presets = {}
    for i in range(len(phdr) - 1):  # the last record is the terminal one (EOP)
        presets.setdefault((phdr[i][2], phdr[i][1]), _zones(pbag, pgen, phdr[i][3], phdr[i + 1][3], INSTRUMENT))
    instruments = [_zones(ibag, igen, inst[i][1], inst[i + 1][1], SAMPLE_ID) for i in range(len(inst) - 1)]
    headers = [Sample(s[1], s[2], s[3], s[4], s[5], s[6] if s[6] <= 127 else 60, s[7]) for s in shdr[:-1]]
    return SoundFont(samples, headers, presets, instruments)


def _in(rng: tuple[int, int] | None, v: int) -> bool:
    return rng is None or rng[0] <= v <= rng[1]


def regions(sf: SoundFont, bank: int, program: int, key: int, velocity: int) -> list[dict]:
    """The generator sets of every sample that plays for (bank, program, key, velocity)."""
    zones = (sf.presets.get((bank, program)) or sf.presets.get((0, program) if bank != 128 else (128, 0))
             or next(iter(sf.presets.values())))  # the General MIDI fallbacks: the melodic bank, the standard kit
    out = []
    p_global = zones[0]
    for pz in zones[1:]:
        pzone = {**p_global, **pz}
        if INSTRUMENT not in pz or not (_in(pzone.get(KEY_RANGE), key) and _in(pzone.get(VEL_RANGE), velocity)):
            continue
        izones = sf.instruments[pz[INSTRUMENT]]
        for iz in izones[1:]:
            gens = {**DEFAULTS, **izones[0], **iz}
            if SAMPLE_ID not in iz or not (_in(gens.get(KEY_RANGE), key) and _in(gens.get(VEL_RANGE), velocity)):
                continue
            for g, v in pzone.items():  # the preset's generators add to the instrument's
                if g not in INSTRUMENT_ONLY and g not in RANGES and g != INSTRUMENT:
                    gens[g] = gens.get(g, 0) + v
            out.append(gens)
    return out


def _seconds(timecents: float) -> float:
    return 0.0 if timecents <= -12000 else float(2.0 ** (timecents / 1200.0))


def _at_control_rate(values, n: int) -> np.ndarray:
    """An envelope evaluated every CONTROL output samples (values(t in s at those points)), linearly
    interpolated to all n samples."""
    c = np.asarray(values(np.arange(-(-n // CONTROL) + 1) * CONTROL), dtype=np.float32)
    ramp = np.arange(CONTROL, dtype=np.float32) / CONTROL
    return (c[:-1, None] + (c[1:] - c[:-1])[:, None] * ramp).reshape(-1)[:n]


def _volume_envelope(g: dict, key: int, n_held: int, sr: int) -> np.ndarray:
    """The volume envelope as amplitude for the held part (n_held samples) and the release after it, until it
    falls to SILENT_DB."""
    delay, attack = _seconds(g[DELAY]), _seconds(g[ATTACK])
    hold = _seconds(g[HOLD] + g.get(KEY_TO_HOLD, 0) * (60 - key))
    decay = _seconds(g[DECAY] + g.get(KEY_TO_DECAY, 0) * (60 - key))
    sustain_db = -min(max(g.get(SUSTAIN, 0), 0), 1440) / 10.0
    release = max(_seconds(g[RELEASE]), 0.001)

    def held_db(i):  # delay, the attack (linear in amplitude), hold, then the decay (linear in dB) to the sustain
        t = i / sr
        amp = np.clip((t - delay) / max(attack, 1e-6), 0.0, 1.0)
        db = 20 * np.log10(np.maximum(amp, 1e-10))
        t_decay = t - delay - attack - hold
        return np.where(t_decay > 0, np.maximum(-100.0 * t_decay / max(decay, 1e-6), sustain_db), db)

    level = float(held_db(np.array([max(n_held - 1, 0)]))[0])
    n_rel = int(np.ceil(release * max(0.0, level - SILENT_DB) / 100.0 * sr)) + 1
    n = n_held + n_rel
    return _at_control_rate(lambda i: 10.0 ** (np.where(i < n_held, held_db(i), level - 100.0 * (i - n_held + 1) / (release * sr))
                                               / 20.0), n)


def _looped(n: int, step: float, start: float, ls: int, le: int) -> np.ndarray:
    """Read positions of n output samples at `step` source samples each, wrapping in the loop [ls, le)."""
    pos = start + step * np.arange(n)
    if n == 0:
        return pos
    k = max(0, int(np.ceil((le - start) / step)))  # the first position at or past the loop's end
    while k > 0 and pos[min(k, n) - 1] >= le:  # (rounding) step back to the exact first one
        k -= 1
    if k < n:
        x = pos[k:] - ls
        x -= np.floor(x * (1.0 / (le - ls))) * (le - ls)  # (pos - ls) mod the loop's length
        pos[k:] = ls + np.clip(x, 0.0, np.nextafter(le - ls, 0))
    return pos


def render_voice(sf: SoundFont, g: dict, key: int, n_held: int, sr: int, max_len: int | None = None) -> np.ndarray:
    """One sample's voice (mono float32) from the note-on, held for n_held output samples, then released until
    it falls silent (or cut at max_len samples); at full velocity (the caller scales it, see velocity_gain)."""
    h = sf.headers[g[SAMPLE_ID]]
    start = h.start + g.get(START, 0) + 32768 * g.get(START_COARSE, 0)
    end = h.end + g.get(END, 0) + 32768 * g.get(END_COARSE, 0)
    ls = h.loop_start + g.get(LOOP_START, 0) + 32768 * g.get(LOOP_START_COARSE, 0)
    le = h.loop_end + g.get(LOOP_END, 0) + 32768 * g.get(LOOP_END_COARSE, 0)
    n_all = len(sf.samples)  # offsets that point outside the sample data are clamped to it
    start, end = min(max(start, 0), n_all - 2), min(max(end, 1), n_all)
    ls, le = min(max(ls, start), end), min(max(le, start), end)
    if h.rate <= 0 or end - start < 2:
        return np.zeros(0, dtype=np.float32)
    if g.get(KEYNUM, -1) >= 0:
        key = g[KEYNUM]
    root = g[ROOT_KEY] if g[ROOT_KEY] >= 0 else h.root
    cents = (key - root) * g[SCALE_TUNING] + 100 * g.get(COARSE_TUNE, 0) + g.get(FINE_TUNE, 0) + h.correction
    step = 2.0 ** (cents / 1200.0) * h.rate / sr
    env, rel_at = _volume_envelope(g, key, n_held, sr), n_held
    if max_len is not None:
        env = env[:max_len]
    mode = g.get(SAMPLE_MODES, 0) & 3
    looping = mode in (1, 3) and end >= le > ls + 1
    n = len(env)
    loops = n if looping and mode == 1 else min(rel_at, n) if looping else 0  # output samples read in the loop
    pos = _looped(loops, step, start, ls, le)
    if loops < n:  # no loop, or mode 3 after the note-off: on to the sample's end
        pos = np.concatenate([pos, (pos[-1] + step if loops else start) + step * np.arange(n - loops)])
    if loops < n:  # the sample runs out (it reads up to end - 1): the voice ends there
        first = pos[loops] if loops else start
        n = min(n, loops + max(0, int(np.ceil((end - 1 - first) / step))))
        pos, env = pos[:n], env[:n]
    i = pos.astype(np.int64)
    frac = (pos - i).astype(np.float32)
    nxt = i + 1
    if loops:  # the sample after the loop's last one is its first
        wrap = np.flatnonzero(i[:loops] == le - 1)
        nxt[wrap] = ls
    a = sf.samples[i]
    wav = a + (sf.samples[np.minimum(nxt, len(sf.samples) - 1)] - a) * frac
    pan = np.clip(g.get(PAN, 0) / 1000.0, -0.5, 0.5)
    gain = 10.0 ** (-g.get(ATTENUATION, 0) / 200.0) * (np.sqrt(0.5 - pan) + np.sqrt(0.5 + pan)) / 2
    wav *= env * np.float32(gain)
    return _filtered(wav, g, min(rel_at, n), sr).astype(np.float32)


def velocity_gain(g: dict, velocity: int) -> float:
    """A note's velocity as amplitude, vel / 127 (the zone's `velocity` generator, when set, replaces it)."""
    return max(g[VELOCITY] if g.get(VELOCITY, -1) >= 0 else velocity, 1) / 127.0


def _mod_envelope(g: dict, n: int, n_held: int, sr: int) -> np.ndarray:
    """The modulation envelope (0..1): delay, linear attack, hold, linear decay to its sustain, linear release."""
    delay, attack, hold = _seconds(g[MOD_DELAY]), _seconds(g[MOD_ATTACK]), _seconds(g[MOD_HOLD])
    decay, release = _seconds(g[MOD_DECAY]), max(_seconds(g[MOD_RELEASE]), 0.001)
    sustain = 1.0 - min(max(g.get(MOD_SUSTAIN, 0), 0), 1000) / 1000.0

    def held(i):
        t = i / sr
        env = np.clip((t - delay) / max(attack, 1e-6), 0.0, 1.0)
        return np.where(t - delay - attack - hold > 0, np.maximum(1.0 - (t - delay - attack - hold) / max(decay, 1e-6), sustain),
                        env)

    level = float(held(np.array([max(n_held - 1, 0)]))[0])
    return _at_control_rate(lambda i: np.where(i < n_held, held(i), np.maximum(level - (i - n_held) / (release * sr), 0.0)), n)


def _filtered(wav: np.ndarray, g: dict, n_held: int, sr: int) -> np.ndarray:
    """The initial low-pass filter, its cutoff moved by the modulation envelope (modEnvToFilterFc): the voice
    through the filter at the envelope's 0 and at its 1, cross-faded by the envelope."""
    fc, depth, q = g.get(FILTER_FC, 13500), g.get(MOD_ENV_TO_FC, 0), g.get(FILTER_Q, 0) / 10.0
    if fc >= 13500 and (depth == 0 or fc + depth >= 13500):
        return wav
    low = _lowpass(wav, fc, q, sr)
    if depth == 0:
        return low
    high = _lowpass(wav, fc + depth, q, sr)
    env = _mod_envelope(g, len(wav), n_held, sr)
    return low + env * (high - low)


def _lowpass(x: np.ndarray, fc_cents: float, q_db: float, sr: int) -> np.ndarray:
    """A biquad low-pass at fc_cents (absolute cents: 8.176 Hz * 2^(c/1200)); none from 13500 cents up."""
    from scipy.signal import lfilter

    if fc_cents >= 13500:
        return x
    fc = min(8.176 * 2.0 ** (fc_cents / 1200.0), 0.45 * sr)


    q = 10.0 ** (max(q_db, 0.0) / 20.0) / np.sqrt(2.0)  # initialFilterQ: the resonance peak in dB
    w = 2 * np.pi * fc / sr
    alpha = np.sin(w) / (2 * q)
    b = np.array([(1 - np.cos(w)) / 2, 1 - np.cos(w), (1 - np.cos(w)) / 2])
    a = np.array([1 + alpha, -2 * np.cos(w), 1 - alpha])
    return lfilter(b / a[0], a / a[0], x)


class _Voice:
    """A rendered voice, and whether it was cut short at max_len (then a note that needs more renders it again)."""

    def __init__(self, wav: np.ndarray, max_len: int):
        self.wav, self.cut = wav, len(wav) >= max_len

    def __len__(self) -> int:
        return len(self.wav)


def render_notes(path: str, notes: list[tuple[int, int, int, int, float, float]], seconds: float, sample_rate: int,
                 gain_db: float = -6.0) -> np.ndarray:
    """Mono float32 of exactly `seconds`: every (bank, program, key, velocity, start s, end s) note played with
    the SoundFont at `path`, summed, times the global gain."""
    sf = load_soundfont(path)
    total = int(round(seconds * sample_rate))
    out = np.zeros(total, dtype=np.float32)
    zones, voices = {}, {}  # a piece repeats its notes (chords, bass, drums): each voice is rendered once
    for bank, program, key, velocity, t_on, t_off in sorted(notes, key=lambda n: n[4]):  # (later notes need less of a voice)
        at = int(t_on * sample_rate)
        if at >= total or velocity <= 0:
            continue
        held = max(1, int(round((t_off - t_on) * sample_rate)))
        if (bank, program, key, velocity) not in zones:
            zones[bank, program, key, velocity] = regions(sf, bank, program, key, velocity)
        for g in zones[bank, program, key, velocity]:
            k = (tuple(sorted(g.items())), key, held)
            if k not in voices or len(voices[k]) < total - at and voices[k].cut:
                voices[k] = _Voice(render_voice(sf, g, key, held, sample_rate, max_len=total - at), total - at)
            wav = voices[k].wav[: total - at]
            out[at:at + len(wav)] += wav * velocity_gain(g, velocity)
    return out * np.float32(10.0 ** (gain_db / 20.0))
