"""A training step reads nothing back from the device: host reads happen on log / eval / save steps only.

Counted: Tensor.item / tolist / cpu / numpy / __float__ / __int__ / __bool__ / __index__ calls made
between the moment a step's first micro-batch moves to the device (UnpaddedBatch.to) and the
loader's fetch of the next step, i.e. the whole loop body. The collator's own host work happens
while fetching and is not counted. On CPU the device is the host, so this counts every such call
in the loop body: a GPU run would have to wait for the device at each one. Not counted: calls made
from the kernels package, whose argument checks and CPU reference paths read tensors only when
they are on the CPU (`device.type == "cpu"`), where there is no device to wait for.
"""
import os
import sys

import pytest
import torch

from masklab.config import load_config
from masklab.pretrain.batch import UnpaddedBatch

KERNELS = os.sep + os.path.join("masklab", "kernels") + os.sep
READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


class _Reads:
    def __init__(self):
        self.step = None  # the 0-based step whose loop body is running; None: outside one
        self.calls: list[tuple[int, str, str]] = []  # (step, method, caller file:line)


def _patch(monkeypatch, reads: _Reads) -> None:
    import masklab.pretrain.loop.train as T

    for name in READS:
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, _name=name, **k):
            if reads.step is not None:
                where = sys._getframe(1).f_code.co_filename
                if KERNELS not in where:
                    reads.calls.append((reads.step, _name, f"{where}:{sys._getframe(1).f_lineno}"))
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)

    real_to = UnpaddedBatch.to

    def to(self, *a, **k):
        reads.step = self.step if reads.step is None else reads.step
        return real_to(self, *a, **k)

    monkeypatch.setattr(UnpaddedBatch, "to", to)
    real_loader = T.step_loader

    class Loader:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __iter__(self):
            reads.step = None  # (eval batches moved before the loop are no step's)
            for x in self.inner:
                yield x
                reads.step = None  # the loop asks for the next step: its body is over

    monkeypatch.setattr(T, "step_loader", lambda *a, **k: Loader(real_loader(*a, **k)))


@pytest.mark.parametrize("nan_at,extra", [(set(), []), ({2}, []),
                                          # Token Dropping: its plan reads no device value (issue 31 item 12)
                                          (set(), ["model.num_layers=3", "model.token_drop.rate=0.5",
                                                   "model.token_drop.start_layer=1", "model.token_drop.end_layer=2"])])
def test_no_host_reads_between_log_steps(tiny_overrides, monkeypatch, nan_at, extra):
    from masklab.pretrain.loop.train import train
    from tests.reliability.hooks import NanAt

    n = 6
    reads = _Reads()
    _patch(monkeypatch, reads)
    r = train(load_config("configs/smoke_cpu.yaml", tiny_overrides + extra + [
        f"train.max_steps={n}", f"train.log_every={n}", "data.eval_batches=0", "train.save_every=1000"]),
        hooks=NanAt(nan_at))
    assert r["step"] == n and r["last"]["nan_skipped_total"] == len(nan_at)
    # step n-1 (0-based) ends with the one log line (step n) and the final save
    assert [c for c in reads.calls if c[0] != n - 1] == []
    assert reads.calls, "the log step reads the device: the counting saw nothing, so it is not counting"


def test_skipped_step_leaves_params_and_optimizer_state_unchanged(tiny_overrides):
    """The device-side skip (fused AdamW found_inf) is exact: weights, moments and step counters."""
    from types import SimpleNamespace

    from masklab.pretrain.loop.engine import Engine
    from masklab.pretrain.loop.distributed import World

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    tc = SimpleNamespace(lr=1e-2, betas=[0.9, 0.98], eps=1e-6, weight_decay=0.01, grad_clip=1.0)
    eng = Engine(model, tc, torch.device("cpu"), World())
    x = torch.randn(3, 4)

    def step(loss_scale=1.0):
        (model(x).square().sum() * loss_scale).backward()
        return eng.step(torch.isfinite(torch.tensor(loss_scale)))

    norm, ok = step()
    assert bool(ok) and torch.isfinite(norm)
    before = ({k: v.clone() for k, v in model.state_dict().items()},
              {id(p): {k: v.clone() for k, v in s.items()} for p, s in eng.optimizer.state.items()})
    for scale in (float("nan"), float("inf")):  # a non-finite loss; inf: also non-finite gradients
        norm, ok = step(scale)
        assert not bool(ok) and torch.isnan(norm)
    with torch.no_grad():  # finite loss, non-finite gradient norm
        model[0].weight.register_hook(lambda g: g * float("inf"))
    norm, ok = step()
    assert not bool(ok) and torch.isnan(norm)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[0][k]), k
    for p, s in eng.optimizer.state.items():
        for k, v in s.items():
            assert torch.equal(v, before[1][id(p)][k]), k
    assert all(float(s["step"]) == 1.0 for s in eng.optimizer.state.values())
    assert all(p.grad is None for p in model.parameters())
