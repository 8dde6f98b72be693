"""Continued pretraining: `train.init_from=<HF dir | MaskLab run / checkpoint>`.

A NEW run (step 0, fresh optimizer and schedule, this run's masking and data) starts from the
source's weights. `train.resume` keeps its meaning (continue the same run exactly): once the run
has a checkpoint of its own, a restart resumes from it and the source is not read again.

- The model section comes from the source. A model key the run's config sets (differs from the
  schema default) must equal the source's, except the ones in `FREE_KEYS`, which only change how
  the same function is trained (dropout, which rows the last layer computes).
- The data's tokenizer must be the source's (compared by the hash of the tokenizer's canonical
  JSON, so an HF tokenizer.json and MaskLab's saved copy of it compare equal).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf

from masklab.config import load_saved_config
from masklab.config_schema import ModelConfig
from masklab.config_validation import validate
from masklab.data_prep.tokenizer import load_tokenizer, tokenizer_info
from masklab.errors import CheckpointError, ConfigError
from masklab.pretrain.checkpoint.store import MARKER, load_model_weights

log = logging.getLogger("masklab.init_from")

FREE_KEYS = ("hidden_dropout", "attention_dropout", "sparse_prediction", "initializer_range", "pad_vocab_multiple")


def _is_hf_dir(p: Path) -> bool:
    return (p / "config.json").is_file() and not (p / MARKER).is_file()


def _source_model_cfg(src: Path):
    """-> (model section, tokenizer dir) of an HF directory or a MaskLab checkpoint."""
    if _is_hf_dir(src):
        from masklab.pretrain.hf.convert import import_hf_model

        return import_hf_model(src).cfg.model, src
    from masklab.pretrain.hf.convert import resolve_checkpoint

    ckpt = resolve_checkpoint(src)
    return load_saved_config(ckpt / "config.yaml").model, ckpt / "tokenizer"


def canonical_tokenizer_sha(path: Path) -> str:
    """sha256 of the tokenizer's canonical JSON (file formatting does not count)."""
    return tokenizer_info(load_tokenizer(path)[0]).sha256


def configure(cfg):
    """cfg with `train.init_from` set -> cfg whose model section is the source's (run keys in
    FREE_KEYS kept), re-validated. Conflicts and a tokenizer mismatch raise ConfigError."""
    if not cfg.train.init_from:
        return cfg
    src = Path(cfg.train.init_from)
    if not src.exists():
        raise ConfigError(f"train.init_from={src} does not exist")
    try:
        source_model, tok_dir = _source_model_cfg(src)
    except CheckpointError as e:
        raise ConfigError(f"train.init_from={src}: {e}") from None
    defaults = OmegaConf.structured(ModelConfig)
    model = OmegaConf.merge(defaults, source_model)
    for key in defaults:
        ours = cfg.model[key]
        if ours == defaults[key] or ours == source_model[key]:
            continue
        if key not in FREE_KEYS:
            raise ConfigError(f"model.{key}={ours} conflicts with train.init_from={src} (model.{key}="
                              f"{source_model[key]}): the model section comes from the source; drop the override")
        model[key] = ours
    data_sha = canonical_tokenizer_sha(Path(cfg.data.shards) / "tokenizer")
    src_sha = canonical_tokenizer_sha(tok_dir)
    if data_sha != src_sha:
        raise ConfigError(f"data.shards={cfg.data.shards} was tokenized with tokenizer {data_sha[:12]}, but "
                          f"train.init_from={src} uses tokenizer {src_sha[:12]}: prep with `--tokenizer {tok_dir}`")
    cfg = OmegaConf.merge(cfg, {"model": model})
    validate(cfg)
    return cfg


def load_weights(model: torch.nn.Module, cfg) -> None:
    """Copy the source's weights into a freshly built model (a no-op without train.init_from)."""
    if not cfg.train.init_from:
        return
    src = Path(cfg.train.init_from)
    if _is_hf_dir(src):
        from masklab.pretrain.hf.convert import import_hf_model

        model.load_state_dict(import_hf_model(src).model.state_dict())
    else:
        from masklab.pretrain.hf.convert import resolve_checkpoint

        load_model_weights(model, resolve_checkpoint(src))
    log.info("initialised from %s (step 0 of a new run)", src)


def head_origin(ckpt: Path, _depth: int = 0) -> Optional[str]:
    """Where a checkpoint's MLM head comes from: "initialised" when an import (or a run started
    from one, transitively) found no head in the source; "pretrained" otherwise; None if unknown."""
    ckpt = Path(ckpt)
    state = json.loads((ckpt / "state.json").read_text()) if (ckpt / "state.json").is_file() else {}
    if "mlm_head" in state:
        return state["mlm_head"]
    # read as plain data (no interpolation is resolved): masklab.config.load_saved_config
    src = load_saved_config(ckpt / "config.yaml").train.init_from if (ckpt / "config.yaml").is_file() else ""
    if not src:
        return "pretrained"
    src = Path(src)
    if not src.exists() or _depth > 8:
        return None
    if _is_hf_dir(src):
        from safetensors import safe_open

        from masklab.pretrain.hf.convert import HEAD_PREFIXES
        keys = [k for f in src.glob("*.safetensors") for k in safe_open(str(f), "pt").keys()]
        return "pretrained" if any(k.startswith(HEAD_PREFIXES) for k in keys) else "initialised"
    from masklab.pretrain.hf.convert import resolve_checkpoint

    return head_origin(resolve_checkpoint(src), _depth + 1)
