"""halm — Hybrid Audio Language Models.

Whisper-GPT (coarse codec tokens + causal mel slices) with token-only GPT baselines, and
text-to-audio LMs with classifier-free guidance and representation regularization.
"""

__version__ = "0.1.0"


def load(run_dir, weights: str = "auto", device="cpu"):
    """A trained model from a run folder (eval mode; `.run_config` holds the run's config.json).

    gpt / whisper-gpt: `model.generate(tokens, n_new, ...)`, or from audio
    `halm.generate.generate_continuation(model, model.run_config, wav, sr, seconds)`.
    t2a: `model.generate(text=["a bell rings twice"], seconds=4, cfg=3, seed=0)` -> audio (B, N) at the
    codec's rate (`model.run_config["data"]["codec"]`). A shipped run loads by name: `halm.load("halm-sfx-small")`.
    """
    from halm.generate import bind_generate
    from halm.runs import load_run

    return bind_generate(load_run(run_dir, weights=weights, device=device)[0])
