"""The neural codec: the Codec wrapper over transformers' EncodecModel (model), halm's harmonic branch, the
streaming decoder, the closed-loop codec mel, and codec training (rvq, losses, discriminator, train) and
evaluation (eval)."""

from halm.codec.model import DEFAULT_CODEC, Codec, CodecError, CodecInfo

__all__ = ["DEFAULT_CODEC", "Codec", "CodecError", "CodecInfo"]
