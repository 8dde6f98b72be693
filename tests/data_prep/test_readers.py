"""Streaming readers: every format gives the same documents; byte-range units cover a file exactly."""
import json

from masklab.data_prep.plan import sample_documents
from masklab.data_prep.sources import GROUP_DIVISOR, ReadStats, documents, group_pieces, plan_pieces
from tests.data_prep.conftest import generated_txt


def test_every_format_and_compression_streams_the_same_documents(mixed_corpus, docs):
    units = plan_pieces(str(mixed_corpus), chunk_bytes=1 << 30)
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
        whole = [d for u in plan_pieces(str(path), 1 << 30) for d in documents(u)]
        units = plan_pieces(str(path), chunk_bytes=20_000)
        assert len(units) >= 2
        assert [d for u in units for d in documents(u)] == whole


def test_tokenizer_sample_is_bounded_and_drawn_from_every_file(tmp_path, docs):
    for name in "abc":
        (tmp_path / f"{name}.txt").write_text("\n\n".join(f"{name}{name} {d}" for d in docs[:400]))
    units = plan_pieces(str(tmp_path), 1 << 30)
    stats = ReadStats()
    sample = list(sample_documents(units, "text", 30_000, stats))
    assert {d[:2] for d in sample} == {"aa", "bb", "cc"}
    assert 30_000 <= stats.bytes < 45_000


def test_small_files_share_a_work_unit_and_large_pieces_stand_alone(tmp_path, docs):
    """Units grow with bytes, not files: 60 files of ~1.7 KB -> a few groups; the split ranges
    of a large file stay units of their own; every piece appears once, in corpus order."""
    for k in range(60):
        (tmp_path / f"f{k:02d}.txt").write_text("\n\n".join(docs[k * 10:(k + 1) * 10]))
    generated_txt(tmp_path / "zz_big.txt", docs, copies=1)  # ~450 KB > chunk: byte ranges
    chunk = 80_000
    limit = chunk // GROUP_DIVISOR
    pieces = plan_pieces(str(tmp_path), chunk)
    units = group_pieces(pieces, chunk)
    assert [p for u in units for p in u] == pieces
    small = [u for u in units if not u[0].path.endswith("zz_big.txt")]
    ranges = [u for u in units if u[0].path.endswith("zz_big.txt")]
    assert len(ranges) >= 5 and all(len(u) == 1 for u in ranges)
    assert all(sum(p.size for p in u) <= limit for u in small)
    assert len(small) <= 60 * 1.7e3 / limit * 1.5  # full groups, not one unit per file
    # greedy: a group ends only when the next file would not fit
    for u, nxt in zip(small, small[1:]):
        assert sum(p.size for p in u) + nxt[0].size > limit
