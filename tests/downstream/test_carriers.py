"""Document carriers (augmentation and carried test sets), chunked max-pool scoring and the
validation-chosen threshold of fine-tuned models."""
import json
import subprocess
import sys

import numpy as np
import pytest

from masklab.downstream.data.carriers import CarrierSpec, carried, carrier_paragraphs, html_paragraphs
from masklab.downstream.data.labelled import from_records, load_labelled
from masklab.downstream.finetuning.run import finetune
from masklab.downstream.finetuning.model import FinetuneConfig, load_finetuned
from masklab.downstream.finetuning.training import predict_logodds
from masklab.errors import DataError, MaskLabError

from .toydata import toy_rows

PARAS = [f"carrier paragraph number {i} talks about disks, packages and networks at some length." for i in range(30)]


def _toy(n_rep=2):
    return from_records(toy_rows(n_rep), "prompt", "y", source="toy")


def test_html_paragraphs_reads_p_and_docbook_para_divs(tmp_path):
    f = tmp_path / "a.html"
    f.write_text('<html><body><h1>Title</h1><p>First &amp; <b>bold</b>\n  text.</p>'
                 '<div class="para">Second <div class="para">nested</div> tail</div>'
                 '<div class="note">not a paragraph</div></body></html>')
    assert html_paragraphs(f) == ["First & bold text.", "Second nested tail"]


def test_carried_keeps_labels_places_every_prompt_and_is_deterministic():
    data = _toy()
    spec = CarrierSpec("unused", copies=2, context_chars=(100, 300), plain=0.5, seed=3)
    a = carried(data, spec, keep_original=True, paras=PARAS, plain_columns={"lang": "xx"})
    n, n_plain = len(data), int(round(0.5 * len(data)))
    assert len(a) == n + 2 * n + n_plain
    np.testing.assert_array_equal(a.labels[:n], data.labels)
    np.testing.assert_array_equal(a.labels[n:3 * n], np.repeat(data.labels, 2))
    assert (a.labels[3 * n:] == 0).all() and a.columns["lang"][3 * n:] == ["xx"] * n_plain
    for j in range(n, 3 * n):
        row = (j - n) // 2
        doc = a.texts[j]
        assert data.texts[row] in doc.split("\n\n")  # the prompt, whole, at a paragraph boundary
        assert len(doc) - len(data.texts[row]) >= 100  # at least the minimum of carrier text around it
        assert a.columns["lang"][j] == data.columns["lang"][row] and a.columns["carrier"][j] == "unused"
    b = carried(data, spec, keep_original=True, paras=PARAS, plain_columns={"lang": "xx"})
    assert a.texts == b.texts
    other = carried(data, spec, keep_original=True, stream=1, paras=PARAS)
    assert other.texts[n:] != a.texts[n:]  # validation draws its documents apart from training


def test_carrier_sources_fail_clearly(tmp_path):
    n_pydoc = len(carrier_paragraphs("pydoc"))
    assert n_pydoc > 1000
    (tmp_path / "mine.txt").write_text("\n\n".join(PARAS))
    assert len(carrier_paragraphs(f"pydoc, {tmp_path / 'mine.txt'}")) == n_pydoc + len(PARAS)  # a mix of sources
    with pytest.raises(DataError, match="not 'pydoc', 'handbook:LANG' or an existing"):
        carrier_paragraphs(str(tmp_path / "missing.txt"))
    (tmp_path / "short.txt").write_text("tiny\n\nalso tiny\n")
    with pytest.raises(DataError, match="0 paragraphs of >= 40 characters"):
        carrier_paragraphs(str(tmp_path / "short.txt"))
    with pytest.raises(DataError, match="handbook:zz-ZZ"):
        carrier_paragraphs("handbook:zz-ZZ")
    with pytest.raises(DataError, match="copies and plain must be >= 0"):
        carried(_toy(), CarrierSpec("x", copies=-1), True, paras=PARAS)


def test_carry_cli_writes_a_labelled_file_and_refuses_bad_input(tmp_path):
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps({"text": r["prompt"], "label": r["y"], "lang": r["lang"]}) + "\n"
                           for r in toy_rows(1)))
    (tmp_path / "carrier.txt").write_text("\n\n".join(PARAS))
    out = tmp_path / "carried.jsonl"
    cmd = [sys.executable, "-m", "masklab.cli", "carry", "--data", str(src), "--carriers", str(tmp_path / "carrier.txt"),
           "--copies", "2", "--plain", "1", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    back = load_labelled(str(out))
    assert len(back) == 3 * len(toy_rows(1)) and int(back.labels.sum()) == 2 * sum(
        x["y"] == "malicious" for x in toy_rows(1))
    bad = subprocess.run(cmd[:-1] + [str(tmp_path / "bad.jsonl"), "--context-chars", "300"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "--context-chars takes MIN,MAX" in bad.stderr
    assert not (tmp_path / "bad.jsonl").exists()


def test_chunked_scores_are_the_max_over_windows(tiny_bert_dir, tmp_path):
    """A text within max_length scores as truncation does; a longer one takes the max over its
    windows (transformers' overflowing windows: the first is truncation's input, consecutive ones
    share `stride` tokens, the last reaches the end), and the first window is one of them."""
    from transformers import AutoTokenizer

    from masklab.downstream.finetuning.engine import predict
    from masklab.downstream.finetuning.training import windows

    cfg = FinetuneConfig(epochs=1, max_steps=2, batch_size=8, max_length=16, test_fraction=0.0, seed=0)
    finetune(str(tiny_bert_dir), _toy(), tmp_path / "ft", cfg)
    model, tok, c = load_finetuned(tmp_path / "ft" / "model")
    short = [_toy().texts[0]]
    long_text = " ".join(_toy().texts[:6])
    chunk = c.__class__(**{**vars(c), "long": "chunk", "chunk_stride": 4})
    np.testing.assert_allclose(predict_logodds(model, tok, short, chunk), predict_logodds(model, tok, short, c))
    enc, owner = windows(tok, [long_text], 16, 4)
    hf = AutoTokenizer.from_pretrained(tiny_bert_dir)(long_text, truncation=True, max_length=16, stride=4,
                                                      return_overflowing_tokens=True)["input_ids"]
    assert len(hf) >= 3 and [w.tolist() for w in enc.ids] == hf and owner.tolist() == [0] * len(hf)
    lg = predict(model, enc).double()
    got = predict_logodds(model, tok, [long_text], chunk)[0]
    assert got == pytest.approx(float((lg[:, 1] - lg[:, 0]).max()), abs=1e-6)
    assert got >= predict_logodds(model, tok, [long_text], c)[0] - 1e-6


def test_finetune_threshold_is_chosen_on_validation_and_used_by_predict(tiny_bert_dir, tmp_path):
    from masklab.downstream.evaluation import metrics as M
    from masklab.downstream.predict import load_model

    data = _toy(3)
    lang = np.asarray(data.columns["lang"])
    train, val = data.subset(np.flatnonzero(lang != "en")), data.subset(np.flatnonzero(lang == "en"))
    cfg = FinetuneConfig(epochs=2, lr=5e-3, batch_size=8, max_length=32, test_fraction=0.0, target_fpr=0.25, seed=1)
    r = finetune(str(tiny_bert_dir), train, tmp_path / "ft", cfg, val_data=val)
    model, tok, saved = load_finetuned(r["model_dir"])
    s_val = predict_logodds(model, tok, val.texts, saved)
    assert saved.threshold == pytest.approx(M.threshold_for_fpr(val.labels, s_val, 0.25)) == r["threshold"]
    assert M.rates_at_threshold(val.labels, s_val, saved.threshold)["fpr"] <= 0.25
    scorer = load_model(tmp_path / "ft")
    p = scorer.predict(val.texts)
    np.testing.assert_array_equal(p["label"], (p["score"] >= saved.threshold).astype(int))
    assert scorer.info["threshold"] == saved.threshold


def test_finetune_augments_train_and_validation_but_never_the_test(tiny_bert_dir, tmp_path):
    data = _toy(2)
    lang = np.asarray(data.columns["lang"])
    train, val = data.subset(np.flatnonzero(lang != "en")), data.subset(np.flatnonzero(lang == "en"))
    (tmp_path / "c.txt").write_text("\n\n".join(PARAS))
    cfg = FinetuneConfig(epochs=1, max_steps=1, batch_size=8, max_length=32, seed=0,
                         augment=str(tmp_path / "c.txt"), augment_copies=2, augment_plain=0.5)
    finetune(str(tiny_bert_dir), train, tmp_path / "ft", cfg, val_data=val, test_data=[val])
    sizes = json.loads((tmp_path / "ft" / "finetune.json").read_text())["sizes"]
    T, V = len(train), len(val)
    assert sizes == {"train": 3 * T + round(0.5 * T), "val": 3 * V + round(0.5 * V), f"test_{val.source}": V}


@pytest.mark.parametrize("field, value, message", [("long", "sliding", "long must be truncate or chunk"),
                                                   ("target_fpr", 1.0, "target_fpr must be in"),
                                                   ("augment_copies", 0, "augment_copies must be >= 1")])
def test_finetune_bad_settings_fail_before_training(tiny_bert_dir, tmp_path, field, value, message):
    with pytest.raises(MaskLabError, match=message):
        finetune(str(tiny_bert_dir), _toy(), tmp_path / "ft", FinetuneConfig(**{field: value}))
    assert not (tmp_path / "ft").exists()
