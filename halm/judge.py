"""halm's offline judge of generated audio: a CLAP-style text-audio model + attribute classifiers.

No pretrained audio embedding model (VGGish, PaSST, LAION-CLAP) can be downloaded here, so halm trains
its own on the offline captioned corpora (music + sfx) and ships it:

- audio encoder: log-mel (80 bins, 16 kHz, 40 ms windows, hop 320 = 50 frames/s) of up to `seconds` of audio -> a
  small 2-D CNN -> mean+max over time -> `dim`-d embedding (L2-normalised). Its embeddings serve FAD.
- text tower: the frozen MiniLM sentence embedding (mean of the token states) -> a trainable projection.
- loss: symmetric InfoNCE between the audio and caption embeddings of a batch (learned temperature),
  plus one cross-entropy head per attribute on the audio embedding. The heads' softmax posteriors
  serve KL; their argmax serves controllability.

Attributes (from the synth manifests' `attributes`; a clip lacking one is not scored on it):
  music: instrument_family, tempo, mode, drums, dynamics
  sfx:   event (type of the first event), n_events, second_event ("none" for one event), loudness

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

SAMPLE_RATE = 16000
HOP = 320  # 50 log-mel frames per second
N_FFT = 640


def _music(a: dict) -> dict:
    return {k: str(a[k]) for k in ("instrument_family", "tempo", "mode", "drums", "dynamics") if k in a}


def _sfx(a: dict) -> dict:
    ev = a.get("events") or []
    if not ev:
        return {}
    order = a.get("order") or [e["type"] for e in ev]
    return {"event": ev[0]["type"], "n_events": str(len(ev)), "second_event": order[1] if len(order) > 1 else "none",
            "loudness": ev[0].get("loudness", "")}


def attributes_of(attributes: dict) -> dict[str, str]:
    """The judged attributes of one clip (see the module doc); {} for clips of other kinds."""
    if "events" in attributes:
        return _sfx(attributes)
    if "instrument_family" in attributes:
        return _music(attributes)
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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


def log_mel16(wav: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """wav (N,) at 16 kHz -> log-mel (M, F), 50 frames/s."""
    from halm.audio.mel import mel_filterbank

    fb = torch.from_numpy(mel_filterbank(SAMPLE_RATE, N_FFT, n_mels)).float()
    spec = torch.stft(wav, N_FFT, hop_length=HOP, window=torch.hann_window(N_FFT), return_complex=True).abs().pow(2)
    return torch.log10((fb @ spec).clamp_min(1e-6))


class AudioEncoder(nn.Module):
    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        layers, c_in = [], 1
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.out = nn.Linear(2 * c_in, cfg.dim)

    def forward(self, mel: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """mel (B, M, F) log-mel, frames (B,) valid frames -> (B, D) (not normalised)."""
        x = self.convs(((mel + 3.0) / 3.0)[:, None])  # (B, C, M', F')
        x = x.mean(2)  # over mel bins -> (B, C, F')
        f = x.shape[-1]
        valid = torch.arange(f, device=x.device)[None] < (frames * f / mel.shape[-1]).ceil().clamp(min=1)[:, None]
        mean = (x * valid[:, None]).sum(-1) / valid.sum(-1, keepdim=True)
        mx = x.masked_fill(~valid[:, None], float("-inf")).amax(-1)
        return self.out(torch.cat([mean, mx], dim=1))


class Judge(nn.Module):
    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        self.cfg = cfg
        self.audio = AudioEncoder(cfg)
        self.text_proj = nn.Linear(cfg.text_dim, cfg.dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.heads = nn.ModuleDict({name: nn.Linear(cfg.dim, len(values)) for name, values in cfg.attributes.items()})

    def audio_embed(self, mel, frames) -> torch.Tensor:
        return F.normalize(self.audio(mel, frames), dim=-1)

    def text_embed(self, sentence: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(sentence), dim=-1)

    def posteriors(self, mel, frames) -> dict[str, torch.Tensor]:
        z = self.audio(mel, frames)
        return {name: head(F.normalize(z, dim=-1)).softmax(-1) for name, head in self.heads.items()}


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

    wav = mono_at(wav, sample_rate, SAMPLE_RATE)
    return {"id": id, "text": text, "mel": log_mel16(torch.from_numpy(wav), n_mels),
            "attributes": attributes_of(attributes)}


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
        raise ValueError(f"{sources}: no captioned clips")
    return clips


def _batch(clips: list[dict], n_frames: int, rng: np.random.Generator | None):
    mel = torch.full((len(clips), clips[0]["mel"].shape[0], n_frames), -6.0)
    frames = torch.zeros(len(clips), dtype=torch.long)
    for b, c in enumerate(clips):
        m = c["mel"]
        start = int(rng.integers(0, m.shape[1] - n_frames + 1)) if rng is not None and m.shape[1] > n_frames else 0
        seg = m[:, start:start + n_frames]
        mel[b, :, : seg.shape[1]] = seg
        frames[b] = seg.shape[1]
    return mel, frames


# ---- train / save / load / eval -----------------------------------------------------------------
def save_judge(judge: Judge, out: str | os.PathLike, extra: dict | None = None):
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "model.safetensors.tmp"
    save_file({k: v.detach().contiguous() for k, v in judge.state_dict().items()}, str(tmp))
    os.replace(tmp, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps({"judge": judge.cfg.to_dict(), **(extra or {})}, indent=2) + "\n")


DEFAULT_JUDGE = Path(__file__).parent / "assets" / "judge_halm_small"


def load_judge(path: str | os.PathLike | None = None) -> Judge:
    from safetensors.torch import load_file

    d = Path(path) if path else DEFAULT_JUDGE
    if not (d / "config.json").exists() or not (d / "model.safetensors").exists():
        raise FileNotFoundError(f"{d}: not a judge directory (config.json + model.safetensors); train one with "
                                "`halm judge train --data SRC... --out DIR`")
    c = json.loads((d / "config.json").read_text())["judge"]
    cfg = JudgeConfig(**{**c, "channels": tuple(c["channels"])})
    judge = Judge(cfg)
    judge.load_state_dict(load_file(str(d / "model.safetensors")))
    return judge.eval()


def train_judge(sources: list[str], out: str, steps: int = 2000, batch_size: int = 32, lr: float = 2e-3,
                attr_weight: float = 1.0, seed: int = 0, heldout: list[str] | None = None, progress: bool = True) -> dict:
    """Train the judge on the captioned clips of `sources`; evaluate on `heldout` if given; save to `out`."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = JudgeConfig()
    clips = load_clips(sources, cfg.n_mels, progress)
    values: dict[str, set] = {}
    for c in clips:
        for k, v in c["attributes"].items():
            values.setdefault(k, set()).add(v)
    cfg.attributes = {k: sorted(v) for k, v in sorted(values.items()) if len(v) > 1}
    sentences = _sentence_embeddings([c["text"] for c in clips], cfg.text_encoder)
    judge = Judge(cfg)
    opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=0.01)
    n_frames = int(cfg.seconds * SAMPLE_RATE / HOP)
    labels = {k: torch.tensor([vals.index(c["attributes"][k]) if k in c["attributes"] else -100 for c in clips])
              for k, vals in cfg.attributes.items()}
    caption_id = torch.from_numpy(np.unique([c["text"] for c in clips], return_inverse=True)[1])
    log, t0 = [], time.perf_counter()
    bar = tqdm(range(steps), desc="judge train", disable=not progress, dynamic_ncols=True)
    judge.train()
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = rng.choice(len(clips), size=min(batch_size, len(clips)), replace=False)
        mel, frames = _batch([clips[i] for i in idx], n_frames, rng)
        z = judge.audio(mel, frames)
        a, t = F.normalize(z, dim=-1), judge.text_embed(sentences[idx])
        logits = judge.logit_scale.exp().clamp(max=100) * a @ t.T
        # captions repeat (same attributes, same words): identical captions are all positives
        same = (caption_id[idx][:, None] == caption_id[idx][None, :]).float()
        target = same / same.sum(1, keepdim=True)
        contrastive = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target.T))
        attr = sum(F.cross_entropy(head(a), labels[k][idx], ignore_index=-100) for k, head in judge.heads.items()
                   if (labels[k][idx] != -100).any())
        loss = contrastive + attr_weight * attr / max(1, len(judge.heads))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 20 == 0 or step + 1 == steps:
            log.append({"step": step + 1, "loss": round(loss.item(), 4), "contrastive": round(contrastive.item(), 4)})
            bar.set_postfix(loss=f"{loss.item():.3f}")
    judge.eval()
    result = {"steps": steps, "clips": len(clips), "train_seconds": round(time.perf_counter() - t0, 1),
              "attributes": {k: len(v) for k, v in cfg.attributes.items()}, "log": log}
    if heldout:
        result["heldout"] = evaluate_judge(judge, heldout, progress=progress)
    save_judge(judge, out, {"sources": [str(s) for s in sources], "train": {k: v for k, v in result.items() if k != "log"}})
    (Path(out) / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return result


@torch.no_grad()
def embed_clips(judge: Judge, clips: list[dict], batch: int = 32):
    """(audio embeddings (N, D), posteriors {attribute: (N, C)}) of clips from load_clips."""
    n_frames = int(judge.cfg.seconds * SAMPLE_RATE / HOP)
    embs, posts = [], {k: [] for k in judge.heads}
    for i in range(0, len(clips), batch):
        mel, frames = _batch(clips[i:i + batch], n_frames, None)
        embs.append(judge.audio_embed(mel, frames))
        for k, p in judge.posteriors(mel, frames).items():
            posts[k].append(p)
    return torch.cat(embs), {k: torch.cat(v) for k, v in posts.items()}


@torch.no_grad()
def evaluate_judge(judge: Judge, sources: list[str], progress: bool = True) -> dict:
    """Held-out quality of a judge: text->audio retrieval R@1/R@5 and per-attribute accuracy."""
    clips = load_clips(sources, judge.cfg.n_mels, progress)
    audio, posts = embed_clips(judge, clips)
    text = judge.text_embed(_sentence_embeddings([c["text"] for c in clips], judge.cfg.text_encoder))
    sim = text @ audio.T  # (N captions, N clips)
    rank = (sim > sim.diag()[:, None]).sum(1)  # clips scored above the caption's own clip
    acc = {}
    for k, vals in judge.cfg.attributes.items():
        pairs = [(int(posts[k][i].argmax()), vals.index(c["attributes"][k])) for i, c in enumerate(clips)
                 if c["attributes"].get(k) in vals]
        if pairs:
            acc[k] = sum(p == t for p, t in pairs) / len(pairs)
    return {"clips": len(clips), "r_at_1": float((rank < 1).float().mean()), "r_at_5": float((rank < 5).float().mean()),
            "chance_r_at_1": 1 / len(clips), "attribute_accuracy": acc}
