"""halm — Hybrid Audio Language Models.

Whisper-GPT (coarse codec tokens + causal mel slices) with token-only GPT baselines, and
text-to-audio LMs with classifier-free guidance and representation regularization.
"""

__version__ = "0.1.0"
