"""`modernbert` preset <-> transformers' ModernBertForMaskedLM: config and weight mapping.

Weights are a rename (our module names follow HF's); the decoder weight is tied to
`model.embeddings.tok_embeddings.weight` and stored once. Layer 0 has no attn_norm in either.
The exported config carries the padded vocab size and explicit values for every option whose
HF default would silently change the function (biases, activations, sparse prediction).
"""
from __future__ import annotations

import torch
from transformers import ModernBertConfig

from masklab.errors import CheckpointError
from masklab.pretrain.hf.bert import attention_dropout_from_hf, copy_shape

_LAYER = {"attn_norm.weight": "attn_norm.weight", "Wqkv.weight": "attn.Wqkv.weight", "Wo.weight": "attn.Wo.weight",
          "mlp_norm.weight": "mlp_norm.weight", "Wi.weight": "mlp.Wi.weight", "Wo_mlp.weight": "mlp.Wo.weight"}
_TOP = {"embeddings.tok_embeddings.weight": "model.embeddings.tok_embeddings.weight",
        "embeddings.norm.weight": "model.embeddings.norm.weight", "final_norm.weight": "model.final_norm.weight",
        "head.dense.weight": "head.dense.weight", "head.norm.weight": "head.norm.weight", "head.bias": "decoder.bias"}
EMBEDDING_KEY, DECODER_KEY = "model.embeddings.tok_embeddings.weight", "decoder.weight"
# source keys that are not weights of ours, each with why dropping it loses nothing (logged on import)
ALLOWED_UNMAPPED = {DECODER_KEY: "the tied decoder: the token embeddings (checked equal)"}
HEAD_KEYS = ("head.", "decoder.")  # names a bare ModernBertModel keeps unprefixed
# model-section fields that define the function the HF class computes (the export round-trip checks them)
ARCH_FIELDS = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "layer_norm_eps",
               "global_attn_every", "local_window", "rope_theta", "local_rope_theta")


def layer_types(num_layers: int, every: int) -> list[str]:
    """HF's rule: layer i is full (global) attention iff i % every == 0."""
    return ["full_attention" if i % every == 0 else "sliding_attention" for i in range(num_layers)]


def export_blockers(model_cfg) -> list[str]:
    """Options of our config that ModernBertForMaskedLM cannot reproduce, each naming the option."""
    out = []
    if model_cfg.hidden_size % model_cfg.num_heads or (model_cfg.hidden_size // model_cfg.num_heads) % 2:
        out.append(f"model.hidden_size={model_cfg.hidden_size} / model.num_heads={model_cfg.num_heads}: "
                   "HF's rotary embedding needs an even integer head dim")
    if model_cfg.local_window < 0:
        out.append(f"model.local_window={model_cfg.local_window}: HF's local_attention must be >= 0")
    if model_cfg.global_attn_every < 1:
        out.append(f"model.global_attn_every={model_cfg.global_attn_every}: must be >= 1")
    return out


def hf_config(model_cfg, vocab_size: int, pad_id: int = 0, cls_id: int = 2, sep_id: int = 3) -> ModernBertConfig:
    """Our model section (+ padded vocab, tokenizer ids) -> ModernBertConfig."""
    d = float(model_cfg.hidden_dropout)
    return ModernBertConfig(
        vocab_size=vocab_size, hidden_size=model_cfg.hidden_size, intermediate_size=model_cfg.intermediate_size,
        num_hidden_layers=model_cfg.num_layers, num_attention_heads=model_cfg.num_heads,
        max_position_embeddings=model_cfg.max_position_embeddings, norm_eps=float(model_cfg.layer_norm_eps),
        layer_types=layer_types(model_cfg.num_layers, model_cfg.global_attn_every),
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": float(model_cfg.rope_theta)},
                         "sliding_attention": {"rope_type": "default",
                                               "rope_theta": float(model_cfg.local_rope_theta)}},
        local_attention=model_cfg.local_window,  # HF: |i - j| <= local_attention // 2, as our kernel
        hidden_activation="gelu", classifier_activation="gelu",  # ACT2FN["gelu"] is erf GELU = F.gelu
        norm_bias=False, attention_bias=False, mlp_bias=False, classifier_bias=False, decoder_bias=True,
        sparse_prediction=False,  # full [B, L, V] logits, as fill-mask and AutoModelForMaskedLM users expect
        embedding_dropout=d, mlp_dropout=d, attention_dropout=float(model_cfg.attention_dropout),
        initializer_range=model_cfg.initializer_range, pad_token_id=pad_id, bos_token_id=cls_id,
        eos_token_id=sep_id, cls_token_id=cls_id, sep_token_id=sep_id, tie_word_embeddings=True,
        architectures=["ModernBertForMaskedLM"])


def to_hf_state_dict(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Our state dict -> ModernBertForMaskedLM's (decoder.weight included, tied to the embeddings)."""
    out = {hf: state[ours] for ours, hf in _TOP.items()}
    out[DECODER_KEY] = state["embeddings.tok_embeddings.weight"]
    for i in range(num_layers):
        for ours, hf in _LAYER.items():
            if f"layers.{i}.{ours}" in state:  # layer 0 has no attn_norm (Identity), as in HF
                out[f"model.layers.{i}.{hf}"] = state[f"layers.{i}.{ours}"]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def canonical_keys(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A bare ModernBertModel checkpoint has no `model.` prefix: name it as the MLM class does."""
    if any(k.startswith("model.") for k in hf):
        return hf
    return {(k if k.startswith(HEAD_KEYS) else f"model.{k}"): v for k, v in hf.items()}


def used_keys(hf: dict[str, torch.Tensor], num_layers: int) -> set[str]:
    """The canonical source keys from_hf_state_dict reads."""
    names = set(_TOP.values()) | {f"model.layers.{i}.{n}" for i in range(num_layers) for n in _LAYER.values()}
    return names & set(canonical_keys(hf))


def from_hf_state_dict(hf: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """ModernBertForMaskedLM / ModernBertModel state -> ours (a bare encoder has no head.* keys)."""
    hf = canonical_keys(hf)
    out = {ours: hf[name] for ours, name in _TOP.items() if name in hf}
    if "head.dense.weight" in hf and "decoder.bias" not in hf:  # decoder_bias=False: a zero bias is the same
        out["head.bias"] = torch.zeros(hf[EMBEDDING_KEY].shape[0], dtype=hf[EMBEDDING_KEY].dtype)
    for i in range(num_layers):
        for ours, name in _LAYER.items():
            key = f"model.layers.{i}.{name}"
            if key in hf:
                out[f"layers.{i}.{ours}"] = hf[key]
            elif not (i == 0 and ours == "attn_norm.weight"):
                raise CheckpointError(f"HF ModernBERT checkpoint is missing {key}")
    return out


def model_cfg_from_hf(hf_cfg, base) -> None:
    """Fill our `model` config section (in place) from an HF ModernBertConfig; options the preset
    cannot compute raise CheckpointError naming them."""
    for flag in ("attention_bias", "mlp_bias", "norm_bias", "classifier_bias"):
        if getattr(hf_cfg, flag, False):
            raise CheckpointError(f"unsupported ModernBERT option {flag}=True (the modernbert preset has no biases)")
    for flag in ("hidden_activation", "classifier_activation"):
        if getattr(hf_cfg, flag, "gelu") not in ("gelu", "gelu_python"):
            raise CheckpointError(f"unsupported ModernBERT {flag}='{getattr(hf_cfg, flag)}' (the preset uses erf GELU)")
    types = list(hf_cfg.layer_types)
    every = next((i for i in range(1, len(types)) if types[i] == "full_attention"), max(len(types), 1))
    if types != layer_types(len(types), every):
        raise CheckpointError(f"unsupported ModernBERT layer_types {types}: global layers must be every Nth from 0")
    rp = hf_cfg.rope_parameters
    for kind, params in rp.items():
        if params.get("rope_type", "default") != "default":
            raise CheckpointError(f"unsupported ModernBERT rope_type '{params['rope_type']}' for {kind} layers")
    base.preset = "modernbert"
    copy_shape(base, hf_cfg)
    base.layer_norm_eps = float(hf_cfg.norm_eps)
    base.global_attn_every = every
    base.local_window = hf_cfg.local_attention
    base.rope_theta = float(rp["full_attention"]["rope_theta"])
    base.local_rope_theta = float(rp.get("sliding_attention", rp["full_attention"])["rope_theta"])
    base.hidden_dropout = float(hf_cfg.embedding_dropout)
    base.attention_dropout = attention_dropout_from_hf(hf_cfg, "attention_dropout")
    base.initializer_range = float(hf_cfg.initializer_range)
