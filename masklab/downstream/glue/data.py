"""GLUE (and custom) task data from three places: the official TSV layout on disk, the hub
(`nyu-mll/glue` through `datasets`, when online), or any jsonl / csv / tsv with named columns.

Every split comes back as `Split(texts_a, texts_b | None, labels, source)`; labels are int64 class
ids (in the hub's label order) or float32 scores (regression). A malformed row is an error naming
the file and line (nothing is skipped).
"""
from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from masklab.downstream.glue.tasks import TASKS, Task
from masklab.errors import MaskLabError

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # MNLI / QNLI hold long paragraphs


@dataclass
class Split:
    texts_a: list
    texts_b: Optional[list]
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.texts_a)

    def subsample(self, n: int, seed: int) -> "Split":
        """n rows drawn without replacement by a fixed key (the same rows for every model and seed)."""
        if n <= 0 or n >= len(self):
            return self
        idx = np.sort(np.random.default_rng([int(seed), 0x5EB]).choice(len(self), n, replace=False))
        return Split([self.texts_a[i] for i in idx], None if self.texts_b is None else [self.texts_b[i] for i in idx],
                     self.labels[idx], f"{self.source} (subsampled {n} of {len(self)} rows)")


def _label(task: Task, raw: str, where: str):
    raw = raw.strip()
    if task.labels is None:
        try:
            v = float(raw)
        except ValueError:
            raise MaskLabError(f"{where}: label {raw!r} is not a number ({task.name} is a regression task)") from None
        if not np.isfinite(v):
            raise MaskLabError(f"{where}: label {raw!r} is not finite")
        return v
    if raw not in task.labels:
        raise MaskLabError(f"{where}: label {raw!r} is not one of {', '.join(task.labels)}")
    return task.labels.index(raw)


def read_official(task: Task, path: Path, kind: str) -> Split:
    """One TSV file of the official layout (quoting off; MRPC's byte-order mark dropped)."""
    if not path.is_file():
        raise MaskLabError(f"{path} not found: a GLUE directory holds <Task>/train.tsv and dev.tsv "
                           f"(MNLI: dev_matched.tsv, dev_mismatched.tsv), as download_glue_data.py wrote them")
    ncols = dict(task.ncols)[kind]
    a, b, y = [], [] if task.pair else None, []
    with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig: MRPC starts with a BOM
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            for row in rows:
                line = rows.line_num
                if task.header and line == 1:
                    continue
                if row == [] or row == [""]:
                    raise MaskLabError(f"{path}:{line}: empty line")
                if len(row) != ncols:
                    raise MaskLabError(f"{path}:{line}: {len(row)} tab-separated columns, expected {ncols} for "
                                       f"{task.dir} {kind} files")
                a.append(row[task.text_cols[0]])
                if b is not None:
                    b.append(row[task.text_cols[1]])
                y.append(_label(task, row[task.label_col], f"{path}:{line}"))
        except UnicodeDecodeError as e:
            raise MaskLabError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not a:
        raise MaskLabError(f"{path}: no rows")
    return Split(a, b, np.asarray(y, dtype=np.float32 if task.labels is None else np.int64), str(path))


def load_official(task: Task, root: Path) -> tuple[Split, dict]:
    """-> (train, {dev name: Split}) from `<root>/<Task>/`."""
    d = Path(root) / task.dir
    if not d.is_dir():
        found = ", ".join(sorted(p.name for p in Path(root).iterdir())[:12]) if Path(root).is_dir() else "nothing"
        raise MaskLabError(f"{d} not found (GLUE directory {root} holds: {found})")
    return read_official(task, d / "train.tsv", "train"), {s: read_official(task, d / f"{s}.tsv", "dev") for s in task.dev}


def load_hub(task: Task) -> tuple[Split, dict]:
    """From `nyu-mll/glue` on the hub (datasets); labels are already the hub's ids."""
    try:
        from datasets import load_dataset

        ds = load_dataset("nyu-mll/glue", task.hub)
    except Exception as e:  # offline, no cache: one line, not a traceback
        raise MaskLabError(f"cannot load nyu-mll/glue/{task.hub} from the hub ({str(e).splitlines()[0][:200]}); "
                           "pass --data DIR with the official GLUE layout instead") from None

    def split(name: str) -> Split:
        s = ds[name]
        lab = np.asarray(s["label"], dtype=np.float32 if task.labels is None else np.int64)
        return Split(list(s[task.hub_cols[0]]), list(s[task.hub_cols[1]]) if task.pair else None, lab,
                     f"hub:nyu-mll/glue/{task.hub}/{name}")

    return split("train"), {stem: split(h) for stem, h in zip(task.dev, task.hub_dev)}


def custom_task(name: str, text_columns: list, label_column: str, metric: str, labels: Optional[tuple]) -> Task:
    metrics = {"acc": ("acc",), "f1": ("f1", "acc"), "mcc": ("mcc",), "pearson": ("pearson", "spearman")}
    if metric not in metrics:
        raise MaskLabError(f"--metric must be one of {', '.join(metrics)}, not {metric!r}")
    if not 1 <= len(text_columns) <= 2:
        raise MaskLabError("--text-columns takes one column or two (a sentence pair), comma separated")
    return Task(name, name, True, tuple(text_columns), 0, (), None if metric == "pearson" else labels,
                metrics[metric], "", tuple(text_columns), extra={"label_column": label_column})


def read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row dict) of a jsonl, csv or tsv file with named columns."""
    path = Path(path)
    if not path.is_file():
        raise MaskLabError(f"{path} not found")
    out = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        if path.suffix == ".jsonl":
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise MaskLabError(f"{path}:{i}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise MaskLabError(f"{path}:{i}: expected a JSON object per line")
                out.append((i, row))
        elif path.suffix in (".csv", ".tsv"):
            r = csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            for row in r:
                if None in row or any(v is None for v in row.values()):
                    raise MaskLabError(f"{path}:{r.line_num}: {len(row) - (None in row)} columns do not match the "
                                       f"header's {len(r.fieldnames)}")
                out.append((r.line_num, row))
        else:
            raise MaskLabError(f"{path}: custom task files must be .jsonl, .csv or .tsv")
    if not out:
        raise MaskLabError(f"{path}: no rows")
    return out


def load_custom(task: Task, train: Path, dev: Path) -> tuple[Task, Split, dict]:
    """A custom task's train / dev files -> (task with its label set, train, {"dev": Split}).
    Classification labels are the train file's distinct values, sorted (as strings)."""
    lc = task.extra["label_column"]
    rows = {"train": read_rows(train), "dev": read_rows(dev)}
    for kind, rs in rows.items():
        p = train if kind == "train" else dev
        for line, row in rs:
            for c in (*task.text_cols, lc):
                if c not in row or row[c] is None or (c != lc and not isinstance(row[c], str)):
                    raise MaskLabError(f"{p}:{line}: missing or non-text column {c!r} (has {', '.join(map(str, row))})")
    if task.labels is None and task.metrics[0] != "pearson":
        labels = tuple(sorted({str(r[lc]) for _, r in rows["train"]}))
        if len(labels) < 2:
            raise MaskLabError(f"{train}: column {lc!r} has a single label value {labels}: nothing to learn")
        if "f1" in task.metrics and len(labels) != 2:
            raise MaskLabError(f"--metric f1 needs two labels; {train} has {len(labels)}")
        from dataclasses import replace

        task = replace(task, labels=labels)

    def split(kind: str, path: Path) -> Split:
        a, b, y = [], [] if task.pair else None, []
        for line, row in rows[kind]:
            a.append(row[task.text_cols[0]])
            if b is not None:
                b.append(row[task.text_cols[1]])
            y.append(_label(task, str(row[lc]), f"{path}:{line}"))
        return Split(a, b, np.asarray(y, dtype=np.float32 if task.labels is None else np.int64), str(path))

    return task, split("train", train), {"dev": split("dev", dev)}


def load_task(name: str, data: str) -> tuple[Split, dict]:
    """A GLUE task from `data`: 'hub' or a directory in the official layout."""
    task = TASKS[name]
    if data == "hub":
        return load_hub(task)
    return load_official(task, Path(data))
