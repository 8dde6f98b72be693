"""The plain-transformers reference next to a `masklab glue` run: the same model fine-tuned with
AutoModelForSequenceClassification (padded batches from DataCollatorWithPadding, random order as
the Trainer's default sampler), the same recipe values (lr, epochs, batch size, warmup, weight
decay without biases / norms, AdamW betas / eps, clipping 1.0, linear schedule from
transformers.get_linear_schedule_with_warmup), the same data and subsamples, the same metrics
(masklab.downstream.glue.metrics), the final epoch reported. Writes a results.json that
`masklab glue --baseline` reads.

    python -m benchmarks.glue_hf_reference MODEL --data GLUE_DIR --out DIR [--tasks small] [--seed 19]
        [--max-train N] [--max-eval N]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def run_task(model_path: str, name: str, data: str, seed: int, max_train: int, max_eval: int, recipe) -> dict:
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              get_linear_schedule_with_warmup)

    from masklab.downstream.glue.metrics import score
    from masklab.downstream.glue.run import Job, load_splits

    task, train, dev = load_splits(Job(model=model_path, out="", tasks=[name], data=data, max_train=max_train,
                                       max_eval=max_eval), name)
    r = recipe.tasks[name]
    tok = AutoTokenizer.from_pretrained(model_path)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=task.num_labels)
    coll = DataCollatorWithPadding(tok)

    def rows(split):
        enc = tok(split.texts_a, split.texts_b, truncation=True, max_length=recipe.max_length)
        return [{k: enc[k][i] for k in enc} | {"labels": split.labels[i].item()} for i in range(len(split))]

    tr, dv = rows(train), {k: rows(v) for k, v in dev.items()}
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": r.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=r.lr, betas=tuple(recipe.betas), eps=recipe.eps, fused=True)
    per_epoch = -(-len(tr) // r.batch_size)
    total = int(np.ceil(per_epoch * r.epochs))
    sched = get_linear_schedule_with_warmup(opt, int(round(recipe.warmup_ratio * total)), total)
    g = torch.Generator().manual_seed(seed)
    step, t0, res = 0, time.time(), None
    while step < total:
        model.train()
        perm = torch.randperm(len(tr), generator=g).tolist()
        for i in range(0, len(perm), r.batch_size):
            b = coll([tr[j] for j in perm[i:i + r.batch_size]])
            loss = model(**b).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(), sched.step()
            step += 1
            if step >= total:
                break
        model.eval()
        out = {}
        with torch.no_grad():
            for k, v in dv.items():
                logits = torch.cat([model(**coll(v[i:i + 64])).logits for i in range(0, len(v), 64)]).numpy()
                out[k] = score(task.metrics, dev[k].labels, logits)
        res = {"dev": out, "score": float(np.mean([m["score"] for m in out.values()]))}
    return {"task": name, "seed": seed, "model": model_path, "dev": res["dev"], "score": res["score"], "steps": step,
            "wall_s": time.time() - t0, "data": {"train": train.source}}


def main(argv=None) -> int:
    from masklab.downstream.glue.recipe import load_recipe
    from masklab.downstream.glue.report import summarise
    from masklab.downstream.glue.tasks import parse_tasks

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tasks", default="small")
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--max-train", type=int, default=0)
    ap.add_argument("--max-eval", type=int, default=0)
    args = ap.parse_args(argv)
    recipe, recipe_file = load_recipe()
    tasks = parse_tasks(args.tasks)
    cells = []
    for t in tasks:
        c = run_task(args.model, t, args.data, args.seed, args.max_train, args.max_eval, recipe)
        c["recipe"] = recipe_file + " (plain transformers)"
        print(f"{t}: {c['score']:.2f} in {c['wall_s']:.0f}s", flush=True)
        cells.append(c)
    s = summarise(cells, tasks, [args.seed])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(s, indent=1))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
