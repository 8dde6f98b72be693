"""Full fine-tuning of an encoder with a 2-way classification head.

Source: an HF encoder directory, or our checkpoint (exported first with
`pretrain.export_hf` to a BertForMaskedLM directory). Pooling:
- `cls`: `AutoModelForSequenceClassification` (for BERT: BertForSequenceClassification,
  pooler + linear on [CLS]); the saved directory loads with it directly.
- `mean`: AutoModel + mean over real tokens + linear. Saved as the encoder's HF directory
  (loads with AutoModel) plus `head.safetensors`; `load_finetuned` rebuilds both.
AdamW, linear warmup then decay, early stopping on validation loss (best weights kept),
bf16 autocast on CUDA, fp32 on CPU. Scores are log-odds: logit[1] - logit[0].
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from masklab.downstream import metrics as M
from masklab.downstream.run_files import atomic_dir, read_json, write_json, write_run
from masklab.errors import MaskLabError

log = logging.getLogger("masklab.downstream")


@dataclass
class FinetuneConfig:
    pooling: str = "cls"  # cls | mean
    epochs: int = 10
    lr: float = 5e-5
    batch_size: int = 16
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    patience: int = 2  # epochs without validation-loss improvement before stopping
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    max_length: Optional[int] = None  # None: the model's own limit (max positions / tokenizer max)
    max_steps: int = 0  # 0 = no cap (tests use a small cap)
    seed: int = 0
    device: Optional[str] = None


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
    from masklab.downstream.encoders import detect_kind

    if detect_kind(model_path) == "hf":
        return Path(model_path)
    from masklab.pretrain import export_hf

    return Path(export_hf(model_path, workdir / "source_hf"))


def build(hf_dir: Path, pooling: str, seed: int):
    """-> (model producing [B, 2] logits, HF tokenizer)."""
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    if pooling not in ("cls", "mean"):
        raise MaskLabError(f"fine-tuning pooling must be cls or mean, not '{pooling}'")
    from masklab.downstream.encoder_source import require_safetensors

    require_safetensors(hf_dir)
    torch.manual_seed(seed)  # the new head's initialisation
    tok = AutoTokenizer.from_pretrained(hf_dir)
    if pooling == "cls":
        model = AutoModelForSequenceClassification.from_pretrained(hf_dir, num_labels=2, use_safetensors=True)
    else:
        model = MeanPoolClassifier(AutoModel.from_pretrained(hf_dir, use_safetensors=True))
    return model, tok


def _logits(model, batch) -> torch.Tensor:
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out if isinstance(out, torch.Tensor) else out.logits


def _batches(tok, texts: Sequence[str], idx: np.ndarray, bs: int, max_length: int, device):
    for s in range(0, len(idx), bs):
        part = idx[s:s + bs]
        enc = tok([texts[i] for i in part], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        yield part, {k: enc[k].to(device) for k in ("input_ids", "attention_mask")}


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


@torch.no_grad()
def predict_logodds(model, tok, texts: Sequence[str], cfg: FinetuneConfig) -> np.ndarray:
    """N texts -> float64 [N] log-odds of class 1."""
    model.eval()
    device = next(model.parameters()).device
    out = np.zeros(len(texts))
    order = np.argsort([len(t) for t in texts])  # similar lengths together: less padding
    for part, batch in _batches(tok, texts, order, cfg.batch_size * 2, cfg.max_length, device):
        with _autocast(device):
            lg = _logits(model, batch).float()
        out[part] = (lg[:, 1] - lg[:, 0]).cpu().numpy()
    return out


def _eval_loss(model, tok, texts, y, cfg) -> float:
    s = torch.from_numpy(predict_logodds(model, tok, texts, cfg))
    return float(F.binary_cross_entropy_with_logits(s, torch.from_numpy(y).double()))


def train(model, tok, texts: Sequence[str], y: np.ndarray, val_texts: Sequence[str], val_y: np.ndarray,
          cfg: FinetuneConfig) -> list[dict]:
    """Fine-tune in place; the weights with the best validation loss are restored at the end.
    -> history: one dict per epoch (train_loss, val_loss)."""
    from transformers import get_linear_schedule_with_warmup

    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]  # biases, LayerNorm: no weight decay
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    steps_per_epoch = (len(texts) + cfg.batch_size - 1) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs if not cfg.max_steps else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)
    g = torch.Generator().manual_seed(cfg.seed)
    labels = torch.as_tensor(y, dtype=torch.long)
    best, best_state, bad, step, history = float("inf"), None, 0, 0, []
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(texts), generator=g).numpy()
        losses = []
        for part, batch in _batches(tok, texts, perm, cfg.batch_size, cfg.max_length, device):
            with _autocast(device):
                loss = F.cross_entropy(_logits(model, batch).float(), labels[part].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step += 1
            if cfg.max_steps and step >= cfg.max_steps:
                break
        val_loss = _eval_loss(model, tok, val_texts, val_y, cfg) if len(val_texts) else float("nan")
        history.append({"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)), "val_loss": val_loss})
        log.info("finetune epoch %d: train loss %.4f, val loss %.4f", epoch, history[-1]["train_loss"], val_loss)
        if val_loss < best - 1e-4:
            best, bad = val_loss, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        elif len(val_texts):  # without validation data every epoch runs
            bad += 1
        if bad >= cfg.patience or (cfg.max_steps and step >= cfg.max_steps):
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


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

    p = Path(path)
    cfg = FinetuneConfig(**read_json(p / "masklab_finetune.json"))
    if cfg.pooling == "mean":
        model = MeanPoolClassifier(AutoModel.from_pretrained(p))
        model.classifier.load_state_dict(load_file(str(p / "head.safetensors")))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(p)
    return model.eval(), AutoTokenizer.from_pretrained(p), cfg


def resolve_max_length(model, tok, cfg: FinetuneConfig) -> FinetuneConfig:
    """cfg with max_length set: the given value capped at, or by default equal to, what the model
    can take (truncating prompt-injection documents early costs detection; see README)."""
    enc = model.encoder if isinstance(model, MeanPoolClassifier) else model
    limit = min(getattr(enc.config, "max_position_embeddings", 512), tok.model_max_length or 10**9)
    return replace(cfg, max_length=min(cfg.max_length or limit, limit))


def _sets(data, cfg: FinetuneConfig, val_data, test_data: Sequence, groups) -> tuple:
    """-> (train_idx, val set, [(name, test set)]) where sets are LabelledData."""
    from masklab.downstream.data import check_binary
    from masklab.downstream.splits import split_indices

    y = check_binary(data.labels)
    rest, tests = np.arange(len(y)), [(f"test_{Path(t.source).stem}", t) for t in test_data]
    if not test_data and cfg.test_fraction > 0:
        rest, held = split_indices(y, cfg.test_fraction, cfg.seed, groups)
        tests = [("test", data.subset(held))]
    if val_data is None:
        keep, held = split_indices(y[rest], cfg.val_fraction, cfg.seed + 1, None if groups is None else groups[rest])
        val, train_idx = data.subset(rest[held]), rest[keep]
    else:
        val, train_idx = val_data, rest
    if len(np.unique(y[train_idx])) < 2:
        raise MaskLabError(f"finetune: {len(y)} rows leave {len(train_idx)} for training after the validation/test "
                           "hold-outs (need both classes): use more data, or give --val-data / --test-data")
    for name, t in tests:
        check_binary(t.labels, f"labels of the {name} set")
    return train_idx, val, tests


def finetune(model_path: str | Path, data, out_dir: str | Path, cfg: FinetuneConfig = FinetuneConfig(),
             val_data=None, test_data: Sequence = (), group_column: Optional[str] = None) -> dict:
    """Fine-tune on `data` (LabelledData), early-stopping on `val_data` or a stratified hold-out
    (grouped by `group_column`), score every `test_data` set (or a `test_fraction` hold-out; none
    with 0). Saves atomically: out_dir/model (HF directory, see module doc), out_dir/finetune.json
    (config, history, sizes) and one run directory per test set (out_dir itself for the hold-out).
    -> {history, tests: {name: metrics}, model_dir}."""
    from masklab.downstream.splits import group_values

    groups = group_values(data.columns, group_column, data.source)
    train_idx, val, tests = _sets(data, cfg, val_data, test_data, groups)
    y = data.labels
    with tempfile.TemporaryDirectory() as work, atomic_dir(out_dir) as tmp:
        model, tok = build(source_hf_dir(model_path, Path(work)), cfg.pooling, cfg.seed)
        cfg = resolve_max_length(model, tok, cfg)
        history = train(model, tok, [data.texts[i] for i in train_idx], y[train_idx], val.texts, val.labels, cfg)
        name, summary = f"finetune_{cfg.pooling}", {}
        for tname, t in tests:
            s = predict_logodds(model, tok, t.texts, cfg)
            m = M.binary_metrics(t.labels, s)
            summary[tname] = m
            results = {name: {"summary": {k: M.summarize([v]) for k, v in m.items()},
                              "ci": M.bootstrap_ci(t.labels, s, n=500, seed=cfg.seed),
                              "oof": {"seed": cfg.seed, "score": s}, "confusion": M.confusion(t.labels, (s >= 0).astype(int))}}
            write_run(tmp if tname == "test" else tmp / tname, "finetune", f"{data.source} -> {t.source}",
                      {"kind": "finetune", "path": str(model_path), "pooling": cfg.pooling}, results, t.labels,
                      t.to_records(), config=asdict(cfg), history=history,
                      label_names=data.label_names)
        save(model, tok, tmp / "model", cfg)
        write_json(tmp / "finetune.json", {"config": asdict(cfg), "history": history, "tests": summary,
                                           "sizes": {"train": len(train_idx), "val": len(val),
                                                     **{n: len(t) for n, t in tests}}, "group_column": group_column})
    return {"history": history, "tests": summary, "model_dir": str(Path(out_dir) / "model")}


class _Finetuned:
    """Adapter so classifiers.cross_validate can score a fine-tuned model like any classifier."""

    def __init__(self, model, tok, cfg):
        self.model, self.tok, self.cfg = model, tok, cfg

    def decision_function(self, texts):
        return predict_logodds(self.model, self.tok, list(texts), self.cfg)


def finetune_cv(model_path: str | Path, data, folds: int = 5, seeds: Sequence[int] = (0,),
                cfg: FinetuneConfig = FinetuneConfig(), n_boot: int = 1000) -> dict:
    """Stratified k-fold CV of full fine-tuning (validation split carved from each training fold);
    same result format as classifiers.cross_validate, under the name 'finetune_<pooling>'."""
    from masklab.downstream.classifiers import cross_validate

    with tempfile.TemporaryDirectory() as work:
        hf_dir = source_hf_dir(model_path, Path(work))

        def fit_fn(_name, texts, y, seed):
            from masklab.downstream.splits import split_indices

            c = replace(cfg, seed=seed)
            tr, va = split_indices(y, c.val_fraction, seed)
            model, tok = build(hf_dir, c.pooling, seed)
            c = resolve_max_length(model, tok, c)
            train(model, tok, [texts[i] for i in tr], y[tr], [texts[i] for i in va], y[va], c)
            return _Finetuned(model, tok, c)

        return cross_validate(list(data.texts), data.labels, [f"finetune_{cfg.pooling}"], folds=folds, seeds=seeds,
                              n_boot=n_boot, fit_fn=fit_fn)
