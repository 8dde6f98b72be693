"""Zero-shot minimal pairs (BLiMP; Salazar et al. 2020, "Masked Language Model Scoring"): the
model prefers the sentence with the higher pseudo-log-likelihood (`pretrain/evaluate/pll.py`:
each token masked in turn, one unpadded pass per sentence). A pair counts as correct when
PLL(good) > PLL(bad). Accuracy per phenomenon and overall (pairs pooled).

Data: `blimp` (the hub's `nyu-mll/blimp`, every paradigm; phenomenon = its linguistics_term;
online only) or a jsonl of {"good": ..., "bad": ..., "phenomenon": ...} (phenomenon optional)."""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Optional

import torch

from masklab.errors import MaskLabError

log = logging.getLogger("masklab.minimal_pairs")


def read_pairs(path: Path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise MaskLabError(f"{p} not found (give 'blimp' or a .jsonl of {{good, bad, phenomenon}})")
    out = []
    with open(p, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise MaskLabError(f"{p}:{i}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not all(isinstance(row.get(k), str) and row[k].strip() for k in ("good", "bad")):
                raise MaskLabError(f"{p}:{i}: expected {{\"good\": text, \"bad\": text, \"phenomenon\": name}}")
            out.append({"good": row["good"], "bad": row["bad"], "phenomenon": str(row.get("phenomenon", "all"))})
    if not out:
        raise MaskLabError(f"{p}: no pairs")
    return out


def blimp_pairs() -> list[dict]:
    try:
        from datasets import get_dataset_config_names, load_dataset

        out = []
        for cfg in get_dataset_config_names("nyu-mll/blimp"):
            for r in load_dataset("nyu-mll/blimp", cfg, split="train"):
                out.append({"good": r["sentence_good"], "bad": r["sentence_bad"],
                            "phenomenon": r.get("linguistics_term") or cfg})
        return out
    except Exception as e:  # offline, no cache
        raise MaskLabError(f"cannot load nyu-mll/blimp from the hub ({str(e).splitlines()[0][:200]}); pass a local "
                           "jsonl of {good, bad, phenomenon} instead") from None


def load_scorer(model_path: str):
    """-> (our model with its MLM head, tokenizers.Tokenizer, special ids, mask id, mlm head origin)."""
    from masklab.data_prep.tokenizer import tokenizer_info
    from masklab.downstream.encoders.load import detect_kind
    from masklab.pretrain.hf.convert import import_hf_model, load_pretrained

    if detect_kind(model_path) == "masklab":
        model, tok, _ = load_pretrained(model_path)
        head = "pretrained"
    else:
        imp = import_hf_model(model_path)
        model, tok, head = imp.model, imp.tokenizer, imp.mlm_head
    if head == "initialised":
        log.warning("%s has no MLM head: PLL scores are noise (accuracy near chance says nothing of the encoder)",
                    model_path)
    info = tokenizer_info(tok)
    if info.mask_id is None:
        raise MaskLabError(f"{model_path}: the tokenizer has no [MASK] token")
    return model.eval(), tok, info, head


def sentence_ids(tok, info, texts: list[str], max_len: int) -> list[torch.Tensor]:
    from tokenizers import Tokenizer

    t = Tokenizer.from_str(tok.to_str())
    t.no_padding(), t.no_truncation()
    enc = t.encode_batch(texts, add_special_tokens=False)
    return [torch.tensor([info.cls_id, *e.ids[:max_len - 2], info.sep_id], dtype=torch.long) for e in enc]


def run_minimal_pairs(model_path: str, data: str, out: Optional[str] = None, limit: int = 0,
                      progress: bool = True) -> dict:
    from masklab.pretrain.evaluate.pll import pll_tokens

    pairs = blimp_pairs() if data == "blimp" else read_pairs(Path(data))
    if limit:
        seen: dict = defaultdict(int)
        kept = []
        for p in pairs:
            if seen[p["phenomenon"]] < limit:
                seen[p["phenomenon"]] += 1
                kept.append(p)
        pairs = kept
    model, tok, info, head = load_scorer(model_path)
    max_len = int(model.cfg.max_position_embeddings)
    good = sentence_ids(tok, info, [p["good"] for p in pairs], max_len)
    bad = sentence_ids(tok, info, [p["bad"] for p in pairs], max_len)
    special = set(info.special_ids)
    per: dict = defaultdict(lambda: [0, 0])
    import sys

    from tqdm import tqdm

    it = tqdm(range(len(pairs)), desc="minimal pairs", unit="pair", disable=not (progress and sys.stderr.isatty()))
    for i in it:
        g = float(pll_tokens(model, good[i], special, info.mask_id).sum())
        b = float(pll_tokens(model, bad[i], special, info.mask_id).sum())
        per[pairs[i]["phenomenon"]][0] += int(g > b)
        per[pairs[i]["phenomenon"]][1] += 1
        if it.disable and progress and (i + 1) % max(1, len(pairs) // 10) == 0:  # not a TTY: log lines
            log.info("minimal pairs: %d/%d", i + 1, len(pairs))
    rows = {k: {"pairs": n, "correct": c, "accuracy": 100.0 * c / n} for k, (c, n) in sorted(per.items())}
    total = sum(r["pairs"] for r in rows.values())
    res = {"model": model_path, "data": data, "mlm_head": head, "phenomena": rows, "pairs": total,
           "accuracy": 100.0 * sum(r["correct"] for r in rows.values()) / total,
           "macro_accuracy": sum(r["accuracy"] for r in rows.values()) / len(rows)}
    lines = [f"Minimal pairs (PLL, Salazar et al. 2020): model `{model_path}`, data `{data}`"
             + ("; MLM head initialised at random: scores are noise" if head == "initialised" else ""), "",
             "| phenomenon | pairs | accuracy |", "|---|---|---|"]
    lines += [f"| {k} | {r['pairs']} | {r['accuracy']:.1f} |" for k, r in rows.items()]
    lines += [f"| **overall (pairs pooled)** | {total} | **{res['accuracy']:.1f}** |",
              f"| mean over phenomena | | {res['macro_accuracy']:.1f} |"]
    res["markdown"] = "\n".join(lines) + "\n"
    if out:
        from masklab.downstream.run_files import atomic_dir

        with atomic_dir(out) as tmp:
            (tmp / "results.json").write_text(json.dumps({k: v for k, v in res.items() if k != "markdown"}, indent=1))
            (tmp / "results.md").write_text(res["markdown"])
    return res
