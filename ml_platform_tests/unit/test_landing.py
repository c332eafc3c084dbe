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


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("empty.csv", b"", "file is empty"),
        ("header.csv", b"a,b,c\n", "has a header but no rows"),
        ("binary.csv", b"PK\x03\x04\x00\x00garbage", "binary content"),
        # random bytes without a NUL parse as a "header" line: not reported as a header without rows
        ("random.csv", b"\x8a\x01\x7f\x1b\x93", "not a readable CSV or Parquet file"),
        ("random2.csv", b"q9\x02XvT\x10a,Z\x04", "not a readable CSV or Parquet file: no rows"),
        ("one-word.csv", b"Zq9XvT0aZ", "not a readable CSV or Parquet file: no rows"),
        ("latin.csv", b"a,b\n\xff\xfe,1\n", "not UTF-8"),
        ("notes.json", b'{"a": 1}', "unsupported file type '.json'"),
        ("broken.parquet", b"PAR1 this is not really parquet", "cannot be read as parquet"),
    ],
)
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


def test_a_csv_cut_mid_row_fails_naming_the_line(tmp_path):
    """A copy cut short ends mid-row with no line break: the batch fails (README: a truncated file
    fails at once) rather than quarantine its stub as a 'missing value' and train on the rest."""
    whole = generate_batch(50).to_csv(index=False)
    p = tmp_path / "cut.csv"
    p.write_text(whole[: whole.rindex("\n", 0, -1) + 25])  # 24 characters into the last row
    with pytest.raises(BatchReadError, match=r"cut.csv: truncated: its last line \(line 51\) ends after"):
        read_batch(p)
    # the number is the file's line, blank lines counted (pandas skips them)
    spaced = whole.replace("\n", "\n\n", 1)
    p.write_text(spaced[: spaced.rindex("\n", 0, -1) + 25])
    with pytest.raises(BatchReadError, match=r"its last line \(line 52\) ends after"):
        read_batch(p)
    # a complete last row without the final line break is a whole file
    p.write_text(whole.rstrip("\n"))
    assert len(read_batch(p)) == 50


def test_simulated_batches_round_trip_in_both_formats(tmp_path):
    csv, pq = (
        write_batches(tmp_path / "c", 1, rows=100)[0],
        write_batches(tmp_path / "p", 1, rows=100, fmt="parquet")[0],
    )
    a, b = read_batch(csv), read_batch(pq)
    assert len(a) == len(b) == 100 and list(a.columns) == list(b.columns)
    assert not list(tmp_path.glob("*/.*.tmp"))


# ---- issue 9: links out of the landing zone, partial copies ----
from ml_platform.core.landing import RefusedFile, copy_regular_file, file_sha256, refusal  # noqa: E402


def test_symlinks_are_refused_and_reported(tmp_path):
    landing, outside = tmp_path / "landing", tmp_path / "outside"
    landing.mkdir()
    outside.mkdir()
    secret = outside / "secrets.csv"
    secret.write_text("AWS_SECRET_ACCESS_KEY=abc\n")
    (landing / "passwd.csv").symlink_to("/etc/passwd")
    (landing / "secrets.csv").symlink_to(secret)
    (landing / "inner.csv").symlink_to(landing / "good.csv")  # even one pointing inside
    (landing / "good.csv").write_text("x\n1\n")
    skipped = []
    files = scan_landing(landing, settle_seconds=0, skipped=skipped)
    assert [f.path.name for f in files] == ["good.csv"]
    why = dict((p.name, r) for p, r in skipped)
    assert set(why) == {"passwd.csv", "secrets.csv", "inner.csv"}
    assert all("refused: a symbolic link" in r for r in why.values())
    assert "AWS" not in " ".join(why.values())
    assert refusal(landing / "secrets.csv", landing) and refusal(landing / "good.csv", landing) is None
    with pytest.raises(RefusedFile):
        file_sha256(landing / "secrets.csv")  # O_NOFOLLOW: a link swapped in later is refused too
    dest = tmp_path / "store"
    dest.mkdir()
    with pytest.raises(RefusedFile):
        copy_regular_file(landing / "secrets.csv", dest / "secrets.csv")
    assert list(dest.iterdir()) == []  # nothing copied into storage, no partial file


def test_files_still_being_written_are_reported(tmp_path):
    (tmp_path / "a.csv").write_text("x\n1\n")
    skipped = []
    assert scan_landing(tmp_path, settle_seconds=60, skipped=skipped) == []
    assert "still being written" in skipped[0][1]


def test_copy_is_complete_or_absent(tmp_path, monkeypatch):
    src = tmp_path / "big.csv"
    src.write_bytes(b"x\n" + b"1\n" * 100_000)
    dest = tmp_path / "out"
    dest.mkdir()
    copy_regular_file(src, dest / "big.csv")
    assert (dest / "big.csv").read_bytes() == src.read_bytes()
    assert (dest / "big.csv").stat().st_mtime == src.stat().st_mtime
    import shutil

    def disk_full(fin, fout, length=0):
        fout.write(fin.read(1000))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", disk_full)
    with pytest.raises(OSError):
        copy_regular_file(src, dest / "again.csv")
    assert sorted(p.name for p in dest.iterdir()) == ["big.csv"]  # no .again.csv.tmp left behind


def test_parquet_with_a_repeated_column_name_is_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_arrays([pa.array([1, 2]), pa.array([3, 4])], names=["a", "a"]), tmp_path / "d.parquet")
    df = read_batch(tmp_path / "d.parquet")  # pandas' reader fails (and can abort the process)
    assert list(df.columns) == ["a", "a.1"] and df.attrs["duplicate_columns"] == {"a": 2}
