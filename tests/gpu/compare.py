"""The model-level Triton-vs-torch comparison, shared by the GPU test and its CPU (interpreter) check.

`model_runs` switches the process-wide backend (`kernels.set_backend`) and runs the same model on the
same batch once per backend, forward and backward; the model is built with `backend="auto"`, which
defers to that setting. It records which backend the dispatch chose, so a comparison of a backend with
itself cannot pass unnoticed. The loss alone is a weak witness (at initialisation attention moves the
MLM loss by ~1e-5 relative), so every parameter's gradient is compared too (relative norm of the
difference): a wrong attention output or backward changes the q/k/v/o gradients by its own size.
"""
from __future__ import annotations

import contextlib

import torch

from masklab import kernels
from masklab.kernels import dispatch


def model_runs(model, batch, backends=("torch", "triton"), autocast: torch.dtype | None = None) -> dict:
    """-> {backend: (float loss_sum, {param name: fp32 grad})}; asserts each run's attention went
    through the requested backend."""
    dev = batch.input_ids.device
    runs = {}
    try:
        for be in backends:
            kernels.set_backend(be)
            chosen = dispatch.resolve("varlen_attention", dev, model.backend, dtype=torch.float32, head_dim=64)
            assert chosen == be, f"set_backend({be!r}) resolved to {chosen!r} for a model built with " \
                                 f"backend={model.backend!r}"
            ctx = torch.autocast(dev.type, dtype=autocast) if autocast else contextlib.nullcontext()
            with ctx:
                loss = model(batch)["loss_sum"]
            names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            runs[be] = (float(loss.detach()), {n: g.float() for n, g in zip(names, grads) if g is not None})
    finally:
        kernels.set_backend("auto")
    return runs


def assert_runs_agree(runs: dict, rtol: float, grad_rtol: float) -> None:
    (la, ga), (lb, gb) = runs["torch"], runs["triton"]
    assert abs(la - lb) / abs(la) < rtol, f"model loss: torch {la:.6g} vs triton {lb:.6g} (rtol {rtol})"
    assert ga.keys() == gb.keys()
    worst = max(((float((gb[n] - ga[n]).norm() / ga[n].norm().clamp(min=1e-12)), n) for n in ga))
    assert worst[0] < grad_rtol, f"gradient of {worst[1]}: torch vs triton differ by {worst[0]:.3g} " \
                                 f"relative (limit {grad_rtol})"
