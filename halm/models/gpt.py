"""`gpt`: the token-only baseline (GPT-S / GPT-L of the Whisper-GPT paper).

A decoder-only Transformer over the coarse codebook (codebook 0): token embedding + learned
positions, pre-norm causal blocks, final LayerNorm, untied linear head, next-token cross-entropy.

Legend: B batch, T steps, D width, V vocab (codebook size).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from halm.errors import UserError
from halm.models.layers import CausalStack, KVCache, init_weights, linear


@dataclass
class GPTConfig:
    vocab_size: int = 1024  # entries of the coarse codebook
    context: int = 512  # tokens the model sees at once (512 = 6.8 s at 75 Hz)
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 256
    dropout: float = 0.0

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise UserError(f"d_model {self.d_model} must be divisible by n_head {self.n_head}")

    def to_dict(self) -> dict:
        return asdict(self)


class GPT(nn.Module):
    family = "gpt"
    uses_mel = False

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.stack = CausalStack(cfg.d_model, cfg.n_layer, cfg.n_head, cfg.context, cfg.dropout)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)  # untied, as in the paper
        init_weights(self, cfg.n_layer)

    def new_cache(self, batch: int, max_steps: int | None = None, device=None) -> KVCache:
        return self.stack.new_cache(batch, max_steps, device=device)

    def forward(self, tokens: torch.Tensor, mel: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """tokens (B, T) int64 -> logits (B, T, V); position t predicts token t+1. `mel` is ignored."""
        x = self.wte(tokens)  # (B, T, D)
        return linear(self.stack(x, cache), self.head)  # (B, T, V)

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        return next_token_loss(self(batch["tokens"][:, :-1], None), batch["tokens"][:, 1:])


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Mean CE over targets != -100 (padding); also the top-1 accuracy. logits (B, T, V), targets (B, T)."""
    logits = logits.float()
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
    with torch.no_grad():
        valid = targets != -100
        acc = ((logits.argmax(-1) == targets) & valid).sum() / valid.sum().clamp(min=1)
    return loss, {"acc": acc}
