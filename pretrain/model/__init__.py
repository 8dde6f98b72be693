"""Model presets. `build_model(model_cfg, tokenizer_info, masking_cfg)` is the one constructor."""
from __future__ import annotations

import importlib

from masklab.errors import ConfigError
from masklab.pretrain.model.bert import BertMLM
from masklab.pretrain.model.token_drop import attach_token_drop

PRESETS = {"bert": "masklab.pretrain.model.bert:BertMLM", "modernbert": "masklab.pretrain.model.modernbert:ModernBertMLM"}


def padded_vocab_size(n: int, multiple: int) -> int:
    """Round the tokenizer's vocab up to a multiple (64: tensor-core friendly, MosaicBERT's lesson)."""
    return n if multiple <= 1 else (n + multiple - 1) // multiple * multiple


def build_model(model_cfg, tok_info, masking_cfg=None):
    vocab = model_cfg.vocab_size or padded_vocab_size(tok_info.vocab_size, model_cfg.pad_vocab_multiple)
    if vocab < tok_info.vocab_size:
        raise ConfigError(f"model.vocab_size={vocab} is smaller than the tokenizer's vocabulary ({tok_info.vocab_size})")
    target = PRESETS.get(model_cfg.preset)
    if target is None:
        raise ConfigError(f"model.preset='{model_cfg.preset}' is not one of {', '.join(PRESETS)}")
    mod, cls = target.split(":")
    try:
        model_cls = getattr(importlib.import_module(mod), cls)
    except ModuleNotFoundError:
        raise ConfigError(f"model.preset='{model_cfg.preset}' is not available in this build") from None
    model = model_cls(model_cfg, vocab)
    model.mask_token_id = tok_info.mask_id
    attach_token_drop(model, model_cfg.token_drop, model_cfg.num_layers, vocab, tok_info.special_ids)
    if masking_cfg is not None and masking_cfg.insertion == "late":  # the layer range: masklab.config.validate
        model.insert_layer = masking_cfg.insert_layer
    return model


__all__ = ["build_model", "padded_vocab_size", "BertMLM"]
