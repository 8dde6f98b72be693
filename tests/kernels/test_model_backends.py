"""The model gives the same loss and gradients with kernels.backend=triton (interpreted) as with torch."""
import numpy as np
import pytest
import torch

from masklab import kernels
from masklab.data_prep import ShardSet
from masklab.config import load_config
from masklab.pretrain.data import Collator
from masklab.pretrain.model import build_model


@pytest.mark.parametrize("extra", [[], ["masking.insertion=late", "masking.insert_layer=1"],
                                   ["model.sparse_prediction=last_layer"],
                                   ["model.preset=modernbert", "model.local_window=8", "model.global_attn_every=2",
                                    "model.layer_norm_eps=1e-5"]])
def test_triton_and_torch_backends_agree(prepared_data, extra):
    cfg = load_config("configs/smoke_cpu.yaml", [f"data.shards={prepared_data}", "data.seq_len=40",
                                                 "model.hidden_size=64", "model.num_layers=2", "model.num_heads=2",
                                                 "model.intermediate_size=96", "model.hidden_dropout=0", *extra])
    shards = ShardSet(prepared_data)
    batch = Collator(cfg, shards)(np.arange(4), 0)
    torch.manual_seed(0)
    model = build_model(cfg.model, shards.tokenizer, cfg.masking)
    results = {}
    for backend in ("torch", "triton"):
        kernels.set_backend(backend)
        try:
            out = model(batch)
            grads = torch.autograd.grad(out["loss_sum"], list(model.parameters()))
        finally:
            kernels.set_backend("auto")
        results[backend] = (out["loss_sum"].detach(), int(out["n_correct"]), grads)
    (la, ca, ga), (lb, cb, gb) = results["torch"], results["triton"]
    torch.testing.assert_close(la, lb, atol=1e-4, rtol=1e-5)
    assert ca == cb
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
