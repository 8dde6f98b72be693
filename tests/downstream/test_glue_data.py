"""GLUE data in the official layout (every task's quirks, on fixtures written here), custom
jsonl/csv/tsv tasks, bad inputs (file and line named), and the metrics against sklearn / scipy."""
import json

import numpy as np
import pytest

from masklab.downstream.glue import data as gd
from masklab.downstream.glue.tasks import TASKS, parse_tasks
from masklab.errors import MaskLabError

from .glue_fixture import write_glue_dir


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    return write_glue_dir(tmp_path_factory.mktemp("glue"), n_train=40, n_dev=20)


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_reads_its_official_format(glue_dir, name):
    task = TASKS[name]
    train, dev = gd.load_official(task, glue_dir)
    assert len(train) == 40 and set(dev) == set(task.dev) and all(len(v) == 20 for v in dev.values())
    assert (train.texts_b is not None) == task.pair
    if task.labels is None:
        assert train.labels.dtype == np.float32 and train.labels.max() == 5.0 and train.labels.min() == 0.0
    else:
        assert train.labels.dtype == np.int64 and set(train.labels.tolist()) == set(range(task.num_labels))
    assert not any(t.startswith("\ufeff") for t in train.texts_a)


def test_quirks(glue_dir):
    cola, _ = gd.load_official(TASKS["cola"], glue_dir)
    assert cola.texts_a[0].endswith('"') and cola.labels[0] == 0  # no header: the first line is a row
    mrpc, _ = gd.load_official(TASKS["mrpc"], glue_dir)
    assert mrpc.texts_a[0].startswith('"') and mrpc.labels[1] == 1  # the stray quote stays; no line swallowed
    stsb, _ = gd.load_official(TASKS["stsb"], glue_dir)
    assert stsb.labels[1] == pytest.approx(0.5)


def test_quoting_on_would_break_mrpc(glue_dir):
    """The fixture does reproduce the quirk: a csv reader with default quoting loses rows."""
    import csv

    with open(glue_dir / "MRPC" / "train.tsv", encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert len(rows) - 1 < 40


def _copy(src, dst):
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())


def test_malformed_rows_name_file_and_line(glue_dir, tmp_path):
    _copy(glue_dir / "RTE", tmp_path / "RTE")
    p = tmp_path / "RTE" / "train.tsv"
    lines = p.read_text().splitlines()
    lines[5] = lines[5].replace("\t", " ", 1)  # a row with 3 columns
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(MaskLabError, match=r"RTE/train.tsv:6: 3 tab-separated columns, expected 4"):
        gd.load_official(TASKS["rte"], tmp_path)
    lines[5] = "7\ta\tb\tmaybe"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(MaskLabError, match=r"train.tsv:6: label 'maybe' is not one of entailment, not_entailment"):
        gd.load_official(TASKS["rte"], tmp_path)
    _copy(glue_dir / "STS-B", tmp_path / "STS-B")
    s = tmp_path / "STS-B" / "dev.tsv"
    s.write_text(s.read_text().replace("\t0.500\n", "\tn/a\n", 1))
    with pytest.raises(MaskLabError, match=r"STS-B/dev.tsv:3: label 'n/a' is not a number"):
        gd.load_official(TASKS["stsb"], tmp_path)
    with pytest.raises(MaskLabError, match=r"MNLI not found"):
        gd.load_official(TASKS["mnli"], tmp_path)
    (tmp_path / "RTE" / "dev.tsv").write_bytes(b"index\tsentence1\tsentence2\tlabel\n1\t\xff\tb\tentailment\n")
    p.write_text("\n".join(p.read_text().splitlines()[:5]) + "\n")
    with pytest.raises(MaskLabError, match="not UTF-8"):
        gd.load_official(TASKS["rte"], tmp_path)


def test_parse_tasks():
    assert parse_tasks("small") == ["rte", "sst2", "mrpc", "cola", "stsb"]
    assert parse_tasks("CoLA,sts-b") == ["cola", "stsb"]
    assert len(parse_tasks("all")) == 8
    with pytest.raises(MaskLabError, match="unknown GLUE task"):
        parse_tasks("cola,wnli")


@pytest.mark.parametrize("ext", ["jsonl", "csv", "tsv"])
def test_custom_task_files(tmp_path, ext):
    rows = [{"q": f"question {i}", "a": f"answer {i}", "y": "yes" if i % 2 else "no"} for i in range(6)]
    for split in ("train", "dev"):
        p = tmp_path / f"{split}.{ext}"
        if ext == "jsonl":
            p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        else:
            sep = "," if ext == "csv" else "\t"
            p.write_text("q" + sep + "a" + sep + "y\n" + "".join(sep.join(r.values()) + "\n" for r in rows))
    task = gd.custom_task("mine", ["q", "a"], "y", "f1", None)
    task, train, dev = gd.load_custom(task, tmp_path / f"train.{ext}", tmp_path / f"dev.{ext}")
    assert task.labels == ("no", "yes") and train.labels.tolist() == [0, 1, 0, 1, 0, 1] and train.texts_b[2] == "answer 2"


def test_custom_bad_inputs(tmp_path):
    t = tmp_path / "train.jsonl"
    t.write_text('{"text": "a", "y": 1}\n{"text": "b", "y": 0}\n{"text": "c" "y": 1}\n')
    task = gd.custom_task("mine", ["text"], "y", "acc", None)
    with pytest.raises(MaskLabError, match=r"train.jsonl:3: not valid JSON"):
        gd.load_custom(task, t, t)
    t.write_text('{"text": "a", "y": 1}\n{"txt": "b", "y": 0}\n')
    with pytest.raises(MaskLabError, match=r"train.jsonl:2: missing or non-text column 'text'"):
        gd.load_custom(task, t, t)
    c = tmp_path / "train.csv"
    c.write_text("text,y\nhello,1\nextra,0,oops\n")
    with pytest.raises(MaskLabError, match=r"train.csv:3: .*columns do not match"):
        gd.load_custom(task, c, c)
    with pytest.raises(MaskLabError, match="--metric must be one of"):
        gd.custom_task("mine", ["text"], "y", "auc", None)
    r = tmp_path / "reg.jsonl"
    r.write_text('{"text": "a", "y": 1.5}\n{"text": "b", "y": "high"}\n')
    with pytest.raises(MaskLabError, match=r"reg.jsonl:2: label 'high' is not a number"):
        gd.load_custom(gd.custom_task("r", ["text"], "y", "pearson", None), r, r)


def test_metrics_match_sklearn_and_scipy():
    from scipy import stats
    from sklearn import metrics as skm

    from masklab.downstream.glue import metrics as m

    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 200))
        y, p = rng.integers(0, 2, n), rng.integers(0, 2, n)
        assert m.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p), abs=1e-12)
        assert m.f1(y, p) == pytest.approx(skm.f1_score(y, p, zero_division=0), abs=1e-12)
        assert m.matthews(y, p) == pytest.approx(skm.matthews_corrcoef(y, p), abs=1e-12)
        y3, p3 = rng.integers(0, 3, n), rng.integers(0, 3, n)
        assert m.matthews(y3, p3) == pytest.approx(skm.matthews_corrcoef(y3, p3), abs=1e-12)
        a, b = rng.normal(size=n), rng.normal(size=n)
        b[: n // 3] = np.round(b[: n // 3])  # ties
        a = np.round(a, 1)
        assert m.pearson(a, b) == pytest.approx(stats.pearsonr(a, b)[0], abs=1e-10)
        assert m.spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-10)
    assert m.matthews(np.ones(5), np.ones(5)) == 0.0  # undefined -> 0, as sklearn
    s = m.score(("f1", "acc"), np.array([1, 0, 1, 1]), np.array([[0, 1], [1, 0], [1, 0], [0, 1.0]]))
    assert s["acc"] == 75.0 and s["score"] == pytest.approx((75.0 + 100 * 0.8) / 2)
