"""Issue 35 (hostile files), downstream side: model folders with custom code or only pickles,
absurd HF configs, numeric labels, bundles without an encoder hash or with NaN numbers."""
import json
import math
import pickle
import shutil

import numpy as np
import pytest

from masklab.errors import CheckpointError, ConfigError, DataError, MaskLabError


# --- item 4: auto_map folders and .bin-only fine-tuned folders ----------------------------------
def _auto_map_dir(src, dst, marker):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}
    (dst / "config.json").write_text(json.dumps(cfg))
    (dst / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('pwned')\n"
        "from transformers import BertConfig\nclass EvilConfig(BertConfig):\n    model_type = 'bert'\n")
    return dst


def test_auto_map_folder_is_refused_before_any_code_runs(tiny_bert_dir, tmp_path):
    from masklab.downstream.encoders.load import load_encoder
    from masklab.pretrain import import_hf

    marker = tmp_path / "pwned"
    d = _auto_map_dir(tiny_bert_dir, tmp_path / "evil", marker)
    for load in (lambda: load_encoder(d, kind="hf"), lambda: load_encoder(d, kind="hf", random_init=True),
                 lambda: import_hf(d)):
        with pytest.raises(CheckpointError, match=r"config.json declares auto_map \(custom model code: "
                                                  r"configuration_evil.py\); MaskLab never runs code") as e:
            load()
        assert "trust_remote_code" not in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


def test_finetuned_folder_with_only_pickled_weights_is_never_unpickled(tmp_path):
    from masklab.downstream.finetuning.model import load_finetuned

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    d = tmp_path / "ft"
    d.mkdir()
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(Evil()))
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1,
                                               "num_attention_heads": 1, "intermediate_size": 8}))
    (d / "masklab_finetune.json").write_text(json.dumps({"pooling": "cls"}))
    with pytest.raises(CheckpointError, match=r"has only pickled weights \(pytorch_model.bin\); MaskLab loads "
                                              r"safetensors only"):
        load_finetuned(d)
    assert not marker.exists()


# --- item 6: an HF config promising a huge model -------------------------------------------------
def test_huge_hf_config_is_refused_for_embedding_and_finetuning(tiny_bert_dir, tmp_path):
    from masklab.downstream.encoders.load import load_encoder
    from masklab.downstream.finetuning.model import build

    d = tmp_path / "huge"
    shutil.copytree(tiny_bert_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(hidden_size=2 ** 20, num_attention_heads=2)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"hidden_size=1048576.*but the weight files hold"):
        load_encoder(d, kind="hf")
    with pytest.raises(ConfigError, match=r"hidden_size=1048576.*but the weight files hold"):
        build(d, "cls", 0)
    with pytest.raises(ConfigError, match=r"hidden_size=1048576.*fp32 weights need [\d.,]+ TiB, but only"):
        load_encoder(d, kind="hf", random_init=True)  # no weights to compare with: the machine decides


# --- item 12: numeric labels other than 0/1 ------------------------------------------------------
def test_numeric_labels_other_than_0_1_need_positive_label():
    from masklab.downstream.data.labelled import from_records

    rows = [{"text": f"t{i}", "label": 1 + i % 2} for i in range(6)]
    with pytest.raises(DataError, match=r"numeric labels \['1', '2'\] are not 0/1.*pass --positive-label"):
        from_records(rows, "text", "label")
    d = from_records(rows, "text", "label", positive_label="2")
    assert d.labels.tolist() == [0, 1, 0, 1, 0, 1] and d.label_names == {0: "1", 1: "2"}
    for vals in ([-1, 1], ["1", "3"]):
        with pytest.raises(DataError, match="--positive-label"):
            from_records([{"text": "a", "label": vals[0]}, {"text": "b", "label": vals[1]}], "text", "label")
    for vals in ([0, 1], [0.0, 1.0], ["0", "1"], [False, True]):  # still read without a flag: 1 is positive
        d = from_records([{"text": "a", "label": vals[0]}, {"text": "b", "label": vals[1]}], "text", "label")
        assert d.labels.tolist() == [0, 1]


# --- item 13: bundles --------------------------------------------------------------------------
def _bundle(tmp_path, separable, spec):
    from masklab.downstream.classifiers.bundle import save_bundle
    from masklab.downstream.classifiers.models import make_classifier

    X, y = separable
    return save_bundle(tmp_path / "b", make_classifier("lr").fit(X, y), "lr", spec, 0.0, {0: "benign", 1: "malicious"})


def test_bundle_without_encoder_hash_is_refused(tiny_bert_dir, separable, tmp_path):
    from masklab.downstream.classifiers.bundle import load_bundle
    from masklab.downstream.encoders.load import encoder_from_spec

    b = _bundle(tmp_path, separable, {"kind": "hf", "path": str(tiny_bert_dir)})
    with pytest.raises(MaskLabError, match=r"encoder spec has no weights_sha256.*re-run `masklab classify`"):
        load_bundle(b)
    with pytest.raises(CheckpointError, match="has no weights_sha256"):
        encoder_from_spec({"kind": "hf", "path": str(tiny_bert_dir)})


@pytest.mark.parametrize("where", ["threshold", "coef", "bare"])
def test_nan_threshold_or_coefficients_are_refused(separable, tmp_path, where):
    from safetensors.numpy import load_file, save_file

    from masklab.downstream.classifiers.bundle import load_bundle

    b = _bundle(tmp_path, separable, {"kind": "precomputed"})
    info = json.loads((b / "bundle.json").read_text())
    if where == "threshold":
        info["threshold"] = float("nan")  # json.dumps writes bare NaN, as the old bundles could
        (b / "bundle.json").write_text(json.dumps(info))
        match = r"bundle.json is not valid JSON: NaN is not a JSON number"
    elif where == "bare":
        (b / "bundle.json").write_text(json.dumps(info).replace('"threshold": 0.0', '"threshold": "nan"'))
        match = r"threshold 'nan' is not a number"
    else:
        arrays = load_file(str(b / "arrays.safetensors"))
        arrays["clf.coef_"][0, 3] = np.nan
        save_file(arrays, str(b / "arrays.safetensors"))
        match = r"step clf's fitted coef_ holds 1 NaN/infinite value"
    with pytest.raises(MaskLabError, match=match):
        load_bundle(b)
    if where == "threshold":  # and none is written
        from masklab.downstream.classifiers.bundle import save_bundle
        with pytest.raises(MaskLabError, match="refusing to save a bundle with decision threshold nan"):
            save_bundle(tmp_path / "b2", None, "lr", {"kind": "precomputed"}, float("nan"))
        assert not (tmp_path / "b2").exists()


def test_written_json_is_always_valid(tmp_path):
    from masklab.downstream.run_files import dumps, write_json

    obj = {"auc": float("nan"), "sd": np.float64("inf"), "scores": np.array([1.0, np.nan]), "n": np.int64(3)}
    write_json(tmp_path / "r.json", obj)

    def strict(name):
        raise ValueError(f"invalid JSON constant {name}")
    back = json.loads((tmp_path / "r.json").read_text(), parse_constant=strict)
    assert back == {"auc": None, "sd": None, "scores": [1.0, None], "n": 3}
    assert json.loads(dumps({"x": math.nan}), parse_constant=strict) == {"x": None}
