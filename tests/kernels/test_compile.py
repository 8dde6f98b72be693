"""torch.compile of the encoder layers (inductor on CPU, torch kernels): same loss and gradients as eager,
one graph per layer (fullgraph: the attention custom op breaks nothing), and the train.compile default."""
import copy

import numpy as np
import pytest
import torch

from masklab import kernels
from masklab.config import load_config
from masklab.data_prep import ShardSet
from masklab.pretrain.data.collator import Collator
from masklab.pretrain.model import build_model
from masklab.pretrain.model.compile import compile_enabled, compile_layers

SMALL = ["data.seq_len=32", "model.hidden_size=32", "model.num_layers=2", "model.num_heads=2",
         "model.intermediate_size=64", "model.hidden_dropout=0"]


MODERNBERT = ["model.preset=modernbert", "model.local_window=8", "model.global_attn_every=2", "model.layer_norm_eps=1e-5"]
# late insertion below a local layer: the custom op carries the window's true positions
LATE = MODERNBERT[:-2] + ["model.global_attn_every=3", "model.layer_norm_eps=1e-5", "model.num_layers=3",
                          "masking.insertion=late", "masking.insert_layer=2", "masking.rate=0.4"]


@pytest.mark.parametrize("extra", [[], MODERNBERT, LATE], ids=["bert", "modernbert", "modernbert-late"])
def test_compiled_layers_match_eager(prepared_data, extra):
    cfg = load_config("configs/smoke_cpu.yaml", [f"data.shards={prepared_data}", *SMALL, *extra])
    shards = ShardSet(prepared_data)
    batch = Collator(cfg, shards)(np.arange(4), 0)
    torch.manual_seed(0)
    eager = build_model(cfg.model, shards.tokenizer, cfg.masking)
    compiled = compile_layers(copy.deepcopy(eager), fullgraph=True)
    assert [n for n, _ in compiled.named_parameters()] == [n for n, _ in eager.named_parameters()]
    kernels.set_backend("torch")
    try:
        res = []
        for model in (eager, compiled):
            out = model(batch)
            res.append((out["loss_sum"].detach(), int(out["n_correct"]),
                        torch.autograd.grad(out["loss_sum"], list(model.parameters()))))
    finally:
        kernels.set_backend("auto")
    (la, ca, ga), (lb, cb, gb) = res
    torch.testing.assert_close(lb, la, atol=1e-4, rtol=1e-5)
    assert ca == cb
    for a, b in zip(ga, gb):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_attention_custom_op_through_triton_in_the_interpreter():
    """The compiled path of the Triton kernels: the custom op's forward and backward (lse saved)."""
    from masklab.kernels.custom_ops import varlen_attention_compiled

    g = torch.Generator().manual_seed(0)
    cu = torch.tensor([0, 5, 37], dtype=torch.int32)
    q, k, v = (torch.randn(37, 2, 16, generator=g, requires_grad=True) for _ in range(3))
    out = varlen_attention_compiled(q, k, v, cu, cu, 32, 32, None, None, "triton")
    ref = kernels.varlen_attention(q, k, v, cu, cu, 32, 32, backend="torch")
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    gout = torch.randn(out.shape, generator=g)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), gout), torch.autograd.grad(ref, (q, k, v), gout)):
        torch.testing.assert_close(a, b, atol=4e-4, rtol=4e-4)


def test_compile_default_is_on_for_cuda_only():
    assert compile_enabled(None, torch.device("cuda")) and not compile_enabled(None, torch.device("cpu"))
    assert compile_enabled(True, torch.device("cpu")) and not compile_enabled(False, torch.device("cuda"))
    cfg = load_config("configs/smoke_cpu.yaml", [])
    assert cfg.train.compile is None and cfg.train.allow_tf32 is True
    with pytest.raises(Exception, match="compile"):
        load_config("configs/smoke_cpu.yaml", ["train.compile=sometimes"])


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_attention_custom_op_carries_window_positions(backend):
    """The op's positions argument: the window over true positions, forward and backward."""
    from masklab.kernels.custom_ops import varlen_attention_compiled

    g = torch.Generator().manual_seed(1)
    cu = torch.tensor([0, 6, 40], dtype=torch.int32)
    pos = torch.cat([torch.tensor([0, 2, 3, 7, 8, 12]), torch.arange(34) * 2 + (torch.arange(34) > 20)])
    q, k, v = (torch.randn(40, 2, 16, generator=g, requires_grad=True) for _ in range(3))
    out = varlen_attention_compiled(q, k, v, cu, cu, 34, 34, None, 6, backend, pos)
    ref = kernels.varlen_attention(q, k, v, cu, cu, 34, 34, window=6, positions=pos, backend="torch")
    rows = kernels.varlen_attention(q, k, v, cu, cu, 34, 34, window=6, backend="torch")
    assert (ref - rows).abs().max() > 1e-2  # the positions matter here
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    gout = torch.randn(out.shape, generator=g)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), gout), torch.autograd.grad(ref, (q, k, v), gout)):
        torch.testing.assert_close(a, b, atol=4e-4, rtol=4e-4)
