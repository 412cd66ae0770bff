"""Metrics: language-model scores (lm.py: the NLL protocol), text-to-audio scores (t2a.py: FAD, FAD-inf, KL, CLAP,
controllability), pitch (YIN) and formants (LPC), and pretrained external scorers (external.py)."""
