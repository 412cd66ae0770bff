"""Next-token metrics of the coarse-token LMs: NLL (nats/token), top-1 accuracy, PPL, bits per second.

Protocol (the same for every model, so numbers compare):
- every item of the split is cut into non-overlapping windows of `context` inputs: window j feeds
  tokens [jC, jC + C) and scores targets [jC + 1, jC + C + 1) (the last window is shorter);
- each window starts with no memory of the previous one; the first window predicts from the item's
  start, so token 0 of an item is never a target (nothing precedes it);
- targets never cross from one item into the next;
- NLL = mean cross-entropy in nats over all targets; PPL = exp(NLL); accuracy = share of targets that
  are the argmax; bits per second = total NLL in bits / total seconds of audio of the scored items.

Under data parallelism (`part=(rank, world)`, torch.distributed initialised) each rank scores every
world-th batch of windows and the sums are all-reduced: the same windows and numbers as one process
(up to float64 summation order), in 1/world of the time.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm


def _summed(t: torch.Tensor, part: tuple[int, int], device) -> torch.Tensor:
    """t (float64, CPU) summed over the ranks of a data-parallel evaluation; unchanged for one process."""
    if part[1] == 1:
        return t
    import torch.distributed as dist

    t = t.to(device)  # NCCL reduces device tensors only
    dist.all_reduce(t)
    return t.cpu()


def _check_part(part: tuple[int, int]):
    if not 0 <= part[0] < part[1]:
        raise ValueError(f"part must be (rank, world) with 0 <= rank < world, got {part}")


def _my_batches(n_windows: int, batch_size: int, part: tuple[int, int]) -> range:
    """The first window of each batch this rank scores: every world-th batch."""
    return range(part[0] * batch_size, n_windows, part[1] * batch_size)


@torch.no_grad()
def evaluate_lm(model, dataset, max_tokens: int | None = None, batch_size: int = 16, mel_fn=None,
                progress: bool = True, part: tuple[int, int] = (0, 1)) -> dict:
    """Score `model` on every window of `dataset` (a PreparedDataset split), in item order.

    max_tokens: stop after the item that reaches this many targets (validation during training).
    mel_fn(item) -> (T, r, M) array replaces the stored mel (e.g. the mel of the codec's decoding).
    part: (rank, world) of a data-parallel evaluation (module docstring).
    """
    _check_part(part)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    C = model.cfg.context
    windows = []  # (item index, start)
    n_targets = 0
    for i, T in enumerate(dataset.frames):
        for j in range(0, int(T) - 1, C):
            windows.append((i, j))
        n_targets += max(int(T) - 1, 0)
        if max_tokens and n_targets >= max_tokens:
            break
    n_items = windows[-1][0] + 1 if windows else 0
    sums = torch.zeros(3, dtype=torch.float64)  # nll, correct, count
    mel_cache: dict[int, np.ndarray] = {}
    batches = _my_batches(len(windows), batch_size, part)
    bar = tqdm(total=len(batches), desc="eval", disable=not progress, dynamic_ncols=True)
    for w0 in batches:
        chunk = windows[w0:w0 + batch_size]
        tokens = torch.zeros(len(chunk), C, dtype=torch.long)
        targets = torch.full((len(chunk), C), -100, dtype=torch.long)
        mel = None
        for b, (i, j) in enumerate(chunk):
            item = dataset[i]
            codes = item.codes[0]
            n = min(C, len(codes) - 1 - j)
            tokens[b, :n] = torch.from_numpy(codes[j:j + n].astype(np.int64))
            targets[b, :n] = torch.from_numpy(codes[j + 1:j + 1 + n].astype(np.int64))
            if model.uses_mel:
                if mel_fn is not None:
                    if i not in mel_cache:
                        mel_cache = {i: np.asarray(mel_fn(item))}
                    m = mel_cache[i]
                else:
                    m = item.mel
                if mel is None:
                    mel = torch.zeros((len(chunk), C) + tuple(m.shape[1:]))
                mel[b, :n] = torch.from_numpy(np.asarray(m[j:j + n], dtype=np.float32))
        logits = model(tokens.to(device), mel.to(device) if mel is not None else None).float()  # (B, C, V)
        t = targets.to(device)
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), t.reshape(-1), ignore_index=-100, reduction="sum")
        valid = t != -100
        sums += torch.tensor([nll.item(), float(((logits.argmax(-1) == t) & valid).sum()), float(valid.sum())],
                             dtype=torch.float64)
        bar.update(1)
    bar.close()
    model.train(was_training)
    nll_sum, correct, count = _summed(sums, part, device).tolist()
    count = int(count)
    seconds = float(dataset.frames[:n_items].sum()) / dataset.frame_rate if n_items else 0.0
    nll = nll_sum / max(count, 1)
    return {"nll": nll, "accuracy": correct / max(count, 1), "ppl": math.exp(nll), "tokens": count,
            "items": n_items, "seconds": seconds,
            "bits_per_second": nll_sum / math.log(2) / seconds if seconds else float("nan")}


@torch.no_grad()
def evaluate_t2a(model, dataset, captions, max_tokens: int | None = None, batch_size: int = 8, uncond: bool = False,
                 progress: bool = True, part: tuple[int, int] = (0, 1)) -> dict:
    """Conditional NLL of a text-to-audio LM (`t2a`) on a split, with each item's caption.

    Protocol: every item is cut into non-overlapping windows of the model's frames (the last one
    shorter); each window is a fresh pattern sequence from the start token (no memory of the previous
    window); every valid pattern position of every codebook is a target. NLL = mean over codebooks of
    the codebook's mean CE (the training loss's reduction); `nll_k` lists them; accuracy likewise;
    bits per second = the summed NLL of all codebooks' targets in bits / seconds of audio scored.
    uncond=True also scores with the null condition (`nll_uncond`: how much the caption helps; a model
    without text gets nll_uncond = nll). A second stage (given_codebooks = G) is scored on codebooks
    G..K-1 only: `nll_k`, the NLL, accuracy and bits list those. `captions` turns captions into (emb, mask):
    halm.models.text.caption_batches. part: (rank, world) of a data-parallel evaluation (module docstring).
    """
    _check_part(part)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    F_ = model.cfg.frames
    K = model.cfg.n_q
    windows, n_targets = [], 0
    for i, T in enumerate(dataset.frames):
        for j in range(0, int(T), F_):
            windows.append((i, j))
        n_targets += int(T) * K
        if max_tokens and n_targets >= max_tokens:
            break
    n_items = windows[-1][0] + 1 if windows else 0
    sums = {c: torch.zeros(K, dtype=torch.float64) for c in ("nll", "nll_uncond", "correct")}
    counts = torch.zeros(K, dtype=torch.float64)
    batches = _my_batches(len(windows), batch_size, part)
    bar = tqdm(total=len(batches), desc="eval t2a", disable=not progress, dynamic_ncols=True)
    for w0 in batches:
        chunk = windows[w0:w0 + batch_size]
        codes = torch.zeros(len(chunk), K, F_, dtype=torch.long)
        lengths = torch.zeros(len(chunk), dtype=torch.long)
        mel, texts = None, []
        for b, (i, j) in enumerate(chunk):
            item = dataset[i]
            n = min(F_, item.codes.shape[1] - j)
            codes[b, :, :n] = torch.from_numpy(item.codes[:K, j:j + n].astype(np.int64))
            lengths[b] = n
            texts.append(item.text)
            if model.uses_mel:
                if mel is None:
                    mel = torch.zeros((len(chunk), F_) + tuple(item.mel.shape[1:]))
                mel[b, :n] = torch.from_numpy(np.asarray(item.mel[j:j + n], dtype=np.float32))
        inputs, targets, _ = model.pattern_inputs(codes.to(device), lengths.to(device))
        step_mel = model.step_mel(mel.to(device), F_) if mel is not None else None
        emb, mask = captions.batch(texts)
        conds = [("nll", *model.condition(emb.to(device), mask.to(device)))]
        if uncond and model.cfg.has_text:
            conds.append(("nll_uncond", *model.null_condition(len(chunk), device)))
        for key, ctx, ctx_mask in conds:
            logits = model(inputs, ctx, ctx_mask, step_mel).float()  # (B, K, S, V)
            ce = F.cross_entropy(logits.permute(0, 3, 1, 2), targets, ignore_index=-100, reduction="none")  # (B, K, S)
            valid = targets != -100
            sums[key] += ce.sum((0, 2)).double().cpu()
            if key == "nll":
                sums["correct"] += ((logits.argmax(-1) == targets) & valid).sum((0, 2)).double().cpu()
                counts += valid.sum((0, 2)).double().cpu()
        bar.update(1)
    bar.close()
    model.train(was_training)
    packed = _summed(torch.stack([sums["nll"], sums["nll_uncond"], sums["correct"], counts]), part, device)
    sums = dict(zip(("nll", "nll_uncond", "correct"), packed[:3]))
    counts = packed[3]
    G = model.cfg.given_codebooks  # inputs only: not scored
    sums = {key: v[G:] for key, v in sums.items()}
    counts = counts[G:]
    if uncond and not model.cfg.has_text:
        sums["nll_uncond"] = sums["nll"]
    per_k = (sums["nll"] / counts.clamp(min=1)).tolist()
    nll = float(np.mean(per_k))
    seconds = float(dataset.frames[:n_items].sum()) / dataset.frame_rate if n_items else 0.0
    out = {"nll": nll, "accuracy": float((sums["correct"] / counts.clamp(min=1)).mean()), "ppl": math.exp(nll),
           "nll_k": per_k, "tokens": int(counts.sum()), "items": n_items, "seconds": seconds,
           "bits_per_second": float(sums["nll"].sum()) / math.log(2) / seconds if seconds else float("nan")}
    if uncond:
        out["nll_uncond"] = float((sums["nll_uncond"] / counts.clamp(min=1)).mean())
    return out
