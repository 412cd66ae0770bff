"""Small fixtures the tests build themselves: tiny random codecs and corpora."""

from __future__ import annotations

import torch


def tiny_encodec(n_codebooks: int = 4, codebook_size: int = 32, seed: int = 0, hidden: int = 16,
                 decoder_activation: str = "elu", harmonics: int = 0, sample_rate: int = 24000, **branch):
    """A randomly initialised EncodecModel (24 kHz / hop 320 by default; 32 kHz: hop 640, MusicGen's 50 Hz) whose
    codebooks are spread out, so codes vary. branch: further settings of the harmonic branch (harmonic_envelope=E,
    decoder_gate=g)."""
    from transformers import EncodecConfig

    from halm.codec.model import build_encodec

    torch.manual_seed(seed)
    bits = codebook_size.bit_length() - 1
    ratios = [8, 5, 4, 2] if sample_rate == 24000 else [8, 5, 4, 4]
    frame_rate = sample_rate / (8 * 5 * 4 * ratios[-1])
    cfg = EncodecConfig(num_filters=4, upsampling_ratios=ratios, codebook_size=codebook_size, hidden_size=hidden,
                        codebook_dim=hidden, num_lstm_layers=1, use_causal_conv=True, audio_channels=1,
                        sampling_rate=sample_rate,
                        target_bandwidths=[k * bits * frame_rate / 1000 for k in range(1, n_codebooks + 1)],
                        decoder_activation=decoder_activation, harmonics=harmonics, **branch)
    model = build_encodec(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # random codebooks at the scale of the encoder's output: varied codes, no exact ties
        scale = model.encoder(torch.randn(1, 1, sample_rate, generator=g) * 0.3).std()
        for layer in model.quantizer.layers:
            layer.codebook.embed.copy_(torch.randn(codebook_size, hidden, generator=g) * scale)
        for name, p in model.named_parameters():  # Snake's alpha starts at 1: spread it, so a lost alpha shows
            if name.endswith("alpha"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    assert len(model.quantizer.layers) == n_codebooks
    return model


def tiny_codec_dir(path, **kw):
    from halm.codec.model import Codec

    Codec(tiny_encodec(**kw), "tiny").save(path)
    return path


def tiny_lm_dataset(root, minutes: float = 1.0, seed: int = 3):
    """A small speech corpus tokenized with the shipped codec (real, varied coarse tokens): root/data."""
    from halm.data.prepare import PrepareConfig, prepare
    from halm.data.synth import synthesize

    synthesize("speech", root / "speech", minutes, seed=seed, progress=False)
    prepare(str(root / "speech"), root / "data", PrepareConfig(codec="halm-small", shard_size=8, test_share=0.2,
                                                                   dev_share=0.2), progress=False)
    return root / "data"


def tiny_t2a_dataset(root, minutes: float = 0.6, seed: int = 5):
    """A small captioned sound-effects corpus tokenized with the shipped codec: root/data."""
    from halm.data.prepare import PrepareConfig, prepare
    from halm.data.synth import synthesize

    synthesize("sfx", root / "sfx", minutes, seed=seed, progress=False)
    prepare(str(root / "sfx"), root / "data", PrepareConfig(codec="halm-small", shard_size=8, test_share=0.2,
                                                                dev_share=0.2, require_text=True), progress=False)
    return root / "data"


def tiny_vggish_file(path, seed: int = 0):
    """A small random VGGish saved as a state dict in torchvggish's layout (+ its PCA keys, to be ignored)."""
    from halm.metrics.external import VGGish

    torch.manual_seed(seed)
    state = VGGish(channels=(4, 8, 8, 8, 16, 16), hidden=32, dim=12).state_dict()
    state["pproc.pca_matrix"], state["pproc.pca_means"] = torch.eye(12), torch.zeros(12, 1)
    torch.save(state, path)
    return path


def tiny_clap_dir(path, seed: int = 0):
    """A tiny random Hugging Face CLAP (unfused HTSAT + RoBERTa) with its feature extractor and a tokenizer."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    from halm.models.text import load_text_encoder

    torch.manual_seed(seed)
    tok = load_text_encoder("minilm").tokenizer
    text = dict(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                max_position_embeddings=64, projection_dim=16)
    audio = dict(spec_size=64, num_mel_bins=16, patch_size=4, patch_stride=(4, 4), window_size=4, depths=[1, 1],
                 num_attention_heads=[1, 2], patch_embeds_hidden_size=8, hidden_size=16, projection_dim=16,
                 enable_fusion=False)
    ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=16)).save_pretrained(path)
    ClapFeatureExtractor(feature_size=16, sampling_rate=48000, hop_length=480, max_length_s=2,
                         fft_window_size=256).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_ast_dir(path, seed: int = 0, labels: int = 5):
    """A tiny random Hugging Face AST audio classifier with its feature extractor."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    torch.manual_seed(seed)
    ASTForAudioClassification(ASTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                        num_mel_bins=32, max_length=64, patch_size=16, frequency_stride=16,
                                        time_stride=16, num_labels=labels)).save_pretrained(path)
    ASTFeatureExtractor(num_mel_bins=32, max_length=64).save_pretrained(path)
    return path
