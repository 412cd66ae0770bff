"""Next-token metrics of the coarse-token LMs: NLL (nats/token), top-1 accuracy, PPL, bits per second.

Protocol (the same for every model, so numbers compare):
- every item of the split is cut into non-overlapping windows of `context` inputs: window j feeds
  tokens [jC, jC + C) and scores targets [jC + 1, jC + C + 1) (the last window is shorter);
- each window starts with no memory of the previous one; the first window predicts from the item's
  start, so token 0 of an item is never a target (nothing precedes it);
- targets never cross from one item into the next;
- NLL = mean cross-entropy in nats over all targets; PPL = exp(NLL); accuracy = share of targets that
  are the argmax; bits per second = total NLL in bits / total seconds of audio of the scored items.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm


@torch.no_grad()
def evaluate_lm(model, dataset, max_tokens: int | None = None, batch_size: int = 16, mel_fn=None,
                progress: bool = True) -> dict:
    """Score `model` on every window of `dataset` (a PreparedDataset split), in item order.

    max_tokens: stop after the item that reaches this many targets (validation during training).
    mel_fn(item) -> (T, r, M) array replaces the stored mel (e.g. the mel of the codec's decoding).
    """
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
    nll_sum, correct, count = 0.0, 0, 0
    mel_cache: dict[int, np.ndarray] = {}
    bar = tqdm(total=len(windows), desc="eval", disable=not progress, dynamic_ncols=True)
    for w0 in range(0, len(windows), batch_size):
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
        nll_sum += nll.item()
        correct += int(((logits.argmax(-1) == t) & valid).sum())
        count += int(valid.sum())
        bar.update(len(chunk))
    bar.close()
    model.train(was_training)
    seconds = float(dataset.frames[:n_items].sum()) / dataset.frame_rate if n_items else 0.0
    nll = nll_sum / max(count, 1)
    return {"nll": nll, "accuracy": correct / max(count, 1), "ppl": math.exp(nll), "tokens": count,
            "items": n_items, "seconds": seconds,
            "bits_per_second": nll_sum / math.log(2) / seconds if seconds else float("nan")}
