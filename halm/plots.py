"""PNG figures (matplotlib, headless)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_waveforms_and_mels(
    rows: list[tuple[str, np.ndarray, int, np.ndarray, float]], path: str | os.PathLike
) -> Path:
    """One row per clip: waveform and log-mel image. rows: (title, wav (N,), sample_rate, mel (F, M), frame_rate)."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 2, figsize=(13, 2.6 * len(rows)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2]})
    for (title, wav, sr, mel, frame_rate), (ax_w, ax_m) in zip(rows, axes):
        t = np.arange(len(wav)) / sr
        ax_w.plot(t, wav, lw=0.4, color="tab:blue")
        ax_w.set_xlim(0, t[-1] if len(t) else 1)
        ax_w.set_ylim(-1, 1)
        ax_w.set_title(title, fontsize=9, loc="left")
        ax_w.set_xlabel("seconds")
        im = ax_m.imshow(mel.T, origin="lower", aspect="auto", cmap="magma",
                         extent=(0, mel.shape[0] / frame_rate, 0, mel.shape[1]))
        ax_m.set_ylabel("mel bin")
        ax_m.set_xlabel("seconds")
        fig.colorbar(im, ax=ax_m, pad=0.01)
    return _save(plt, fig, path)


def plot_spectrogram_pairs(rows: list[tuple[str, np.ndarray, np.ndarray, float]], path: str | os.PathLike,
                           labels: tuple[str, str] = ("original", "reconstruction")) -> Path:
    """One row per clip: two log-mel images side by side. rows: (title, mel_a (F, M), mel_b (F, M), frame_rate)."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 2, figsize=(13, 2.6 * len(rows)), squeeze=False)
    for (title, a, b, frame_rate), (ax_a, ax_b) in zip(rows, axes):
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        for ax, m, lab in ((ax_a, a, labels[0]), (ax_b, b, labels[1])):
            ax.imshow(m.T, origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi,
                      extent=(0, m.shape[0] / frame_rate, 0, m.shape[1]))
            ax.set_title(f"{title} — {lab}", fontsize=8, loc="left")
            ax.set_xlabel("seconds")
            ax.set_ylabel("mel bin")
    return _save(plt, fig, path)


def plot_curves(curves: dict[str, tuple[list[float], list[float]]], path: str | os.PathLike,
                xlabel: str = "tokens seen", ylabel: str = "validation NLL (nats/token)", title: str = "") -> Path:
    """One line per run: curves = {name: (x values, y values)}."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, (x, y) in curves.items():
        ax.plot(x, y, marker="o", markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no validation points (empty dev split?)", ha="center", transform=ax.transAxes)
    return _save(plt, fig, path)


def plot_generation(mel: np.ndarray, frame_rate: float, prompt_seconds: float, path: str | os.PathLike,
                    title: str = "") -> Path:
    """Log-mel image (F, M) of a continuation, with a line where the prompt ends."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.imshow(mel.T, origin="lower", aspect="auto", cmap="magma", extent=(0, mel.shape[0] / frame_rate, 0, mel.shape[1]))
    ax.axvline(prompt_seconds, color="cyan", linewidth=1.5)
    ax.text(prompt_seconds, mel.shape[1] * 0.92, " generated →", color="cyan", fontsize=8)
    ax.set_title(title, fontsize=8, loc="left")
    ax.set_xlabel("seconds")
    ax.set_ylabel("mel bin")
    return _save(plt, fig, path)


def plot_t2a_terms(runs: dict[str, list[dict]], path: str | os.PathLike, title: str = "") -> Path:
    """Training terms of text-to-audio runs: L_cond, L_uncond, L_rr (train log lines) and validation NLL.

    runs = {name: metrics.jsonl records}. L_uncond and L_rr exist only on CFG steps, so their points are
    the log windows that held at least one CFG step.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    panels = [("l_cond", "L_cond (train, conditional steps)"), ("l_uncond", "L_uncond (train, CFG steps)"),
              ("l_rr", "L_rr (train, CFG steps)"), ("val", "validation NLL: with caption (—), null condition (- -)")]
    for i, (name, recs) in enumerate(runs.items()):
        color = f"C{i}"
        for ax, (key, label) in zip(axes, panels):
            if key == "val":
                for k, style in (("val_nll", "-"), ("val_nll_uncond", "--")):
                    pts = [(r["step"], r[k]) for r in recs if k in r]
                    if pts:
                        ax.plot(*zip(*pts), style, color=color, marker="o", markersize=2.5,
                                label=name if k == "val_nll" else None)
            else:
                pts = [(r["step"], r[key]) for r in recs if key in r]
                if pts:
                    ax.plot(*zip(*pts), color=color, lw=1, alpha=0.85, label=name)
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(plt, fig, path)


def plot_continuation_grid(cells: list[list[tuple[str, np.ndarray]]], frame_rate: float, prompt_seconds: float,
                           path: str | os.PathLike) -> Path:
    """Rows of log-mel images (F, M) side by side, e.g. one row per prompt and one column per model, each with
    a line where the prompt ends. cells[row][col] = (title, mel); one colour scale per row."""
    plt = _pyplot()
    n_rows, n_cols = len(cells), max(len(r) for r in cells)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 2.2 * n_rows), squeeze=False)
    for row, axs in zip(cells, axes):
        lo, hi = min(float(m.min()) for _, m in row), max(float(m.max()) for _, m in row)
        for (title, mel), ax in zip(row, axs):
            ax.imshow(mel.T, origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi,
                      extent=(0, mel.shape[0] / frame_rate, 0, mel.shape[1]))
            ax.axvline(prompt_seconds, color="cyan", linewidth=1.2)
            ax.set_title(title, fontsize=7, loc="left")
            ax.set_xlabel("seconds", fontsize=7)
            ax.tick_params(labelsize=6)
        for ax in axs[len(row):]:
            ax.axis("off")
    return _save(plt, fig, path)
