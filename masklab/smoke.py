"""`masklab smoke`: raw text -> tokenizer -> shards -> pretraining -> checkpoint -> HF export -> detection.

Runs on a laptop CPU in a few minutes with nothing fetched: the corpus is the standard
library's pydoc prose, the labelled set is bastioncorpus (PyPI, MIT).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from masklab.config import load_config

log = logging.getLogger("masklab.smoke")


def run(out: Path, config: str, overrides: list[str], folds: int = 5) -> dict:
    from masklab.data_prep import PrepOptions, prepare
    from masklab.pretrain.hf.convert import export_hf
    from masklab.pretrain.loop.train import train

    t0 = time.time()
    out = Path(out)
    data_dir, run_dir, hf_dir, det_dir = out / "data", out / "train", out / "hf_model", out / "detection"
    cfg = load_config(config, [f"data.shards={data_dir}", f"train.out_dir={run_dir}", *overrides])
    print(f"[1/4] prep: pydoc prose -> WordPiece tokenizer -> shards in {data_dir}")
    if (data_dir / "manifest.json").is_file():
        print("      (reusing the prepared data already there)")
    else:
        prepare(PrepOptions(source="pydoc", out=str(data_dir)))
    print(f"[2/4] train: {cfg.model.preset} {cfg.model.num_layers}x{cfg.model.hidden_size}, "
          f"{cfg.train.max_steps} steps, batch {cfg.data.batch_size} -> {run_dir}")
    result = train(cfg)
    print(f"[3/4] export: Hugging Face BertForMaskedLM -> {hf_dir}")
    export_hf(result["checkpoint"], hf_dir, overwrite=True)
    _check_hf(hf_dir)
    print(f"[4/4] detection: bastioncorpus, mean-pooled embeddings, logistic regression, {folds}-fold CV")
    from masklab.downstream import detect_smoke

    det = detect_smoke(str(result["checkpoint"]), str(det_dir), folds=folds)
    summary = {
        "data": str(data_dir), "run_dir": str(run_dir), "checkpoint": result["checkpoint"],
        "metrics_log": str(run_dir / "metrics.jsonl"), "tensorboard": str(run_dir / "tensorboard"),
        "hf_model": str(hf_dir), "detection": str(det_dir),
        "final_train": {k: result["last"].get(k) for k in ("loss", "mlm_acc", "realised_mask_rate", "tokens_per_s")},
        "eval_first": result.get("first_eval"),
        "eval_last": {k[5:]: v for k, v in result["last"].items() if k.startswith("eval_")},
        "detection_scores": det, "seconds": round(time.time() - t0, 1),
    }
    (out / "smoke_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    _print_summary(summary, out)
    return summary


def _check_hf(hf_dir: Path) -> None:
    """The export must load as a plain BertForMaskedLM with no remote code."""
    from transformers import AutoModelForMaskedLM

    m = AutoModelForMaskedLM.from_pretrained(str(hf_dir), trust_remote_code=False)
    print(f"      loads with AutoModelForMaskedLM as {type(m).__name__}")


def _print_summary(s: dict, out: Path) -> None:
    ev0, ev1 = s["eval_first"] or {}, s["eval_last"]
    print("\nSmoke pipeline done in %.0fs" % s["seconds"])
    if ev0 and ev1:
        print(f"  held-out MLM loss {ev0['loss']:.3f} -> {ev1['loss']:.3f} ({ev1['loss'] / ev0['loss']:.2f}x), "
              f"masked acc {ev1['mlm_acc']:.3f} (unigram baseline {ev1['unigram_acc']:.3f})")
    d = s["detection_scores"]
    print("  detection (mean ± sd over folds): " + ", ".join(
        f"{k} {d[k]['mean']:.3f} ± {d[k]['sd']:.3f}" for k in ("accuracy", "f1", "roc_auc") if k in d))
    print("  written:")
    for k in ("data", "checkpoint", "metrics_log", "tensorboard", "hf_model", "detection"):
        print(f"    {k:<12} {s[k]}")
    print(f"    {'summary':<12} {out / 'smoke_summary.json'}")


def _smoke(args) -> int:
    run(Path(args.out), args.config, args.overrides, folds=args.folds)
    return 0


def register(sub) -> None:
    p = sub.add_parser("smoke", help="run the whole pipeline end to end on CPU (prep, train, export, detect)")
    p.add_argument("--out", default="runs/smoke")
    p.add_argument("--config", default="configs/smoke_cpu.yaml")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("overrides", nargs="*", help="dotlist overrides for the training config")
    p.set_defaults(func=_smoke)
