"""Train once / choose on validation / score several test sets; predict; plain-sklearn parity."""
import json

import numpy as np
import pytest

from masklab.downstream.evaluation import metrics as M
from masklab.downstream.classifiers.models import Settings
from masklab.downstream.evaluation.crosssource import evaluate, load_split
from masklab.errors import MaskLabError


def _emb_dir(d, X, y, lang="en"):
    d.mkdir(parents=True)
    np.save(d / "embeddings.npy", X.astype(np.float32))
    np.save(d / "labels.npy", y.astype(np.int64))
    (d / "texts.jsonl").write_text("".join(json.dumps({"text": f"row {i}", "label": int(v), "lang": lang,
                                                       "grp": f"g{i // 4}"}) + "\n" for i, v in enumerate(y)))
    (d / "meta.json").write_text(json.dumps({"encoder": {"kind": "precomputed", "path": "toy"}, "source": d.name}))
    return d


def _blobs(n, seed, shift=1.5):
    rng = np.random.default_rng(seed)
    y = np.array([0, 1] * (n // 2))
    return rng.normal(size=(n, 8)) + y[:, None] * shift, y


@pytest.fixture
def splits(tmp_path):
    return {name: _emb_dir(tmp_path / name, *_blobs(n, seed, shift)) for name, n, seed, shift in
            [("train", 80, 0, 1.5), ("val", 60, 1, 1.5), ("test_a", 60, 2, 1.5), ("test_b", 60, 3, 0.7)]}


def test_train_once_choose_on_validation_score_each_test(splits, tmp_path):
    res = evaluate(load_split(splits["train"]), [load_split(splits["test_a"]), load_split(splits["test_b"])],
                   tmp_path / "out", ["lr", "gnb"], val=load_split(splits["val"]), target_fpr=0.1, n_boot=20)
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {"test_a", "test_b", "validation", "bundle", "summary.json"}
    chosen = res["chosen"]
    assert chosen == max(("lr", "gnb"), key=lambda n: res["validation"][n]["roc_auc"]["mean"])
    from masklab.downstream.classifiers.bundle import load_bundle
    from masklab.downstream.classifiers.models import fit, scores

    b = load_bundle(out / "bundle")
    Xtr, ytr = np.load(splits["train"] / "embeddings.npy"), np.load(splits["train"] / "labels.npy")
    Xva, yva = np.load(splits["val"] / "embeddings.npy"), np.load(splits["val"] / "labels.npy")
    sva = scores(fit(chosen, Xtr, ytr), Xva)  # the model is fitted on train only, thresholds from val
    assert b.info["threshold"] == pytest.approx(M.threshold_for_fpr(yva, sva, 0.1))
    assert b.info["calibration"]["method"] == "platt" and b.info["trained_on"] == "train"
    for t in ("test_a", "test_b"):
        r = json.loads((out / t / "results.json").read_text())
        assert r["kind"] == "cross" and r["test"] == t and set(r["results"]) == {"lr", "gnb"}
        s = r["results"][chosen]["summary"]
        assert {"fpr_at_target_fpr_threshold", "tpr_at_target_fpr_threshold", "fpr_at_target_tpr_threshold", "brier"} <= set(s)
        assert s["roc_auc"]["n"] == 1
    # the choice never looks at test data: relabelling a test set changes nothing chosen
    yb = np.load(splits["test_b"] / "labels.npy")
    np.save(splits["test_b"] / "labels.npy", yb[::-1].copy())
    res2 = evaluate(load_split(splits["train"]), [load_split(splits["test_b"])], tmp_path / "out2", ["lr", "gnb"],
                    val=load_split(splits["val"]), target_fpr=0.1, n_boot=0)
    assert res2["chosen"] == chosen
    assert json.loads((tmp_path / "out2" / "bundle" / "bundle.json").read_text())["threshold"] == b.info["threshold"]


def test_validation_carved_from_train_by_group_and_tfidf_on_text(splits, tmp_path):
    res = evaluate(load_split(splits["train"]), [load_split(splits["test_a"])], tmp_path / "out", ["lr", "tfidf"],
                   group_column="grp", calibration="isotonic", n_boot=0, grid=True)
    val = [json.loads(x) for x in (tmp_path / "out" / "validation" / "texts.jsonl").read_text().splitlines()]
    assert 8 <= len(val) <= 24
    train_groups = {f"g{i // 4}" for i in range(80)} - {r["grp"] for r in val}
    assert train_groups and not train_groups & {r["grp"] for r in val}  # no group on both sides
    assert set(res["tests"]["test_a"]) == {"lr", "tfidf"}
    with pytest.raises(MaskLabError, match="no column 'nope' for --group-column"):
        evaluate(load_split(splits["train"]), [load_split(splits["test_a"])], tmp_path / "o3", ["lr"], group_column="nope")
    assert not (tmp_path / "o3").exists()


def test_pipeline_reproduces_plain_sklearn_auc(minilm, tmp_path):
    """MiniLM embeddings from sentence-transformers itself (that `embed` equals them is
    test_encoders' job) and the same LR settings: the classify --train/--test path's test AUC
    equals plain scikit-learn's within 0.005. Train: English user prompts; test: the rest."""
    st = pytest.importorskip("sentence_transformers")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from masklab.downstream.data.labelled import load_bastion

    data = load_bastion()
    tr = np.array([l == "en" and c == "user_input" for l, c in zip(data.columns["lang"], data.columns["channel"])])
    X = st.SentenceTransformer(str(minilm), device="cpu").encode(data.texts, convert_to_numpy=True)
    plain = LogisticRegression(max_iter=5000).fit(X[tr], data.labels[tr])
    ref = roc_auc_score(data.labels[~tr], plain.decision_function(X[~tr]))
    a, b = _emb_dir(tmp_path / "tr", X[tr], data.labels[tr]), _emb_dir(tmp_path / "te", X[~tr], data.labels[~tr])
    # --val given (here the test rows: nothing chosen matters to AUC), so train is used whole, as sklearn's
    res = evaluate(load_split(a), [load_split(b)], tmp_path / "out", ["lr"], val=load_split(b),
                   settings=Settings(C=1.0, scale="none", normalize="l2"), n_boot=0)
    ours = res["tests"]["te"]["lr"]["summary"]["roc_auc"]["mean"]
    assert 0.5 < ref and abs(ours - ref) < 0.005, (ours, ref)


def test_predict_cli_bundle_and_finetuned(splits, tiny_bert_dir, tmp_path, capsys):
    from masklab.cli import main
    from masklab.downstream.data.labelled import from_records
    from masklab.downstream.finetuning.run import finetune
    from masklab.downstream.finetuning.model import FinetuneConfig

    from .toydata import toy_rows

    data = from_records(toy_rows(2), "prompt", "y", source="toy")
    finetune(str(tiny_bert_dir), data, tmp_path / "ft", FinetuneConfig(epochs=1, max_steps=2, batch_size=8))
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in toy_rows(1)))
    for model in (tmp_path / "ft", tmp_path / "ft" / "model"):
        rc = main(["predict", "--model", str(model), "--data", str(tmp_path / "in.jsonl"), "--text-column", "prompt",
                   "--label-column", "y", "--out", str(tmp_path / "pred.jsonl")])
        assert rc == 0
        rows = [json.loads(x) for x in (tmp_path / "pred.jsonl").read_text().splitlines()]
        assert len(rows) == 12 and {"label", "score", "text"} <= set(rows[0])
        assert "metrics: accuracy" in capsys.readouterr().out
    rc = main(["predict", "--model", str(splits["train"]), "--text", "x"])
    assert rc == 2 and "neither a classifier bundle" in capsys.readouterr().err
