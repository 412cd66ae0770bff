"""halm — Hybrid Audio Language Models.

Whisper-GPT (coarse codec tokens + causal mel slices) with token-only GPT baselines, and
text-to-audio LMs with classifier-free guidance and representation regularization.
"""

__version__ = "0.1.0"


def load(run_dir, weights: str = "auto", device="cpu"):
    """A trained model from a run folder (eval mode; `.run_config` holds the run's config.json).

    Generate with `halm.generate.generate(model, tokens, n_new, ...)` or, from audio,
    `halm.generate.generate_continuation(model, model.run_config, wav, sr, seconds)`.
    """
    from halm.train import load_run

    return load_run(run_dir, weights=weights, device=device)[0]
