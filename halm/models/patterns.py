"""Codebook patterns: how K parallel codebook streams become one sequence of steps for the LM.

codes (B, K, T) frames -> sequence (B, K, S) steps + validity (B, K, S). At step s the LM predicts
sequence[:, :, s] (one token per codebook, where valid) from the steps before s; its input at step s is
sequence[:, :, s-1] (a start token at s = 0), the K embeddings summed.

- `parallel`: S = T; step s holds every codebook of frame s (codebooks of one frame are predicted
  independently of each other).
- `delay` (MusicGen's default): S = T + K - 1; codebook k is shifted right by k steps, so step s holds
  codebook 0 of frame s, codebook 1 of frame s-1, ... — codebook k of a frame is predicted after
  codebooks 0..k-1 of the same frame were seen.
- `flatten`: S = T * K; step t*K + k holds codebook k of frame t and nothing else (fully serial;
  K times more steps).

Positions that hold no code are filled with SPECIAL = the codebook size (the embeddings have one row
more than the codebook; the same id is the start token) and are never targets.
A pattern is an index table frame_of[k, s] (-1 = empty), so build and revert are two gathers.

Legend: B batch, K codebooks, T frames, S steps.
"""

from __future__ import annotations

import torch

from halm.errors import UserError

PATTERNS = ("parallel", "delay", "flatten")


def frame_table(pattern: str, K: int, T: int) -> torch.Tensor:
    """frame_of (K, S) int64: the frame whose codebook-k code sits at step s, or -1 (an empty position)."""
    if pattern == "parallel":
        return torch.arange(T).expand(K, T).clone()
    if pattern == "delay":
        s = torch.arange(T + K - 1)
        f = s[None, :] - torch.arange(K)[:, None]  # (K, S)
        return torch.where((f >= 0) & (f < T), f, -1)
    if pattern == "flatten":
        s = torch.arange(T * K)
        f = torch.where(s[None, :] % K == torch.arange(K)[:, None], s[None, :] // K, -1)
        return f
    raise UserError(f"unknown codebook pattern {pattern!r}; known: {', '.join(PATTERNS)}")


def n_steps(pattern: str, K: int, T: int) -> int:
    return {"parallel": T, "delay": T + K - 1, "flatten": T * K}[pattern] if T > 0 else 0


def frames_for_steps(pattern: str, K: int, S: int) -> int:
    """The most frames whose pattern fits in S steps."""
    T = {"parallel": S, "delay": S - K + 1, "flatten": S // K}[pattern]
    if T < 1:
        raise UserError(f"{S} steps hold no frame of the {pattern} pattern with {K} codebooks")
    return T


def build(codes: torch.Tensor, pattern: str, special: int,
          lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """codes (B, K, T) -> (sequence (B, K, S), valid (B, K, S) bool). Frames >= lengths[b] count as absent."""
    B, K, T = codes.shape
    table = frame_table(pattern, K, T).to(codes.device)  # (K, S)
    valid = (table >= 0).expand(B, -1, -1)
    if lengths is not None:
        valid = valid & (table[None] < lengths.to(codes.device)[:, None, None])
    seq = codes.gather(2, table.clamp(min=0).expand(B, -1, -1))  # (B, K, S)
    return seq.masked_fill(~valid, special), valid


def revert(seq: torch.Tensor, pattern: str, T: int) -> torch.Tensor:
    """sequence (B, K, S, ...) -> frames (B, K, T, ...): codes, or logits with a trailing vocab axis."""
    K, S = seq.shape[1], seq.shape[2]
    table = frame_table(pattern, K, T).to(seq.device)  # (K, S)
    if table.shape[1] > S:
        raise UserError(f"{S} steps are fewer than the {table.shape[1]} that {T} frames need")
    step_of = torch.empty(K, T, dtype=torch.long, device=seq.device)
    ks, ss = (table >= 0).nonzero(as_tuple=True)
    step_of[ks, table[ks, ss]] = ss  # (K, T): the step that holds frame t of codebook k
    index = step_of.view(1, K, T, *([1] * (seq.dim() - 3))).expand(seq.shape[0], K, T, *seq.shape[3:])
    return seq.gather(2, index)


def mel_frame_of_step(pattern: str, K: int, T: int) -> torch.Tensor:
    """(S,) int64: the frame whose causal mel slice the LM may see at step s (-1: none yet).

    It is the last frame before every frame still to be predicted at steps >= s, so the mel never holds
    audio that a target encodes (with `delay`, step s sees the mel of frame s-K).
    """
    table = frame_table(pattern, K, T)
    big = torch.iinfo(torch.long).max
    first = torch.where(table >= 0, table, big).amin(0)  # (S,) the earliest frame predicted at step s
    later = first.flip(0).cummin(0).values.flip(0)  # the earliest frame predicted at steps >= s
    return later - 1
