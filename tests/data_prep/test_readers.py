"""Streaming readers: every format gives the same documents; byte-range units cover a file exactly."""
import json

from masklab.data_prep.plan import sample_documents
from masklab.data_prep.sources import ReadStats, documents, plan_units
from tests.data_prep.conftest import generated_txt


def test_every_format_and_compression_streams_the_same_documents(mixed_corpus, docs):
    units = plan_units(str(mixed_corpus), chunk_bytes=1 << 30)
    kinds = sorted((u.kind, u.compression) for u in units)
    assert kinds == [("json", ".bz2"), ("json", ".gz"), ("json", ".zst"), ("parquet", ""), ("txt", "")]
    by_file = {u.path.rsplit("/", 1)[1]: list(documents(u)) for u in units}
    part = [docs[:1500][i::5] for i in range(5)]
    assert by_file["a.txt"] == part[0]
    assert by_file["b.jsonl.gz"] == part[1] and by_file["c.jsonl.bz2"] == part[2]
    assert by_file["d.jsonl.zst"] == part[3] and by_file["e.parquet"] == part[4]


def test_byte_range_and_row_group_units_cover_each_file_exactly(tmp_path, mixed_corpus, docs):
    big = generated_txt(tmp_path / "big.txt", docs, copies=2)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    for path in (big, tmp_path / "rows.jsonl", mixed_corpus / "sub" / "e.parquet"):
        whole = [d for u in plan_units(str(path), 1 << 30) for d in documents(u)]
        units = plan_units(str(path), chunk_bytes=20_000)
        assert len(units) >= 2
        assert [d for u in units for d in documents(u)] == whole


def test_tokenizer_sample_is_bounded_and_drawn_from_every_file(tmp_path, docs):
    for name in "abc":
        (tmp_path / f"{name}.txt").write_text("\n\n".join(f"{name}{name} {d}" for d in docs[:400]))
    units = plan_units(str(tmp_path), 1 << 30)
    stats = ReadStats()
    sample = list(sample_documents(units, "text", 30_000, stats))
    assert {d[:2] for d in sample} == {"aa", "bb", "cc"}
    assert 30_000 <= stats.bytes < 45_000
