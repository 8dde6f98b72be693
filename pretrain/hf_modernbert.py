"""`modernbert` preset <-> transformers' ModernBertForMaskedLM: config and weight mapping."""
from __future__ import annotations

import torch
from transformers import ModernBertConfig

from masklab.errors import CheckpointError

_LAYER = {"attn_norm.weight": "attn_norm.weight", "Wqkv.weight": "attn.Wqkv.weight", "Wo.weight": "attn.Wo.weight",
          "mlp_norm.weight": "mlp_norm.weight", "Wi.weight": "mlp.Wi.weight", "Wo_mlp.weight": "mlp.Wo.weight"}
_TOP = {"embeddings.tok_embeddings.weight": "model.embeddings.tok_embeddings.weight",
        "embeddings.norm.weight": "model.embeddings.norm.weight", "final_norm.weight": "model.final_norm.weight",
        "head.dense.weight": "head.dense.weight", "head.norm.weight": "head.norm.weight", "head.bias": "decoder.bias"}


def layer_types(num_layers: int, every: int) -> list[str]:
    return ["full_attention" if i % every == 0 else "sliding_attention" for i in range(num_layers)]


def hf_config(model_cfg, vocab_size: int, pad_id: int = 0, cls_id: int = 2, sep_id: int = 3) -> ModernBertConfig:
    if model_cfg.local_window % 2:
        raise CheckpointError(f"model.local_window={model_cfg.local_window} must be even to map onto "
                              "ModernBertConfig.local_attention")
    return ModernBertConfig(
        vocab_size=vocab_size, hidden_size=model_cfg.hidden_size, intermediate_size=model_cfg.intermediate_size,
        num_hidden_layers=model_cfg.num_layers, num_attention_heads=model_cfg.num_heads,
        max_position_embeddings=model_cfg.max_position_embeddings, norm_eps=model_cfg.layer_norm_eps,
        layer_types=layer_types(model_cfg.num_layers, model_cfg.global_attn_every),
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": model_cfg.rope_theta},
                         "sliding_attention": {"rope_type": "default", "rope_theta": model_cfg.local_rope_theta}},
        local_attention=model_cfg.local_window, embedding_dropout=model_cfg.hidden_dropout,
        mlp_dropout=model_cfg.hidden_dropout, attention_dropout=model_cfg.hidden_dropout,
        initializer_range=model_cfg.initializer_range, pad_token_id=pad_id, bos_token_id=cls_id,
        eos_token_id=sep_id, cls_token_id=cls_id, sep_token_id=sep_id, tie_word_embeddings=True,
        architectures=["ModernBertForMaskedLM"])


def to_hf_state_dict(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    out = {hf: state[ours] for ours, hf in _TOP.items()}
    out["decoder.weight"] = state["embeddings.tok_embeddings.weight"]
    for i in range(num_layers):
        for ours, hf in _LAYER.items():
            if f"layers.{i}.{ours}" in state:  # layer 0 has no attn_norm (Identity), as in HF
                out[f"model.layers.{i}.{hf}"] = state[f"layers.{i}.{ours}"]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def from_hf_state_dict(hf: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    if not any(k.startswith("model.") for k in hf):  # a bare ModernBertModel checkpoint
        hf = {f"model.{k}": v for k, v in hf.items()}
    out = {ours: hf[name] for ours, name in _TOP.items() if name in hf}
    for i in range(num_layers):
        for ours, name in _LAYER.items():
            key = f"model.layers.{i}.{name}"
            if key in hf:
                out[f"layers.{i}.{ours}"] = hf[key]
            elif not (i == 0 and ours == "attn_norm.weight"):
                raise CheckpointError(f"HF ModernBERT checkpoint is missing {key}")
    return out


def model_cfg_from_hf(hf_cfg, base) -> None:
    for flag in ("attention_bias", "mlp_bias", "norm_bias", "classifier_bias"):
        if getattr(hf_cfg, flag, False):
            raise CheckpointError(f"unsupported ModernBERT option {flag}=True (the modernbert preset has no biases)")
    if getattr(hf_cfg, "hidden_activation", "gelu") != "gelu":
        raise CheckpointError(f"unsupported ModernBERT hidden_activation '{hf_cfg.hidden_activation}'")
    types = list(hf_cfg.layer_types)
    every = next((i for i in range(1, len(types)) if types[i] == "full_attention"), len(types))
    if types != layer_types(len(types), every):
        raise CheckpointError(f"unsupported ModernBERT layer pattern {types}: global layers must be every Nth")
    rp = hf_cfg.rope_parameters
    base.preset = "modernbert"
    base.vocab_size = hf_cfg.vocab_size
    base.hidden_size = hf_cfg.hidden_size
    base.num_layers = hf_cfg.num_hidden_layers
    base.num_heads = hf_cfg.num_attention_heads
    base.intermediate_size = hf_cfg.intermediate_size
    base.max_position_embeddings = hf_cfg.max_position_embeddings
    base.layer_norm_eps = hf_cfg.norm_eps
    base.global_attn_every = every
    base.local_window = hf_cfg.local_attention
    base.rope_theta = rp["full_attention"]["rope_theta"]
    base.local_rope_theta = rp.get("sliding_attention", rp["full_attention"])["rope_theta"]
    base.hidden_dropout = float(hf_cfg.embedding_dropout)
