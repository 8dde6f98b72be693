"""Labelled text datasets for detection: local CSV/JSONL/Parquet, a hub name, or `bastion`.

Everything ends up as a `LabelledData`: `texts` (N strings), `labels` int64 [N] (0/1 for
binary tasks, 1 = the positive class, e.g. malicious) and `columns` (the other columns,
e.g. `lang`, kept for per-language breakdowns and reports).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from masklab.errors import DataError

log = logging.getLogger("masklab.downstream")

# bastioncorpus rows may carry one `{canary}` slot that its probe runner fills with a secret;
# we fill it with one fixed string so the text is realistic and runs are reproducible.
CANARY_SLOT = "{canary}"
CANARY = "CANARY-7f3a9c2e"
BASTION = "bastion"
# label strings taken as the positive class when --positive-label is not given
POSITIVE_NAMES = {"malicious", "injection", "prompt_injection", "jailbreak", "attack", "unsafe", "harmful",
                  "positive", "true", "yes"}
_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass
class LabelledData:
    texts: list[str]
    labels: np.ndarray  # int64 [N]
    source: str
    label_names: dict[int, str] = field(default_factory=lambda: {0: "benign", 1: "malicious"})
    columns: dict[str, list] = field(default_factory=dict)  # other columns, N values each

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx) -> "LabelledData":
        idx = np.asarray(idx)
        return LabelledData([self.texts[i] for i in idx], self.labels[idx], self.source, dict(self.label_names),
                            {k: [v[i] for i in idx] for k, v in self.columns.items()})

    def to_records(self) -> list[dict]:
        """One dict per row (text, label, other columns): what `embed` writes as texts.jsonl."""
        return [{"text": t, "label": int(y), **{k: v[i] for k, v in self.columns.items()}}
                for i, (t, y) in enumerate(zip(self.texts, self.labels))]


def bastion_path() -> Path:
    try:
        import bastioncorpus
    except ImportError:
        raise DataError("source 'bastion' needs the bastioncorpus package (pip install bastioncorpus)") from None
    return Path(bastioncorpus.__file__).parent / "corpus" / "injections.jsonl"


def load_bastion(canary: str = CANARY) -> LabelledData:
    """All bastioncorpus rows (181 in 0.6.0: 118 malicious, 63 benign), `{canary}` filled in."""
    rows = [json.loads(line) for line in bastion_path().read_text(encoding="utf-8").splitlines() if line.strip()]
    return from_records(rows, "text", "label", "malicious", source=BASTION, canary=canary)


def load_labelled(source: str, text_column: str = "text", label_column: str = "label",
                  positive_label: Optional[str] = None, split: str = "train", binary: bool = True,
                  canary: str = CANARY) -> LabelledData:
    """`source`: 'bastion', a local .csv/.tsv/.json/.jsonl/.parquet file, or a hub dataset name."""
    if source == BASTION:
        if (text_column, label_column) != ("text", "label"):
            log.info("source 'bastion' always uses its own text/label columns")
        return load_bastion(canary)
    path = Path(source)
    if path.exists() or path.suffix.lower() in _FORMATS:
        rows = read_local(path)
    else:
        rows = _read_hub(source, split)
    return from_records(rows, text_column, label_column, positive_label, source=source, binary=binary, canary=canary)


def read_local(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"unsupported data file {path}: use one of {', '.join(sorted(_FORMATS))}")
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty")
    import datasets

    kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    try:
        ds = datasets.load_dataset(fmt, data_files=str(path), split="train", **kwargs)
    except Exception as e:  # datasets wraps parse errors in several exception types
        cause = e.__cause__ or e
        raise DataError(f"cannot read {path} as {fmt}: {type(cause).__name__}: {cause}") from None
    return ds.to_list()


def _read_hub(name: str, split: str) -> list[dict]:
    import datasets

    try:
        return datasets.load_dataset(name, split=split).to_list()
    except Exception as e:
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise DataError(f"'{name}' is not a local file and cannot be loaded from the hub{offline}: {e}") from None


def from_records(rows: list[dict], text_column: str, label_column: str, positive_label: Optional[str] = None,
                 source: str = "records", binary: bool = True, canary: str = CANARY) -> LabelledData:
    """Validate rows and map labels to ints. Raises DataError for anything a classifier can't use."""
    if not rows:
        raise DataError(f"{source}: no rows")
    found = list(rows[0].keys())
    for col in (text_column, label_column):
        if col not in found:
            raise DataError(f"{source}: no column '{col}'; columns found: {', '.join(found)} "
                            f"(choose with --text-column / --label-column)")
    no_label = [i for i, r in enumerate(rows) if _missing(r.get(label_column))]
    if no_label:  # never guess: a missing label silently read as "benign" poisons training and metrics
        raise DataError(f"{source}: {len(no_label)} of {len(rows)} rows have no '{label_column}' value (NaN/empty; "
                        f"first: row {no_label[0]}); label or drop them")
    no_text = [i for i, r in enumerate(rows) if r.get(text_column) is None]
    if no_text:
        raise DataError(f"{source}: {len(no_text)} rows have no '{text_column}' value (first: row {no_text[0]})")
    texts = [str(r[text_column]).replace(CANARY_SLOT, canary) for r in rows]
    raw = [r[label_column] for r in rows]
    empty = sum(1 for t in texts if not t.strip())
    if empty == len(texts):
        raise DataError(f"{source}: every '{text_column}' value is empty")
    if empty:
        log.warning("%s: %d of %d texts are empty; they are kept (an empty prompt still gets a score)",
                    source, empty, len(texts))
    labels, names = map_labels(raw, positive_label, binary, source)
    others = {k: [r.get(k) for r in rows] for k in found if k not in (text_column, label_column)}
    return LabelledData(texts, labels, source, names, others)


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip())


def map_labels(raw: list, positive_label: Optional[str], binary: bool, source: str) -> tuple[np.ndarray, dict]:
    """Raw label values -> (int64 [N], {int: name}). Binary: 1 = positive class."""
    values = sorted({str(v) for v in raw})
    if len(values) < 2:
        raise DataError(f"{source}: only one class in the labels ({values[0]!r}); a detector needs both classes")
    if not binary:  # multi-class: classes in sorted order
        index = {v: i for i, v in enumerate(values)}
        return np.array([index[str(v)] for v in raw], dtype=np.int64), {i: v for v, i in index.items()}
    if len(values) > 2:
        shown = ", ".join(values[:8]) + (" ..." if len(values) > 8 else "")
        raise DataError(f"{source}: labels are not binary ({len(values)} distinct values: {shown}); "
                        "binary detection metrics need exactly two classes")
    if positive_label is not None:
        pos = str(positive_label)
        if pos not in values:
            raise DataError(f"{source}: --positive-label {pos!r} is not one of the labels {values}")
    elif set(values) == {"False", "True"}:
        pos = "True"
    elif _numeric(values) is not None:  # 0/1 (or 0.0/1.0): 1 is positive; any other numbers: never guess
        nums = _numeric(values)
        if set(nums.values()) != {0.0, 1.0}:
            raise DataError(f"{source}: numeric labels {values} are not 0/1, so which one is positive is not "
                            f"obvious; pass --positive-label (one of {', '.join(values)})")
        pos = next(v for v in values if nums[v] == 1.0)
    else:
        known = [v for v in values if v.lower() in POSITIVE_NAMES]
        if len(known) != 1:
            raise DataError(f"{source}: cannot tell which label is positive among {values}; pass --positive-label")
        pos = known[0]
    neg = next(v for v in values if v != pos)
    y = np.array([1 if str(v) == pos else 0 for v in raw], dtype=np.int64)
    return y, {0: neg, 1: pos}


def _numeric(values: list[str]) -> Optional[dict[str, float]]:
    """{label string: its number} when every label is a number, else None."""
    try:
        return {v: float(v) for v in values}
    except ValueError:
        return None


def check_binary(y: np.ndarray, what: str = "labels") -> np.ndarray:
    """Binary metrics need labels in {0, 1} with both present."""
    y = np.asarray(y)
    vals = np.unique(y)
    if not set(vals.tolist()) <= {0, 1}:
        raise DataError(f"{what} are not binary 0/1 (values {vals.tolist()[:8]}); binary metrics need two classes")
    if len(vals) < 2:
        raise DataError(f"{what} hold a single class ({vals.tolist()}); a detector needs both classes")
    return y.astype(np.int64)
