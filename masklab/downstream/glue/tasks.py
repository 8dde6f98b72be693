"""The GLUE tasks: where each task's texts and label sit in the official distribution's TSV files
(as `download_glue_data.py` wrote them; the same column indices transformers' `glue` processors
read), the hub's column names (`nyu-mll/glue`), labels and metrics.

Official layout quirks (all files are read with quoting OFF: fields hold stray `"` characters):
- CoLA: no header; 4 columns: source code, label (0/1), the original author's mark (`*` or empty),
  sentence.
- SST-2: header `sentence  label`.
- MRPC: starts with a UTF-8 byte-order mark; header `Quality  #1 ID  #2 ID  #1 String  #2 String`;
  label first.
- STS-B: header of 10 columns (index genre filename year old_index source1 source2 sentence1
  sentence2 score); the score is a float in [0, 5] (regression).
- QQP: header `id qid1 qid2 question1 question2 is_duplicate`.
- MNLI: train.tsv has 12 columns, dev_matched.tsv / dev_mismatched.tsv have 16 (label1..label5);
  sentence1 / sentence2 are columns 8 / 9, the gold label is the last column.
- QNLI, RTE: header `index question|sentence1 sentence|sentence2 label`; label words.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class Task:
    name: str  # our name (CLI, results): cola, sst2, ...
    dir: str  # directory in the official layout
    header: bool
    text_cols: tuple  # official TSV column indices of text a (and b)
    label_col: int  # official TSV column index of the label (negative: from the end)
    ncols: tuple  # accepted column counts per file kind {"train": n, "dev": n} as ((kind, n), ...)
    labels: Optional[tuple]  # label words in the hub's id order; None: regression (float)
    metrics: tuple  # metric names; the task score is their mean
    hub: str  # nyu-mll/glue config
    hub_cols: tuple  # hub text columns
    dev: tuple = ("dev",)  # dev file stems (MNLI: matched, mismatched)
    hub_dev: tuple = ("validation",)
    bom: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def pair(self) -> bool:
        return len(self.text_cols) == 2


TASKS = {
    "cola": Task("cola", "CoLA", False, (3,), 1, (("train", 4), ("dev", 4)), ("0", "1"), ("mcc",), "cola",
                 ("sentence",)),
    "sst2": Task("sst2", "SST-2", True, (0,), 1, (("train", 2), ("dev", 2)), ("0", "1"), ("acc",), "sst2",
                 ("sentence",)),
    "mrpc": Task("mrpc", "MRPC", True, (3, 4), 0, (("train", 5), ("dev", 5)), ("0", "1"), ("f1", "acc"), "mrpc",
                 ("sentence1", "sentence2"), bom=True),
    "stsb": Task("stsb", "STS-B", True, (7, 8), 9, (("train", 10), ("dev", 10)), None, ("pearson", "spearman"),
                 "stsb", ("sentence1", "sentence2")),
    "qqp": Task("qqp", "QQP", True, (3, 4), 5, (("train", 6), ("dev", 6)), ("0", "1"), ("f1", "acc"), "qqp",
                ("question1", "question2")),
    "mnli": Task("mnli", "MNLI", True, (8, 9), -1, (("train", 12), ("dev", 16)),
                 ("entailment", "neutral", "contradiction"), ("acc",), "mnli", ("premise", "hypothesis"),
                 dev=("dev_matched", "dev_mismatched"), hub_dev=("validation_matched", "validation_mismatched")),
    "qnli": Task("qnli", "QNLI", True, (1, 2), 3, (("train", 4), ("dev", 4)), ("entailment", "not_entailment"),
                 ("acc",), "qnli", ("question", "sentence")),
    "rte": Task("rte", "RTE", True, (1, 2), 3, (("train", 4), ("dev", 4)), ("entailment", "not_entailment"),
                ("acc",), "rte", ("sentence1", "sentence2")),
}
ORDER = ("mnli", "qnli", "qqp", "rte", "sst2", "mrpc", "cola", "stsb")  # MosaicBERT's table order
SMALL = ("cola", "sst2", "mrpc", "stsb", "rte")
ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli-mm": "mnli"}


def parse_tasks(spec: str) -> list[str]:
    """'all' | 'small' | comma list (CoLA, sst-2, ...) -> task names in table order, validated."""
    from masklab.errors import MaskLabError

    spec = spec.strip().lower()
    if spec in ("all", "glue"):
        return list(ORDER)
    if spec == "small":
        return [t for t in ORDER if t in SMALL]
    names = [ALIASES.get(s.strip(), s.strip()) for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in TASKS]
    if bad or not names:
        raise MaskLabError(f"unknown GLUE task(s) {bad or spec!r}: choose from {', '.join(ORDER)} (or all, small)")
    return [t for t in ORDER if t in names]
