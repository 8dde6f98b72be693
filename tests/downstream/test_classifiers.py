"""Classifiers, stratified CV, saved bundles."""
import numpy as np
import pytest

from masklab.downstream.classifiers.models import Settings, cross_validate, make_classifier, scores, stratified_folds
from masklab.errors import DataError


def test_folds_are_stratified_and_deterministic(separable):
    _, y = separable
    a, b, c = stratified_folds(y, 5, 0), stratified_folds(y, 5, 0), stratified_folds(y, 5, 1)
    assert all(np.array_equal(x[1], z[1]) for x, z in zip(a, b))
    assert not all(np.array_equal(x[1], z[1]) for x, z in zip(a, c))
    tests = np.concatenate([te for _, te in a])
    assert sorted(tests.tolist()) == list(range(len(y)))  # a partition
    for _, te in a:
        assert y[te].sum() == 6  # 30 positives / 5 folds


def test_one_fold_is_one_clear_error(separable):
    """Issue 14.12: `--folds 1` used to print a self-contradicting message."""
    _, y = separable
    for folds in (1, 0):
        with pytest.raises(DataError, match=f"--folds {folds}: cross-validation needs at least 2 folds"):
            stratified_folds(y, folds, 0)


def test_cross_validate_summary_and_determinism(separable):
    X, y = separable
    r1 = cross_validate(X, y, ["lr", "gnb"], folds=3, seeds=(0, 1), n_boot=50)
    r2 = cross_validate(X, y, ["lr", "gnb"], folds=3, seeds=(0, 1), n_boot=50)
    s = r1["lr"]["summary"]
    assert s["roc_auc"]["n"] == 6 and s["roc_auc"]["mean"] > 0.8
    assert {"fpr_at_target_tpr_threshold", "tpr_at_target_tpr_threshold", "tpr_at_1pct_fpr", "pr_auc"} <= set(s)
    assert r1["lr"]["summary"] == r2["lr"]["summary"] and r1["gnb"]["ci"] == r2["gnb"]["ci"]
    assert len(r1["lr"]["oof"]["score"]) == len(y) and np.isfinite(r1["lr"]["oof"]["score"]).all()


def test_grid_search_runs(separable):
    X, y = separable
    r = cross_validate(X, y, ["lr"], folds=3, seeds=(0,), grid=True, n_boot=0, target_tpr=0)
    assert r["lr"]["summary"]["roc_auc"]["mean"] > 0.8


def test_too_few_examples_for_folds():
    with pytest.raises(DataError, match="needs >= 5 examples of each class"):
        stratified_folds(np.array([0] * 10 + [1] * 3), 5, 0)


def test_one_fold_is_a_clear_error():
    with pytest.raises(DataError, match="at least 2 folds.*--train/--val/--test"):
        stratified_folds(np.array([0] * 10 + [1] * 10), 1, 0)


def test_settings_shape_the_pipeline_and_are_validated(separable):
    X, y = separable
    assert [n for n, _ in make_classifier("lr").steps] == ["norm", "clf"]  # sentence-embedding default
    steps = make_classifier("svm_rbf", settings=Settings(scale="standard", normalize="none")).steps
    assert [n for n, _ in steps] == ["scale", "clf"]
    assert make_classifier("lr", settings=Settings(C=0.25)).named_steps["clf"].C == 0.25
    a = scores(make_classifier("lr").fit(X, y), X)
    from masklab.downstream.classifiers.models import fit

    b = scores(fit("lr", X, y, settings=Settings(class_weight="balanced")), X)
    assert not np.allclose(a, b)  # sample weights reach the estimator
    for bad, needle in [({"C": 0.0}, "--C"), ({"class_weight": "auto"}, "--class-weight"), ({"scale": "minmax"}, "--scale")]:
        with pytest.raises(Exception, match=needle):
            Settings(**bad)


