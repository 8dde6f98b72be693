"""Checkpoint <-> Hugging Face directories, and loading a pretrained encoder for downstream use.

- `export_hf(checkpoint, out_dir)`: config.json + model.safetensors + tokenizer files; loads
  with `AutoModelForMaskedLM.from_pretrained(out_dir)` (no remote code).
- `import_hf(hf_dir)`: an HF BERT (BertModel / BertForMaskedLM) directory -> our model.
- `load_pretrained(path)`: our checkpoint dir or run dir (latest checkpoint) -> model.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from data_prep.tokenizer import load_tokenizer
from masklab.config import MaskLabConfig, from_yaml_text
from masklab.errors import CheckpointError
from pretrain.checkpoint import MARKER, latest_checkpoint, load_model_weights
from pretrain.model import build_model

SUPPORTED_HF = {"bert": "pretrain.hf_bert", "modernbert": "pretrain.hf_modernbert"}


def _mapping(preset: str):
    import importlib

    try:
        return importlib.import_module(SUPPORTED_HF[preset])
    except (KeyError, ModuleNotFoundError):
        raise CheckpointError(f"preset '{preset}' has no Hugging Face mapping in this build") from None


def resolve_checkpoint(path: str | Path) -> Path:
    p = Path(path)
    if (p / MARKER).is_file():
        return p
    if p.is_dir():
        latest = latest_checkpoint(p)
        if latest is not None:
            return latest
    raise CheckpointError(f"{p} is neither a complete MaskLab checkpoint nor a run directory holding one")


def load_pretrained(path: str | Path, device: str | torch.device = "cpu"):
    """-> (model in eval mode, tokenizers.Tokenizer, config) from a checkpoint or run directory."""
    ckpt = resolve_checkpoint(path)
    cfg = from_yaml_text((ckpt / "config.yaml").read_text())
    tok, info = load_tokenizer(ckpt / "tokenizer")
    model = build_model(cfg.model, info)
    load_model_weights(model, ckpt)
    return model.to(device).eval(), tok, cfg


def export_hf(path: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write an HF directory for a checkpoint (atomically: temp dir, then rename)."""
    ckpt = resolve_checkpoint(path)
    model, tok, cfg = load_pretrained(ckpt)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"export target {out} exists and is not empty (pass --overwrite)")
    m = _mapping(cfg.model.preset)
    _, info = load_tokenizer(ckpt / "tokenizer")
    hf_cfg = m.hf_config(cfg.model, model.vocab_size, info.pad_id, info.cls_id, info.sep_id) \
        if cfg.model.preset == "modernbert" else m.hf_config(cfg.model, model.vocab_size, info.pad_id)
    state = m.to_hf_state_dict(model.state_dict(), cfg.model.num_layers)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        hf_cfg.save_pretrained(tmp)
        # the tied decoder is stored once, as HF does, under the embedding name
        tied = [k for k in state if k.endswith("decoder.weight")]
        save_file({k: v for k, v in state.items() if k not in tied}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        _save_hf_tokenizer(ckpt / "tokenizer" / "tokenizer.json", tmp, cfg, info)
        (tmp / "masklab_export.json").write_text(json.dumps({"source_checkpoint": str(ckpt.resolve()),
                                                             "preset": cfg.model.preset}, indent=1))
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _save_hf_tokenizer(tokenizer_json: Path, out: Path, cfg, info) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=cfg.model.max_position_embeddings)
    fast.save_pretrained(out)


def import_hf(hf_dir: str | Path, device: str | torch.device = "cpu"):
    """HF BERT/ModernBERT MLM or base-model directory -> (our model, tokenizers.Tokenizer, config)."""
    from omegaconf import OmegaConf
    from transformers import AutoConfig

    d = Path(hf_dir)
    if not (d / "config.json").is_file():
        raise CheckpointError(f"{d} is not a Hugging Face model directory (no config.json)")
    hf_cfg = AutoConfig.from_pretrained(d)
    preset = {"bert": "bert", "modernbert": "modernbert"}.get(hf_cfg.model_type)
    if preset is None:
        raise CheckpointError(f"cannot import model_type '{hf_cfg.model_type}': supported are bert, modernbert")
    m = _mapping(preset)
    cfg = OmegaConf.structured(MaskLabConfig)
    m.model_cfg_from_hf(hf_cfg, cfg.model)
    tok, info = load_tokenizer(d)
    if info.vocab_size > cfg.model.vocab_size:
        raise CheckpointError(f"tokenizer vocabulary ({info.vocab_size}) exceeds the model's ({cfg.model.vocab_size})")
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{d} has no .safetensors weights (pickled .bin weights are not loaded)")
    hf_state = {}
    for f in files:
        hf_state.update(load_file(str(f)))
    model = build_model(cfg.model, info)
    ours = m.from_hf_state_dict(hf_state, cfg.model.num_layers)
    missing, unexpected = model.load_state_dict(ours, strict=False)
    unexpected = [k for k in unexpected]
    if unexpected:
        raise CheckpointError(f"unexpected weights when importing {d}: {unexpected[:5]}")
    head_missing = [k for k in missing if k.startswith("head.")]
    if set(missing) - set(head_missing):
        raise CheckpointError(f"weights missing when importing {d}: {sorted(set(missing) - set(head_missing))[:5]}")
    return model.to(device).eval(), tok, cfg
