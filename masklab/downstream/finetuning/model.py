"""The fine-tuned classifier: its settings, how it is built from a source encoder, and its stored form.

Source: an HF encoder directory, or our checkpoint (exported first with
`pretrain.export_hf` to a BertForMaskedLM directory). Pooling:
- `cls`: `AutoModelForSequenceClassification` (for BERT: BertForSequenceClassification,
  pooler + linear on [CLS]); the saved directory loads with it directly.
- `mean`: AutoModel + mean over real tokens + linear. Saved as the encoder's HF directory
  (loads with AutoModel) plus `head.safetensors`; `load_finetuned` rebuilds both.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from masklab.downstream.run_files import read_json, write_json
from masklab.errors import MaskLabError

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


class MeanPoolClassifier(nn.Module):
    """AutoModel encoder + mean pooling over the attention mask + dropout + linear [D -> 2]."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        d = encoder.config.hidden_size
        self.dropout = nn.Dropout(getattr(encoder.config, "hidden_dropout_prob", 0.1))
        self.classifier = nn.Linear(d, 2)
        nn.init.normal_(self.classifier.weight, std=0.02), nn.init.zeros_(self.classifier.bias)

    def forward(self, input_ids, attention_mask, **_):
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, L, D]
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)
        return self.classifier(self.dropout(pooled))  # [B, 2]


def source_hf_dir(model_path: str | Path, workdir: Path) -> Path:
    """An HF directory for the source model: itself, or our checkpoint exported into workdir."""
    from masklab.downstream.encoders.load import detect_kind

    if detect_kind(model_path) == "hf":
        return Path(model_path)
    from masklab.pretrain import export_hf

    return Path(export_hf(model_path, workdir / "source_hf"))


def source_defaults(hf_dir: Path, cfg: FinetuneConfig) -> FinetuneConfig:
    """cfg with pooling / max_length left at None filled in as `embed` does for the same source:
    a sentence-transformers directory's pooling (mean for all-MiniLM-L6-v2) and max_seq_length
    (256 there); otherwise mean pooling and the model's maximum (resolve_max_length)."""
    from masklab.downstream.encoders.source import sentence_transformers_settings

    st = sentence_transformers_settings(hf_dir) if cfg.pooling is None or cfg.max_length is None else {}
    pooling = cfg.pooling or (st.get("pooling") if st.get("pooling") in ("cls", "mean") else "mean")
    return replace(cfg, pooling=pooling, max_length=cfg.max_length or st.get("max_length"))


def _quiet_load(load):
    """Run an HF from_pretrained call without its load-report table (expected for a new head:
    the pretraining head's weights are unused, the classifier's are new) -> (model, info)."""
    from transformers.utils import logging as hf_logging

    prev = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return load()
    finally:
        hf_logging.set_verbosity(prev)


def _report_head(info: dict, hf_dir: Path) -> None:
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    body = [k for k in missing if not any(h in k for h in ("classifier.", "pooler."))]
    if body:  # encoder weights absent from the source: not the expected new-head case
        log.warning("%s: %d encoder weights were not in the source and are freshly initialised: %s", hf_dir,
                    len(body), ", ".join(body[:8]) + (" ..." if len(body) > 8 else ""))
    log.info("new classification head initialised (%d weights)%s", len(missing) - len(body),
             f"; {len(unexpected)} pretraining-head weights unused" if unexpected else "")


def build(hf_dir: Path, pooling: str, seed: int):
    """-> (model producing [B, 2] logits, HF tokenizer)."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    if pooling not in ("cls", "mean"):
        raise MaskLabError(f"fine-tuning pooling must be cls or mean, not '{pooling}'")
    from masklab.downstream.encoders.source import require_safetensors
    from masklab.pretrain.model.memory import check_hf_config_fits, check_weights_match, stored_params

    require_safetensors(hf_dir)  # also refuses custom code (auto_map)
    config = AutoConfig.from_pretrained(hf_dir, trust_remote_code=False)
    check_weights_match(config, hf_dir, stored_params(sorted(Path(hf_dir).glob("*.safetensors"))))
    check_hf_config_fits(config, hf_dir, training=True)
    torch.manual_seed(seed)  # the new head's initialisation
    tok = AutoTokenizer.from_pretrained(hf_dir, trust_remote_code=False)
    if pooling == "cls":
        model, info = _quiet_load(lambda: AutoModelForSequenceClassification.from_pretrained(
            hf_dir, num_labels=2, use_safetensors=True, output_loading_info=True, trust_remote_code=False))
    else:
        enc, info = _quiet_load(lambda: AutoModel.from_pretrained(hf_dir, use_safetensors=True,
                                                                  output_loading_info=True, trust_remote_code=False))
        model = MeanPoolClassifier(enc)
        info = {**info, "missing_keys": [*info.get("missing_keys", []), "classifier.weight", "classifier.bias"]}
    _report_head(info, hf_dir)
    return model, tok


def save(model, tok, out: Path, cfg: FinetuneConfig) -> None:
    if isinstance(model, MeanPoolClassifier):
        from safetensors.torch import save_file

        model.encoder.save_pretrained(out)
        save_file({k: v.contiguous().cpu() for k, v in model.classifier.state_dict().items()}, str(out / "head.safetensors"))
    else:
        model.save_pretrained(out)
    tok.save_pretrained(out)
    write_json(out / "masklab_finetune.json", asdict(cfg))


def load_finetuned(path: str | Path):
    """-> (model giving [B, 2] logits, tokenizer, FinetuneConfig) from a `finetune` output dir."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from masklab.downstream.encoders.source import require_safetensors

    p = Path(path)
    cfg = FinetuneConfig(**read_json(p / "masklab_finetune.json"))
    require_safetensors(p)  # a folder holding only pytorch_model.bin is never unpickled; no auto_map code
    if cfg.pooling == "mean":
        model = MeanPoolClassifier(_quiet_load(lambda: AutoModel.from_pretrained(p, use_safetensors=True,
                                                                               trust_remote_code=False)))
        model.classifier.load_state_dict(load_file(str(p / "head.safetensors")))
    else:
        model = _quiet_load(lambda: AutoModelForSequenceClassification.from_pretrained(
            p, use_safetensors=True, trust_remote_code=False))
    return model.eval(), AutoTokenizer.from_pretrained(p, trust_remote_code=False), cfg


def resolve_max_length(model, tok, cfg: FinetuneConfig) -> FinetuneConfig:
    """cfg with max_length set: the given value capped at, or by default equal to, what the model
    can take (truncating prompt-injection documents early costs detection; see README)."""
    enc = model.encoder if isinstance(model, MeanPoolClassifier) else model
    limit = min(getattr(enc.config, "max_position_embeddings", 512), tok.model_max_length or 10**9)
    return replace(cfg, max_length=min(cfg.max_length or limit, limit))
