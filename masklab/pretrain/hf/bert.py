"""`bert` preset <-> transformers' BertForMaskedLM: config and weight mapping, both ways.

Our fused Wqkv is split into query/key/value; the decoder is tied to the word embeddings
in both. The exported config carries the padded vocab size, the pooler when the model has one,
position_embedding_type and attention_probs_dropout_prob (always 0: the kernels have no attention-probability
dropout, and an imported non-zero value is logged as dropped), so import -> export is otherwise lossless.
"""
from __future__ import annotations

import logging

import torch
from transformers import BertConfig

from masklab.errors import CheckpointError

log = logging.getLogger("masklab.hf")

_LAYER = {  # ours -> HF (per layer, after the `layers.{i}.` / `bert.encoder.layer.{i}.` prefixes)
    "attn_out.weight": "attention.output.dense.weight", "attn_out.bias": "attention.output.dense.bias",
    "attn_norm.weight": "attention.output.LayerNorm.weight", "attn_norm.bias": "attention.output.LayerNorm.bias",
    "mlp_in.weight": "intermediate.dense.weight", "mlp_in.bias": "intermediate.dense.bias",
    "mlp_out.weight": "output.dense.weight", "mlp_out.bias": "output.dense.bias",
    "mlp_norm.weight": "output.LayerNorm.weight", "mlp_norm.bias": "output.LayerNorm.bias",
}
_TOP = {
    "embeddings.word_embeddings.weight": "bert.embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight": "bert.embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "bert.embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.weight": "bert.embeddings.LayerNorm.weight",
    "embeddings.LayerNorm.bias": "bert.embeddings.LayerNorm.bias",
    "head.dense.weight": "cls.predictions.transform.dense.weight",
    "head.dense.bias": "cls.predictions.transform.dense.bias",
    "head.LayerNorm.weight": "cls.predictions.transform.LayerNorm.weight",
    "head.LayerNorm.bias": "cls.predictions.transform.LayerNorm.bias",
    "head.bias": "cls.predictions.bias",
    "pooler.dense.weight": "bert.pooler.dense.weight",  # optional (model.pooler)
    "pooler.dense.bias": "bert.pooler.dense.bias",
}
# source keys that are not weights of ours, each with why dropping it loses nothing (logged on import)
ALLOWED_UNMAPPED = {
    "bert.embeddings.position_ids": "a constant arange buffer, rebuilt by every model",
    "cls.predictions.decoder.weight": "the tied decoder: the word embeddings (checked equal)",
    "cls.predictions.decoder.bias": "the decoder bias, the same tensor as cls.predictions.bias (checked equal)",
    "cls.seq_relationship.weight": "BertForPreTraining's next-sentence head: MaskLab trains MLM only",
    "cls.seq_relationship.bias": "BertForPreTraining's next-sentence head: MaskLab trains MLM only",
}


def hf_config(model_cfg, vocab_size: int, pad_id: int = 0) -> BertConfig:
    return BertConfig(vocab_size=vocab_size, hidden_size=model_cfg.hidden_size,
                      num_hidden_layers=model_cfg.num_layers, num_attention_heads=model_cfg.num_heads,
                      intermediate_size=model_cfg.intermediate_size, hidden_act="gelu",
                      hidden_dropout_prob=model_cfg.hidden_dropout,
                      max_position_embeddings=model_cfg.max_position_embeddings,
                      type_vocab_size=model_cfg.type_vocab_size, initializer_range=model_cfg.initializer_range,
                      layer_norm_eps=model_cfg.layer_norm_eps, pad_token_id=pad_id, tie_word_embeddings=True,
                      attention_probs_dropout_prob=model_cfg.attention_dropout, position_embedding_type="absolute",
                      architectures=["BertForMaskedLM"])


def to_hf_state_dict(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    out = {hf: state[ours] for ours, hf in _TOP.items() if ours in state}  # the pooler is optional
    out["cls.predictions.decoder.weight"] = state["embeddings.word_embeddings.weight"]
    out["cls.predictions.decoder.bias"] = state["head.bias"]
    for i in range(num_layers):
        p, q = f"layers.{i}.", f"bert.encoder.layer.{i}."
        for ours, hf in _LAYER.items():
            out[q + hf] = state[p + ours]
        w, b = state[p + "Wqkv.weight"], state[p + "Wqkv.bias"]
        for j, name in enumerate(("query", "key", "value")):
            out[q + f"attention.self.{name}.weight"] = w.chunk(3, 0)[j]
            out[q + f"attention.self.{name}.bias"] = b.chunk(3, 0)[j]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def canonical_keys(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BertModel checkpoints have no `bert.` prefix (and no MLM head): name them as BertForMaskedLM does."""
    if any(k.startswith("bert.") for k in hf):
        return hf
    return {("bert." + k if not k.startswith("cls.") else k): v for k, v in hf.items()}


def from_hf_state_dict(hf: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """BertForMaskedLM / BertModel state (canonical_keys names) -> ours; keys it does not use are
    found by the caller (hf_convert) against ALLOWED_UNMAPPED."""
    hf = canonical_keys(hf)
    out = {}
    for ours, name in _TOP.items():
        if name in hf:
            out[ours] = hf[name]
    for i in range(num_layers):
        p, q = f"layers.{i}.", f"bert.encoder.layer.{i}."
        try:
            for ours, name in _LAYER.items():
                out[p + ours] = hf[q + name]
            out[p + "Wqkv.weight"] = torch.cat([hf[q + f"attention.self.{n}.weight"] for n in ("query", "key", "value")])
            out[p + "Wqkv.bias"] = torch.cat([hf[q + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
        except KeyError as e:
            raise CheckpointError(f"HF BERT checkpoint is missing {e.args[0]}") from None
    return out


def model_cfg_from_hf(hf_cfg, base) -> None:
    """Fill our `model` config section (in place) from an HF BertConfig."""
    if getattr(hf_cfg, "hidden_act", "gelu") not in ("gelu", "gelu_python"):
        raise CheckpointError(f"unsupported BERT hidden_act '{hf_cfg.hidden_act}' (the bert preset uses erf GELU)")
    if getattr(hf_cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
        raise CheckpointError(f"unsupported position_embedding_type '{hf_cfg.position_embedding_type}'")
    base.preset = "bert"
    copy_shape(base, hf_cfg)
    base.type_vocab_size = hf_cfg.type_vocab_size
    base.layer_norm_eps = hf_cfg.layer_norm_eps
    base.hidden_dropout = hf_cfg.hidden_dropout_prob
    base.attention_dropout = attention_dropout_from_hf(hf_cfg, "attention_probs_dropout_prob")
    base.initializer_range = hf_cfg.initializer_range


def used_keys(hf: dict[str, torch.Tensor], num_layers: int) -> set[str]:
    """The canonical source keys from_hf_state_dict reads."""
    names = set(_TOP.values())
    for i in range(num_layers):
        q = f"bert.encoder.layer.{i}."
        names |= {q + n for n in _LAYER.values()}
        names |= {q + f"attention.self.{n}.{w}" for n in ("query", "key", "value") for w in ("weight", "bias")}
    return names & set(canonical_keys(hf))


def attention_dropout_from_hf(hf_cfg, key: str) -> float:
    """Always 0.0: MaskLab's attention kernels have no dropout on the probabilities (config validation
    refuses model.attention_dropout > 0). An HF config's non-zero value (BERT's default is 0.1) is
    logged as dropped, so continued pretraining does not drop it silently."""
    value = float(getattr(hf_cfg, key, 0.0) or 0.0)
    if value > 0:
        log.warning("HF config %s=%s becomes model.attention_dropout=0: MaskLab's attention kernels apply no "
                    "dropout to attention probabilities (hidden dropout is kept)", key, value)
    return 0.0


def copy_shape(base, hf_cfg) -> None:
    """The keys BERT and ModernBERT configs name alike: vocabulary, widths, depth, positions."""
    base.vocab_size = hf_cfg.vocab_size
    base.hidden_size = hf_cfg.hidden_size
    base.num_layers = hf_cfg.num_hidden_layers
    base.num_heads = hf_cfg.num_attention_heads
    base.intermediate_size = hf_cfg.intermediate_size
    base.max_position_embeddings = hf_cfg.max_position_embeddings
