"""modernbert preset: unpadded path, sparse prediction modes, late insertion, recipes, training."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import ModernBertConfig

from masklab.data_prep import ShardSet
from masklab.config import load_config
from masklab.pretrain.data.collator import Collator
from masklab.pretrain.model import build_model
from masklab.pretrain.model.modernbert import apply_rope, rope_tables
from tests.model.padded_parity import assert_padded_matches_unpadded
from tests.model.tiny_models import checkpoint, mixed_batch, tiny_cfg


def test_unpadded_batch_equals_one_sequence_at_a_time(prepared_data, tmp_path):
    """Packed sequences longer than the window (8) through local and global layers = each alone."""
    _, m = checkpoint(prepared_data, tmp_path, "modernbert")
    assert [layer.window for layer in m.layers] == [None, 8, 8, None]
    assert_padded_matches_unpadded(m, *mixed_batch(1000, lens=(23, 7, 15, 40)))


def test_local_layers_see_only_the_window(prepared_data, tmp_path):
    """Changing token j leaves a local layer's output at i unchanged iff |i - j| > local_window // 2."""
    _, m = checkpoint(prepared_data, tmp_path, "modernbert")
    # float64: with small random weights the effect of a far-but-visible key can round to 0 in fp32
    layer, L = copy.deepcopy(m.layers[1]).double(), 30
    x = torch.randn(L, 64, dtype=torch.float64)
    stream = m.stream(torch.arange(L))
    cu = torch.tensor([0, L], dtype=torch.int32)
    with torch.no_grad():
        a = layer(x, cu, L, stream)
        x2 = x.clone()
        x2[20] += 1.0
        changed = (layer(x2, cu, L, stream) - a).abs().amax(-1) > 0
    assert changed.nonzero().flatten().tolist() == list(range(16, 25))


def _batch(prepared_data, *extra):
    cfg = tiny_cfg(prepared_data, "modernbert", ["data.seq_len=40", "masking.rate=0.3", *extra])
    shards = ShardSet(prepared_data)
    return cfg, shards, Collator(cfg, shards)(np.arange(6), 0)


def _reference_loss(m, b):
    """Dense reference: encode everything, logits everywhere, pick the predicted rows."""
    h = m.encode(b.input_ids, b.cu_seqlens, b.max_seqlen, b.position_ids)
    return F.cross_entropy(m.mlm_logits(h)[b.mlm_positions], b.mlm_labels, ignore_index=-100, reduction="sum")


@pytest.mark.parametrize("sparse", ["head", "last_layer", "none"])
def test_sparse_prediction_modes_give_the_dense_loss(prepared_data, sparse):
    cfg, shards, b = _batch(prepared_data, f"model.sparse_prediction={sparse}")
    torch.manual_seed(0)
    m = build_model(cfg.model, shards.tokenizer).eval()
    with torch.no_grad():
        out = m(b)
        torch.testing.assert_close(out["loss_sum"], _reference_loss(m, b), atol=1e-4, rtol=1e-5)
    assert int(out["num_predictions"]) == b.num_predictions


def test_late_insertion_inserts_the_mask_embedding(prepared_data):
    """Layers < k see only visible tokens; slot t then holds norm(tok_embeddings[MASK]); RoPE
    positions stay the original ones. Reference: one sequence at a time, plain indexing."""
    cfg, shards, b = _batch(prepared_data, "masking.insertion=late", "masking.insert_layer=2")
    torch.manual_seed(0)
    m = build_model(cfg.model, shards.tokenizer, cfg.masking).eval()
    assert m.insert_layer == 2
    total = 0.0
    with torch.no_grad():
        for s in range(b.batch_size):
            a, e = int(b.cu_seqlens[s]), int(b.cu_seqlens[s + 1])
            ids, pos = b.input_ids[a:e], b.position_ids[a:e]
            vis = (ids != shards.tokenizer.mask_id).nonzero().flatten()
            nv = len(vis)
            h = m.embeddings(ids[vis])
            stream = m.stream(pos[vis], gapped=True)  # rows removed: windows over true positions
            for layer in m.layers[:2]:
                h = layer(h, torch.tensor([0, nv], dtype=torch.int32), nv, stream)
            full = m.embeddings(torch.full_like(ids, shards.tokenizer.mask_id))
            full[vis] = h
            stream = m.stream(pos)
            for layer in m.layers[2:]:
                full = layer(full, torch.tensor([0, e - a], dtype=torch.int32), e - a, stream)
            sel = (b.mlm_positions >= a) & (b.mlm_positions < e)
            logits = m.mlm_logits(m.final_norm(full))[b.mlm_positions[sel] - a]
            total += float(F.cross_entropy(logits, b.mlm_labels[sel], reduction="sum"))
        assert abs(float(m(b)["loss_sum"]) - total) < 1e-5 * max(1.0, total)


def _definition_layer(layer, h, pos, window_coords="positions"):
    """One modernbert layer from the definition, for one sequence: dense attention where the token at
    true position p_i sees p_j iff |p_i - p_j| <= local_window // 2 (window_coords="rows": the
    pre-fix reading, |i - j| over the rows of the stream it runs on). h [L, D], pos int64 [L]."""
    L, D = h.shape
    H, d = layer.num_heads, layer.head_dim
    q, k, v = layer.Wqkv(layer.attn_norm(h)).view(L, 3, H, d).unbind(1)
    cos, sin = rope_tables(pos, d, [layer.theta])[layer.theta]
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    s = torch.einsum("ihd,jhd->hij", q, k) / d ** 0.5
    if layer.window is not None:
        c = pos if window_coords == "positions" else torch.arange(L)
        s = s.masked_fill((c[:, None] - c[None, :]).abs() > layer.window // 2, float("-inf"))
    x = h + layer.Wo(torch.einsum("hij,jhd->ihd", torch.softmax(s, -1), v).reshape(L, D))
    inp, gate = layer.Wi(layer.mlp_norm(x)).chunk(2, -1)
    return x + layer.Wo_mlp(F.gelu(inp) * gate)


def _late_reference(m, b, mask_id, window_coords="positions"):
    """The [T, D] stream at the insertion layer, one sequence at a time from the definition: the
    visible tokens through layers < insert_layer, then norm(tok_embeddings[MASK]) at the masked slots."""
    rows = []
    for s in range(b.batch_size):
        a, e = int(b.cu_seqlens[s]), int(b.cu_seqlens[s + 1])
        ids, pos = b.input_ids[a:e], b.position_ids[a:e]
        vis = (ids != mask_id).nonzero().flatten()
        h = m.embeddings(ids[vis])
        for layer in m.layers[:m.insert_layer]:
            h = _definition_layer(layer, h, pos[vis], window_coords)
        full = m.embeddings(torch.full_like(ids, mask_id))
        full[vis] = h
        rows.append(full)
    return torch.cat(rows)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_late_insertion_local_window_is_in_true_positions(prepared_data, backend):
    """Late insertion with a local layer below the insertion layer (layers: global, local | local,
    global; window 4, so 2 positions each side): the visible stream's local layer spans local_window
    // 2 real positions however many [MASK] rows were removed between. Reference: the definition
    (dense attention, mask |p_i - p_j| <= 2). The pre-fix window over visible rows gives another
    result on this batch, so this test fails on the old code."""
    cfg, shards, b = _batch(prepared_data, "masking.insertion=late", "masking.insert_layer=2",
                            "model.local_window=4")
    torch.manual_seed(0)
    m = build_model(cfg.model, shards.tokenizer, cfg.masking, backend=backend).eval()
    assert [layer.window for layer in m.layers] == [None, 4, 4, None] and m.insert_layer == 2
    mask_id = shards.tokenizer.mask_id
    with torch.no_grad():
        ours = m._encode_late(b)
        ref = _late_reference(m, b, mask_id)
        rows = _late_reference(m, b, mask_id, window_coords="rows")
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert (rows - ref).abs().max() > 1e-3  # the old semantics differ here: the test can fail on them
    # gaps exist: some visible neighbours in the stream are more than local_window // 2 positions apart
    vpos = b.position_ids.index_select(0, b.visible_index)
    assert bool((vpos[1:] - vpos[:-1] > 2).any())


def test_full_stream_windows_are_unchanged_by_positions(prepared_data, tmp_path):
    """On the full stream (no rows removed) the layer keeps the row-offset fast path: a gapped
    stream with consecutive positions computes the same thing, bit for bit."""
    _, m = checkpoint(prepared_data, tmp_path, "modernbert")
    layer, L = m.layers[1], 30
    x = torch.randn(L, 64)
    cu = torch.tensor([0, L], dtype=torch.int32)
    with torch.no_grad():
        assert m.stream(torch.arange(L)).window_positions is None
        assert torch.equal(layer(x, cu, L, m.stream(torch.arange(L))), layer(x, cu, L, m.stream(torch.arange(L), True)))


def test_resume_refuses_a_checkpoint_whose_late_local_windows_were_over_rows(prepared_data):
    """A run whose local layers see a stream with rows removed computes something else than before the
    window moved to true positions: resuming a checkpoint written before is refused, naming the key."""
    from masklab.errors import MaskLabError
    from masklab.pretrain.loop import distributed as D
    from masklab.pretrain.loop.resume import check_resume_compatible, resume_compat

    def compat(*ov):
        cfg = tiny_cfg(prepared_data, "modernbert", list(ov))
        return resume_compat(cfg, D.World(), "torch", "x")

    late = compat("masking.insertion=late", "masking.insert_layer=2")
    assert late["model.local_window_over"] == "positions"
    old = {k: v for k, v in late.items() if k != "model.local_window_over"}  # written before the key
    with pytest.raises(MaskLabError, match="model.local_window_over: checkpoint rows vs now positions"):
        check_resume_compatible({"compat": old}, late)
    check_resume_compatible({"compat": late}, late)
    # nothing changes where no local layer runs on a gapped stream: old checkpoints still resume
    for ov in ([], ["masking.insertion=late", "masking.insert_layer=1"]):  # layer 0 is global
        now = compat(*ov)
        assert "model.local_window_over" not in now
        check_resume_compatible({"compat": now}, now)
    assert compat("model.token_drop.rate=0.2", "model.token_drop.start_layer=1",
                  "model.token_drop.end_layer=3")["model.local_window_over"] == "positions"


def test_base_recipe_is_modernbert_base():
    """configs/modernbert_base.yaml maps onto the architecture of HF's ModernBERT-base defaults."""
    from masklab.pretrain.hf.modernbert import hf_config

    cfg = load_config("configs/modernbert_base.yaml", ["data.shards=x"])
    ours, ref = hf_config(cfg.model, 50368).to_dict(), ModernBertConfig().to_dict()
    for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "local_attention",
              "layer_types", "rope_parameters", "norm_eps", "max_position_embeddings", "hidden_activation",
              "norm_bias", "attention_bias", "mlp_bias", "decoder_bias", "tie_word_embeddings"):
        assert ours[k] == ref[k], k
    assert cfg.data.seq_len == 1024 and cfg.masking.rate == 0.30
    for name in ("modernbert_smoke_cpu", "modernbert_smoke_gpu"):
        c = load_config(f"configs/{name}.yaml", [])
        assert c.model.preset == "modernbert" and c.data.seq_len > c.model.local_window


def test_modernbert_trains(prepared_data, tmp_path):
    from masklab.pretrain.loop.train import train
    from tests.conftest import TINY

    cfg = load_config("configs/modernbert_smoke_cpu.yaml",
                      TINY + [f"data.shards={prepared_data}", f"train.out_dir={tmp_path / 'run'}", "model.num_layers=4",
                              "model.local_window=16", "train.max_steps=60", "train.eval_every=60", "train.lr=3e-3"])
    r = train(cfg)
    assert r["last"]["eval_loss"] < 0.8 * r["first_eval"]["loss"]
