import os
import time

import pytest

from ml_platform.core.landing import BatchReadError, read_batch, scan_landing
from ml_platform.core.simulate import generate_batch, write_batches


def test_arrival_order_settle_time_and_partial_files(tmp_path):
    now = time.time()
    for name, age in [("b.csv", 100), ("a.csv", 100), ("c.csv", 300), ("fresh.csv", 0.5)]:
        p = tmp_path / name
        p.write_text(f"x\n{name}\n")
        os.utime(p, (now - age, now - age))
    (tmp_path / "upload.csv.part").write_text("x\n1\n")
    (tmp_path / ".hidden.csv").write_text("x\n1\n")
    names = [f.path.name for f in scan_landing(tmp_path, settle_seconds=2, now=now)]
    assert names == ["c.csv", "a.csv", "b.csv"]  # oldest first, then by name; fresh one not yet


def test_same_content_is_ingested_once(tmp_path):
    (tmp_path / "one.csv").write_text("x\n1\n")
    (tmp_path / "copy.csv").write_text("x\n1\n")
    files = scan_landing(tmp_path, settle_seconds=0)
    assert len(files) == 1
    assert scan_landing(tmp_path, settle_seconds=0, known_sha256={files[0].sha256}) == []


def test_hash_cache_avoids_rehashing(tmp_path):
    (tmp_path / "one.csv").write_text("x\n1\n")
    cache = {}
    first = scan_landing(tmp_path, settle_seconds=0, hash_cache=cache)
    cache[str(tmp_path / "one.csv")][2] = "cached"
    assert scan_landing(tmp_path, settle_seconds=0, hash_cache=cache)[0].sha256 == "cached" != first[0].sha256


@pytest.mark.parametrize("name,content,message", [
    ("empty.csv", b"", "file is empty"),
    ("header.csv", b"a,b,c\n", "has a header but no rows"),
    ("binary.csv", b"PK\x03\x04\x00\x00garbage", "binary content"),
    ("latin.csv", b"a,b\n\xff\xfe,1\n", "not UTF-8"),
    ("notes.json", b'{"a": 1}', "unsupported file type '.json'"),
    ("broken.parquet", b"PAR1 this is not really parquet", "cannot be read as parquet"),
])
def test_unreadable_files_name_the_file_and_the_problem(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(BatchReadError, match=message) as e:
        read_batch(p)
    assert name in str(e.value)


def test_truncated_parquet(tmp_path):
    p = tmp_path / "t.parquet"
    generate_batch(500).to_parquet(p)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(BatchReadError, match="t.parquet: cannot be read as parquet"):
        read_batch(p)


def test_simulated_batches_round_trip_in_both_formats(tmp_path):
    csv, pq = write_batches(tmp_path / "c", 1, rows=100)[0], write_batches(tmp_path / "p", 1, rows=100, fmt="parquet")[0]
    a, b = read_batch(csv), read_batch(pq)
    assert len(a) == len(b) == 100 and list(a.columns) == list(b.columns)
    assert not list(tmp_path.glob("*/.*.tmp"))
