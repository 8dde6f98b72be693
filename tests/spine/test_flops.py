"""FLOPs count what runs: exact counts for tiny hand-built batches, and on real collator batches
the rows each layer is charged for equal the rows the model's layers actually receive."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from masklab.config import load_config
from masklab.data_prep import ShardSet
from masklab.pretrain.data.collator import Collator
from masklab.pretrain.loop.flops import batch_flops, batch_layer_lens, step_flops
from masklab.pretrain.model import build_model

D, I, L, V = 8, 32, 3, 64
CFG = SimpleNamespace(hidden_size=D, intermediate_size=I, num_layers=L, preset="bert", sparse_prediction="head",
                      token_drop=SimpleNamespace(rate=0.0, start_layer=0, end_layer=-1))


def _batch(ids, lens, mlm, visible=None):
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lens)]), dtype=torch.int32)
    mlm = torch.tensor(mlm, dtype=torch.long)
    seq = np.repeat(np.arange(len(lens)), lens)
    mcu = torch.tensor(np.concatenate([[0], np.cumsum(np.bincount(seq[mlm.numpy()], minlength=len(lens)))]),
                       dtype=torch.int32)
    vcu = None if visible is None else torch.tensor(np.concatenate([[0], np.cumsum(visible)]), dtype=torch.int32)
    return SimpleNamespace(input_ids=torch.tensor(ids), cu_seqlens=cu, mlm_positions=mlm, num_predictions=len(mlm),
                           mlm_cu_seqlens=mcu, num_tokens=len(ids), cu_seqlens_visible=vcu)


# two sequences [CLS] a b c [SEP] | [CLS] d [SEP]; predictions at rows 2 and 6 (ids 1, 2 special)
B = _batch([1, 10, 11, 12, 2, 1, 13, 2], [5, 3], [2, 6])
# per layer over lens [5, 3] (T = 8): 2 d^2 (4 T) + 4 d (25 + 9) + 2*2 d i T = 4096 + 1088 + 8192
DENSE_LAYER, HEAD = 13376, 2 * 2 * (D * D + D * V)


def test_dense_count_is_the_textbook_formula():
    assert step_flops(CFG, V, torch.tensor([5, 3]), 2) == 3.0 * (L * DENSE_LAYER + HEAD) == 127296.0
    assert batch_flops(CFG, V, B) == 127296.0


def test_late_insertion_charges_lower_layers_the_visible_rows_only():
    b = _batch([1, 10, 11, 12, 2, 1, 13, 2], [5, 3], [2, 6], visible=[4, 2])
    # layers 0, 1 over lens [4, 2] (T = 6): 2 d^2 (24) + 4 d (16 + 4) + 4 d i 6 = 3072 + 640 + 6144
    low = 9856
    assert batch_flops(CFG, V, b, insert_layer=2) == 3.0 * (2 * low + DENSE_LAYER + HEAD) == 106176.0
    assert batch_flops(CFG, V, b, insert_layer=0) == 127296.0  # input mode: the visible stream is unused


def test_token_dropping_charges_middle_layers_the_kept_rows_only():
    cfg = SimpleNamespace(**{**vars(CFG), "token_drop": SimpleNamespace(rate=0.5, start_layer=0, end_layer=-1)})
    # seq 0: floor(2.5) = 2 of its 2 droppable rows (10, 12; 11 is predicted) -> 3 kept; seq 1: floor(1.5) = 1,
    # but nothing is droppable (13 is predicted) -> 3 kept. Layers 0, 1 (never the last) over [3, 3]:
    # 2 d^2 (24) + 4 d (9 + 9) + 4 d i 6 = 3072 + 576 + 6144
    kept = 9792
    assert batch_flops(cfg, V, B, special_ids=(1, 2)) == 3.0 * (2 * kept + DENSE_LAYER + HEAD) == 105792.0


def test_sparse_last_layer_and_dense_head():
    sparse = SimpleNamespace(**{**vars(CFG), "sparse_prediction": "last_layer"})
    # last layer: K, V over 8 rows, Q / out / MLP over the 2 predicted rows (one per sequence)
    last = 2 * D * D * (2 * 8 + 2 * 2) + 4 * D * (1 * 5 + 1 * 3) + 4 * D * I * 2
    assert batch_flops(sparse, V, B) == 3.0 * (2 * DENSE_LAYER + last + HEAD)
    dense = SimpleNamespace(**{**vars(CFG), "sparse_prediction": "none"})
    assert batch_flops(dense, V, B) == 3.0 * (L * DENSE_LAYER + 2 * 8 * (D * D + D * V))


@pytest.mark.parametrize("extra", [["masking.insertion=late", "masking.insert_layer=2", "masking.rate=0.4"],
                                   ["model.token_drop.rate=0.5", "model.token_drop.start_layer=1"],
                                   ["model.sparse_prediction=last_layer"]])
def test_charged_rows_equal_the_rows_each_layer_receives(prepared_data, extra):
    cfg = load_config("configs/smoke_cpu.yaml", [f"data.shards={prepared_data}", "data.seq_len=64",
                                                 "data.batch_size=4", "model.num_layers=4", "model.hidden_size=32",
                                                 "model.num_heads=2", "model.intermediate_size=64", *extra])
    shards = ShardSet(prepared_data, "train")
    b = Collator(cfg, shards)(np.arange(4), 0)
    model = build_model(cfg.model, shards.tokenizer, cfg.masking, "torch").train()
    seen = []
    for layer in model.layers:
        layer.register_forward_pre_hook(
            lambda m, args: seen.append((args[0].shape[0], None if args[4] is None else len(args[4].index))))
    model(b)
    insert = cfg.masking.insert_layer if cfg.masking.insertion == "late" else 0
    charged = batch_layer_lens(cfg.model, b, insert, shards.tokenizer.special_ids)
    want = [(int(k.sum()), None if q is None else int(q.sum())) for k, q in charged]
    assert seen == want
    assert len(set(seen)) > 1  # some layer really runs on fewer rows
