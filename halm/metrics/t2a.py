"""Scores of generated audio against reference audio: FAD, KL, CLAP score, attribute accuracy.

All functions take embeddings / probabilities that an embedding or judge model produced (halm's own
judge, VGGish, PaSST, LAION-CLAP...); they do not know which. Numbers are only comparable under the
same embedding model, so reports name it.

- Fréchet distance (FAD) between Gaussian fits N(mu_r, S_r), N(mu_g, S_g):
      |mu_r - mu_g|^2 + tr(S_r) + tr(S_g) - 2 tr((S_r^1/2 S_g S_r^1/2)^1/2)
  computed in float64 with symmetric eigendecompositions (S_r^1/2 S_g S_r^1/2 is symmetric PSD, so
  its square root's trace is the sum of the square roots of its eigenvalues): no complex parts and no
  failure on singular covariances, unlike a general sqrtm. From embedding sets with fewer clips than
  dimensions (N_r * N_g < D^2, e.g. 147 clips of a 256-wide judge) the same number comes from the clips
  themselves: with A, B the centred (N, D) sets, S_r S_g has the nonzero eigenvalues of
  (A B^T)(A B^T)^T / ((N_r - 1)(N_g - 1)), so the cross term is the sum of the singular values of the
  (N_r, N_g) matrix A B^T over sqrt((N_r - 1)(N_g - 1)): no D x D matrix is formed.
  `fad_bootstrap` resamples both sets.
- FAD∞ (`fad_inf`, Chung et al. 2024, "Adapting Fréchet Audio Distance", as in fadtk): plain FAD is
  biased upward by a term that falls like 1/N. FAD is computed on random subsets of the generated set
  of sizes N_i (the reference statistics fixed), a line FAD(N) = FAD∞ + slope/N is fitted by least
  squares, and its value at 1/N = 0 is FAD∞. It ranks sets of different sizes fairly; it can be
  slightly negative when the sets match.
- KL: mean over clips of KL(p_ref || p_gen) between the label posteriors of the reference clip and
  of the clip generated from the same caption (the RR paper's protocol); `symmetric` averages both
  directions. Posteriors are categorical (softmax) or, with `multilabel`, independent Bernoullis.
- CLAP score: mean cosine similarity between each caption's text embedding and its audio's embedding.
"""

from __future__ import annotations

import warnings

import numpy as np


def _embedding_set(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need an (N >= 2, D) array of embeddings, got shape {x.shape}")
    return x


def _gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = _embedding_set(x)
    return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, s1, mu2, s2) -> float:
    """Fréchet distance between N(mu1, s1) and N(mu2, s2) (float64, eigen-based; see the module doc)."""
    mu1, mu2, s1, s2 = (np.asarray(a, dtype=np.float64) for a in (mu1, mu2, s1, s2))
    a = _psd_sqrt(s1)
    m = a @ s2 @ a
    tr_cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * tr_cross)
    return max(d, 0.0)


def _fd_sets(x: np.ndarray, y: np.ndarray, x_fit: tuple | None = None) -> float:
    """Fréchet distance between the Gaussian fits of two embedding sets (N1, D), (N2, D): from the clips
    when the (N1, N2) cross matrix is smaller than a covariance, else from the covariances (module doc;
    x_fit: x's (mean, covariance) when the caller already has them)."""
    x, y = _embedding_set(x), _embedding_set(y)
    (n1, dim), n2 = x.shape, len(y)
    if n1 * n2 >= dim * dim:
        return frechet_distance(*(x_fit or _gaussian(x)), *_gaussian(y))
    mu1, mu2 = x.mean(0), y.mean(0)
    a, b = x - mu1, y - mu2  # (N1, D), (N2, D)
    tr_cross = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    d = float(((mu1 - mu2) ** 2).sum() + (a * a).sum() / (n1 - 1) + (b * b).sum() / (n2 - 1) - 2.0 * tr_cross)
    return max(d, 0.0)


def fad(ref: np.ndarray, gen: np.ndarray) -> float:
    """FAD between two embedding sets (N_ref, D) and (N_gen, D). Warns when N < D (singular covariances)."""
    ref, gen = _embedding_set(ref), _embedding_set(gen)
    n, dim = min(len(ref), len(gen)), ref.shape[1]
    if n < dim:
        warnings.warn(f"FAD from {n} clips in {dim} dimensions: the covariances are singular and the score is "
                      f"biased upward; use more clips than dimensions (or report it only against the same N)",
                      stacklevel=2)
    return _fd_sets(ref, gen)


def fad_bootstrap(ref: np.ndarray, gen: np.ndarray, n_boot: int = 200, seed: int = 0) -> dict:
    """FAD plus its bootstrap spread: both sets resampled with replacement n_boot times."""
    ref, gen = np.asarray(ref, dtype=np.float64), np.asarray(gen, dtype=np.float64)
    value = fad(ref, gen)
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        boots = np.array([fad(ref[rng.integers(0, len(ref), len(ref))], gen[rng.integers(0, len(gen), len(gen))])
                          for _ in range(n_boot)])
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"fad": value, "std": float(boots.std(ddof=1)), "ci95": [float(lo), float(hi)], "n_boot": n_boot,
            "n_ref": len(ref), "n_gen": len(gen)}


def extrapolate_inf(ns, values) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line values = intercept + slope / n."""
    x = 1.0 / np.asarray(ns, dtype=np.float64)
    slope, intercept = np.polyfit(x, np.asarray(values, dtype=np.float64), 1)
    return float(intercept), float(slope)


def fad_inf(ref: np.ndarray, gen: np.ndarray, n_min: int | None = None, steps: int = 15, seed: int = 0) -> dict:
    """FAD∞ of the generated set against the reference (see the module doc); also the points of the fit."""
    ref, gen = np.asarray(ref, dtype=np.float64), np.asarray(gen, dtype=np.float64)
    n = len(gen)
    n_min = max(2, n // 3 if n_min is None else n_min)
    if n_min >= n:
        raise ValueError(f"FAD∞ needs more generated clips than the smallest subset ({n} <= {n_min})")
    ref_fit = _gaussian(ref)  # fixed: fitted once for the subsets that use the covariance form
    rng = np.random.default_rng(seed)
    ns = np.unique(np.linspace(n_min, n, steps).astype(int))
    vals = [_fd_sets(ref, gen[rng.choice(n, size=k, replace=False)], ref_fit) for k in ns]
    intercept, slope = extrapolate_inf(ns, vals)
    return {"fad_inf": intercept, "slope": slope, "ns": [int(k) for k in ns], "fads": [float(v) for v in vals]}


def kl_divergence(p_ref: np.ndarray, p_gen: np.ndarray, multilabel: bool = False, symmetric: bool = False,
                  eps: float = 1e-6) -> float:
    """Mean over clips of KL(p_ref || p_gen); rows are probabilities (N, C) of paired clips."""
    p, q = np.asarray(p_ref, dtype=np.float64), np.asarray(p_gen, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"paired posteriors must have the same shape: {p.shape} vs {q.shape}")

    def kl(a, b):
        if multilabel:  # independent Bernoulli per label, summed over labels
            a, b = np.clip(a, eps, 1 - eps), np.clip(b, eps, 1 - eps)
            return (a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))).sum(-1)
        a = np.clip(a, eps, None)
        b = np.clip(b, eps, None)
        a, b = a / a.sum(-1, keepdims=True), b / b.sum(-1, keepdims=True)
        return (a * np.log(a / b)).sum(-1)

    d = kl(p, q) if not symmetric else 0.5 * (kl(p, q) + kl(q, p))
    return float(d.mean())


def clap_score(text_emb: np.ndarray, audio_emb: np.ndarray) -> float:
    """Mean cosine similarity of paired rows (caption i, its audio i) in a joint text-audio space."""
    t, a = np.asarray(text_emb, dtype=np.float64), np.asarray(audio_emb, dtype=np.float64)
    if t.shape != a.shape:
        raise ValueError(f"paired embeddings must have the same shape: {t.shape} vs {a.shape}")
    t = t / np.linalg.norm(t, axis=-1, keepdims=True).clip(1e-12)
    a = a / np.linalg.norm(a, axis=-1, keepdims=True).clip(1e-12)
    return float((t * a).sum(-1).mean())


def attribute_accuracy(predicted: dict[str, list], target: dict[str, list]) -> dict[str, float]:
    """Per attribute: share of clips whose predicted value equals the caption's (None targets are skipped)."""
    out = {}
    for name, want in target.items():
        got = predicted.get(name)
        if got is None or len(got) != len(want):
            raise ValueError(f"attribute {name!r}: {0 if got is None else len(got)} predictions for {len(want)} clips")
        pairs = [(g, w) for g, w in zip(got, want) if w is not None]
        out[name] = sum(g == w for g, w in pairs) / len(pairs) if pairs else float("nan")
    return out
