"""The fine-tuned detector: its settings, how it is built from a source encoder, and its stored form.

Source: an HF BERT / ModernBERT directory or a MaskLab checkpoint / run directory, loaded into our
unpadded encoder (`heads.from_pretrained`'s path) under a 2-way `heads.SequenceClassifier`:
pooling `cls` (BERT pooler / ModernBERT head on [CLS], as AutoModelForSequenceClassification) or
`mean` (mean of the final hidden states, as `embed` for sentence-transformers models).

Stored form (out/model/): model.safetensors (the classifier's state dict, our names), model.yaml
(the encoder's MaskLab `model` config section), tokenizer.json, masklab_finetune.json (FinetuneConfig: pooling,
max length, threshold, calibration). `load_finetuned` rebuilds it exactly; nothing is unpickled.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import torch

from masklab.downstream.run_files import read_json, write_json
from masklab.errors import CheckpointError, MaskLabError

log = logging.getLogger("masklab.downstream")


@dataclass
class FinetuneConfig:
    # None: what `embed` uses for the source: a sentence-transformers dir's own pooling (cls/mean),
    # else mean (see source_defaults)
    pooling: Optional[str] = None  # cls | mean
    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 16
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    patience: int = 2  # epochs without validation-loss improvement before stopping
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    # None: the sentence-transformers max_seq_length (as `embed`), else the model's own limit
    max_length: Optional[int] = None
    max_steps: int = 0  # 0 = no cap (tests use a small cap)
    seed: int = 0
    device: Optional[str] = None
    # inputs longer than max_length: "truncate" scores the first window; "chunk" scores overlapping
    # windows (chunk_stride tokens of overlap; None: a quarter of max_length) and takes the max, so
    # an injection deep inside a long document is still seen (training always uses the first window)
    long: str = "truncate"
    chunk_stride: Optional[int] = None
    # carrier augmentation (downstream.carriers): None, or a carrier source whose documents carry
    # augment_copies copies of every training and validation row, plus augment_plain x N plain documents
    augment: Optional[str] = None
    augment_copies: int = 1
    augment_plain: float = 0.5
    # the operating threshold on log-odds, chosen on the validation scores for target_fpr
    # (0: threshold 0); `finetune` writes the chosen value into `threshold`, `predict` uses it
    target_fpr: float = 0.01
    threshold: float = 0.0
    # the evidence for `threshold` (downstream.evaluation.operating.point: set, n_benign, n_beyond,
    # fpr_upper95) and Platt calibration fitted on the validation scores; None in older saves
    operating_point: Optional[dict] = None
    calibration: Optional[dict] = None


def check_config(cfg: FinetuneConfig) -> None:
    """Settings that would fail late (after minutes of training) fail here, by name."""
    bad = []
    if cfg.pooling not in (None, "cls", "mean"):
        bad.append(f"pooling must be cls or mean, not '{cfg.pooling}'")
    if cfg.long not in ("truncate", "chunk"):
        bad.append(f"long must be truncate or chunk, not '{cfg.long}'")
    if cfg.chunk_stride is not None and cfg.chunk_stride < 0:
        bad.append(f"chunk_stride must be >= 0 (got {cfg.chunk_stride})")
    if not 0 <= cfg.target_fpr < 1:
        bad.append(f"target_fpr must be in [0, 1) (got {cfg.target_fpr})")
    if cfg.augment_copies < 1 or cfg.augment_plain < 0:
        bad.append(f"augment_copies must be >= 1 and augment_plain >= 0 (got {cfg.augment_copies}, {cfg.augment_plain})")
    if bad:
        raise MaskLabError("finetune: " + "; ".join(bad))


def source_defaults(model_path: str | Path, cfg: FinetuneConfig) -> FinetuneConfig:
    """cfg with pooling / max_length left at None filled in as `embed` does for the same source:
    a sentence-transformers directory's pooling (mean for all-MiniLM-L6-v2) and max_seq_length
    (256 there); otherwise mean pooling and the model's maximum (resolve_max_length)."""
    from masklab.downstream.encoders.source import sentence_transformers_settings

    st = sentence_transformers_settings(model_path) if cfg.pooling is None or cfg.max_length is None else {}
    pooling = cfg.pooling or (st.get("pooling") if st.get("pooling") in ("cls", "mean") else "mean")
    return replace(cfg, pooling=pooling, max_length=cfg.max_length or st.get("max_length"))


def resolve_max_length(mcfg, cfg: FinetuneConfig) -> FinetuneConfig:
    """cfg with max_length set: the given value capped at, or by default equal to, the encoder's
    position limit (truncating prompt-injection documents early costs detection; see README)."""
    limit = int(mcfg.model.max_position_embeddings)
    return replace(cfg, max_length=min(cfg.max_length or limit, limit))


def import_quietly(model_path):
    """pretrain.hf.convert.import_hf_model without its "no MLM head" warning: that is about fill-mask,
    and a classifier has no use for the MLM head."""
    from masklab.pretrain.hf.convert import import_hf_model

    hf_log = logging.getLogger("masklab.hf")
    level = hf_log.level
    hf_log.setLevel(logging.ERROR)
    try:
        return import_hf_model(model_path)
    finally:
        hf_log.setLevel(level)


def build(model_path: str | Path, pooling: str, seed: int):
    """-> (SequenceClassifier giving [B, 2] logits in train mode, tokenizers.Tokenizer, MaskLab config).
    The expected new-head report is one line; the new weights come from torch.manual_seed(seed)."""
    from masklab.downstream.encoders.load import detect_kind
    from masklab.downstream.finetuning.heads import SequenceClassifier
    from masklab.pretrain.hf.convert import load_pretrained

    if pooling not in ("cls", "mean"):
        raise MaskLabError(f"fine-tuning pooling must be cls or mean, not '{pooling}'")
    if detect_kind(model_path) == "masklab":
        encoder, tok, mcfg = load_pretrained(model_path)
        head = "pretrained"
    else:
        imp = import_quietly(model_path)
        encoder, tok, mcfg, head = imp.model, imp.tokenizer, imp.cfg, imp.mlm_head
        from transformers import AutoConfig

        from masklab.pretrain.model.memory import check_hf_config_fits

        # import checked that the weights fit for inference; training also holds gradients and AdamW moments
        check_hf_config_fits(AutoConfig.from_pretrained(model_path, trust_remote_code=False), Path(model_path),
                             training=True)
    # held by reference: ids of parameters the head drops could be reused by the new ones
    before = {id(p): p for n, p in encoder.named_parameters() if head == "pretrained" or not n.startswith("head.")}
    torch.manual_seed(int(seed))
    model = SequenceClassifier(encoder, 2, None, pooling)
    after = {id(p) for p in model.parameters()}
    new = sum(1 for p in model.parameters() if id(p) not in before)
    unused = len(set(before) - after)
    log.info("new classification head initialised (%d weights)%s", new,
             f"; {unused} pretraining-head weights unused" if unused else "")
    return model.train(), tok, mcfg


def save(model, tok, mcfg, out: Path, cfg: FinetuneConfig) -> None:
    from safetensors.torch import save_file

    from omegaconf import OmegaConf

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    (out / "model.yaml").write_text(OmegaConf.to_yaml(mcfg.model))  # the encoder's shape (`model` section)
    tok.save(str(out / "tokenizer.json"))
    write_json(out / "masklab_finetune.json", asdict(cfg))


def load_finetuned(path: str | Path):
    """-> (SequenceClassifier in eval mode, tokenizers.Tokenizer, FinetuneConfig) from a `finetune`
    output's model directory."""
    from safetensors.torch import load_file

    import yaml
    from omegaconf import OmegaConf

    from masklab.config_schema import MaskLabConfig
    from masklab.data_prep.tokenizer import load_tokenizer
    from masklab.downstream.encoders.source import require_safetensors
    from masklab.downstream.finetuning.heads import SequenceClassifier
    from masklab.pretrain.model import build_model

    p = Path(path)
    require_safetensors(p)  # a folder holding only pytorch_model.bin is never unpickled; no auto_map code
    cfg = FinetuneConfig(**read_json(p / "masklab_finetune.json"))
    if not (p / "model.yaml").is_file():  # saved before the shared engine: a transformers directory
        from masklab.downstream.finetuning.legacy import load_legacy

        model, tok = load_legacy(p, cfg.pooling)
        return model, tok, cfg
    try:
        shape = OmegaConf.merge(OmegaConf.structured(MaskLabConfig).model, yaml.safe_load((p / "model.yaml").read_text()))
    except Exception as e:  # a hand-edited or foreign file: one line, not a traceback
        raise CheckpointError(f"{p / 'model.yaml'}: not a MaskLab model section ({str(e).splitlines()[0]})") from None
    tok, info = load_tokenizer(p)
    model = SequenceClassifier(build_model(shape, info), 2, None, cfg.pooling)
    model.load_state_dict(load_file(str(p / "model.safetensors")))
    return model.eval(), tok, cfg
