"""Model presets. `build_model(model_cfg, tokenizer_info, masking_cfg, backend)` is the one constructor."""
from __future__ import annotations

from masklab.errors import ConfigError
from masklab.pretrain.model.encoder import EncoderMLM
from masklab.pretrain.model.memory import check_model_fits
from masklab.pretrain.model.token_drop import attach_token_drop


def _bert():
    from masklab.pretrain.model.bert import BertMLM

    return BertMLM


def _modernbert():
    from masklab.pretrain.model.modernbert import ModernBertMLM

    return ModernBertMLM


PRESETS = {"bert": _bert, "modernbert": _modernbert}  # preset name -> the class (imported when used)


def padded_vocab_size(n: int, multiple: int) -> int:
    """Round the tokenizer's vocab up to a multiple (64: tensor-core friendly, MosaicBERT's lesson)."""
    return n if multiple <= 1 else (n + multiple - 1) // multiple * multiple


def build_model(model_cfg, tok_info, masking_cfg=None, backend: str = "auto") -> EncoderMLM:
    """The model for a (validated) config. `backend` (config `kernels.backend`) is the kernels
    backend every op of this model uses; it is the model's own, not a process-wide setting."""
    vocab = model_cfg.vocab_size or padded_vocab_size(tok_info.vocab_size, model_cfg.pad_vocab_multiple)
    if vocab < tok_info.vocab_size:
        raise ConfigError(f"model.vocab_size={vocab} is smaller than the tokenizer's vocabulary ({tok_info.vocab_size})")
    if model_cfg.preset not in PRESETS:
        raise ConfigError(f"model.preset='{model_cfg.preset}' is not one of {', '.join(PRESETS)}")
    check_model_fits(model_cfg, vocab, training=False)  # before allocating: absurd sizes are one line
    model = PRESETS[model_cfg.preset]()(model_cfg, vocab, backend)
    model.mask_token_id = tok_info.mask_id
    attach_token_drop(model, model_cfg.token_drop, model_cfg.num_layers, vocab, tok_info.special_ids)
    if masking_cfg is not None and masking_cfg.insertion == "late":  # the layer range: masklab.config_validation.validate
        model.insert_layer = masking_cfg.insert_layer
    return model


__all__ = ["build_model", "padded_vocab_size", "EncoderMLM"]
