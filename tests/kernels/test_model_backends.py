"""The model gives the same loss and gradients with kernels.backend=triton (interpreted) as with torch,
and the backend is the model's own: two models with different backends live in one process."""
import numpy as np
import pytest
import torch

from masklab.config import load_config
from masklab.data_prep import ShardSet
from masklab.pretrain.data.collator import Collator
from masklab.pretrain.model import build_model


@pytest.mark.parametrize("extra", [[], ["masking.insertion=late", "masking.insert_layer=1"],
                                   ["model.sparse_prediction=last_layer"],
                                   ["model.preset=modernbert", "model.local_window=8", "model.global_attn_every=2",
                                    "model.layer_norm_eps=1e-5"],
                                   # a local layer below the insertion layer: its window over true positions
                                   ["model.preset=modernbert", "model.local_window=4", "model.global_attn_every=3",
                                    "model.layer_norm_eps=1e-5", "model.num_layers=3", "masking.insertion=late",
                                    "masking.insert_layer=2", "masking.rate=0.4"]])
def test_triton_and_torch_backends_agree(prepared_data, extra):
    cfg = load_config("configs/smoke_cpu.yaml", [f"data.shards={prepared_data}", "data.seq_len=40",
                                                 "model.hidden_size=64", "model.num_layers=2", "model.num_heads=2",
                                                 "model.intermediate_size=96", "model.hidden_dropout=0", *extra])
    shards = ShardSet(prepared_data)
    batch = Collator(cfg, shards)(np.arange(4), 0)
    models = {}
    for backend in ("torch", "triton"):  # both alive at once, same weights
        torch.manual_seed(0)
        models[backend] = build_model(cfg.model, shards.tokenizer, cfg.masking, backend=backend)
    results = {}
    for backend, model in models.items():
        out = model(batch)
        grads = torch.autograd.grad(out["loss_sum"], list(model.parameters()))
        results[backend] = (out["loss_sum"].detach(), int(out["n_correct"]), grads)
    (la, ca, ga), (lb, cb, gb) = results["torch"], results["triton"]
    torch.testing.assert_close(la, lb, atol=1e-4, rtol=1e-5)
    assert ca == cb
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_each_model_uses_its_own_backend(prepared_data):
    """No process-wide backend: a model built for a backend that cannot run here fails, while a
    torch model beside it in the same process keeps working."""
    cfg = load_config("configs/smoke_cpu.yaml", [f"data.shards={prepared_data}", "data.seq_len=24",
                                                 "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2",
                                                 "model.intermediate_size=32"])
    shards = ShardSet(prepared_data)
    batch = Collator(cfg, shards)(np.arange(2), 0)
    ok = build_model(cfg.model, shards.tokenizer, backend="torch").eval()
    cuda_only = build_model(cfg.model, shards.tokenizer, backend="flash_attn")  # needs CUDA tensors
    before = ok(batch)["loss_sum"]
    with pytest.raises(RuntimeError, match="flash_attn"):
        cuda_only(batch)
    assert torch.equal(ok(batch)["loss_sum"], before)


def test_model_level_comparison_sees_set_backend_and_catches_a_broken_triton(prepared_data, monkeypatch):
    """The GPU test's comparison (tests/gpu/compare.py) on CPU under the interpreter: the model is built
    with backend="auto" and set_backend("triton") must reach it (before, "auto" beat it and the test
    compared torch with torch). A Triton attention broken on purpose must fail the comparison."""
    import masklab.kernels.triton_attention as TA
    from tests.gpu.compare import assert_runs_agree, model_runs

    cfg = load_config("configs/smoke_cpu.yaml", [f"data.shards={prepared_data}", "data.seq_len=24",
                                                 "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2",
                                                 "model.intermediate_size=32", "model.hidden_dropout=0"])
    shards = ShardSet(prepared_data)
    batch = Collator(cfg, shards)(np.arange(3), 0)
    model = build_model(cfg.model, shards.tokenizer, backend="auto")
    calls = []
    real = TA.varlen_attention_triton

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(TA, "varlen_attention_triton", counted)
    assert_runs_agree(model_runs(model, batch), rtol=1e-4, grad_rtol=1e-3)
    assert calls, "the Triton attention never ran"
    monkeypatch.setattr(TA, "varlen_attention_triton", lambda *a, **k: real(*a, **k) * 1.2)  # broken on purpose
    with pytest.raises(AssertionError, match="torch vs triton differ"):
        assert_runs_agree(model_runs(model, batch), rtol=1e-4, grad_rtol=5e-2)  # the GPU test's grad limit
