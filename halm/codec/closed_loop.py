"""The mel that a hybrid model sees when it generates: causal mel of the codec's coarse-only decoding.

Used by generation (closed loop, one slice per new token), by `halm eval --mel-source codec` and by
`halm prepare --mel-source codec` (train on what generation will show the model).

Legend: B batch, T steps, w window, H hop, r mel frames per step, M mel bins.
"""

from __future__ import annotations

import torch

from halm.audio.mel import causal_log_mel
from halm.errors import UserError


class ClosedLoopMel:
    """Causal mel slice of the newest frame of a coarse-token sequence, fed back to the hybrid each step.

    With a causal codec (the shipped one, the official 24 kHz EnCodec) the decoder streams: each call
    decodes only the new frame, keeping every layer's state (halm.codec.streaming), and the STFT keeps
    the last few hops of audio; the result equals a full decode (tests/test_codec_mel.py). Successive
    calls must extend the same sequence by one token; anything else restarts the stream from the
    given tokens. Other codecs decode the last `window` frames each step instead (approximate).
    """

    def __init__(self, codec, mel_cfg, window: int = 8, streaming: bool | None = None):
        from halm.codec.streaming import can_stream

        if codec.hop_length != mel_cfg.hop_length or codec.sample_rate != mel_cfg.sample_rate:
            raise UserError(f"codec ({codec.sample_rate} Hz, hop {codec.hop_length}) does not match the mel settings "
                             f"({mel_cfg.sample_rate} Hz, hop {mel_cfg.hop_length})")
        self.codec, self.mel_cfg, self.window = codec, mel_cfg, window
        self.streaming = can_stream(codec) if streaming is None else streaming
        H = mel_cfg.hop_length
        # audio kept for the STFT: the earliest sample of slice t is t*H + mel_hop - n_fft; whole hops keep
        # the buffer aligned to slice boundaries
        self._keep = (-(-(mel_cfg.n_fft - mel_cfg.mel_hop) // H) + 1) * H
        self._stream = self._audio = self._tokens = None

    @torch.inference_mode()
    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) coarse codes so far -> (B, r, M) mel slice of frame T-1."""
        if not self.streaming:
            return self._window_slice(tokens)
        from halm.codec.streaming import StreamingDecoder

        B, T = tokens.shape
        tokens = tokens.to(self.codec.device)
        if self._tokens is None or self._tokens.shape != (B, T - 1) or not torch.equal(self._tokens, tokens[:, :-1]):
            self._stream = StreamingDecoder(self.codec)  # a new sequence: decode its history in one chunk
            self._audio = torch.zeros(B, self._keep)
            if T > 1:
                self._push(self._stream.decode(tokens[:, None, :-1]))
        self._push(self._stream.decode(tokens[:, None, -1:]))
        self._tokens = tokens
        return causal_log_mel(self._audio, self.mel_cfg)[:, -1]  # (B, r, M)

    def _push(self, audio: torch.Tensor):
        self._audio = torch.cat([self._audio, audio.float().cpu()], dim=1)[:, -self._keep:]

    def _window_slice(self, tokens: torch.Tensor) -> torch.Tensor:
        codes = tokens[:, None, -self.window:].to(self.codec.device)  # (B, 1, w)
        wav = self.codec.decode(codes)[:, 0].float().cpu()  # (B, w*H)
        return causal_log_mel(wav, self.mel_cfg)[:, -1]  # (B, r, M)

    @torch.inference_mode()
    def full(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mel slices of a whole coarse-token sequence, each from tokens <= its own step: (B, T) -> (B, T, r, M).

        One decode of the whole sequence gives the slices from step `window` on (the causal codec's
        output up to frame t depends only on tokens <= t there). The first `window` slices are
        decoded from their own prefixes, as generation does: at the very start, the decoder's
        reflect padding would otherwise mirror later frames into earlier samples (a leak of up to 6
        frames with the shipped codec; tests/test_codec_mel.py checks that no slice sees the future).
        """
        T = tokens.shape[1]
        wav = self.codec.decode(tokens[:, None].to(self.codec.device))[:, 0].float().cpu()  # (B, T*H)
        mel = causal_log_mel(wav, self.mel_cfg)[:, :T].clone()  # (B, T, r, M)
        for t in range(min(self.window, T)):
            mel[:, t] = self._window_slice(tokens[:, : t + 1])
        return mel
