"""Evaluations a sweep runs after each cell's training: a registry of `name -> fn(ctx) -> metrics`.

Built in:
- evaluate: `masklab evaluate` (MLM loss / accuracy at a fixed 15% token masking, seed 0; PLL);
- detection: bastioncorpus embedded with the cell's encoder (mean pooling), a classifier fitted on
  one source and scored once on the other (benchmarks/detection_cross.py's channel and language
  splits; threshold and calibration from a 25% validation carve of the training source);
- minimal_pairs: a JSONL of {"good": ..., "bad": ...} sentences (spec.minimal_pairs.path); accuracy
  = share of pairs whose good sentence has the higher pseudo-log-likelihood.
Pluggable: `register_evaluation(name, fn)` from any module, or a spec entry "package.module:function"
(imported when the sweep loads). `glue` is such a plug-in, provided by the GLUE harness
(`masklab glue`) as `masklab.downstream.glue.sweep:evaluate` when it is installed; requesting it
without the harness is a ConfigError at spec load, before anything trains.

fn(ctx: CellContext) -> {metric: float} (higher-is-better metrics unless listed in LOWER_IS_BETTER).
"""
from __future__ import annotations

import importlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict

from masklab.errors import ConfigError

log = logging.getLogger("masklab.sweep")

# metric names (or suffixes) where smaller is better: the compare verdict flips for them
LOWER_IS_BETTER = ("loss", "pseudo_perplexity", "fpr_at_target_fpr")
# plug-ins that live in other packages: name -> "module:function"
PLUGINS = {"glue": "masklab.downstream.glue.sweep:evaluate"}


@dataclass
class CellContext:
    cell_dir: Path
    model_dir: str  # the trained run directory, or the init_from source when the cell trains 0 steps
    cfg: Any  # the cell's resolved training config
    spec: Any  # the sweep spec
    device: str = "auto"


def _evaluate(ctx: CellContext) -> Dict[str, float]:
    from masklab.pretrain.evaluate.cli import evaluate_checkpoint

    e = ctx.spec.evaluate
    res = evaluate_checkpoint(ctx.model_dir, e.shards or ctx.cfg.data.shards, e.split, e.batches, e.batch_size,
                              e.pll_sentences, e.seed, ctx.device)
    names = {"loss": "mlm_loss", "mlm_acc": "mlm_acc", "pll_per_token": "pll_per_token",
             "pseudo_perplexity": "pseudo_perplexity"}
    return {names[k]: float(v) for k, v in res.items() if k in names}


def _detection(ctx: CellContext) -> Dict[str, float]:
    import tempfile

    import numpy as np

    from masklab.downstream.classifiers.models import Settings
    from masklab.downstream.data.labelled import load_bastion
    from masklab.downstream.encoders.load import load_encoder
    from masklab.downstream.evaluation.crosssource import Split, evaluate

    d = ctx.spec.detection
    data = load_bastion()
    X = load_encoder(ctx.model_dir, pooling=d.pooling, max_length=d.max_length).encode(data.texts)
    records = data.to_records()
    splits = {"channel": ("channel", {"user_input"}), "lang": ("lang", {"en"})}
    out = {}
    for name in d.splits:
        if name not in splits:
            raise ConfigError(f"detection.splits: '{name}' is not one of {', '.join(splits)}")
        column, train_values = splits[name]
        values = np.asarray([str(v) for v in data.columns[column]])
        is_train = np.isin(values, sorted(train_values))

        def part(idx, label):
            return Split(label, X[idx], [data.texts[i] for i in idx], data.labels[idx], [records[i] for i in idx],
                         {"source": f"bastion:{label}", "encoder": {"path": str(ctx.model_dir)},
                          "label_names": data.label_names})

        tr, te = np.flatnonzero(is_train), np.flatnonzero(~is_train)
        with tempfile.TemporaryDirectory() as tmp:
            # standardised features: a small pretrained encoder's mean pooling underfits with the
            # sentence-embedding defaults (benchmarks/detection.py)
            res = evaluate(part(tr, "train"), [part(te, "test")], Path(tmp) / "r", [d.classifier],
                           settings=Settings(scale="standard", normalize="none"), target_fpr=d.target_fpr,
                           n_boot=0, save=None, val_fraction=0.25)
        s = res["tests"]["test"][d.classifier]["summary"]
        for k in ("roc_auc", "pr_auc", "tpr_at_target_fpr"):
            if k in s:
                out[f"det_{name}_{k}"] = float(s[k]["mean"])
    return out


def _minimal_pairs(ctx: CellContext) -> Dict[str, float]:
    import torch

    from masklab.data_prep.tokenizer import load_tokenizer
    from masklab.pretrain.evaluate.pll import pll_tokens
    from masklab.pretrain.hf.convert import load_pretrained, resolve_checkpoint

    path = Path(ctx.spec.minimal_pairs.path)
    if not path.is_file():
        raise ConfigError(f"minimal_pairs.path={path}: no such file (a JSONL of {{\"good\": ..., \"bad\": ...}})")
    pairs = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    model, _, _ = load_pretrained(ctx.model_dir, torch.device("cpu"))
    tok, info = load_tokenizer(resolve_checkpoint(ctx.model_dir) / "tokenizer")
    special = set(info.special_ids)

    def score(text: str) -> float:
        ids = torch.tensor(tok.encode(text).ids, dtype=torch.long)
        return float(pll_tokens(model, ids, special, info.mask_id).sum())

    model.eval()
    wins = [score(p["good"]) > score(p["bad"]) for p in pairs]
    return {"minimal_pairs_acc": sum(wins) / max(len(wins), 1)}


REGISTRY: Dict[str, Callable[[CellContext], Dict[str, float]]] = {
    "evaluate": _evaluate, "detection": _detection, "minimal_pairs": _minimal_pairs}


def register_evaluation(name: str, fn: Callable[[CellContext], Dict[str, float]]) -> None:
    """Make `name` usable in a spec's `evaluations` list."""
    REGISTRY[name] = fn


def resolve(name: str) -> Callable[[CellContext], Dict[str, float]]:
    """The function of an evaluation name; plug-ins are imported here. Unknown / absent: ConfigError."""
    if name in REGISTRY:
        return REGISTRY[name]
    target = PLUGINS.get(name, name if ":" in name else None)
    if target is None:
        raise ConfigError(f"evaluation '{name}' is not one of {', '.join([*REGISTRY, *PLUGINS])} "
                          "(or a 'package.module:function' plug-in)")
    mod, _, fn = target.partition(":")
    try:
        f = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        if name == "glue":
            raise ConfigError("evaluation 'glue' needs the GLUE harness (`masklab glue`, module "
                              f"{mod}), which this install does not have ({e}); drop 'glue' from the "
                              "spec's evaluations or install a MaskLab that ships it") from None
        raise ConfigError(f"evaluation plug-in '{target}' cannot be loaded: {e}") from None
    REGISTRY[name] = f
    return f


def check_evaluations(names: list) -> None:
    if len(set(names)) != len(names):
        raise ConfigError(f"evaluations {names} name one twice")
    for n in names:
        resolve(n)


def lower_is_better(metric: str) -> bool:
    return any(metric.endswith(s) for s in LOWER_IS_BETTER)
