"""Loading labelled data (bastion, local files, bad inputs) and metrics against sklearn."""
import json

import numpy as np
import pytest

from masklab.downstream.evaluation import metrics as M
from masklab.downstream.data.labelled import CANARY, load_bastion, load_labelled
from masklab.errors import DataError


def test_bastion_rows_labels_and_canary():
    d = load_bastion()
    assert len(d) == 181 and int(d.labels.sum()) == 118 and int((d.labels == 0).sum()) == 63
    assert not any("{canary}" in t for t in d.texts)
    assert sum(CANARY in t for t in d.texts) >= 10
    assert set(d.columns) >= {"lang", "category", "channel"} and len(d.columns["lang"]) == 181
    assert d.label_names == {0: "benign", 1: "malicious"}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_local_files_with_custom_columns(tmp_path, fmt):
    import pandas as pd

    from .toydata import toy_rows

    df = pd.DataFrame(toy_rows())
    p = tmp_path / f"toy.{fmt}"
    {"jsonl": lambda: df.to_json(p, orient="records", lines=True), "csv": lambda: df.to_csv(p, index=False),
     "parquet": lambda: df.to_parquet(p)}[fmt]()
    d = load_labelled(str(p), text_column="prompt", label_column="y")
    assert len(d) == len(df) and int(d.labels.sum()) == int((df.y == "malicious").sum())
    assert d.label_names[1] == "malicious" and "lang" in d.columns
    flipped = load_labelled(str(p), text_column="prompt", label_column="y", positive_label="benign")
    assert np.array_equal(flipped.labels, 1 - d.labels)


def _write(tmp_path, rows, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(p)


def test_bad_inputs_raise_clear_errors(tmp_path):
    rows = [{"prompt": "a", "y": "malicious"}, {"prompt": "b", "y": "benign"}]
    with pytest.raises(DataError, match="no column 'text'.*columns found: prompt, y"):
        load_labelled(_write(tmp_path, rows))
    with pytest.raises(DataError, match="only one class"):
        load_labelled(_write(tmp_path, [{"text": "a", "label": 1}, {"text": "b", "label": 1}]))
    with pytest.raises(DataError, match="not binary"):
        load_labelled(_write(tmp_path, [{"text": t, "label": i} for i, t in enumerate("abc")]))
    with pytest.raises(DataError, match="cannot tell which label is positive"):
        load_labelled(_write(tmp_path, [{"text": "a", "label": "cat"}, {"text": "b", "label": "dog"}]))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_labelled(str(tmp_path / "empty.csv"))
    (tmp_path / "header.csv").write_text("text,label\n")
    with pytest.raises(DataError, match="no rows|cannot read"):
        load_labelled(str(tmp_path / "header.csv"))
    with pytest.raises(DataError, match="not found"):
        load_labelled(str(tmp_path / "missing.jsonl"))
    # multi-class is fine when binary metrics are not asked for
    d = load_labelled(_write(tmp_path, [{"text": t, "label": i} for i, t in enumerate("abc")]), binary=False)
    assert d.labels.tolist() == [0, 1, 2]


def test_missing_labels_are_refused_with_a_count_and_empty_texts_warned(tmp_path, caplog):
    # a csv with two empty label cells: datasets reads them as None/NaN; they used to become class 0
    (tmp_path / "nan.csv").write_text("text,label\na,malicious\nb,\nc,benign\nd,\n")
    with pytest.raises(DataError, match="2 of 4 rows have no 'label' value"):
        load_labelled(str(tmp_path / "nan.csv"), positive_label="malicious")
    rows = [{"text": "a", "label": 1}, {"text": float("nan"), "label": 0}]
    with pytest.raises(DataError, match="2 of 3 rows have no 'label'"):
        from masklab.downstream.data.labelled import from_records

        from_records([{"text": "a", "label": 1}, {"text": "b", "label": float("nan")}, {"text": "c", "label": None}],
                     "text", "label")
    with caplog.at_level("WARNING", logger="masklab.downstream"):
        d = load_labelled(_write(tmp_path, [{"text": "", "label": 1}, {"text": "b", "label": 0}, *rows[:1]]))
    assert len(d) == 3 and "1 of 3 texts are empty" in caplog.text
    with pytest.raises(DataError, match="every 'text' value is empty"):
        load_labelled(_write(tmp_path, [{"text": " ", "label": 1}, {"text": "", "label": 0}]))


def test_threshold_for_target_fpr_on_validation():
    y = np.array([0] * 100 + [1] * 10)
    s = np.r_[np.arange(100) / 100.0, np.full(10, 2.0)]
    t = M.threshold_for_fpr(y, s, 0.05)
    assert M.rates_at_threshold(y, s, t) == {"fpr": 0.05, "tpr": 1.0}
    assert M.rates_at_threshold(y, s, M.threshold_for_fpr(y, s, 0.0))["fpr"] == 0.0


Y = np.array([0, 0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1])
S = np.array([-2.0, 0.3, 1.2, -0.1, -1.0, 2.5, 0.8, 0.1, 3.0, -0.5, -3.0, 0.05])


def test_tpr_at_fpr_and_validation_threshold():
    # top scores: 3.0(1) 2.5(1) 1.2(1) 0.8(1) 0.3(0): 4 of 7 positives before the first false positive
    assert M.tpr_at_fpr(Y, S, 0.01) == pytest.approx(4 / 7)
    thr = M.threshold_for_tpr(Y, S, 0.95)  # must flag all 7 positives -> lowest positive score
    assert thr == pytest.approx(-0.5)
    r = M.rates_at_threshold(Y, S, thr)
    assert r["tpr"] == 1.0 and r["fpr"] == pytest.approx(2 / 5)  # benign 0.3 and 0.1 are flagged


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    a = M.bootstrap_ci(Y, S, n=200, seed=1)
    assert a == M.bootstrap_ci(Y, S, n=200, seed=1)
    assert a["roc_auc"][0] <= M.binary_metrics(Y, S)["roc_auc"] <= a["roc_auc"][1]


def test_non_binary_labels_rejected_by_metrics():
    with pytest.raises(DataError, match="not binary"):
        M.binary_metrics(np.array([0, 1, 2]), np.array([0.1, 0.2, 0.3]))


def test_fast_metrics_equal_sklearn_ones():
    rng = np.random.default_rng(3)
    for _ in range(5):
        y = rng.integers(0, 2, 60)
        s = np.round(rng.normal(size=60) + y, 1)  # rounding makes ties
        a, b = M.binary_metrics(y, s, 0.2), M.fast_metrics(y, s, 0.2)
        for k in M.ALL:
            assert b[k] == pytest.approx(a[k], abs=1e-12), k
