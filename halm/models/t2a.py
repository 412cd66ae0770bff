"""`t2a`: the text-to-audio LM (MusicGen/AudioGen style) with classifier-free guidance and the
representation regularization (RR) of arXiv 2309.08773.

The K codebooks are interleaved by a pattern (halm.models.patterns, `delay` by default); at each step
the K codebook embeddings of the previous step are summed, pass a causal stack whose blocks also
cross-attend to the projected text, and K linear heads predict the K tokens of the step.

Loss: the mean over codebooks of each codebook's mean cross-entropy over its valid positions (a mean,
not audiocraft's sum, so the number reads as nats per token like the other families).

CFG training: on a CFG step the condition is the null condition: a single *learned* vector in the LM
width (mask of length 1, so attention never sees an all-masked row). `cfg_mode="batch"` (default,
audiocraft's behaviour) drops the whole batch's condition with probability `cfg_dropout`;
`cfg_mode="sample"` drops each sample independently. The trainer's data sampler draws these decisions
from its seeded generator (identical on every DDP rank, and resumable).

RR: on CFG steps (`rr_on="cfg"`, default; `"all"` = every step, the paper's negative ablation)
    L = L_uncond + rr_weight * L_rr,   L_rr = sum_{b != b'} (cos(T_b, T_b') - cos(A_b, A_b'))^2 / (B (B - 1))
with T_b the pooled frozen text-encoder output of sample b's caption (no gradient; the caption's, even
though the LM did not see it) and A_b its pooled audio representation: the final hidden states after
the last norm, before the heads, over the steps with a valid target. Pooling: `max` (default) or `mean`.
In `sample` mode, L_rr is taken over the dropped samples (when there are >= 2). `rr_gather` gathers
T and A across DDP ranks (with gradient) before the similarities; ranks that dropped different numbers
of samples (none included) all enter the gather, so the pairs are those of the global batch. Under
gradient accumulation L_rr is taken per micro-batch (its pairs are those of one micro-batch). rr_weight = 0 turns RR off (L_rr is
still computed, without gradient, and logged: the baseline's similarity gap, to compare with RR's).

A second stage (`given_codebooks=G`, e.g. the `fine-s` preset: G = 1, `text_encoder="none"`): the first
G codebooks are inputs only, known at every frame, never predicted: the loss and the NLL are over
codebooks G..K-1, and sampling (halm.generate.generate_t2a(given=...)) forces them. With the delay
pattern, codebook k >= 1 of frame t is predicted at step t+k, having seen codebook 0 of frames <= t+k-1:
the fine codes of a frame see its own coarse code and k-1 frames of lookahead. With
`text_encoder="none"` there is no caption: every row gets the null condition (an unconditional LM).

MusicGen's decoder is this family with `positions="sinusoidal"`, `bias=False`, `activation="gelu"` and its
`d_ff` (halm.interop imports and exports transformers' MusicgenForConditionalGeneration).

`mel=True` adds the Whisper-GPT causal mel path (hybrid + text + RR; the same mel path and fusion as
whisper_gpt, halm.models.layers.mel_path_features, with its identity fusion init and the mel_zero
ablation): at step s the LM also sees the mel slice of frame patterns.mel_frame_of_step(s), the last
frame whose audio no target of step s encodes.

Legend: B batch, K codebooks, T frames, S steps, L text positions, D width, Dt text width, V codebook size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from halm.errors import UserError
from halm.models import patterns
from halm.models.layers import (
    ACTIVATIONS,
    POSITIONS,
    CausalStack,
    HybridCache,
    identity_fusion_,
    init_weights,
    mel_path_features,
)


@dataclass
class T2AConfig:
    n_q: int = 4  # codebooks modelled (the first n_q of the dataset's codec)
    vocab_size: int = 1024  # codebook size
    context: int = 512  # pattern steps the model sees at once (delay, K=4: 509 frames = 6.8 s at 75 Hz)
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 192
    dropout: float = 0.0
    positions: str = "learned"  # learned | sinusoidal (MusicGen's fixed table)
    bias: bool = True  # biases of the attention and MLP projections (MusicGen: none)
    d_ff: int = 0  # MLP width (0 = 4 * d_model)
    activation: str = "gelu_tanh"  # gelu_tanh (GPT-2) | gelu (exact; MusicGen) | relu
    pattern: str = "delay"  # parallel | delay | flatten
    text_encoder: str = "minilm"  # minilm | t5:DIR | hf:DIR | none (halm.models.text; none: no caption)
    text_dim: int = 384  # the encoder's width (MiniLM 384, t5-base 768)
    text_max_tokens: int = 64
    cfg_dropout: float = 0.1  # probability that a training step (or sample) uses the null condition
    cfg_mode: str = "batch"  # batch: the whole batch is dropped together (audiocraft); sample: per sample
    rr_weight: float = 3.0  # lambda of L_rr (0 = no RR)
    rr_pool: str = "max"  # max | mean
    rr_on: str = "cfg"  # cfg: RR on CFG steps only (the paper); all: on every step (the paper's negative ablation)
    rr_gather: bool = False  # under DDP, gather the pooled representations of all ranks before the similarities
    given_codebooks: int = 0  # leading codebooks that are inputs only, known at every frame (a second stage)
    mel: bool = False  # add the Whisper-GPT causal mel path
    n_mels: int = 80
    frames_per_token: int = 2
    mel_layers: int = 2
    mel_heads: int = 4
    mel_d: int = 96
    mel_zero: bool = False  # ablation: the mel input replaced by zeros (same parameters, no mel information)
    fuse_init: str = "identity"  # identity: the fusion starts as [I | 0] (the model starts as without mel); random

    def __post_init__(self):
        checks = [(self.pattern in patterns.PATTERNS, f"pattern must be one of {patterns.PATTERNS}"),
                  (self.positions in POSITIONS, f"positions must be one of {POSITIONS}"),
                  (self.activation in ACTIVATIONS, f"activation must be one of {tuple(ACTIVATIONS)}"),
                  (self.d_ff >= 0, "d_ff must be >= 0 (0 = 4 * d_model)"),
                  (self.cfg_mode in ("batch", "sample"), "cfg_mode must be 'batch' or 'sample'"),
                  (self.fuse_init in ("identity", "random"), "fuse_init must be 'identity' or 'random'"),
                  (self.rr_pool in ("max", "mean"), "rr_pool must be 'max' or 'mean'"),
                  (self.rr_on in ("cfg", "all"), "rr_on must be 'cfg' or 'all'"),
                  (0.0 <= self.cfg_dropout <= 1.0, "cfg_dropout must be in [0, 1]"),
                  (self.d_model % self.n_head == 0, f"d_model {self.d_model} must be divisible by n_head"),
                  (not self.mel or self.mel_d % self.mel_heads == 0, "mel_d must be divisible by mel_heads"),
                  (self.n_q >= 1, "n_q must be >= 1"),
                  (0 <= self.given_codebooks < self.n_q, f"given_codebooks must be in [0, n_q) = [0, {self.n_q})"),
                  (self.text_encoder != "none" or self.rr_weight == 0,
                   "text_encoder=none (no caption) has nothing for RR to match: set rr_weight=0")]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)
        patterns.frames_for_steps(self.pattern, self.n_q, self.context)  # raises if no frame fits

    @property
    def has_text(self) -> bool:
        return self.text_encoder != "none"

    @property
    def frames(self) -> int:
        """Frames of audio in one context window."""
        return patterns.frames_for_steps(self.pattern, self.n_q, self.context)

    def to_dict(self) -> dict:
        return asdict(self)


def pool(x: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """x (B, N, D), mask (B, N) bool -> (B, D): max or mean over the masked-in positions."""
    m = mask[..., None]
    if how == "max":
        return x.masked_fill(~m, float("-inf")).amax(1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


def rr_loss(text_repr: torch.Tensor, audio_repr: torch.Tensor) -> torch.Tensor:
    """L_rr of pooled text (B, Dt) and audio (B, D) representations; the text side gets no gradient."""
    B = text_repr.shape[0]
    if B < 2:
        return audio_repr.sum() * 0.0
    t = F.normalize(text_repr.detach().float(), dim=-1)
    a = F.normalize(audio_repr.float(), dim=-1)
    off = ~torch.eye(B, dtype=torch.bool, device=a.device)
    return ((t @ t.T - a @ a.T)[off] ** 2).sum() / (B * (B - 1))


def _world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gather_rows(x: torch.Tensor) -> torch.Tensor:
    """(n_rank, D) on every rank -> (sum of n_rank, D) in rank order, with gradient; ranks may hold different
    numbers of rows (0 included). Every rank must call it (it is a collective)."""
    if _world() == 1:
        return x
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    counts = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(_world())]
    dist.all_gather(counts, torch.tensor([x.shape[0]], device=x.device))
    counts = [int(c) for c in counts]
    most = max(counts)
    if most == 0:
        return x
    padded = torch.cat([x, x.new_zeros(most - x.shape[0], x.shape[1])]) if x.shape[0] < most else x  # (most, D)
    return torch.cat([part[:n] for part, n in zip(all_gather(padded), counts)], 0)


def _drop_given_heads(module, state_dict, prefix, *_):
    """Checkpoints of second stages made with a head for every codebook load without the given ones' heads."""
    for k in range(module.cfg.given_codebooks):
        state_dict.pop(f"{prefix}heads.{k}.weight", None)


class T2A(nn.Module):
    family = "t2a"
    some_params_unused = True  # per step: the text projection on CFG steps, the null condition on the others (DDP)

    def __init__(self, cfg: T2AConfig):
        super().__init__()
        self.cfg = cfg
        self.special = cfg.vocab_size  # start token and empty pattern positions
        self.emb = nn.ModuleList(nn.Embedding(cfg.vocab_size + 1, cfg.d_model) for _ in range(cfg.n_q))
        self.text_proj = nn.Linear(cfg.text_dim, cfg.d_model)
        self.null_cond = nn.Parameter(torch.zeros(cfg.d_model))  # the CFG null condition (learned)
        if cfg.mel:
            self.mel_in = nn.Linear(cfg.frames_per_token * cfg.n_mels, cfg.mel_d)
            self.mel_path = CausalStack(cfg.mel_d, cfg.mel_layers, cfg.mel_heads, cfg.context, cfg.dropout)
            self.fuse = nn.Linear(cfg.d_model + cfg.mel_d, cfg.d_model)
        self.stack = CausalStack(cfg.d_model, cfg.n_layer, cfg.n_head, cfg.context, cfg.dropout, cross=True,
                                 positions=cfg.positions, bias=cfg.bias, d_ff=cfg.d_ff, activation=cfg.activation)
        # a given codebook (a second stage's input) is never predicted: no head for it
        self.heads = nn.ModuleList(nn.Identity() if k < cfg.given_codebooks else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
                                   for k in range(cfg.n_q))
        if cfg.given_codebooks:
            self.register_load_state_dict_pre_hook(_drop_given_heads)
        init_weights(self, cfg.n_layer)
        if cfg.mel and cfg.fuse_init == "identity":
            identity_fusion_(self.fuse, cfg.d_model)

    @property
    def uses_mel(self) -> bool:
        return self.cfg.mel

    def new_cache(self, batch: int, max_steps: int | None = None, device=None) -> HybridCache:
        return HybridCache(self.stack.new_cache(batch, max_steps, device=device),
                        self.mel_path.new_cache(batch, max_steps, device=device) if self.cfg.mel else None)

    # ---- conditioning -------------------------------------------------------------------------
    def condition(self, text_emb: torch.Tensor, text_mask: torch.Tensor,
                  drop: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen-encoder output (B, L, Dt) + mask -> cross-attention input (B, L, D) + mask.

        Rows with drop[b] get the null condition: the learned vector at position 0, the rest masked;
        a model without text (text_encoder="none") gives every row the null condition.
        """
        if not self.cfg.has_text:
            return self.null_condition(text_emb.shape[0], text_emb.device)
        ctx = self.text_proj(text_emb.to(self.text_proj.weight.dtype))  # (B, L, D)
        if drop is None or not bool(drop.any()):
            return ctx, text_mask
        d = drop.to(ctx.device)[:, None]  # (B, 1)
        first = torch.zeros_like(text_mask)
        first[:, 0] = True
        null = self.null_cond.to(ctx.dtype).expand_as(ctx)
        ctx = torch.where((d & first)[..., None], null, ctx)
        return ctx, torch.where(d, first, text_mask)

    def null_condition(self, batch: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.null_cond.to(device)[None, None].expand(batch, 1, -1),
                torch.ones(batch, 1, dtype=torch.bool, device=device))

    # ---- forward --------------------------------------------------------------------------------
    def hidden(self, inputs: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor, mel: torch.Tensor | None = None,
               cache: HybridCache | None = None) -> torch.Tensor:
        """inputs (B, K, S) pattern tokens (SPECIAL allowed), ctx (B, L, D) -> hidden states (B, S, D)."""
        B, K, S = inputs.shape
        if K != self.cfg.n_q:
            raise ValueError(f"inputs have {K} codebooks, the model {self.cfg.n_q}")
        x = sum(self.emb[k](inputs[:, k]) for k in range(K))  # (B, S, D)
        if self.cfg.mel:
            if mel is None:
                raise ValueError("this t2a model has the mel path (mel=True): pass the mel slices")
            m = mel_path_features(mel, self.mel_in, self.mel_path, self.cfg.mel_zero,
                                  cache.mel if cache is not None else None)  # (B, S, r, M) -> (B, S, Dm)
            x = self.fuse(torch.cat([x, m], dim=-1))
        return self.stack(x, cache.decoder if cache is not None else None, ctx, ctx_mask)  # (B, S, D)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """hidden (B, S, D) -> logits (B, K, S, V); zeros for the given codebooks (never targets, never sampled)."""
        G = self.cfg.given_codebooks
        predicted = [head(h) for head in self.heads[G:]]
        return torch.stack([predicted[0].new_zeros(predicted[0].shape)] * G + predicted, dim=1)

    def forward(self, inputs: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor, mel: torch.Tensor | None = None,
                cache: HybridCache | None = None) -> torch.Tensor:
        return self.logits(self.hidden(inputs, ctx, ctx_mask, mel, cache))

    # ---- training -------------------------------------------------------------------------------
    def pattern_inputs(self, codes: torch.Tensor, lengths: torch.Tensor | None = None):
        """codes (B, K, T) -> (inputs (B, K, S), targets (B, K, S) with -100 where invalid, valid (B, K, S))."""
        seq, valid = patterns.build(codes, self.cfg.pattern, self.special, lengths)
        start = torch.full_like(seq[:, :, :1], self.special)
        inputs = torch.cat([start, seq[:, :, :-1]], dim=2)
        return inputs, seq.masked_fill(~valid, -100), valid

    def step_mel(self, mel: torch.Tensor, T: int) -> torch.Tensor:
        """Per-frame mel (B, T, r, M) -> per-step mel (B, S, r, M) of patterns.mel_frame_of_step (zeros before)."""
        f = patterns.mel_frame_of_step(self.cfg.pattern, self.cfg.n_q, T).to(mel.device)  # (S,)
        out = mel[:, f.clamp(min=0)]
        return out * (f >= 0).to(out.dtype)[None, :, None, None]

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """batch: codes (B, K, T), lengths (B,), text_emb (B, L, Dt), text_mask (B, L), drop (B,) bool, [mel]."""
        cfg = self.cfg
        codes = batch["codes"]
        lengths = batch.get("lengths")
        drop = batch.get("drop")
        if drop is None:
            drop = torch.zeros(codes.shape[0], dtype=torch.bool, device=codes.device)
        inputs, targets, valid = self.pattern_inputs(codes, lengths)
        G = cfg.given_codebooks
        ctx, ctx_mask = self.condition(batch["text_emb"], batch["text_mask"], drop)
        mel = self.step_mel(batch["mel"], codes.shape[2]) if cfg.mel else None
        h = self.hidden(inputs, ctx, ctx_mask, mel)  # (B, S, D)
        logits = self.logits(h).float()  # (B, K, S, V)
        per_k, acc_k = [], []
        for k in range(G, cfg.n_q):  # the given codebooks are inputs only
            t = targets[:, k]
            per_k.append(F.cross_entropy(logits[:, k].reshape(-1, cfg.vocab_size), t.reshape(-1), ignore_index=-100))
            with torch.no_grad():
                ok = t != -100
                acc_k.append(((logits[:, k].argmax(-1) == t) & ok).sum() / ok.sum().clamp(min=1))
        ce = torch.stack(per_k).mean()
        extra = {"acc": torch.stack(acc_k).mean()}
        for j, k in enumerate(range(G, cfg.n_q)):
            extra[f"nll_k{k}"] = per_k[j].detach()
            extra[f"acc_k{k}"] = acc_k[j]
        n_drop = int(drop.sum())
        if n_drop == codes.shape[0]:
            extra["l_uncond"] = ce.detach()
        elif n_drop == 0:
            extra["l_cond"] = ce.detach()
        loss = ce
        rr_rows = drop if cfg.rr_on == "cfg" else torch.ones_like(drop)
        gather = cfg.rr_gather and _world() > 1  # then every rank enters the gather, whatever its own rows
        if cfg.has_text and (gather or int(rr_rows.sum()) >= 2):  # L_rr is logged even with rr_weight = 0 (a baseline's similarity gap)
            with torch.set_grad_enabled(torch.is_grad_enabled() and cfg.rr_weight > 0):
                steps = valid[:, G:].any(1)  # (B, S): steps with at least one target
                t_rep = pool(batch["text_emb"].float(), batch["text_mask"], cfg.rr_pool)[rr_rows]  # (B_rr, Dt)
                a_rep = pool(h.float(), steps, cfg.rr_pool)[rr_rows]  # (B_rr, D)
                if gather:
                    t_rep, a_rep = _gather_rows(t_rep), _gather_rows(a_rep)  # (global B_rr, .)
                l_rr = rr_loss(t_rep, a_rep) if t_rep.shape[0] >= 2 else None
            if l_rr is not None:
                if cfg.rr_weight > 0:
                    loss = loss + cfg.rr_weight * l_rr
                extra["l_rr"] = l_rr.detach()
        return loss, extra
