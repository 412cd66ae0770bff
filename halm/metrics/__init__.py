"""Metrics: language-model scores (lm.py); text-to-audio scores come with their issue."""
