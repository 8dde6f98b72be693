"""Run files of the downstream stages: atomic output directories / files, JSON helpers and
the run-directory layout `report` reads."""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np

from masklab import atomic


@contextlib.contextmanager
def atomic_dir(out: str | Path, overwrite: bool = True):
    """Yield a temp directory next to `out`; on success it replaces `out`, on any error it is
    removed, so `out` is either the complete new result or exactly what it was before."""
    out = Path(out)
    if out.exists() and not overwrite:
        from masklab.errors import MaskLabError

        raise MaskLabError(f"output {out} exists (pass --overwrite)")
    with atomic.atomic_dir(out) as tmp:  # the one implementation: masklab/atomic.py
        yield tmp


def atomic_file(out: str | Path, text: str) -> Path:
    """Write `text` to `out` atomically (`masklab.atomic.atomic_file`): old or complete."""
    return atomic.atomic_file(out, text)


def _default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def finite_json(obj):
    """obj with NaN/infinite floats (Python or numpy, arrays included) as None: bare NaN is not JSON,
    and strict readers (jq, JavaScript, Go) reject the whole file."""
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite_json(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def dumps(obj, **kw) -> str:
    """json.dumps that never writes invalid JSON (NaN/Infinity become null)."""
    kw.setdefault("default", _default)
    return json.dumps(finite_json(obj), allow_nan=False, **kw)


def write_json(path: Path, obj) -> None:
    Path(path).write_text(dumps(obj, indent=1))


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def write_run(d: Path, kind: str, source: str, encoder: dict, results: dict, labels: np.ndarray,
              records: list[dict], **extra) -> None:
    """The run-directory layout `report` reads: results.json + labels.npy + texts.jsonl
    (labels and records aligned with every result's oof scores)."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    write_json(d / "results.json", {"kind": kind, "source": source, "encoder": encoder, "results": results, **extra})
    np.save(d / "labels.npy", np.asarray(labels, dtype=np.int64))
    with open(d / "texts.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(dumps(r, ensure_ascii=False) + "\n")
