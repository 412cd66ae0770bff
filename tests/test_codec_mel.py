"""The closed-loop mel: causal (no slice sees a later token), streaming equals a full decode, the window fallback converges."""

import numpy as np
import pytest
import torch

from halm.audio import MelConfig
from halm.codec.closed_loop import ClosedLoopMel
from halm.codec.model import Codec


@pytest.fixture(scope="module")
def codec_and_tokens():
    codec = Codec.load("halm-small")
    wav = torch.from_numpy(np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1)
    return codec, codec.encode(wav[None, None], 24000)[:, 0]  # (1, 75) coarse tokens


def test_no_slice_of_the_codec_mel_sees_a_later_token(codec_and_tokens):
    codec, tokens = codec_and_tokens
    closed = ClosedLoopMel(codec, MelConfig())
    full = closed.full(tokens)
    for t in [*range(0, 12), 30, 73]:
        changed = tokens.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 7) % 1024
        torch.testing.assert_close(closed.full(changed)[:, : t + 1], full[:, : t + 1], atol=1e-6, rtol=0)


def test_streaming_closed_loop_equals_the_full_decode(codec_and_tokens):
    """Step by step (a prompt of 20 frames, then one token per call) = full()."""
    codec, tokens = codec_and_tokens
    closed = ClosedLoopMel(codec, MelConfig())
    assert closed.streaming
    full = closed.full(tokens)  # (1, 75, 2, 80)
    steps = torch.stack([closed(tokens[:, : t + 1]) for t in range(20, 75)], dim=1)
    torch.testing.assert_close(steps, full[:, 20:], atol=1e-4, rtol=0)
    torch.testing.assert_close(closed(tokens[:, :41]), full[:, 40], atol=1e-4, rtol=0)  # a jump restarts the stream


def test_the_window_fallback_converges_to_the_full_decode():
    """A codec decoded from its last `window` frames only (how non-causal codecs are served) gives the full
    decode's slice once the window covers the decoder's memory. On a tiny random codec without a harmonic
    branch: 8 frames within 1% of the mel's std, 16 within 0.1%. (A harmonic branch never converges: its
    oscillator's phase depends on the whole history, which is one more reason causal codecs stream.)"""
    from tests.helpers import tiny_encodec

    codec = Codec(tiny_encodec(codebook_size=1024), "tiny")
    wav = torch.from_numpy(np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1)
    tokens = codec.encode(wav[None, None], 24000)[:, 0]  # (1, 75)
    full = ClosedLoopMel(codec, MelConfig()).full(tokens)
    for w, tol in ((8, 0.01), (16, 0.001)):
        window = ClosedLoopMel(codec, MelConfig(), window=w, streaming=False)
        for t in (w, 40, 74):
            err = (window(tokens[:, : t + 1]) - full[:, t]).abs().mean().item()
            assert err < tol * full.std().item(), (w, t, err)
    # the measure sees a slice off by one frame (~4% of the std here, 40x the 16-frame tolerance)
    shifted = ClosedLoopMel(codec, MelConfig(), window=16, streaming=False)(tokens[:, :40])  # frame 39's slice
    assert (shifted - full[:, 40]).abs().mean().item() > 0.01 * full.std().item()


def test_streaming_decoder_equals_a_full_decode(codec_and_tokens):
    from halm.codec.streaming import StreamingDecoder

    codec, tokens = codec_and_tokens
    full = codec.decode(tokens[:, None])[:, 0]
    stream = StreamingDecoder(codec)
    parts = [stream.decode(tokens[:, None, :10])] + [stream.decode(tokens[:, None, t:t + 1]) for t in range(10, 75)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-6, rtol=0)
