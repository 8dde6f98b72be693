"""Token Dropping: off = the plain model bitwise, inference runs every token, predictions and
specials are never dropped, dropped rows bypass the middle layers (no gradient through them),
the importance state resumes exactly and is the same under DDP."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from masklab.config import load_config
from masklab.data_prep import ShardSet
from masklab.errors import ConfigError
from masklab.pretrain.data.collator import Collator
from masklab.pretrain.model import build_model
from tests.conftest import TINY

PRESETS = {"bert": [], "modernbert": ["model.preset=modernbert", "model.global_attn_every=2", "model.local_window=16"]}
SMALL = ["model.num_layers=4", "model.hidden_size=64", "model.num_heads=2", "model.intermediate_size=128",
         "data.seq_len=64", "model.hidden_dropout=0"]


def _setup(data, preset, *ov):
    cfg = load_config("configs/smoke_cpu.yaml", [f"data.shards={data}", *SMALL, *PRESETS[preset], *ov])
    c = Collator(cfg, ShardSet(data, "train"))
    torch.manual_seed(0)
    return cfg, c, build_model(cfg.model, c.tok, cfg.masking)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_off_is_the_plain_model_and_inference_runs_every_token(prepared_data, preset):
    _, c, plain = _setup(prepared_data, preset)
    _, _, off = _setup(prepared_data, preset, "model.token_drop.rate=0", "model.token_drop.start_layer=1")
    _, _, on = _setup(prepared_data, preset, "+masking/token_dropping")
    assert off.token_drop is None and on.token_drop is not None
    b = c(np.arange(8), 0)
    ref = plain(b)["loss_sum"]
    assert torch.equal(off(b)["loss_sum"], ref)
    on.eval(), plain.eval()
    assert torch.equal(on(b)["loss_sum"], plain(b)["loss_sum"])  # eval: no dropping
    on.train()
    assert not torch.equal(on(b)["loss_sum"], ref)  # training: the middle layers see fewer rows


def test_predictions_and_specials_are_never_dropped(prepared_data):
    _, c, m = _setup(prepared_data, "bert", "+masking/token_dropping")
    td = m.token_drop
    td.ema.copy_(torch.rand(td.ema.shape, generator=torch.Generator().manual_seed(0)) * 5)
    special = torch.zeros(td.ema.shape[0], dtype=torch.bool)
    special[list(c.tok.special_ids)] = True
    for step in range(4):
        b = c(np.arange(step * 16, step * 16 + 16), step)
        p = td.plan(b)
        assert not p.dropped[b.mlm_positions].any() and not p.dropped[special[b.input_ids]].any()
        assert torch.equal(p.keep, torch.nonzero(~p.dropped).flatten())
        for s in range(b.batch_size):
            lo, hi = int(b.cu_seqlens[s]), int(b.cu_seqlens[s + 1])
            d = p.dropped[lo:hi]
            free = ~special[b.input_ids[lo:hi]]
            free[b.mlm_positions[(b.mlm_positions >= lo) & (b.mlm_positions < hi)] - lo] = False
            assert int(d.sum()) == min(int(0.5 * (hi - lo)), int(free.sum()))
            assert int(p.cu_seqlens[s + 1] - p.cu_seqlens[s]) == hi - lo - int(d.sum())
            imp = td.ema[b.input_ids[lo:hi]]
            if d.any() and (free & ~d).any():  # the dropped are the least important droppable tokens
                assert imp[d].max() <= imp[free & ~d].min() + 1e-5


def test_dropped_rows_bypass_the_middle_layers(prepared_data):
    _, c, m = _setup(prepared_data, "bert", "+masking/token_dropping")
    td, b = m.token_drop, c(np.arange(8), 0)
    lin = torch.nn.Linear(64, 64)
    seen = []

    def run(x, cu, mx, keep):
        seen.append((x.shape[0], int(cu[-1]), mx))
        return torch.tanh(lin(x))

    for kept_rows in (False, True):
        h = torch.randn(b.num_tokens, 64, requires_grad=True)
        x = h
        for i in range(td.start, td.end):
            x = td.layer(i, x, b, run)
        p = td.plan(b)
        rows = ~p.dropped if kept_rows else p.dropped
        lin.zero_grad()
        x[rows].sum().backward()
        assert torch.equal(x[p.dropped].detach(), h[p.dropped].detach())
        g_drop, g_keep = h.grad[p.dropped], h.grad[~p.dropped]
        if kept_rows:  # through the middle layers, which saw only the kept rows
            assert lin.weight.grad.abs().sum() > 0 and torch.all(g_drop == 0) and g_keep.abs().sum() > 0
        else:  # dropped rows: identity across the range, no gradient into its layers
            assert torch.all(lin.weight.grad == 0) and torch.all(g_drop == 1) and torch.all(g_keep == 0)
    T_keep = int((~p.dropped).sum())
    assert all(s == (T_keep, T_keep, p.max_seqlen) for s in seen)


def test_importance_is_the_running_loss_and_resumes_exactly(prepared_data, tmp_path):
    from masklab.pretrain.loop.train import train

    base = TINY + ["model.num_layers=3", "+masking/token_dropping", f"data.shards={prepared_data}",
                   "train.eval_every=1000", "model.hidden_dropout=0"]
    train(load_config("configs/smoke_cpu.yaml", base + ["train.max_steps=4", f"train.out_dir={tmp_path / 'a'}"]))
    train(load_config("configs/smoke_cpu.yaml", base + ["train.max_steps=2", f"train.out_dir={tmp_path / 'b'}"]))
    train(load_config("configs/smoke_cpu.yaml", base + ["train.max_steps=4", f"train.out_dir={tmp_path / 'b'}"]))
    a = load_file(str(tmp_path / "a" / "checkpoints" / "step_00000004" / "model.safetensors"))
    r = load_file(str(tmp_path / "b" / "checkpoints" / "step_00000004" / "model.safetensors"))
    for k in ("ema", "pending_sum", "pending_count", "pending_step"):
        assert torch.equal(a[f"token_drop.{k}"], r[f"token_drop.{k}"]), k
    assert int(a["token_drop.pending_step"]) == 3 and a["token_drop.pending_count"].sum() > 0
    assert not torch.equal(a["token_drop.ema"], torch.full_like(a["token_drop.ema"], a["token_drop.ema"][0]))


@pytest.mark.parametrize("ov,needle", [
    (["model.token_drop.rate=1.0"], "token_drop.rate=1.0 must lie in"),
    (["model.token_drop.rate=0.5", "model.token_drop.start_layer=0"], "1 <= start < end"),
    (["model.token_drop.rate=0.5", "model.token_drop.start_layer=1", "model.token_drop.end_layer=4"], "1 <= start"),
    (["+masking/token_dropping", "+masking/late"], "needs masking.insertion=input"),
])
def test_bad_token_drop_config(prepared_data, ov, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config("configs/smoke_cpu.yaml", [f"data.shards={prepared_data}", *SMALL, *ov])


@pytest.mark.distributed
def test_ddp_matches_single_process(prepared_data, tmp_path):
    from tests.distributed.test_launchers import COMMON, close, losses, single_run, torchrun

    extra = ["model.num_layers=3", "+masking/token_dropping"]
    ref = single_run(prepared_data, tmp_path / "single", extra)
    r = torchrun(COMMON + extra + [f"data.shards={prepared_data}", f"train.out_dir={tmp_path / 'ddp'}",
                                   "train.launcher=ddp"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert close(losses(tmp_path / "ddp"), losses(ref))
    a = load_file(str(ref / "checkpoints" / "step_00000006" / "model.safetensors"))
    d = load_file(str(tmp_path / "ddp" / "checkpoints" / "step_00000006" / "model.safetensors"))
    torch.testing.assert_close(d["token_drop.ema"], a["token_drop.ema"], rtol=1e-5, atol=1e-6)


def test_plan_and_observe_trace_without_a_host_sync(prepared_data):
    """Issue 31 item 12: the Token-Dropping step must not wait for the device. Counting Tensor.item on CPU
    cannot see `nonzero`, `repeat_interleave` with tensor repeats or `int(buffer)`; torch.compile with
    fullgraph=True can: each of them is a data-dependent shape or a graph break, which raises there."""
    _, c, m = _setup(prepared_data, "bert", "+masking/token_dropping")
    td = m.token_drop.train()
    td.ema.copy_(torch.rand(td.ema.shape, generator=torch.Generator().manual_seed(0)) * 5)
    b = c(np.arange(16), 3)
    assert b.drop_counts is not None and b.num_kept < b.num_tokens  # counted by the collator, on the host

    def plan(b):
        p = td.plan(b)
        return p.keep, p.cu_seqlens, p.dropped

    torch._dynamo.reset()
    keep, cu, dropped = torch.compile(plan, fullgraph=True, backend="eager", dynamic=False)(b)
    ref = td.plan(b)
    assert torch.equal(keep, ref.keep) and torch.equal(cu, ref.cu_seqlens) and torch.equal(dropped, ref.dropped)
    assert torch.equal(keep, torch.nonzero(~dropped).flatten()) and ref.max_seqlen == int((cu[1:] - cu[:-1]).max())
    h = torch.randn(b.num_predictions, 64)
    labels = b.mlm_labels.clone()
    labels[::3] = -100
    logits = torch.nn.Linear(64, td.ema.shape[0])
    before = td.pending_count.clone()
    torch.compile(lambda h, y: td.observe(logits, h, y, 3), fullgraph=True, backend="eager", dynamic=False)(h, labels)
    assert float((td.pending_count - before).sum()) == int((labels != -100).sum())
