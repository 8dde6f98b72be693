"""Checkpoint <-> Hugging Face directories, and loading a pretrained encoder for downstream use.

- `export_hf(checkpoint, out_dir)`: config.json + model.safetensors + tokenizer files; loads
  with `AutoModelForMaskedLM.from_pretrained(out_dir)` (no remote code).
- `import_hf(hf_dir)`: an HF BERT / ModernBERT directory (MLM or base model) -> our model
  (`import_hf_model` also says whether the MLM head came from the source).
- `load_pretrained(path)`: our checkpoint dir or run dir (latest checkpoint) -> model.
Each preset's mapping lives in `pretrain.hf_<preset>` (hf_config, to_hf_state_dict, canonical_keys,
from_hf_state_dict, used_keys, ALLOWED_UNMAPPED, model_cfg_from_hf, optionally export_blockers);
this module checks what no mapping can carry: options the HF class cannot express, untied
decoders, vocab mismatches, source weights nothing maps.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from masklab.atomic import atomic_dir, refuse_overlap
from masklab.data_prep.tokenizer import load_tokenizer
from masklab.config import load_saved_config
from masklab.config_schema import MaskLabConfig
from masklab.errors import CheckpointError
from masklab.pretrain.checkpoint.store import MARKER, latest_checkpoint, load_model_weights
from masklab.pretrain.hf.init_from import head_origin
from masklab.pretrain.model import build_model
from masklab.pretrain.model.memory import check_hf_config_fits, check_weights_match, stored_params

log = logging.getLogger("masklab.hf")
HEAD_PREFIXES = ("cls.predictions.", "head.", "decoder.")  # MLM-head weights in HF BERT / ModernBERT files


def _mapping(preset: str):
    """The preset's HF mapping module (imported when used: it pulls in transformers)."""
    if preset == "bert":
        from masklab.pretrain.hf import bert as hf_bert

        return hf_bert
    if preset == "modernbert":
        from masklab.pretrain.hf import modernbert as hf_modernbert

        return hf_modernbert
    raise CheckpointError(f"preset '{preset}' has no Hugging Face mapping in this build")


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
    cfg = load_saved_config(ckpt / "config.yaml")
    tok, info = load_tokenizer(ckpt / "tokenizer")
    model = build_model(cfg.model, info)
    load_model_weights(model, ckpt)
    return model.to(device).eval(), tok, cfg


def check_exportable(model_cfg) -> None:
    """Raise CheckpointError naming every option of `model_cfg` the preset's HF class cannot
    express (checked before anything is loaded or written)."""
    m = _mapping(model_cfg.preset)
    blockers = list(getattr(m, "export_blockers", lambda _: [])(model_cfg))
    if blockers:
        raise CheckpointError(f"cannot export a '{model_cfg.preset}' model to Hugging Face: " + "; ".join(blockers))


def export_hf(path: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write an HF directory for a checkpoint (atomically: temp dir, then rename)."""
    refuse_overlap(out_dir, {"checkpoint": path})
    ckpt = resolve_checkpoint(path)
    refuse_overlap(out_dir, {"checkpoint": ckpt})
    check_exportable(load_saved_config(ckpt / "config.yaml").model)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"export target {out} exists and is not empty (pass --overwrite)")
    model, _, cfg = load_pretrained(ckpt)
    m = _mapping(cfg.model.preset)
    _, info = load_tokenizer(ckpt / "tokenizer")
    ids = {"cls_id": info.cls_id, "sep_id": info.sep_id} if cfg.model.preset == "modernbert" else {}
    hf_cfg = m.hf_config(cfg.model, model.vocab_size, info.pad_id, **ids)  # vocab_size: the padded one
    state = m.to_hf_state_dict(model.state_dict(), cfg.model.num_layers)
    with atomic_dir(out) as tmp:
        hf_cfg.save_pretrained(tmp)
        # the tied decoder is stored once, as HF does, under the embedding name
        tied = [k for k in state if k.endswith("decoder.weight")]
        save_file({k: v for k, v in state.items() if k not in tied}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        _save_hf_tokenizer(ckpt / "tokenizer" / "tokenizer.json", tmp, cfg, info)
        # late insertion: the HF class feeds [MASK] at the input, which layers < k never saw in
        # training; encoder use (AutoModel) is exact, MLM predictions are the input-mask variant
        meta = {"source_checkpoint": str(ckpt.resolve()), "preset": cfg.model.preset,
                "tokenizer_vocab_size": info.vocab_size, "padded_vocab_size": model.vocab_size,
                "masking_insertion": cfg.masking.insertion, "insert_layer": cfg.masking.insert_layer,
                "mlm_head": head_origin(ckpt)}
        if meta["mlm_head"] == "initialised":
            log.warning("%s: the MLM head was initialised at random on import (the source had none); fill-mask "
                        "reflects only the MLM training since", ckpt)
        (tmp / "masklab_export.json").write_text(json.dumps(meta, indent=1))
    return out


def _save_hf_tokenizer(tokenizer_json: Path, out: Path, cfg, info) -> None:
    """tokenizer.json + HF tokenizer config; emits token_type_ids where the model has segment
    embeddings to take them (bert with type_vocab_size > 1), as BERT tokenizers do."""
    from transformers import PreTrainedTokenizerFast

    names = ["input_ids", "attention_mask"]
    if cfg.model.preset == "bert" and cfg.model.type_vocab_size > 1:
        names = ["input_ids", "token_type_ids", "attention_mask"]
    fast = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=cfg.model.max_position_embeddings, model_input_names=names)
    fast.save_pretrained(out)


@dataclass
class Imported:
    model: torch.nn.Module
    tokenizer: object  # tokenizers.Tokenizer
    cfg: object  # the MaskLab config (model section from the source)
    mlm_head: str  # "pretrained" (from the source) | "initialised" (the source had none)


def import_hf(hf_dir: str | Path, device: str | torch.device = "cpu"):
    """HF BERT/ModernBERT MLM or base-model directory -> (our model, tokenizers.Tokenizer, config)."""
    imp = import_hf_model(hf_dir, device)
    return imp.model, imp.tokenizer, imp.cfg


def import_hf_model(hf_dir: str | Path, device: str | torch.device = "cpu") -> Imported:
    """import_hf, and whether the MLM head came from the source. Every source weight is mapped
    or on the preset's ALLOWED_UNMAPPED list (logged); anything else is an error."""
    from omegaconf import OmegaConf
    from transformers import AutoConfig

    d = Path(hf_dir)
    if not (d / "config.json").is_file():
        raise CheckpointError(f"{d} is not a Hugging Face model directory (no config.json)")
    from masklab.pretrain.hf.safety import refuse_custom_code

    refuse_custom_code(d)
    try:
        hf_cfg = AutoConfig.from_pretrained(d, trust_remote_code=False)
    except (ValueError, KeyError, OSError) as e:  # an unknown model_type, a broken config.json
        raise CheckpointError(f"cannot read the Hugging Face config in {d}: {str(e).splitlines()[0]}") from None
    preset = {"bert": "bert", "modernbert": "modernbert"}.get(hf_cfg.model_type)
    if preset is None:
        raise CheckpointError(f"cannot import model_type '{hf_cfg.model_type}' "
                              f"(architectures {getattr(hf_cfg, 'architectures', None)}): supported are bert, modernbert")
    m = _mapping(preset)
    cfg = OmegaConf.structured(MaskLabConfig)
    m.model_cfg_from_hf(hf_cfg, cfg.model)
    if not (d / "tokenizer.json").is_file():
        raise CheckpointError(f"{d} has no tokenizer.json (a fast tokenizer is needed to use the model)")
    tok, info = load_tokenizer(d)
    if info.vocab_size > cfg.model.vocab_size:  # smaller is fine: the model's vocab may be padded
        raise CheckpointError(f"tokenizer vocabulary ({info.vocab_size} ids) exceeds the model's vocab_size "
                              f"({cfg.model.vocab_size}): the tokenizer does not belong to this model")
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{d} has no .safetensors weights (pickled .bin weights are not loaded)")
    check_weights_match(hf_cfg, d, stored_params(files))  # sizes from the headers: nothing allocated yet
    check_hf_config_fits(hf_cfg, d, training=False)
    hf_state = {}
    for f in files:
        hf_state.update(load_file(str(f)))
    hf_state = m.canonical_keys(hf_state)
    _check_tied(hf_state, d)
    _check_all_mapped(m, hf_state, cfg.model.num_layers, d)
    ours = m.from_hf_state_dict(hf_state, cfg.model.num_layers)
    cfg.model.pooler = "pooler.dense.weight" in ours
    model = build_model(cfg.model, info)
    missing, unexpected = model.load_state_dict(ours, strict=False)
    if unexpected:
        raise CheckpointError(f"unexpected weights when importing {d}: {unexpected[:5]}")
    head_missing = [k for k in missing if k.startswith("head.")]
    if set(missing) - set(head_missing):
        raise CheckpointError(f"weights missing when importing {d}: {sorted(set(missing) - set(head_missing))[:5]}")
    if head_missing and len(head_missing) < len([k for k in model.state_dict() if k.startswith("head.")]):
        raise CheckpointError(f"{d} has a partial MLM head (missing {head_missing[:3]})")
    if head_missing:
        log.warning("%s has no MLM head (an encoder-only checkpoint): the head is initialised at random; "
                    "fill-mask and PLL are noise until it is trained (recorded as mlm_head: initialised)", d)
    return Imported(model.to(device).eval(), tok, cfg, "initialised" if head_missing else "pretrained")


def _check_all_mapped(m, hf_state: dict[str, torch.Tensor], num_layers: int, d: Path) -> None:
    """No source weight is dropped silently: unmapped keys must be on the preset's allow-list."""
    unmapped = sorted(set(hf_state) - m.used_keys(hf_state, num_layers))
    unknown = [k for k in unmapped if k not in m.ALLOWED_UNMAPPED]
    if unknown:
        raise CheckpointError(f"{d}: {len(unknown)} source weight(s) MaskLab cannot map, e.g. {unknown[:3]} "
                              "(refusing to drop them)")
    for k in unmapped:
        log.info("import %s: not carried: %s (%s)", d.name, k, m.ALLOWED_UNMAPPED[k])


def _check_tied(hf_state: dict[str, torch.Tensor], d: Path) -> None:
    """Both presets tie the MLM decoder to the word embeddings (and BERT's decoder bias to
    cls.predictions.bias); an untied, different tensor would be dropped silently, so it is an error."""
    emb = [v for k, v in hf_state.items() if k.endswith(("word_embeddings.weight", "tok_embeddings.weight"))]
    for k, v in hf_state.items():
        if k.endswith("decoder.weight") and emb and not torch.equal(v, emb[0]):
            raise CheckpointError(f"{d}: {k} is not tied to the word embeddings (tie_word_embeddings=False); "
                                  "MaskLab presets tie them and cannot import it")
    bias, dbias = hf_state.get("cls.predictions.bias"), hf_state.get("cls.predictions.decoder.bias")
    if bias is not None and dbias is not None and not torch.equal(bias, dbias):
        raise CheckpointError(f"{d}: cls.predictions.decoder.bias differs from cls.predictions.bias "
                              "(MaskLab's bert preset has one decoder bias)")
