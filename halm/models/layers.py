"""Layers shared by every model family: causal self-attention with a KV cache, MLP, pre-norm block.

Legend: B batch, T steps (this call), P steps already in the cache, D width, H heads, E head size,
L text positions (cross-attention keys).

The block is GPT-2's by default (pre-norm LayerNorm, fused qkv projection, tanh-GELU MLP of width 4D,
biases, learned positions), so that weights can be copied to and from transformers' GPT2LMHeadModel and
give the same logits (tests/test_models.py checks it). Switches give MusicGen's decoder with the same
modules: `bias=False` (bias-free attention and MLP projections; LayerNorms keep theirs), `activation`
("gelu" = exact erf GELU), `d_ff` (the MLP width) and `positions="sinusoidal"` (MusicGen's fixed table:
cos of every frequency, then sin; halm.interop checks the logits against transformers' MusicGen).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint


class KVCache:
    """Preallocated keys/values for every attention layer of one stack.

    `pos` is the number of steps already stored; a forward with a cache appends T steps.
    Preallocation (instead of torch.cat per step) keeps generation O(T) in memory traffic. Keys and
    values of a layer share one buffer, `kv[layer]` (2, B, H, Tmax, E), so that one copy stores both.
    """

    def __init__(self, n_layer: int, batch: int, n_head: int, max_steps: int, head_size: int,
                 device=None, dtype=torch.float32):
        shape = (2, batch, n_head, max_steps, head_size)  # (k|v, B, H, Tmax, E)
        self.kv = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.pos = 0
        self.max_steps = max_steps
        self.cross: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer  # text keys/values

    def reset(self):
        """Forget the stored steps (the cross-attention keys of the text stay: the condition is unchanged)."""
        self.pos = 0


class HybridCache:
    """The decoder stack's KV cache and, for models with the mel path, the mel path's; they advance together."""

    def __init__(self, decoder: KVCache, mel: KVCache | None = None):
        self.decoder, self.mel = decoder, mel

    @property
    def pos(self) -> int:
        return self.decoder.pos

    def reset(self):
        self.decoder.reset()
        if self.mel is not None:
            self.mel.reset()


ACTIVATIONS = {"gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "gelu": F.gelu, "relu": F.relu}
POSITIONS = ("learned", "sinusoidal")


def sinusoidal_table(n: int, d: int) -> torch.Tensor:
    """(n, d) fixed positions: for frequencies f_i = 10000^(-i / (d/2 - 1)), [cos(p f_i) ... | sin(p f_i) ...]
    (MusicGen's table, tensor2tensor's layout); an odd d gets a zero last column."""
    half = d // 2
    freq = torch.exp(torch.arange(half, dtype=torch.int64).float() * -(math.log(10000) / (half - 1)))  # (d/2,)
    ang = torch.arange(n, dtype=torch.int64).float()[:, None] * freq[None]  # (n, d/2)
    table = torch.cat([torch.cos(ang), torch.sin(ang)], dim=1)
    return torch.cat([table, torch.zeros(n, 1)], dim=1) if d % 2 else table


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        assert d_model % n_head == 0, f"d_model {d_model} not divisible by n_head {n_head}"
        self.n_head, self.head_size = n_head, d_model // n_head
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, D = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, self.head_size).permute(2, 0, 3, 1, 4)  # (3, B, H, T, E)
        q, k, v = qkv.unbind(0)  # (B, H, T, E)
        drop = self.dropout if self.training else 0.0
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=drop)
        else:
            P = cache.pos
            if P + T > cache.max_steps:
                raise ValueError(f"KV cache holds {cache.max_steps} steps; cannot add {T} to {P}")
            kv = cache.kv[layer][:, :B]  # (2, B, H, Tmax, E)
            kv[:, :, :, P:P + T] = qkv[1:]
            k, v = kv[:, :, :, : P + T].unbind(0)  # (B, H, P+T, E)
            if T == 1:  # one new step attends to everything stored: no mask needed
                y = F.scaled_dot_product_attention(q, k, v)
            else:  # new step i (absolute P+i) may see keys 0..P+i
                mask = torch.ones(T, P + T, dtype=torch.bool, device=x.device).tril(diagonal=P)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = self.proj(y.transpose(1, 2).reshape(B, T, D))  # (B, T, D)
        return F.dropout(y, drop, True) if drop else y


class CrossAttention(nn.Module):
    """Attention from the audio steps to the text positions (no causal mask; padded text positions masked).

    A row whose text is fully masked attends to nothing and gets a zero output (SDPA alone would give NaN).
    With a cache, the text keys/values are computed on the first call and reused for every later step.
    """

    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.n_head, self.head_size = n_head, d_model // n_head
        self.q = nn.Linear(d_model, d_model, bias=bias)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        B, T, D = x.shape
        q = self.q(x).view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, H, T, E)
        if cache is not None and cache.cross[layer] is not None:
            k, v = cache.cross[layer]
        else:
            L = ctx.shape[1]
            k, v = (t.view(B, L, self.n_head, self.head_size).transpose(1, 2) for t in self.kv(ctx).split(D, dim=2))
            if cache is not None:
                cache.cross[layer] = (k, v)  # (B, H, L, E) each
        has_text = ctx_mask.any(-1)  # (B,)
        mask = (ctx_mask | ~has_text[:, None])[:, None, None, :]  # (B, 1, 1, L); empty rows see all, then zeroed
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        y = y * has_text[:, None, None, None].to(y.dtype)
        y = y.transpose(1, 2).contiguous().view(B, T, D)
        return F.dropout(self.proj(y), self.dropout, self.training)


class MLP(nn.Module):
    def __init__(self, d_model: int, dropout: float = 0.0, d_ff: int = 0, activation: str = "gelu_tanh",
                 bias: bool = True):
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff or 4 * d_model, bias=bias)
        self.proj = nn.Linear(d_ff or 4 * d_model, d_model, bias=bias)
        self.act = ACTIVATIONS[activation]
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(self.act(self.fc(x)))
        return F.dropout(y, self.dropout, True) if self.dropout and self.training else y


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln(x)), [x + cross(ln(x), text)], then x + mlp(ln(x))."""

    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0, cross: bool = False, bias: bool = True,
                 d_ff: int = 0, activation: str = "gelu_tanh"):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_head, dropout, bias)
        if cross:
            self.ln_cross = nn.LayerNorm(d_model)
            self.cross = CrossAttention(d_model, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, dropout, d_ff, activation, bias)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0,
                ctx: torch.Tensor | None = None, ctx_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        if hasattr(self, "cross"):
            x = x + self.cross(self.ln_cross(x), ctx, ctx_mask, cache, layer)
        return x + self.mlp(self.ln_2(x))


class CausalStack(nn.Module):
    """Positions (learned `wpe`, or a fixed sinusoidal table) + a stack of blocks + final LayerNorm.
    Input (B, T, D) -> (B, T, D).

    With a cache, the positions continue from `cache.pos`, and the cache advances by T at the end.
    """

    def __init__(self, d_model: int, n_layer: int, n_head: int, context: int, dropout: float = 0.0,
                 cross: bool = False, positions: str = "learned", bias: bool = True, d_ff: int = 0,
                 activation: str = "gelu_tanh"):
        super().__init__()
        if positions not in POSITIONS or activation not in ACTIVATIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, activation one of {tuple(ACTIVATIONS)}")
        self.d_model, self.n_layer, self.n_head, self.context, self.cross = d_model, n_layer, n_head, context, cross
        if positions == "learned":
            self.wpe = nn.Embedding(context, d_model)
        else:  # not a parameter and not saved: the table is a function of (context, d_model)
            self.register_buffer("pos_table", sinusoidal_table(context, d_model), persistent=False)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_head, dropout, cross, bias, d_ff, activation)
                                    for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        self.checkpoint_blocks = False  # training: recompute each block's activations in the backward pass

    def position(self, pos: torch.Tensor | int) -> torch.Tensor:
        """Position vectors (..., D) of absolute step indices."""
        return self.wpe(pos) if hasattr(self, "wpe") else self.pos_table[pos]

    def new_cache(self, batch: int, max_steps: int | None = None, device=None, dtype=torch.float32) -> KVCache:
        return KVCache(self.n_layer, batch, self.n_head, max_steps or self.context, self.d_model // self.n_head,
                       device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, ctx: torch.Tensor | None = None,
                ctx_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D); ctx (B, L, D) + ctx_mask (B, L) bool for the cross-attention of a `cross` stack."""
        B, T, D = x.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.context:
            raise ValueError(f"{start + T} steps exceed the model's context of {self.context}")
        if cache is not None and T == 1 and not self.training and (not self.cross or cache.cross[0] is not None):
            return self.step(x[:, 0], cache, ctx_mask)[:, None]  # (cross-attention: once its text keys are cached)
        pos = torch.arange(start, start + T, device=x.device)
        x = self.drop(x + self.position(pos))  # (B, T, D)
        recompute = self.checkpoint_blocks and self.training and cache is None and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            if recompute:
                x = torch.utils.checkpoint.checkpoint(block, x, None, i, ctx, ctx_mask, use_reentrant=False)
            else:
                x = block(x, cache, i, ctx, ctx_mask)
        if cache is not None:
            cache.pos += T
        return self.ln_f(x)

    def step(self, x: torch.Tensor, cache: KVCache, ctx_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One new step of every row, x (B, D) -> (B, D): what forward computes for T == 1 with a cache.

        The same arithmetic as the blocks' forward, written as a few vector ops on the blocks'
        parameters: at batch 1 on a CPU each op costs ~6 us of dispatch, the weights' matrix-vector
        products are memory-bound, and this path (matrix-vector products instead of (1, D) matmuls, no causal mask, no
        module calls) is ~1.4x faster than the general one. A cross-attention stack attends to the text keys/values
        its first call cached (ctx_mask (B, L) is the text's mask). tests/test_models.py and tests/test_t2a.py
        check that it equals the full forward.
        """
        B, D = x.shape
        P, H = cache.pos, self.n_head
        if P + 1 > cache.max_steps:
            raise ValueError(f"KV cache holds {cache.max_steps} steps; cannot add 1 to {P}")
        if P + 1 > self.context:
            raise ValueError(f"{P + 1} steps exceed the model's context of {self.context}")
        x = x + (self.wpe.weight[P] if hasattr(self, "wpe") else self.pos_table[P])  # (B, D)
        for i, b in enumerate(self.blocks):
            qkv = linear(F.layer_norm(x, (D,), b.ln_1.weight, b.ln_1.bias), b.attn.qkv)  # (B, 3D)
            qkv = qkv.view(B, 3, H, 1, D // H).transpose(0, 1)  # (3, B, H, 1, E)
            kv = cache.kv[i][:, :B]  # (2, B, H, Tmax, E)
            kv[:, :, :, P:P + 1] = qkv[1:]
            y = F.scaled_dot_product_attention(qkv[0], kv[0, :, :, : P + 1], kv[1, :, :, : P + 1])  # (B, H, 1, E)
            x = x + linear(y.view(B, D), b.attn.proj)
            if self.cross:
                k, v = cache.cross[i]  # (B, H, L, E)
                q = linear(F.layer_norm(x, (D,), b.ln_cross.weight, b.ln_cross.bias), b.cross.q).view(B, H, 1, D // H)
                has_text = ctx_mask.any(-1)  # (B,); a row without text sees all, then is zeroed (as CrossAttention)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=(ctx_mask | ~has_text[:, None])[:, None, None])
                x = x + linear((y * has_text[:, None, None, None].to(y.dtype)).view(B, D), b.cross.proj)
            h = b.mlp.act(linear(F.layer_norm(x, (D,), b.ln_2.weight, b.ln_2.bias), b.mlp.fc))
            x = x + linear(h, b.mlp.proj)  # (B, D)
        cache.pos += 1
        return F.layer_norm(x, (D,), self.ln_f.weight, self.ln_f.bias)


def linear(x: torch.Tensor, lin: nn.Linear) -> torch.Tensor:
    """lin(x) for x (..., I) -> (..., O). A single row (the decode step at batch 1) goes through a
    matrix-vector product (addmv / mv), ~25% faster on a CPU than the (1, I) matmul nn.Linear runs."""
    if x.numel() != x.shape[-1]:
        return F.linear(x, lin.weight, lin.bias)
    v = x.reshape(-1)
    y = torch.mv(lin.weight, v) if lin.bias is None else torch.addmv(lin.bias, lin.weight, v)
    return y.view(*x.shape[:-1], y.shape[0])


def init_weights(module: nn.Module, n_layer: int, std: float = 0.02):
    """GPT-2 init: N(0, 0.02) for linears and embeddings, residual projections scaled by 1/sqrt(2·n_layer)."""
    for name, p in module.named_parameters():
        if p.dim() >= 2:
            scale = (2 * n_layer) ** -0.5 if name.endswith("proj.weight") and ".blocks." in f".{name}" else 1.0
            nn.init.normal_(p, mean=0.0, std=std * scale)
        elif name.endswith("bias"):
            nn.init.zeros_(p)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- the causal mel path of the hybrids (whisper_gpt, and t2a with mel=True) -------------------------
def mel_path_features(mel: torch.Tensor, mel_in: nn.Linear, mel_path: CausalStack, zero: bool = False,
                      cache: KVCache | None = None) -> torch.Tensor:
    """Per-step mel slices (B, S, r, M) -> mel-path states (B, S, Dm): a linear projection of the r*M values,
    then the lightweight causal blocks. zero=True is the ablation: zeros in, same parameters, no mel information."""
    B, S = mel.shape[:2]
    mel = mel.to(mel_in.weight.dtype).reshape(B, S, -1)  # (B, S, r*M)
    if zero:
        mel = torch.zeros_like(mel)
    return mel_path(linear(mel, mel_in), cache)


def identity_fusion_(fuse: nn.Linear, d_token: int) -> None:
    """Make the fusion (token embedding ‖ mel state -> width) start as [I | 0]: the hybrid then starts as the
    token-only model and learns to use the mel (a random init sat on a plateau for its first ~40 steps)."""
    with torch.no_grad():
        fuse.weight.zero_()
        nn.init.eye_(fuse.weight[:, :d_token])  # (D, Dt): identity (truncated if D != Dt)
        if fuse.bias is not None:
            fuse.bias.zero_()
