"""A streaming EnCodec decoder: decode one frame at a time, keeping every layer's state.

transformers' EncodecDecoder has no streaming API. For a causal codec (use_causal_conv, weight norm)
each layer is either stateless (ELU or halm's Snake), a causal convolution (state: its last (k-1)·d inputs), a
transposed convolution (state: the overlap tail it adds to the next frame), or the LSTM (state:
h and c); halm's harmonic branch keeps its oscillators' phase and the last frame's controls. The first chunk
(the prompt) goes through the same padding as the full decode (EnCodec reflect-pads the start); after that each
frame costs a few tiny convolutions. The output equals a full decode of the whole sequence
(tests/test_codec_mel.py), which is causal after the first frames.

Legend: B batch, C channels, n new frames or samples at a layer's rate, s stride.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _weight(conv: nn.Module) -> torch.Tensor:
    return conv.weight.detach().clone()  # with weight norm, reading .weight computes g * v / |v| once


class _Conv:
    def __init__(self, m):
        self.m, self.w, self.b = m, _weight(m.conv), m.conv.bias.detach().clone()
        self.dilation = m.conv.dilation[0]
        self.ctx = (m.conv.kernel_size[0] - 1) * self.dilation
        if m.conv.stride[0] != 1:
            raise ValueError("streaming needs stride-1 convolutions in the decoder")
        self.state = None
        c_out, c_in, k = self.w.shape
        self.k = k
        self.w_mat = self.w.permute(1, 2, 0).reshape(c_in * k, c_out).contiguous()  # (C*k, C')

    def _conv(self, padded):
        # im2col + one matmul: for the short inputs of a streaming step this avoids conv1d's slow CPU path
        B, C, L = padded.shape
        n = L - self.ctx
        cols = padded.unfold(-1, self.ctx + 1, 1)[..., :: self.dilation] if self.ctx else padded[..., None]  # (B, C, n, k)
        y = cols.permute(0, 2, 1, 3).reshape(B, n, C * self.k) @ self.w_mat  # (B, n, C')
        return y.transpose(1, 2) + self.b[:, None]

    def __call__(self, x):  # x (B, C, n)
        if self.state is None:  # first chunk: exactly the module's own (reflect) padding
            y = self.m(x)
            padded = self.m._pad1d(x, (self.ctx, 0), mode=self.m.pad_mode) if self.ctx else x
        else:
            padded = torch.cat([self.state, x], dim=-1)  # (B, C, ctx + n)
            y = self._conv(padded)
        self.state = padded[..., padded.shape[-1] - self.ctx:] if self.ctx else padded[..., :0]
        return y


class _ConvTranspose:
    """Transposed conv (kernel 2s, stride s) as one matmul + overlap-add; the second half of the last
    frame's output is the tail added to the next call's first samples."""

    def __init__(self, m):
        w, self.b = _weight(m.conv), m.conv.bias.detach().clone()  # w (C, C', k)
        self.stride = s = m.conv.stride[0]
        if m.trim_right_ratio != 1.0 or m.conv.kernel_size[0] != 2 * s:
            raise ValueError("streaming needs transposed convolutions with kernel 2 x stride and trim_right_ratio 1")
        self.c_out = w.shape[1]
        self.w = w.reshape(w.shape[0], -1)  # (C, C'*k)
        self.tail = None

    def __call__(self, x):  # x (B, C, n) -> (B, C', n*s)
        B, _, n = x.shape
        s = self.stride
        z = (x.transpose(1, 2) @ self.w).view(B, n, self.c_out, 2 * s)  # (B, n, C', 2s)
        head = z[..., :s].permute(0, 2, 1, 3).reshape(B, self.c_out, n * s)  # first half of each frame's output
        tail = z[..., s:].permute(0, 2, 1, 3).reshape(B, self.c_out, n * s)  # second half: lands one stride later
        y = head.clone()
        y[..., s:] += tail[..., : (n - 1) * s]
        if self.tail is not None:
            y[..., :s] += self.tail
        self.tail = tail[..., (n - 1) * s:]
        return y + self.b[:, None]


class _LSTM:
    """The decoder's residual LSTM; for one new frame a hand-written cell (nn.LSTM's kernel costs ~1.5 ms
    per call on CPU whatever the length, the cell ~30 µs)."""

    def __init__(self, m):
        self.lstm, self.state = m.lstm, None
        self.layers = [(getattr(m.lstm, f"weight_ih_l{i}").detach().T.contiguous(),
                        getattr(m.lstm, f"weight_hh_l{i}").detach().T.contiguous(),
                        (getattr(m.lstm, f"bias_ih_l{i}") + getattr(m.lstm, f"bias_hh_l{i}")).detach())
                       for i in range(m.lstm.num_layers)]

    def __call__(self, x):  # (B, C, n)
        seq = x.permute(2, 0, 1)  # (n, B, C)
        if self.state is None or seq.shape[0] > 1:
            out, self.state = self.lstm(seq, self.state)
            return (out + seq).permute(1, 2, 0)
        h_all, c_all = self.state  # (layers, B, C)
        inp, hs, cs = seq[0], [], []
        for (w_ih, w_hh, b), h, c in zip(self.layers, h_all, c_all):
            i, f, g, o = (inp @ w_ih + h @ w_hh + b).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            hs.append(h)
            cs.append(c)
            inp = h
        self.state = (torch.stack(hs), torch.stack(cs))
        return (inp + seq[0])[:, :, None]  # (B, C, 1)


class _Residual:
    def __init__(self, m):
        self.block = [_wrap(layer) for layer in m.block]
        self.shortcut = _wrap(m.shortcut) if not isinstance(m.shortcut, nn.Identity) else None

    def __call__(self, x):
        y = x
        for op in self.block:
            y = op(y)
        return (self.shortcut(x) if self.shortcut is not None else x) + y


def _wrap(layer):
    from transformers.models.encodec.modeling_encodec import (
        EncodecConv1d,
        EncodecConvTranspose1d,
        EncodecLSTM,
        EncodecResnetBlock,
    )

    from halm.codec.model import Snake

    if isinstance(layer, EncodecConv1d):
        return _Conv(layer)
    if isinstance(layer, EncodecConvTranspose1d):
        return _ConvTranspose(layer)
    if isinstance(layer, EncodecLSTM):
        return _LSTM(layer)
    if isinstance(layer, EncodecResnetBlock):
        return _Residual(layer)
    if isinstance(layer, (nn.ELU, Snake)):  # elementwise, stateless
        return layer
    raise ValueError(f"cannot stream decoder layer {type(layer).__name__}")


def can_stream(codec) -> bool:
    cfg = codec.model.config
    return bool(cfg.use_causal_conv) and cfg.norm_type == "weight_norm" and float(cfg.trim_right_ratio) == 1.0


class StreamingDecoder:
    """Decode coarse codes chunk by chunk: `decode(codes (B, K', n)) -> audio (B, n*H)`, state kept between calls."""

    def __init__(self, codec):
        if not can_stream(codec):
            raise ValueError(f"{codec.name}: streaming needs a causal EnCodec with weight norm and trim_right_ratio 1")
        from halm.codec.harmonic import lstm_end

        self.codec = codec
        self.ops = [_wrap(layer) for layer in codec.model.decoder.layers]
        self.branch = getattr(codec.model, "harmonic", None)  # halm's harmonic branch reads the LSTM's output
        self.split = lstm_end(codec.model) if self.branch is not None else 0
        self.branch_state: dict = {}
        self.frames = 0

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        q = x = self.codec.model.quantizer.decode(codes.transpose(0, 1).to(self.codec.device))  # (B, D, n)
        h = None
        for i, op in enumerate(self.ops):
            if i == self.split:
                h = x  # (B, C, n)
            x = op(x)
        if self.branch is not None:
            x, harm = self.branch.mix(x, q, h, self.branch_state)  # phase and the last frame's controls carried over
            x = x + harm
        self.frames += codes.shape[-1]
        return x[:, 0]  # (B, n*H), mono
