"""Pretrained scorers for users who have their weights on disk: VGGish (FAD), LAION-CLAP (CLAP score,
FAD), an AudioSet classifier (KL). Nothing is downloaded; a missing file or package gets one message
saying how to get it.

Spec strings (`halm eval-t2a --fad-model / --kl-model / --clap-model`):

    judge            halm's own judge (halm/judge.py; the default, shipped)
    vggish:FILE      VGGish as in the FAD paper (Kilgour et al.): a state dict in torchvggish's layout
                     (vggish-10086976.pth, from github.com/harritaylor/torchvggish/releases) or a
                     .safetensors file with the same keys. Pure PyTorch, no extra package.
    clap:DIR         LAION-CLAP in the Hugging Face format (e.g. laion/clap-htsat-unfused or
                     laion/larger_clap_music, saved with ClapModel/ClapProcessor.save_pretrained).
    laion-clap:FILE  an original LAION-CLAP checkpoint (630k-audioset-best.pt, music_*.pt) through the
                     optional `laion_clap` package; its weights are read with weights_only=True.
    ast:DIR          an Audio Spectrogram Transformer AudioSet classifier in the Hugging Face format
                     (MIT/ast-finetuned-audioset-10-10-0.4593): 527 sigmoid label posteriors for KL,
                     in place of the RR paper's PaSST (which transformers lacks).

What each scorer gives (all take `clips`, a list of (waveform, sample_rate) pairs, mono or
(C, N), at any rate; they resample):
- `frame_embeddings(clips)` -> (n, D) rows for FAD. VGGish: one row per 0.96 s example of every
  clip (the FAD paper pools all frames); CLAP: one row per clip.
- `clip_embeddings(clips)` and `text_embeddings(captions)` -> (N, D) for the CLAP score.
- `posteriors(clips)` -> (N, C) with `multilabel` for KL.

VGGish front-end (the published recipe): 16 kHz, 25 ms periodic-Hann windows, hop 10 ms, |rfft| of
512, 64 HTK-mel bands 125-7500 Hz built in mel space (the DC bin weighs 0), log(mel + 0.01), framed
into non-overlapping 96 x 64 examples (a clip shorter than 0.975 s gives none and is refused). The
embedding is the last linear layer's output with no ReLU (the TF model's `embedding` tensor, which
the FAD reference implementation uses; torchvggish adds a ReLU) and no PCA.

Legend: B batch, T frames, M mel bands, D embedding width.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from halm.audio import mono_at
from halm.errors import UserError

SPECS = ("judge", "vggish:FILE", "clap:DIR", "laion-clap:FILE", "ast:DIR")


def _need(path: str, what: str, how: str, is_dir: bool = False) -> Path:
    p = Path(path).expanduser()
    if not (p.is_dir() if is_dir else p.is_file()):
        raise FileNotFoundError(f"{what}: {path} is not a {'directory' if is_dir else 'file'}. {how}")
    return p


# ---- VGGish ---------------------------------------------------------------------------------------
VGGISH_SR = 16000
VGGISH_HOW = ("Download vggish-10086976.pth from https://github.com/harritaylor/torchvggish/releases (v0.1) on a "
              "machine with internet, copy it here and pass vggish:/path/to/vggish-10086976.pth.")


def vggish_mel_matrix(n_bins: int = 257, n_mels: int = 64, sr: int = VGGISH_SR, fmin: float = 125.0,
                      fmax: float = 7500.0) -> torch.Tensor:
    """(n_bins, n_mels) triangular HTK-mel weights, triangles laid out in mel space, DC bin zeroed."""
    def mel(f):
        return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)

    bins = mel(np.linspace(0.0, sr / 2, n_bins))
    edges = np.linspace(mel(fmin), mel(fmax), n_mels + 2)
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    w = np.maximum(0.0, np.minimum((bins[:, None] - lo) / (mid - lo), (hi - bins[:, None]) / (hi - mid)))
    w[0] = 0.0
    return torch.from_numpy(w).float()


def vggish_examples(wav: np.ndarray) -> torch.Tensor:
    """16 kHz mono (N,) -> (E, 1, 96, 64) log-mel examples of 0.96 s (see the module doc)."""
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    win, hop, n_fft = 400, 160, 512
    if len(x) < win:
        return torch.zeros(0, 1, 96, 64)
    frames = x.unfold(0, win, hop)  # (T, 400)
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * torch.arange(win, dtype=torch.float64) / win)
    spec = torch.fft.rfft(frames.double() * window, n=n_fft).abs()  # (T, 257)
    logmel = torch.log(spec @ vggish_mel_matrix().double() + 0.01).float()  # (T, 64)
    n = len(logmel) // 96
    return logmel[:n * 96].reshape(n, 1, 96, 64)


class VGGish(nn.Module):
    """VGGish with torchvggish's parameter names (features.*, embeddings.*); widths read off the weights."""

    def __init__(self, channels=(64, 128, 256, 256, 512, 512), hidden: int = 4096, dim: int = 128):
        super().__init__()
        layers, c_in = [], 1
        for i, c in enumerate(channels):  # pools after conv 1, 2, 4, 6
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU()]
            if i in (0, 1, 3, 5):
                layers.append(nn.MaxPool2d(2, 2))
            c_in = c
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(nn.Linear(c_in * 6 * 4, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                        nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 96, 64) -> (B, D)
        x = self.features(x)  # (B, C, 6, 4)
        return self.embeddings(x.permute(0, 2, 3, 1).flatten(1))  # TF's NHWC flatten order


CONV_KEYS = ("features.0", "features.3", "features.6", "features.8", "features.11", "features.13")


class VGGishScorer:
    def __init__(self, path: str):
        p = _need(path, "VGGish weights", VGGISH_HOW)
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
        state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("pproc.")}
        try:
            channels = tuple(state[f"{k}.weight"].shape[0] for k in CONV_KEYS)
            hidden, dim = state["embeddings.0.weight"].shape[0], state["embeddings.4.weight"].shape[0]
        except KeyError as e:
            raise UserError(f"{path}: not a VGGish state dict in torchvggish's layout (no {e}). {VGGISH_HOW}") from None
        self.model = VGGish(channels, hidden, dim).eval()
        self.model.load_state_dict(state)
        self.name = f"vggish:{p.name}"

    @torch.inference_mode()
    def frame_embeddings(self, clips: list[tuple[np.ndarray, int]]) -> np.ndarray:
        out = []
        for i, (w, sr) in enumerate(clips):
            ex = vggish_examples(mono_at(w, sr, VGGISH_SR))
            if len(ex) == 0:
                raise UserError(f"clip {i}: {np.shape(w)[-1] / sr:.2f} s is shorter than one VGGish example (0.975 s)")
            out.append(torch.cat([self.model(ex[j:j + 64]) for j in range(0, len(ex), 64)]))
        return torch.cat(out).numpy()


# ---- CLAP (Hugging Face format) -------------------------------------------------------------------
CLAP_HOW = ("On a machine with internet: `python -c \"from transformers import ClapModel, ClapProcessor; "
            "n='laion/clap-htsat-unfused'; ClapModel.from_pretrained(n).save_pretrained('clap'); "
            "ClapProcessor.from_pretrained(n).save_pretrained('clap')\"`, copy the folder here and pass clap:/path/to/clap.")


class HFClapScorer:
    def __init__(self, path: str):
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        p = _need(path, "CLAP model", CLAP_HOW, is_dir=True)
        if not (p / "config.json").exists() or not (p / "preprocessor_config.json").exists():
            raise FileNotFoundError(f"CLAP model: {p} needs config.json, the weights and the processor files "
                                    f"(preprocessor_config.json, tokenizer). {CLAP_HOW}")
        self.model = ClapModel.from_pretrained(str(p), local_files_only=True).eval()
        self.features = ClapFeatureExtractor.from_pretrained(str(p), local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        self.sr = self.features.sampling_rate
        # unfused checkpoints take one crop of at most max_length_s; we cut it deterministically (the
        # first seconds) so that the feature extractor never draws a random one
        self.fusion = bool(getattr(self.model.config.audio_config, "enable_fusion", False))
        self.max_samples = int(self.features.max_length_s * self.sr)
        self.name = f"clap:{p.name}"

    @staticmethod
    def _tensor(out) -> torch.Tensor:  # transformers 4 returns the tensor, 5 an output object
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.inference_mode()
    def clip_embeddings(self, clips: list[tuple[np.ndarray, int]]) -> np.ndarray:
        out = []
        for i in range(0, len(clips), 8):
            batch = [mono_at(w, sr, self.sr) for w, sr in clips[i:i + 8]]
            if not self.fusion:
                batch = [w[:self.max_samples] for w in batch]
            f = self.features(batch, sampling_rate=self.sr, return_tensors="pt",
                              truncation="fusion" if self.fusion else "rand_trunc")
            out.append(self._tensor(self.model.get_audio_features(input_features=f["input_features"],
                                                                  is_longer=f.get("is_longer"))))
        return torch.cat(out).numpy()

    frame_embeddings = clip_embeddings

    @torch.inference_mode()
    def text_embeddings(self, captions: list[str]) -> np.ndarray:
        t = self.tokenizer(list(captions), padding=True, truncation=True, return_tensors="pt")
        return self._tensor(self.model.get_text_features(input_ids=t["input_ids"],
                                                         attention_mask=t["attention_mask"])).numpy()


# ---- LAION-CLAP original checkpoints (optional package) -------------------------------------------
class LaionClapScorer:
    def __init__(self, path: str):
        p = _need(path, "LAION-CLAP checkpoint", "Download it from https://huggingface.co/lukewys/laion_clap on a "
                  "machine with internet and pass laion-clap:/path/to/630k-audioset-best.pt.")
        try:
            import laion_clap
        except ImportError:
            raise ImportError("laion-clap:FILE needs the optional `laion_clap` package (pip install laion_clap; it "
                              "requires a torchaudio that matches your torch). Without it, use the Hugging Face "
                              f"format of the same model: clap:DIR. {CLAP_HOW}") from None
        amodel = "HTSAT-base" if any(s in p.name for s in ("music", "speech")) else "HTSAT-tiny"
        self.model = laion_clap.CLAP_Module(enable_fusion="fusion" in p.name, amodel=amodel).eval()
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        state = {k.removeprefix("module."): v for k, v in ckpt.get("state_dict", ckpt).items()}
        state.pop("text_branch.embeddings.position_ids", None)
        missing, unexpected = self.model.model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise UserError(f"{p}: does not match LAION-CLAP {amodel} (missing {missing[:3]}, unexpected {unexpected[:3]})")
        self.name = f"laion-clap:{p.name}"

    @torch.inference_mode()
    def clip_embeddings(self, clips: list[tuple[np.ndarray, int]]) -> np.ndarray:
        x = [mono_at(w, sr, 48000) for w, sr in clips]
        return np.concatenate([self.model.get_audio_embedding_from_data(x=w[None], use_tensor=False) for w in x])

    frame_embeddings = clip_embeddings

    @torch.inference_mode()
    def text_embeddings(self, captions: list[str]) -> np.ndarray:
        return np.asarray(self.model.get_text_embedding(list(captions), use_tensor=False))


# ---- AST AudioSet classifier (KL) -----------------------------------------------------------------
AST_HOW = ("On a machine with internet: `python -c \"from transformers import ASTForAudioClassification as M, "
           "ASTFeatureExtractor as F; n='MIT/ast-finetuned-audioset-10-10-0.4593'; M.from_pretrained(n).save_pretrained('ast'); "
           "F.from_pretrained(n).save_pretrained('ast')\"`, copy the folder here and pass ast:/path/to/ast.")


class ASTScorer:
    multilabel = True  # AudioSet labels are independent sigmoids

    def __init__(self, path: str):
        from transformers import ASTFeatureExtractor, ASTForAudioClassification

        p = _need(path, "AST classifier", AST_HOW, is_dir=True)
        if not (p / "preprocessor_config.json").exists():
            raise FileNotFoundError(f"AST classifier: {p} has no preprocessor_config.json. {AST_HOW}")
        self.model = ASTForAudioClassification.from_pretrained(str(p), local_files_only=True).eval()
        self.features = ASTFeatureExtractor.from_pretrained(str(p), local_files_only=True)
        self.sr = self.features.sampling_rate
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.name = f"ast:{p.name}"

    @torch.inference_mode()
    def posteriors(self, clips: list[tuple[np.ndarray, int]]) -> np.ndarray:
        out = []
        for i in range(0, len(clips), 8):
            f = self.features([mono_at(w, sr, self.sr) for w, sr in clips[i:i + 8]], sampling_rate=self.sr,
                              return_tensors="pt")
            out.append(torch.sigmoid(self.model(input_values=f["input_values"]).logits))
        return torch.cat(out).numpy()


# ---- specs ----------------------------------------------------------------------------------------
SCORERS = {"vggish": VGGishScorer, "clap": HFClapScorer, "laion-clap": LaionClapScorer, "ast": ASTScorer}
ROLES = {"fad": ("vggish", "clap", "laion-clap"), "clap": ("clap", "laion-clap"), "kl": ("ast",)}
_loaded: dict[str, object] = {}


def load_scorer(spec: str, role: str):
    """The scorer of `spec` (see the module doc) for `role` in fad | clap | kl; None for the judge."""
    if spec in (None, "", "judge"):
        return None
    kind, _, path = spec.partition(":")
    if kind not in SCORERS or not path:
        raise UserError(f"unknown scorer {spec!r}: use one of {', '.join(SPECS)}")
    if kind not in ROLES[role]:
        raise UserError(f"{spec}: a {kind} model cannot give the {role.upper()} score; use judge or one of "
                         f"{', '.join(k + ':...' for k in ROLES[role])}")
    key = f"{kind}:{Path(path).expanduser().resolve()}"
    if key not in _loaded:  # one load per process: one CLAP model serves both FAD and the CLAP score
        _loaded[key] = SCORERS[kind](path)
    return _loaded[key]
