"""halm's offline judge of generated audio: a CLAP-style text-audio model + attribute classifiers.

No pretrained audio embedding model (VGGish, PaSST, LAION-CLAP) can be downloaded here, so halm trains
its own on the offline captioned corpora (music + sfx) and ships it:

- audio encoder: log-mel (80 bins, 16 kHz, 40 ms windows, hop 320 = 50 frames/s) of up to `seconds` of audio -> a
  small 2-D CNN -> mean+max over time -> `dim`-d embedding (L2-normalised). Its embeddings serve FAD.
- text tower: the frozen MiniLM sentence embedding (mean of the token states) -> a trainable projection.
- loss: symmetric InfoNCE between the audio and caption embeddings of a batch (learned temperature),
  plus one cross-entropy head per attribute on the audio embedding. The heads' softmax posteriors
  serve KL; their argmax serves controllability.

Version 2 (the shipped judge) also keeps time: the convolutions pool time only in their first
`time_pool` blocks (12.5 frames/s after two), and a bidirectional GRU runs over the frames before the
pooling, so the embedding can carry counts and order. Musical mode is judged from a chroma profile
(12 pitch classes from a 4096-point STFT, 65-2100 Hz, plus a bass profile below 260 Hz) by a
transposition-invariant head: one small MLP applied to the profile in all 12 rotations, the logits
pooled over rotations (logsumexp), so a key change alone cannot change its answer.

Attributes (from the synth manifests' `attributes`; a clip lacking one is not scored on it):
  music: instrument_family, tempo, mode, drums, dynamics
  sfx:   event (type of the first event), count (its number of hits, countable events only), speed
         (slow/fast, where the caption states it: continuous events and counts >= 2), loudness,
         n_events, second_event ("none" for one event), second_count
  speech: accent (the espeak-ng voice: en-us, en-gb-scotland, ...), timbre (its variant), rate (slow < 150 <=
         medium <= 185 < fast words per minute) and pitch (low < 40 <= medium <= 60 < high, espeak's 0..100)
  Derived in controllability (no head of its own): order = both events right, in order (two-event
  captions only).
A speech clip's text is its transcript, not a description of the sound: speech clips train the attribute
heads only, not the contrastive text-audio loss, and retrieval (R@1) is measured on described clips.

Judge directory: config.json (JudgeConfig + the attribute vocabularies) + model.safetensors.
`halm judge train --data SRC... --out DIR`, `halm judge eval --judge DIR --data SRC... [--json]`.

Legend: B batch, M mel bins, F frames, D embedding width.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from halm.errors import UserError

SAMPLE_RATE = 16000
HOP = 320  # 50 log-mel frames per second
N_FFT = 640


def _music(a: dict) -> dict:
    return {k: str(a[k]) for k in ("instrument_family", "tempo", "mode", "drums", "dynamics") if k in a}


def _speed_stated(e: dict) -> bool:
    """The caption names the speed of continuous events always, of countable ones from two hits on."""
    return "speed" in e and ("count" not in e or int(e["count"]) >= 2)


def _sfx(a: dict) -> dict:
    ev = a.get("events") or []
    if not ev:
        return {}
    order = a.get("order") or [e["type"] for e in ev]
    out = {"event": ev[0]["type"], "n_events": str(len(ev)), "second_event": order[1] if len(order) > 1 else "none",
           "loudness": ev[0].get("loudness", "")}
    if "count" in ev[0]:
        out["count"] = str(ev[0]["count"])
    if _speed_stated(ev[0]):
        out["speed"] = ev[0]["speed"]
    if len(ev) > 1 and "count" in ev[1]:
        out["second_count"] = str(ev[1]["count"])
    return {k: v for k, v in out.items() if v != ""}


def _speech(a: dict) -> dict:
    accent, _, timbre = str(a["voice"]).partition("+")
    out = {"accent": accent}
    if timbre:
        out["timbre"] = timbre
    if "rate_wpm" in a:
        wpm = float(a["rate_wpm"])
        out["rate"] = "slow" if wpm < 150 else "fast" if wpm > 185 else "medium"
    if "pitch" in a:
        out["pitch"] = "low" if float(a["pitch"]) < 40 else "high" if float(a["pitch"]) > 60 else "medium"
    return out


def _out_of_window(attributes: dict, seconds: float) -> set[str]:
    """Count attributes whose event has a hit after the judge's window: unlearnable from that window."""
    ev = attributes.get("events") or []
    late = set()
    for name, i in (("count", 0), ("second_count", 1)):
        if len(ev) > i and ev[i].get("onsets") and max(ev[i]["onsets"]) > seconds - 0.1:
            late.add(name)
    return late


def attributes_of(attributes: dict) -> dict[str, str]:
    """The judged attributes of one clip (see the module doc); {} for clips of other kinds."""
    if "events" in attributes:
        return _sfx(attributes)
    if "instrument_family" in attributes:
        return _music(attributes)
    if "voice" in attributes:
        return _speech(attributes)
    return {}


@dataclass
class JudgeConfig:
    n_mels: int = 80
    seconds: float = 6.0  # audio seen per clip (longer clips: a random window in training, the start in eval)
    channels: tuple = (16, 32, 64, 128)
    dim: int = 256
    text_encoder: str = "minilm"
    text_dim: int = 384
    attributes: dict = field(default_factory=dict)  # name -> list of values (the classes)
    version: int = 2
    time_pool: int = 2  # conv blocks that also halve time (the others halve mel bins only)
    gru: int = 128  # hidden size per direction of the GRU over time (0: none)
    chroma_heads: tuple = ("mode",)  # attributes judged from the chroma profile, not the embedding
    chroma_hidden: int = 32
    probes: tuple = ()  # attributes added by `halm judge extend`: linear heads fitted on the frozen embedding

    def __post_init__(self):
        if not 0 <= self.time_pool <= len(self.channels):
            raise UserError(f"time_pool must be in [0, {len(self.channels)}], got {self.time_pool}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"], d["chroma_heads"], d["probes"] = list(self.channels), list(self.chroma_heads), list(self.probes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> JudgeConfig:
        if "version" not in d:  # a version-1 judge: time pooled in every block, no GRU, no chroma heads
            d = {**d, "version": 1, "time_pool": len(d["channels"]), "gru": 0, "chroma_heads": []}
        return cls(**{**d, "channels": tuple(d["channels"]), "chroma_heads": tuple(d["chroma_heads"]),
                      "probes": tuple(d.get("probes", ()))})


def log_mel16(wav: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """wav (N,) at 16 kHz -> log-mel (M, F), 50 frames/s."""
    from halm.audio.mel import mel_filterbank, stft_magnitude

    fb = torch.from_numpy(mel_filterbank(SAMPLE_RATE, N_FFT, n_mels)).float()
    return torch.log10((fb @ stft_magnitude(wav, N_FFT, HOP, power=2)).clamp_min(1e-6))


CHROMA_FFT = 4096  # 3.9 Hz bins: a semitone is >= 2 bins from 65 Hz up
_CHROMA_MAPS: dict[int, torch.Tensor] = {}


def _chroma_map() -> torch.Tensor:
    """(24, CHROMA_FFT//2 + 1) 0/1 map: rows 0-11 pitch classes 65-2100 Hz, rows 12-23 the bass (65-260 Hz); C = 0."""
    if CHROMA_FFT not in _CHROMA_MAPS:
        f = np.fft.rfftfreq(CHROMA_FFT, 1.0 / SAMPLE_RATE)
        m = np.zeros((24, len(f)), dtype=np.float32)
        ok = (f >= 65.0) & (f <= 2100.0)
        pc = np.round(12 * np.log2(np.where(ok, f, 1.0) / 440.0) + 9).astype(int) % 12  # A4 = 440 Hz is class 9
        m[pc[ok], np.flatnonzero(ok)] = 1.0
        bass = ok & (f <= 260.0)
        m[12 + pc[bass], np.flatnonzero(bass)] = 1.0
        _CHROMA_MAPS[CHROMA_FFT] = torch.from_numpy(m)
    return _CHROMA_MAPS[CHROMA_FFT]


def chroma16(wav: torch.Tensor) -> torch.Tensor:
    """wav (N,) at 16 kHz -> chroma frames (24, F) at the log-mel's 50 frames/s: magnitude per pitch class."""
    if wav.shape[-1] <= CHROMA_FFT // 2:  # the centred STFT needs more than half a window: pad a very short clip
        wav = F.pad(wav, (0, CHROMA_FFT // 2 + 1 - wav.shape[-1]))
    from halm.audio.mel import stft_magnitude

    return _chroma_map() @ stft_magnitude(wav, CHROMA_FFT, HOP)  # (24, F)


def _valid(f_out: int, frames: torch.Tensor, f_in: int) -> torch.Tensor:
    """(B, f_out) mask of the frames of a pooled sequence that cover valid input frames."""
    return torch.arange(f_out, device=frames.device)[None] < (frames * f_out / f_in).ceil().clamp(min=1)[:, None]


class AudioEncoder(nn.Module):
    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        layers, c_in = [], 1
        for i, c in enumerate(cfg.channels):
            pool = 2 if i < cfg.time_pool else (2, 1)  # (mel, time)
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(pool)]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.gru = nn.GRU(c_in, cfg.gru, batch_first=True, bidirectional=True) if cfg.gru else None
        self.out = nn.Linear(2 * c_in + (4 * cfg.gru if cfg.gru else 0), cfg.dim)

    def forward(self, mel: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """mel (B, M, F) log-mel, frames (B,) valid frames -> (B, D) (not normalised)."""
        x = self.convs(((mel + 3.0) / 3.0)[:, None])  # (B, C, M', F')
        x = x.mean(2)  # over mel bins -> (B, C, F')
        valid = _valid(x.shape[-1], frames, mel.shape[-1])  # (B, F')
        feats = [x]
        if self.gru is not None:
            # packed, so that the backward direction starts at each clip's last valid frame, not in the padding
            packed = nn.utils.rnn.pack_padded_sequence(x.transpose(1, 2), valid.sum(-1).cpu(), batch_first=True,
                                                       enforce_sorted=False)
            h, _ = nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=x.shape[-1])
            feats.append(h.transpose(1, 2))  # (B, 2H, F'), zeros on padded frames
        pooled = []
        for y in feats:  # masked mean and max over time, (B, C) each
            pooled.append((y * valid[:, None]).sum(-1) / valid.sum(-1, keepdim=True))
            pooled.append(y.masked_fill(~valid[:, None], float("-inf")).amax(-1))
        return self.out(torch.cat(pooled, dim=1))


class ChromaHead(nn.Module):
    """Transposition-invariant classifier over the chroma profile: an MLP on all 12 rotations, logsumexp."""

    def __init__(self, n_classes: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(24, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
        shifts = (torch.arange(12)[None, :] + torch.arange(12)[:, None]) % 12  # (12 rotations, 12 classes)
        self.register_buffer("shifts", shifts, persistent=False)

    def forward(self, chroma: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """chroma (B, 24, F) magnitudes, frames (B,) -> logits (B, n_classes)."""
        valid = _valid(chroma.shape[-1], frames, chroma.shape[-1])
        prof = (chroma * valid[:, None]).sum(-1)  # (B, 24)
        prof = torch.cat([F.normalize(prof[:, :12], dim=-1), F.normalize(prof[:, 12:], dim=-1)], dim=1)
        full, bass = prof[:, :12][:, self.shifts], prof[:, 12:][:, self.shifts]  # (B, 12 rotations, 12)
        logits = self.mlp(torch.cat([full, bass], dim=-1))  # (B, 12, n_classes)
        return logits.logsumexp(1) - math.log(12)


class Judge(nn.Module):
    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        self.cfg = cfg
        self.audio = AudioEncoder(cfg)
        self.text_proj = nn.Linear(cfg.text_dim, cfg.dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.heads = nn.ModuleDict({name: nn.Linear(cfg.dim, len(values)) for name, values in cfg.attributes.items()
                                    if name not in cfg.chroma_heads})
        self.chroma_heads = nn.ModuleDict({name: ChromaHead(len(values), cfg.chroma_hidden)
                                           for name, values in cfg.attributes.items() if name in cfg.chroma_heads})

    def audio_embed(self, mel, frames) -> torch.Tensor:
        return F.normalize(self.audio(mel, frames), dim=-1)

    def text_embed(self, sentence: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(sentence), dim=-1)

    def logits(self, z: torch.Tensor, chroma: torch.Tensor | None, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """Attribute logits from the unnormalised embedding z (B, D) and the chroma frames (B, 24, F)."""
        a = F.normalize(z, dim=-1)
        out = {name: head(a) for name, head in self.heads.items()}
        if self.chroma_heads and chroma is None:
            raise UserError(f"the judge's {sorted(self.chroma_heads)} heads need the clips' chroma (clip_from_wav)")
        out.update({name: head(chroma, frames) for name, head in self.chroma_heads.items()})
        return out

    def posteriors(self, mel, frames, chroma=None) -> dict[str, torch.Tensor]:
        return {k: v.softmax(-1) for k, v in self.logits(self.audio(mel, frames), chroma, frames).items()}


# ---- data -----------------------------------------------------------------------------------------
def _sentence_embeddings(captions: list[str], name: str) -> torch.Tensor:
    """The frozen text tower: mean of MiniLM's token states over the caption's tokens -> (N, 384)."""
    from halm.models.text import load_text_encoder

    enc = load_text_encoder(name)
    out = []
    for i in range(0, len(captions), 64):
        emb, mask = enc.encode(captions[i:i + 64])
        out.append((emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
    return torch.cat(out)


def clip_from_wav(wav: np.ndarray, sample_rate: int, text: str, attributes: dict, n_mels: int = 80, id: str = "") -> dict:
    """A judge clip from audio in memory (e.g. a generated sample): mono, resampled to 16 kHz."""
    from halm.audio import mono_at

    wav = torch.from_numpy(mono_at(wav, sample_rate, SAMPLE_RATE))
    return {"id": id, "text": text, "mel": log_mel16(wav, n_mels), "chroma": chroma16(wav),
            "attributes": attributes_of(attributes),
            "describes": "voice" not in attributes,  # a transcript does not describe the sound (module doc)
            "fixed_start": "events" in attributes,  # timed events: a training window always starts at 0
            "late": _out_of_window(attributes, JudgeConfig.seconds)}


def load_clips(sources: list[str], n_mels: int, progress: bool = True) -> list[dict]:
    """Every captioned clip of the sources: log-mel at 16 kHz, caption, judged attributes."""
    from halm.audio import load_audio
    from halm.data import open_source

    clips = []
    items = [it for s in sources for it in open_source(s)]
    for it in tqdm(items, desc="judge: log-mel", disable=not progress, dynamic_ncols=True):
        if not (it.text or "").strip():
            continue
        wav, sr = load_audio(it.path)
        clips.append(clip_from_wav(wav, sr, it.text, it.attributes, n_mels, it.id))
    if not clips:
        raise UserError(f"{sources}: no captioned clips")
    return clips


def _batch(clips: list[dict], n_frames: int, rng: np.random.Generator | None):
    """(mel (B, M, n_frames) padded with -6, chroma (B, 24, n_frames) padded with 0, valid frames (B,)).

    With rng, clips longer than the window get a random window, except clips of timed events."""
    mel = torch.full((len(clips), clips[0]["mel"].shape[0], n_frames), -6.0)
    chroma = torch.zeros(len(clips), 24, n_frames)
    frames = torch.zeros(len(clips), dtype=torch.long)
    for b, c in enumerate(clips):
        m = c["mel"]
        start = 0
        if rng is not None and m.shape[1] > n_frames and not c.get("fixed_start"):
            start = int(rng.integers(0, m.shape[1] - n_frames + 1))
        seg = m[:, start:start + n_frames]
        mel[b, :, : seg.shape[1]] = seg
        ch = c["chroma"][:, start:start + n_frames]
        chroma[b, :, : ch.shape[1]] = ch
        frames[b] = seg.shape[1]
    return mel, chroma, frames


# ---- train / save / load / eval -----------------------------------------------------------------
def save_judge(judge: Judge, out: str | os.PathLike, extra: dict | None = None):
    """config.json + model.safetensors (+ probes.safetensors: the heads of `halm judge extend`, kept apart so that
    an extended judge's model.safetensors, and so its judge_hash, are the base judge's byte for byte)."""
    from halm.checkpoint import atomic_write_text, save_weights
    from halm.runkit import cpu_tensors

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = cpu_tensors(judge.state_dict())
    probe = {k: v for k, v in state.items() if _probe_key(k, judge.cfg.probes)}
    for name, part in (("model.safetensors", {k: v for k, v in state.items() if k not in probe}), (PROBES, probe)):
        if part:
            save_weights(part, str(out / (name + ".tmp")))
            os.replace(out / (name + ".tmp"), out / name)
    if not probe:
        (out / PROBES).unlink(missing_ok=True)
    atomic_write_text(out / "config.json", json.dumps({"judge": judge.cfg.to_dict(), **(extra or {})}, indent=2) + "\n")


PROBES = "probes.safetensors"


def _probe_key(key: str, probes: tuple) -> bool:
    return any(key.startswith(f"heads.{name}.") for name in probes)


DEFAULT_JUDGE = Path(__file__).parent / "assets" / "judge_halm_small"


def judge_hash(path: str | os.PathLike | None = None) -> str:
    """sha256 of a judge's model.safetensors (the shipped one by default): names the judge in results."""
    from halm.checkpoint import file_sha256

    return file_sha256((Path(path) if path else DEFAULT_JUDGE) / "model.safetensors")


def load_judge(path: str | os.PathLike | None = None) -> Judge:
    from safetensors.torch import load_file

    d = Path(path) if path else DEFAULT_JUDGE
    if not (d / "config.json").exists() or not (d / "model.safetensors").exists():
        raise FileNotFoundError(f"{d}: not a judge directory (config.json + model.safetensors); train one with "
                                "`halm judge train --data SRC... --out DIR`")
    cfg = JudgeConfig.from_dict(json.loads((d / "config.json").read_text())["judge"])
    judge = Judge(cfg)
    state = load_file(str(d / "model.safetensors"))
    if cfg.probes:
        if not (d / PROBES).exists():
            raise FileNotFoundError(f"{d}: the judge's {list(cfg.probes)} heads are in {PROBES}, which is missing "
                                    "(rerun its `halm judge extend` command)")
        state.update(load_file(str(d / PROBES)))
    judge.load_state_dict(state)
    return judge.eval()


def probes_hash(path: str | os.PathLike | None = None) -> str | None:
    """sha256 of a judge's probes.safetensors (its `halm judge extend` heads); None for a judge without them."""
    from halm.checkpoint import file_sha256

    f = (Path(path) if path else DEFAULT_JUDGE) / PROBES
    return file_sha256(f) if f.exists() else None


def train_judge(sources: list[str], out: str, steps: int = 2000, batch_size: int = 32, lr: float = 2e-3,
                attr_weight: float = 1.0, seed: int = 0, heldout: list[str] | None = None, progress: bool = True,
                device="cpu", warmup_steps: int = 100, ckpt_every: int = 250) -> dict:
    """Train the judge on the captioned clips of `sources`; evaluate on `heldout` if given; save to `out`.

    Deterministic for a seed on one machine (one thread order: torch's CPU kernels). device: "cpu",
    "cuda[:N]" or "auto" (the clips' features stay on the CPU; each batch moves). The run kit
    (halm.runkit) keeps OUT: OUT/.lock while training, train_config.json, train_state/ every ckpt_every
    steps (a rerun of the same command resumes the same trajectory; a higher `steps` extends it),
    metrics.jsonl and tb/; the judge itself is OUT/config.json + OUT/model.safetensors."""
    from halm.runkit import TrainingRun

    if ckpt_every < 1 or steps < 0:
        raise UserError(f"ckpt_every must be >= 1 and steps >= 0 (got {ckpt_every}, {steps})")
    settings = {"sources": [str(Path(s).resolve()) for s in sources], "steps": steps, "batch_size": batch_size,
                "lr": lr, "attr_weight": attr_weight, "seed": seed, "warmup_steps": warmup_steps}
    with TrainingRun(out, config_file="train_config.json", state_dir="train_state") as kit:
        return _train_judge(kit, settings, sources, steps, batch_size, lr, attr_weight, seed, heldout, progress, device,
                            warmup_steps, ckpt_every)


def _sources_fingerprint(sources: list[str], clips: list[dict]) -> dict:
    """What the clips are, beyond their folders' names: each synth corpus's settings (kind, seed, generator
    version), the number of clips and a hash of their captions (a corpus remade in place is not resumed)."""
    import hashlib

    from halm.checkpoint import read_json_file

    corpora = {}
    for s in sources:
        info = Path(s) / "corpus.json"
        corpora[str(Path(s).resolve())] = (read_json_file(info, "corpus description", f"remake the corpus {s} with "
                                                          "its `halm synth` command") if info.is_file() else None)
    text = "\n".join(c["text"] for c in clips).encode()
    return {"corpora": corpora, "clips": len(clips), "captions_sha256": hashlib.sha256(text).hexdigest()[:16]}


def _train_judge(kit, settings, sources, steps, batch_size, lr, attr_weight, seed, heldout, progress, device,
                 warmup_steps, ckpt_every) -> dict:
    from halm.config import resolve_device
    from halm.runkit import warmup_cosine

    device = resolve_device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = JudgeConfig()
    clips = load_clips(sources, cfg.n_mels, progress)
    # the flags that made it, and the data: a resume must match both (a higher `steps` extends the run)
    kit.settings({**settings, "data": _sources_fingerprint(sources, clips)}, may_change=("steps",), set_hint=False)
    values: dict[str, set] = {}
    for c in clips:
        for k, v in c["attributes"].items():
            values.setdefault(k, set()).add(v)
    cfg.attributes = {k: sorted(v) for k, v in sorted(values.items()) if len(v) > 1}
    sentences = _sentence_embeddings([c["text"] for c in clips], cfg.text_encoder).to(device)
    judge = Judge(cfg).to(device)
    opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=0.01)
    n_frames = int(cfg.seconds * SAMPLE_RATE / HOP)
    # a count whose last hit falls after the window cannot be read from it: no label
    labels = {k: torch.tensor([vals.index(c["attributes"][k]) if k in c["attributes"] and k not in c["late"] else -100
                               for c in clips], device=device) for k, vals in cfg.attributes.items()}
    caption_id = torch.from_numpy(np.unique([c["text"] for c in clips], return_inverse=True)[1]).to(device)
    describes = torch.tensor([c.get("describes", True) for c in clips], device=device)
    start, ck = 0, kit.last_checkpoint()
    if ck is not None:  # resume: the weights, the optimizer, both random streams and the step
        weights, st = kit.load(ck, device)
        judge.load_state_dict(weights["model"])
        opt.load_state_dict(st["optimizer"])
        rng.bit_generator.state = json.loads(st["rng"])
        torch.set_rng_state(st["torch_rng"].cpu())
        start = int(st["step"])
        if start > steps:
            raise UserError(f"{kit.folder} is at step {start}; --steps {steps} would end it before that (give --steps >= "
                            f"{start} to extend it, or use another --out)")
    log, t0 = kit.metrics(start), time.perf_counter()

    def save(done: int):
        kit.save({"model": judge.state_dict()}, {"optimizer": opt.state_dict(), "rng": json.dumps(rng.bit_generator.state),
                                                 "torch_rng": torch.get_rng_state(), "step": done})

    bar = tqdm(range(start, steps), initial=start, total=steps, desc="judge train", disable=not progress,
               dynamic_ncols=True)
    judge.train()
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = warmup_cosine(step, lr, warmup_steps, steps)
        idx = rng.choice(len(clips), size=min(batch_size, len(clips)), replace=False)
        mel, chroma, frames = (x.to(device) for x in _batch([clips[i] for i in idx], n_frames, rng))
        idx = torch.from_numpy(idx).to(device)
        z = judge.audio(mel, frames)
        a, t = F.normalize(z, dim=-1), judge.text_embed(sentences[idx])
        attr_logits = judge.logits(z, chroma, frames)
        d = describes[idx]  # contrastive over the clips whose text describes the sound
        logits = judge.logit_scale.exp().clamp(max=100) * a[d] @ t[d].T
        # captions repeat (same attributes, same words): identical captions are all positives
        same = (caption_id[idx][d][:, None] == caption_id[idx][d][None, :]).float()
        target = same / same.sum(1, keepdim=True)
        contrastive = (0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target.T)) if int(d.sum()) >= 2
                       else z.sum() * 0.0)
        attr = sum(F.cross_entropy(v, labels[k][idx], ignore_index=-100) for k, v in attr_logits.items()
                   if (labels[k][idx] != -100).any())
        loss = contrastive + attr_weight * attr / max(1, len(attr_logits))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 20 == 0 or step + 1 == steps:
            log({"step": step + 1, "loss": round(loss.item(), 4), "contrastive": round(contrastive.item(), 4),
                 "lr": opt.param_groups[0]["lr"]})
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % ckpt_every == 0 or step + 1 == steps:
            save(step + 1)
    if kit.last_checkpoint() is None:  # steps 0: nothing trained, still a complete folder
        save(start)
    log.close()
    judge.cpu().eval()  # saved and evaluated on the CPU
    result = {"steps": steps, "clips": len(clips), "train_seconds": round(time.perf_counter() - t0, 1),
              "attributes": {k: len(v) for k, v in cfg.attributes.items()}}
    if heldout:
        result["heldout"] = evaluate_judge(judge, heldout, progress=progress)
    save_judge(judge, kit.folder, {"sources": [str(s) for s in sources], "train": result})
    return result


@torch.no_grad()
def embed_clips(judge: Judge, clips: list[dict], batch: int = 32):
    """(audio embeddings (N, D), posteriors {attribute: (N, C)}) of clips from load_clips, on the CPU (computed
    where the judge is)."""
    n_frames = int(judge.cfg.seconds * SAMPLE_RATE / HOP)
    device = next(judge.parameters()).device
    embs, posts = [], {k: [] for k in judge.cfg.attributes}
    for i in range(0, len(clips), batch):
        mel, chroma, frames = (x.to(device) for x in _batch(clips[i:i + batch], n_frames, None))
        z = judge.audio(mel, frames)
        embs.append(F.normalize(z, dim=-1).cpu())
        for k, v in judge.logits(z, chroma, frames).items():
            posts[k].append(v.softmax(-1).cpu())
    return torch.cat(embs), {k: torch.cat(v) for k, v in posts.items()}


def with_order(accuracy: dict[str, float], predicted: dict[str, list], target: dict[str, list]) -> dict[str, float]:
    """Add the derived `order` score: both events of a two-event caption judged right, in their order."""
    if "event" in target and "second_event" in target:
        pairs = [(pe == te and ps == ts) for pe, ps, te, ts in zip(predicted["event"], predicted["second_event"],
                                                                    target["event"], target["second_event"])
                 if te is not None and ts not in (None, "none")]
        if pairs:
            accuracy = {**accuracy, "order": sum(pairs) / len(pairs)}
    return accuracy


@torch.no_grad()
def evaluate_judge(judge: Judge, sources: list[str], progress: bool = True, device="cpu") -> dict:
    """Held-out quality of a judge: text->audio retrieval R@1/R@5 and per-attribute accuracy (computed on `device`)."""
    from halm.config import resolve_device

    judge = judge.to(resolve_device(device))
    clips = load_clips(sources, judge.cfg.n_mels, progress)
    audio, posts = embed_clips(judge, clips)
    d = torch.tensor([c.get("describes", True) for c in clips])  # retrieval: described clips only (module doc)
    rank = torch.zeros(0)
    if bool(d.any()):
        sentences = _sentence_embeddings([c["text"] for c, k in zip(clips, d) if k], judge.cfg.text_encoder)
        text = judge.text_embed(sentences.to(next(judge.parameters()).device)).cpu()
        sim = text @ audio[d].T  # (N captions, N clips)
        rank = (sim > sim.diag()[:, None]).sum(1)  # clips scored above the caption's own clip
    from halm.metrics.t2a import attribute_accuracy

    targets = {k: [None if k in c["late"] else c["attributes"].get(k) for c in clips]  # late hits: unjudged
               for k in judge.cfg.attributes}
    targets = {k: v for k, v in targets.items() if any(x is not None for x in v)}
    predicted = {k: [judge.cfg.attributes[k][int(i)] for i in posts[k].argmax(-1)] for k in targets}
    acc = with_order(attribute_accuracy(predicted, targets), predicted, targets)
    n = len(rank)
    return {"clips": len(clips), "described_clips": n, "r_at_1": float((rank < 1).float().mean()) if n else None,
            "r_at_5": float((rank < 5).float().mean()) if n else None, "chance_r_at_1": 1 / n if n else None,
            "attribute_accuracy": acc}
