"""`masklab evaluate CHECKPOINT --shards DIR`: masked-token accuracy and loss, plus pseudo-log-likelihood.

The masked-token numbers use one fixed masking for every checkpoint (token units, 15%, 80-10-10,
input insertion, fixed seed), whatever the run trained with, so runs with different masking
recipes compare on the same held-out predictions. PLL is scored on the first N held-out samples
(their token ids, no decode/re-encode round trip). Prints one JSON object.
"""
from __future__ import annotations

import json
import logging

log = logging.getLogger("masklab.evaluate")

# the fixed evaluation masking (masking section overrides)
EVAL_MASKING = {"eval_rate": 0.15, "unit": "token", "selector": "budget", "mask_prob": 0.8, "random_prob": 0.1,
                "keep_prob": 0.1, "corrupt_per_unit": False, "insertion": "input", "insert_layer": 0}


def evaluate_checkpoint(checkpoint: str, shards_dir: str, split: str = "validation", batches: int = 16,
                        batch_size: int = 32, pll_sentences: int = 16, seed: int = 0, device: str = "auto") -> dict:
    """Masked-token loss / accuracy at the fixed EVAL_MASKING and PLL of `checkpoint` on `shards_dir`
    (tokenized with the checkpoint's tokenizer). -> the JSON object `masklab evaluate` prints."""
    import torch
    from omegaconf import OmegaConf

    from masklab.data_prep.shards import ShardSet
    from masklab.data_prep.tokenizer import load_tokenizer
    from masklab.errors import DataError
    from masklab.pretrain.data.collator import Collator, eval_batches
    from masklab.pretrain.evaluate.heldout import evaluate_batches
    from masklab.pretrain.hf.convert import load_pretrained, resolve_checkpoint
    from masklab.pretrain.hf.init_from import head_origin
    from masklab.pretrain.evaluate.pll import pll_report_ids

    dev = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    model, _, cfg = load_pretrained(checkpoint, dev)
    shards = ShardSet(shards_dir, split)
    info = shards.tokenizer
    if info.sha256 != load_tokenizer(resolve_checkpoint(checkpoint) / "tokenizer")[1].sha256:
        raise DataError(f"{shards_dir} was tokenized with another tokenizer than {checkpoint}")
    cfg = OmegaConf.merge(cfg, {"data": {"shards": shards_dir}, "masking": EVAL_MASKING, "train": {"seed": seed}})
    c = Collator(cfg, shards)
    res = {"checkpoint": str(checkpoint), "split": split, "mask_rate": 0.15, "seed": seed,
           "mlm_head": head_origin(resolve_checkpoint(checkpoint))}
    if res["mlm_head"] == "initialised":
        log.warning("%s: the MLM head was initialised at random on import (the source had none): masked-token "
                    "numbers measure only what this run trained", checkpoint)
    res.update(evaluate_batches(model, eval_batches(c, batch_size, batches), dev))
    n = min(pll_sentences, len(c.samples))
    if n > 0:
        rows = c.sample_ids(0, n)
        sentences = (torch.as_tensor(c.sample_tokens(int(r))[0]) for r in rows)
        res.update(pll_report_ids(model, sentences, set(info.special_ids), info.mask_id))
    return res


def _evaluate(args) -> int:
    res = evaluate_checkpoint(args.checkpoint, args.shards, args.split, args.batches, args.batch_size,
                              args.pll_sentences, args.seed, args.device)
    print(json.dumps(res, indent=1))
    return 0


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="masked accuracy/loss at a fixed 15%% rate and seed, and pseudo-log-likelihood")
    p.add_argument("checkpoint", help="checkpoint or run directory (latest checkpoint)")
    p.add_argument("--shards", required=True, help="a `masklab prep` output tokenized with the checkpoint's tokenizer")
    p.add_argument("--split", default="validation")
    p.add_argument("--batches", type=int, default=16, help="masked-token evaluation batches")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pll-sentences", type=int, default=16, help="held-out samples scored by PLL (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=_evaluate)
