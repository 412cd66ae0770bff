"""EMA training of the residual vector quantizer inside transformers' `EncodecResidualVectorQuantizer`
(inference-only as shipped): k-means initialisation, EMA codebook updates, dead-code replacement."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from halm.codec.train import CodecTrainConfig


def _kmeans(x: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain k-means on (N, D) frames; returns centroids (k, D) and counts (k,)."""
    idx = torch.randint(len(x), (k,), generator=gen)
    c = x[idx].clone()
    counts = torch.zeros(k, device=x.device)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(dim=1)
        counts = torch.bincount(assign, minlength=k).float()
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        empty = counts == 0
        c = torch.where(empty[:, None], x[torch.randint(len(x), (k,), generator=gen)], sums / counts.clamp_min(1)[:, None])
    return c, counts


class RVQTrainer:
    """EMA training of the codebooks inside transformers' EncodecResidualVectorQuantizer."""

    def __init__(self, quantizer, cfg: CodecTrainConfig):
        self.layers = [layer.codebook for layer in quantizer.layers]
        self.cfg = cfg

    def kmeans_init(self, emb: torch.Tensor, gen: torch.Generator, frames_per_step: int) -> None:
        """k-means on the frames of emb (B, D, T); the counts are rescaled to assignments per training
        step (the unit of the EMA `cluster_size`), so that dead codes are found within ~100 steps
        instead of the hundreds it takes counts of the large k-means sample to decay."""
        residual = emb.transpose(1, 2).reshape(-1, emb.shape[1]).float()  # (B*T, D)
        for cb in self.layers:
            c, counts = _kmeans(residual, self.cfg.codebook_size, self.cfg.kmeans_iters, gen)
            counts = (counts * (frames_per_step / len(residual))).clamp_min(1e-3)  # empty: dead at the first update
            cb.embed.copy_(c)
            cb.cluster_size.copy_(counts)
            cb.embed_avg.copy_(c * counts[:, None])  # EMA of sums: embed = embed_avg / cluster_size
            residual = residual - c[torch.cdist(residual, c).argmin(dim=1)]

    def __call__(self, emb: torch.Tensor, n_q: int, gen: torch.Generator, update: bool = True):
        """emb (B, D, T) -> quantized (B, D, T) with straight-through gradients, commitment loss, codes (n_q, B*T)."""
        B, D, T = emb.shape
        x = emb.transpose(1, 2).reshape(-1, D)  # (B*T, D)
        residual = x
        quantized = torch.zeros_like(x)
        commit = x.new_zeros(())
        codes = []
        # With quantizer dropout, codebook k takes part in only (K-k+1)/K of the steps; with
        # ema_every_codebook its EMA statistics (and dead-code re-seeding) still follow every step's
        # residual chain, so the last codebooks learn as often as the first (the decoder sees n_q).
        n_update = len(self.layers) if (update and self.cfg.ema_every_codebook) else n_q
        for i, cb in enumerate(self.layers[:n_update]):
            r = residual.detach().float()
            idx = torch.cdist(r, cb.embed).argmin(dim=1)  # nearest code (same choice as the inference argmax)
            q = cb.embed[idx]
            if update:
                self._ema_update(cb, r, idx, gen)
            if i < n_q:
                commit = commit + F.mse_loss(residual, q.detach())
                quantized = quantized + q
                codes.append(idx)
            residual = residual - q
            if i + 1 == n_q:  # what follows only feeds the EMA statistics
                residual = residual.detach()
        quantized_st = x + (quantized - x).detach()  # straight-through estimator
        return quantized_st.reshape(B, T, D).transpose(1, 2), commit, torch.stack(codes)

    @torch.no_grad()
    def _ema_update(self, cb, r: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> None:
        decay, k = self.cfg.ema_decay, self.cfg.codebook_size
        counts = torch.bincount(idx, minlength=k).float()
        sums = torch.zeros_like(cb.embed_avg).index_add_(0, idx, r)
        cb.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        cb.embed_avg.mul_(decay).add_(sums, alpha=1 - decay)
        n = cb.cluster_size.sum()
        smoothed = (cb.cluster_size + 1e-5) / (n + k * 1e-5) * n  # Laplace smoothing
        cb.embed.copy_(cb.embed_avg / smoothed[:, None])
        dead = cb.cluster_size < self.cfg.dead_code_threshold
        if dead.any():  # re-seed unused codes from frames of this batch
            pick = r[torch.randint(len(r), (int(dead.sum()),), generator=gen)]
            cb.embed[dead] = pick
            cb.embed_avg[dead] = pick
            cb.cluster_size[dead] = 1.0
