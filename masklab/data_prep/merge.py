"""The final step: unit records -> one manifest, then the work directory becomes the output.

Until this step has run, `<out>` does not exist (or still holds the previous output) and the
work directory has no manifest.json, so neither is a valid ShardSet (`read_manifest` says so).
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from masklab import atomic
from masklab.data_prep.plan import PLAN_FILE, UNITS_DIR, corpus_digest, load_plan
from masklab.data_prep.shards import FORMAT
from masklab.data_prep.tokenizer import TOKENIZER_FILE, file_sha256, load_tokenizer
from masklab.data_prep.verify import stamp_new_prep
from masklab.data_prep.worker import SPLITS, unit_record
from masklab.errors import DataError

log = logging.getLogger("masklab.data_prep")


class IncompletePrep(DataError):
    """Some units have no record yet: the work directory is kept for a rerun."""


def missing_units(work: Path, plan: dict) -> list[int]:
    return [i for i in range(len(plan["units"])) if not unit_record(work, i).is_file()]


def merge(work: Path, out: Path) -> Path:
    """Write manifest.json from the unit records (in corpus order) and move `work` onto `out`."""
    plan = load_plan(work)
    missing = missing_units(work, plan)
    if missing:
        raise IncompletePrep(f"prep of {out} is incomplete: {len(missing)} of {len(plan['units'])} units missing "
                        f"(first: {missing[0]}); rerun the same `masklab prep` to finish only those")
    recs = [json.loads(unit_record(work, i).read_text()) for i in range(len(plan["units"]))]
    opts = plan["options"]
    tok_sha, corpus = file_sha256(work / "tokenizer" / TOKENIZER_FILE), corpus_digest(plan)
    for r in recs:  # every unit was encoded under this very plan and tokenizer
        if r.get("tokenizer_sha256") != tok_sha or r.get("corpus_fingerprint") != corpus:
            raise DataError(f"prep of {out}: unit {r['unit']} in {work} was encoded with another tokenizer or "
                            "corpus than the plan's (was the work directory replaced by another prep?); "
                            "rerun `masklab prep`")
        for s in SPLITS:
            for e in r["splits"][s]:
                e["tokenizer_sha256"], e["corpus_fingerprint"] = tok_sha, corpus
    splits = {s: [e for r in recs for e in r["splits"][s]] for s in SPLITS}
    for s, entries in splits.items():  # shard_<unit>_<k> -> shard_<n>: the layout of a one-process prep
        for n, e in enumerate(entries):
            name = f"shard_{n:05d}"
            (work / s / e["name"]).rename(work / s / name)
            e["name"] = name
    counts = {s: {"documents": sum(e["documents"] for e in es), "tokens": sum(e["tokens"] for e in es)}
              for s, es in splits.items()}
    if sum(r["documents"] for r in recs) == 0:
        raise DataError(f"corpus {opts['source']} is empty: no non-blank text found")
    if counts["train"]["tokens"] == 0:
        raise DataError(f"corpus {opts['source']} produced no training tokens "
                        f"({counts['validation']['documents']} validation documents)")
    if opts["validation_fraction"] > 0 and counts["validation"]["documents"] == 0:
        log.warning("no document fell into the validation split (fraction %g, %d documents)",
                    opts["validation_fraction"], counts["train"]["documents"])
    invalid = sum(r["invalid_utf8_lines"] for r in recs)
    if invalid:
        log.warning("skipped %d line(s) with invalid UTF-8 in %s", invalid, opts["source"])
    overlong = sum(r.get("overlong_documents", 0) for r in recs)
    if overlong:
        log.warning("skipped %d document(s) longer than --max-document-bytes=%d in %s", overlong,
                    opts.get("max_document_bytes", 0), opts["source"])
    _, info = load_tokenizer(work / "tokenizer")
    manifest = {
        "format": FORMAT,
        "source": opts["source"],
        "tokenizer": info.to_dict(),
        "tokenizer_file_sha256": tok_sha,
        "corpus_fingerprint": corpus,
        "tokenizer_source": plan["tokenizer_source"],
        "word_starts": True,
        "cjk_segmenter": opts["cjk_segmenter"],
        "counts": counts,
        "invalid_utf8_lines_skipped": invalid,
        "overlong_documents_skipped": overlong,
        "bytes_read": sum(r["bytes"] for r in recs),
        "units": len(recs),
        "splits": splits,
    }
    for s in SPLITS:
        (work / s).mkdir(exist_ok=True)
    shutil.rmtree(work / UNITS_DIR)
    (work / PLAN_FILE).unlink()
    with open(work / "manifest.json", "w") as f:  # json.dump streams: no second copy of a large manifest
        json.dump(manifest, f, indent=1)
    stamp_new_prep(work, manifest)  # renames keep mtimes: the stamp holds for `out`
    replace_output(work, out)
    log.info("prep done: %d train / %d validation documents, %d / %d tokens -> %s",
             counts["train"]["documents"], counts["validation"]["documents"],
             counts["train"]["tokens"], counts["validation"]["tokens"], out)
    return out


def replace_output(tmp: Path, out: Path) -> None:
    """Move the finished `tmp` onto `out` (an existing `out` is replaced): fsynced, and at every
    instant `out` or its recoverable old copy is complete (masklab.atomic)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.fsync_tree(tmp)
    atomic.replace_dir(tmp, out)
