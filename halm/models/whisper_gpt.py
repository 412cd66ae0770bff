"""`whisper_gpt`: the hybrid of the Whisper-GPT paper — coarse tokens + causal mel slices.

At step t the model gets the coarse token t and the causal mel slice t (r mel frames whose analysis
windows end where codec frame t ends, so it holds no audio after frame t). The slices pass through a
few lightweight causal Transformer blocks (the "mel path"); the per-slice vector is concatenated with
the token embedding, projected to the model width and fed to the decoder stack, which predicts token
t+1 — exactly like the token-only `gpt`, whose core it shares.

Legend: B batch, T steps, r mel frames per step, M mel bins, D width, Dm mel-path width, V vocab.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from halm.errors import UserError
from halm.models.gpt import next_token_loss
from halm.models.layers import (
    CausalStack,
    HybridCache,
    identity_fusion_,
    init_weights,
    linear,
    mel_path_features,
)


@dataclass
class WhisperGPTConfig:
    vocab_size: int = 1024
    context: int = 512
    n_layer: int = 4  # decoder stack (the gpt-s core)
    n_head: int = 4
    d_model: int = 256
    d_token: int = 256  # width of the token embedding before the concatenation
    n_mels: int = 80  # must match the dataset's mel settings (checked when training/evaluating)
    frames_per_token: int = 2  # r
    mel_layers: int = 2  # the lightweight causal blocks of the mel path
    mel_heads: int = 4
    mel_d: int = 96
    mel_zero: bool = False  # ablation: the mel input is replaced by zeros (same parameters, no mel information)
    # "identity": the fusion starts as [I | 0] (token part identity, mel part zero), so the hybrid starts
    # as the token-only GPT and learns to use the mel; "random": GPT-2 init like every other linear
    # (it sits on a plateau for its first ~40 steps)
    fuse_init: str = "identity"
    dropout: float = 0.0

    def __post_init__(self):
        for d, h in ((self.d_model, self.n_head), (self.mel_d, self.mel_heads)):
            if d % h:
                raise UserError(f"width {d} must be divisible by its head count {h}")
        if self.fuse_init not in ("identity", "random"):
            raise UserError(f"fuse_init must be identity or random, not {self.fuse_init!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class WhisperGPT(nn.Module):
    family = "whisper_gpt"
    uses_mel = True

    def __init__(self, cfg: WhisperGPTConfig):
        super().__init__()
        self.cfg = cfg
        self.mel_in = nn.Linear(cfg.frames_per_token * cfg.n_mels, cfg.mel_d)
        self.mel_path = CausalStack(cfg.mel_d, cfg.mel_layers, cfg.mel_heads, cfg.context, cfg.dropout)
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_token)
        self.fuse = nn.Linear(cfg.d_token + cfg.mel_d, cfg.d_model)
        self.stack = CausalStack(cfg.d_model, cfg.n_layer, cfg.n_head, cfg.context, cfg.dropout)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        init_weights(self, cfg.n_layer)
        if cfg.fuse_init == "identity":
            identity_fusion_(self.fuse, cfg.d_token)

    def new_cache(self, batch: int, max_steps: int | None = None, device=None) -> HybridCache:
        return HybridCache(self.stack.new_cache(batch, max_steps, device=device),
                           self.mel_path.new_cache(batch, max_steps, device=device))

    def forward(self, tokens: torch.Tensor, mel: torch.Tensor, cache: HybridCache | None = None) -> torch.Tensor:
        """tokens (B, T) int64, mel (B, T, r, M) -> logits (B, T, V); position t predicts token t+1."""
        B, T = tokens.shape
        if mel.shape[:2] != (B, T) or mel.shape[2:] != (self.cfg.frames_per_token, self.cfg.n_mels):
            raise ValueError(f"mel {tuple(mel.shape)} does not match tokens {tuple(tokens.shape)} "
                             f"and (r, M) = ({self.cfg.frames_per_token}, {self.cfg.n_mels})")
        m = mel_path_features(mel, self.mel_in, self.mel_path, self.cfg.mel_zero,
                              cache.mel if cache is not None else None)  # (B, T, Dm)
        x = linear(torch.cat([self.wte(tokens), m], dim=-1), self.fuse)  # (B, T, D)
        return linear(self.stack(x, cache.decoder if cache is not None else None), self.head)  # (B, T, V)

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        return next_token_loss(self(batch["tokens"][:, :-1], batch["mel"][:, :-1]), batch["tokens"][:, 1:])
