"""Saved classifier bundles with a fixed schema: nothing in a bundle can run code when loaded.

A bundle directory holds bundle.json (format, classifier name, encoder spec, decision
threshold(s), calibration, label names, the pipeline's steps) and the fitted state:
- linear models (LR, linear SVM) and their preprocessing (Normalizer, StandardScaler):
  each step's constructor parameters in bundle.json (JSON scalars only) and its fitted
  arrays in arrays.safetensors as `<step>.<attribute>`; the step class must be one of
  ARRAY_STEPS (exact classes, by name).
- XGBoost: XGBoost's own JSON model format (`<step>.xgb.json`), preprocessing as above.
- models nothing else serialises (RBF SVM, random forest, Gaussian NB, TF-IDF + LR):
  pipeline.skops, loaded only if every type in its schema is in SKOPS_TYPES (exact
  module.class names and node kinds; no functions, no module prefixes). Anything else is
  refused with the list of the untrusted types, before skops builds a single object.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from masklab.downstream.run_files import atomic_dir, write_json
from masklab.errors import MaskLabError

FORMAT = "masklab-classifier-bundle"
VERSION = 2
# step class -> fitted attributes it needs to predict
ARRAY_STEPS = {
    "sklearn.preprocessing.Normalizer": ("n_features_in_",),
    "sklearn.preprocessing.StandardScaler": ("mean_", "scale_", "var_", "n_samples_seen_", "n_features_in_"),
    "sklearn.linear_model.LogisticRegression": ("coef_", "intercept_", "classes_", "n_iter_", "n_features_in_"),
    "sklearn.svm.LinearSVC": ("coef_", "intercept_", "classes_", "n_iter_", "n_features_in_"),
}
XGB_STEP = "xgboost.XGBClassifier"
# (module.class, skops node kind) pairs that the skops-stored pipelines of classifiers.NAMES / tfidf contain
SKOPS_TYPES = frozenset({
    *((f"builtins.{t}", "JsonNode") for t in ("str", "int", "float", "bool")),
    ("builtins.str", "TypeNode"), ("builtins.dict", "DictNode"), ("builtins.list", "ListNode"),
    ("builtins.tuple", "TupleNode"), ("numpy.float64", "TypeNode"),
    *((f"numpy.{t}", "NdArrayNode") for t in ("ndarray", "float64", "float32", "int64", "int32")),
    ("sklearn.pipeline.Pipeline", "ObjectNode"),
    ("sklearn.preprocessing._data.Normalizer", "ObjectNode"),
    ("sklearn.preprocessing._data.StandardScaler", "ObjectNode"),
    ("sklearn.svm._classes.SVC", "ObjectNode"),
    ("sklearn.naive_bayes.GaussianNB", "ObjectNode"),
    ("sklearn.ensemble._forest.RandomForestClassifier", "ObjectNode"),
    ("sklearn.tree._classes.DecisionTreeClassifier", "ObjectNode"),
    ("sklearn.tree._tree.Tree", "TreeNode"),
    ("sklearn.feature_extraction.text.TfidfVectorizer", "ObjectNode"),
    ("sklearn.feature_extraction.text.TfidfTransformer", "ObjectNode"),
    ("sklearn.linear_model._logistic.LogisticRegression", "ObjectNode"),
})


def _public_name(obj) -> str:
    """'sklearn.linear_model.LogisticRegression' for an instance: the documented import path."""
    mod = type(obj).__module__.split(".")
    public = ".".join(mod[:2]) if mod[0] == "sklearn" else mod[0]
    return f"{public}.{type(obj).__name__}"


def _step_class(name: str):
    """The class for an allow-listed step name (a dict lookup: no import by name from the file)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import Normalizer, StandardScaler
    from sklearn.svm import LinearSVC

    return {"sklearn.preprocessing.Normalizer": Normalizer, "sklearn.preprocessing.StandardScaler": StandardScaler,
            "sklearn.linear_model.LogisticRegression": LogisticRegression, "sklearn.svm.LinearSVC": LinearSVC}[name]


def _storage(clf) -> str:
    kinds = {_public_name(step) for _, step in clf.steps}
    if kinds <= set(ARRAY_STEPS):
        return "arrays"
    if kinds - {XGB_STEP} <= set(ARRAY_STEPS) and _public_name(clf.steps[-1][1]) == XGB_STEP:
        return "xgboost"
    return "skops"


def save_bundle(out: str | Path, clf, name: str, encoder_spec: dict, threshold: float = 0.0,
                label_names: Optional[dict] = None, extra: Optional[dict] = None) -> Path:
    """Write a bundle directory atomically. `clf`: a fitted sklearn Pipeline whose last step is
    `clf`; encoder_spec {"kind": "text"} means the pipeline takes raw strings (TF-IDF).
    `extra` (JSON) may hold calibration, thresholds, training provenance."""
    from safetensors.numpy import save_file

    if not np.isfinite(threshold):  # a NaN threshold labels every text benign
        raise MaskLabError(f"refusing to save a bundle with decision threshold {threshold}")
    storage = _storage(clf)
    info = {"format": FORMAT, "version": VERSION, "classifier": name, "encoder": encoder_spec,
            "threshold": float(threshold), "label_names": {str(k): v for k, v in (label_names or {}).items()},
            "storage": storage, **(extra or {})}
    with atomic_dir(out) as tmp:
        if storage == "skops":
            import skops.io as sio

            sio.dump(clf, tmp / "pipeline.skops")
        else:
            arrays, steps = {}, []
            for sname, step in clf.steps:
                kind = _public_name(step)
                entry = {"name": sname, "class": kind, "params": step.get_params()}
                if kind == XGB_STEP:
                    step.save_model(tmp / f"{sname}.xgb.json")
                    entry["params"] = {}
                else:
                    entry["fitted"] = {}
                    for a in ARRAY_STEPS[kind]:
                        v = getattr(step, a)
                        if isinstance(v, np.ndarray):
                            arrays[f"{sname}.{a}"] = np.ascontiguousarray(v)
                        else:
                            entry["fitted"][a] = v.item() if isinstance(v, np.generic) else v
                steps.append(entry)
            info["steps"] = steps
            save_file(arrays, str(tmp / "arrays.safetensors"))
        write_json(tmp / "bundle.json", info)
    return Path(out)


def skops_types(path: Path) -> set[tuple[str, str]]:
    """Every (module.class, node kind) a .skops file's schema names, read as JSON."""
    try:
        with zipfile.ZipFile(path) as z:
            schema = json.loads(z.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
        raise MaskLabError(f"{path} is not a readable skops file: {e}") from None
    found, stack = set(), [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__module__" in node or "__class__" in node:
                found.add((f"{node.get('__module__')}.{node.get('__class__')}", str(node.get("__loader__"))))
            stack += node.values()
        elif isinstance(node, list):
            stack += node
    return found


def _load_skops(path: Path):
    import skops.io as sio

    bad = sorted(skops_types(path) - SKOPS_TYPES)
    if bad:
        shown = ", ".join(f"{t} ({k})" for t, k in bad[:8]) + (" ..." if len(bad) > 8 else "")
        raise MaskLabError(f"{path}: refusing to load untrusted types: {shown}")
    data = path.read_bytes()
    return sio.loads(data, trusted=sio.get_untrusted_types(data=data))


def _load_steps(p: Path, info: dict):
    from safetensors.numpy import load_file
    from sklearn.pipeline import Pipeline

    arrays = load_file(str(p / "arrays.safetensors"))
    steps = []
    for entry in info.get("steps") or []:
        kind, sname = entry.get("class"), str(entry.get("name"))
        if kind == XGB_STEP:
            from xgboost import XGBClassifier

            step = XGBClassifier()
            step.load_model(p / f"{sname}.xgb.json")
        elif kind in ARRAY_STEPS:
            params = entry.get("params") or {}
            if not all(isinstance(v, (str, int, float, bool, type(None))) for v in params.values()):
                raise MaskLabError(f"{p}/bundle.json: step {sname} has non-scalar parameters")
            try:
                step = _step_class(kind)(**params)
            except TypeError as e:
                raise MaskLabError(f"{p}/bundle.json: step {sname}: {e}") from None
            for a in ARRAY_STEPS[kind]:
                key = f"{sname}.{a}"
                if key in arrays:
                    setattr(step, a, arrays[key])
                elif a in (entry.get("fitted") or {}):
                    setattr(step, a, entry["fitted"][a])
                else:
                    raise MaskLabError(f"{p}: step {sname} misses its fitted {a}")
        else:
            raise MaskLabError(f"{p}/bundle.json: step class {kind!r} is not one of {sorted(ARRAY_STEPS) + [XGB_STEP]}")
        steps.append((sname, step))
    if not steps:
        raise MaskLabError(f"{p}/bundle.json lists no pipeline steps")
    return Pipeline(steps)


class Bundle:
    """A loaded bundle: `predict(texts)` -> {score: log-odds [N], label: int [N], probability [N]
    (calibrated, when the bundle carries a calibration)}."""

    def __init__(self, clf, info: dict, path: Path):
        self.clf, self.info, self.path = clf, info, path
        self._encoder = None

    @property
    def encoder(self):
        if self._encoder is None and self.info["encoder"]["kind"] != "text":
            from masklab.downstream.encoders.load import encoder_from_spec

            self._encoder = encoder_from_spec(self.info["encoder"])
        return self._encoder

    def features(self, texts: Sequence[str]):
        return np.asarray(list(texts), dtype=object) if self.encoder is None else self.encoder.encode(texts)

    def predict(self, texts: Sequence[str]) -> dict:
        from masklab.downstream.classifiers.calibration import apply_calibration
        from masklab.downstream.classifiers.models import scores

        s = scores(self.clf, self.features(texts))
        out = {"score": s, "label": (s >= self.info.get("threshold", 0.0)).astype(np.int64)}
        if self.info.get("calibration"):
            out["probability"] = apply_calibration(self.info["calibration"], s)
        return out


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number (a NaN/infinite value)")


def _check_numbers(p: Path, info: dict, clf) -> None:
    """A NaN threshold or coefficient labels every text benign without a word: refuse it on load.
    bundle.json is read with NaN/Infinity refused; here: the threshold(s) and every fitted array."""
    t = info.get("threshold", 0.0)
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise MaskLabError(f"{p}/bundle.json: threshold {t!r} is not a number")
    for sname, step in getattr(clf, "steps", []):
        for attr, v in vars(step).items():
            if isinstance(v, np.ndarray) and v.dtype.kind in "fc" and not np.isfinite(v).all():
                raise MaskLabError(f"{p}: step {sname}'s fitted {attr} holds {int((~np.isfinite(v)).sum())} "
                                   "NaN/infinite value(s); the bundle is damaged (re-run `masklab classify`)")


def _check_encoder_spec(p: Path, info: dict) -> None:
    """A bundle scores embeddings of one exact encoder: without the weights' sha256 it would run
    against whatever model now sits at the path."""
    from masklab.downstream.encoders.load import KINDS

    enc = info.get("encoder")
    if not isinstance(enc, dict):
        raise MaskLabError(f"{p}/bundle.json: no encoder spec")
    sha = enc.get("weights_sha256")
    if enc.get("kind") in KINDS and not (isinstance(sha, str) and len(sha) == 64):
        raise MaskLabError(f"{p}/bundle.json: the encoder spec has no weights_sha256, so nothing ties the "
                           f"classifier to the encoder at {enc.get('path')}; re-run `masklab classify`")


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle written by save_bundle; refuses other formats, untrusted content, NaN/infinite
    numbers and an encoder spec without its weights' sha256."""
    p = Path(path)
    if not (p / "bundle.json").is_file():
        raise MaskLabError(f"{p} is not a classifier bundle (no bundle.json)")
    try:
        info = json.loads((p / "bundle.json").read_text(), parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise MaskLabError(f"{p}/bundle.json is not valid JSON: {e}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("version") != VERSION:
        raise MaskLabError(f"{p} is not a version-{VERSION} {FORMAT} (re-run `masklab classify` to rebuild it)")
    _check_encoder_spec(p, info)
    storage = info.get("storage")
    if storage == "skops":
        clf = _load_skops(p / "pipeline.skops")
    elif storage in ("arrays", "xgboost"):
        clf = _load_steps(p, info)
    else:
        raise MaskLabError(f"{p}/bundle.json: unknown storage {storage!r}")
    _check_numbers(p, info, clf)
    return Bundle(clf, info, p)

