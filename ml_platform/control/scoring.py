"""Batch scoring of a CSV or Parquet file with the serving champion's ONNX graph.

``score_file`` reads the file in chunks (``pyarrow.parquet.ParquetFile.iter_batches`` /
``pandas.read_csv(chunksize=)``), so peak memory is bounded by ``chunk_rows`` and not by
the file, scores each chunk with ONNX Runtime and appends it to a Parquet file with
``pyarrow.parquet.ParquetWriter``. The champion is the version the serving store points
at (``ModelStore.current``), i.e. exactly what the endpoint answers with.

Output columns (one row per input row, same order)::

    <id_column>        when the model has one and the file carries it
    label              classification: the predicted class (the graph's label output)
    p_<class>          classification: one float32 probability column per class
    prediction         regression: the predicted value
    model_version      the champion version that scored the row

Features are typed like ``core.frames.model_inputs`` (numeric -> float32, unparsable ->
NaN; categorical -> strings with 3, 3.0 and "3" one category, missing -> ``MISSING``),
but column-wise in numpy/pyarrow instead of one Python call per value, so the result
equals ``core.export.onnx_predict`` on the same rows.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ml_platform.core import transform
from ml_platform.core.export import session
from ml_platform.core.frames import feeds_of
from ml_platform.core.landing import SUPPORTED, BatchReadError
from ml_platform.names import column_name
from ml_platform.serving.store import ModelStore
from ml_platform.settings import FeatureSpec, ModelConfig, Settings

# Chunks scored concurrently (capped by the cores this process may use): scikit-learn's
# predict_proba uses every core too.
MAX_PARALLEL_CHUNKS = 4


# ---------------------------------------------------------------- reading
def _fmt(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".gz", ".bz2", ".xz", ".zst", ".zip"):
        if name.endswith(".csv" + suffix):
            return "csv"
    fmt = SUPPORTED.get(path.suffix.lower())
    if fmt is None:
        raise BatchReadError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; expected one of {sorted(SUPPORTED)}"
        )
    return fmt


def _columns(path: Path, fmt: str) -> list[str]:
    try:
        if fmt == "parquet":
            return list(pq.ParquetFile(path).schema_arrow.names)
        return list(pd.read_csv(path, nrows=0).columns)
    except FileNotFoundError:
        raise
    except pd.errors.EmptyDataError:
        raise BatchReadError(f"{path}: no columns to read (empty CSV)") from None
    except Exception as e:  # noqa: BLE001 - parser / pyarrow errors carry the detail
        raise BatchReadError(f"{path}: cannot be read as {fmt}: {type(e).__name__}: {e}") from None


def _chunks(path: Path, fmt: str, columns: list[str], chunk_rows: int):
    try:
        if fmt == "parquet":
            pf = pq.ParquetFile(path)
            for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
                yield batch.to_pandas()
        else:
            with pd.read_csv(path, usecols=columns, chunksize=chunk_rows) as reader:
                yield from reader
    except Exception as e:  # noqa: BLE001
        raise BatchReadError(f"{path}: cannot be read as {fmt}: {type(e).__name__}: {e}") from None


# ---------------------------------------------------------------- the model
def _champion(settings: Settings, model: str):
    if not isinstance(model, str) or model not in settings.models:
        raise ValueError(f"unknown model {model!r}; configured: {sorted(settings.models)}")
    store = ModelStore(settings.serving_dir)
    pointer = store.current(model)
    if pointer is None:
        raise ValueError(
            f"{model}: no champion is serving yet (nothing published under "
            f"{store.model_dir(model)}); run the pipeline or `ml-platform rollback` first"
        )
    onnx_bytes, meta = store.read(model, pointer["version"])
    return pointer["version"], onnx_bytes, meta


def _graph_config(cfg: ModelConfig, meta: dict) -> ModelConfig:
    """The features and task the champion's graph was built for (its metadata), which can
    differ from today's config when the config changed after the champion was trained."""
    feats = {c: FeatureSpec(**spec) for c, spec in (meta.get("features") or {}).items()}
    return cfg.model_copy(
        update={
            "features": feats or cfg.features,
            "task": meta.get("task", cfg.task),
            "id_column": meta.get("id_column", cfg.id_column),
        }
    )


def _parallel_chunks() -> int:
    """Chunks scored at the same time (one single-threaded ONNX Runtime call each)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_PARALLEL_CHUNKS))


def _output_table(
    chunk: pd.DataFrame, res: list, id_col: str | None, classification: bool, prob_names: list[str], version: int
) -> pa.Table:
    cols: dict[str, pa.Array] = {}
    if id_col:
        try:
            cols[id_col] = pa.array(chunk[id_col], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types in one column
            cols[id_col] = pa.array(chunk[id_col].astype(str))
    if classification:
        cols["label"] = pa.array(res[0].reshape(-1))
        for i, name in enumerate(prob_names):
            cols[name] = pa.array(np.ascontiguousarray(res[1][:, i], dtype=np.float32))
    else:
        cols["prediction"] = pa.array(np.asarray(res[0], dtype=np.float32).reshape(-1))
    cols["model_version"] = pa.array(np.full(len(chunk), version, dtype=np.int64))
    return pa.table(cols)


def _empty_schema(id_col: str | None, classification: bool, classes: list, prob_names: list[str]) -> pa.Schema:
    fields = [pa.field(id_col, pa.string())] if id_col else []
    if classification:
        label_type = pa.int64() if all(isinstance(c, int) for c in classes) else pa.string()
        fields += [pa.field("label", label_type)] + [pa.field(p, pa.float32()) for p in prob_names]
    else:
        fields += [pa.field("prediction", pa.float32())]
    return pa.schema(fields + [pa.field("model_version", pa.int64())])


# ---------------------------------------------------------------- scoring
def score_file(settings: Settings, model: str, path, out_path=None, chunk_rows: int = 50_000, progress=None) -> dict:
    """Score a CSV or Parquet file with ``model``'s serving champion; write Parquet.

    Parameters
    ----------
    settings : Settings
        Platform settings (the serving store under ``settings.serving_dir``).
    model : str
        A configured model name.
    path : str or os.PathLike
        The input file (``.csv`` (optionally compressed), ``.parquet`` or ``.pq``). It must
        hold every feature of the champion; other columns are ignored.
    out_path : str or os.PathLike, optional
        Where to write the predictions (Parquet). Default ``<input stem>.predictions.parquet``
        next to the input. Written to a temporary name and moved into place at the end.
    chunk_rows : int
        Rows read, scored and written at a time: bounds peak memory.
    progress : callable, optional
        Called with the number of rows written so far after each chunk.

    Returns
    -------
    dict
        ``rows``, ``seconds``, ``rows_per_second``, ``model_version``, ``out_path``.

    Raises
    ------
    ValueError
        Unknown model, no champion, unreadable or unsupported file, or a missing feature
        column (the message names the file and the column).
    """
    t0 = time.perf_counter()
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer (got {chunk_rows!r})")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    fmt = _fmt(path)
    if out_path is not None and Path(out_path).suffix.lower() not in (".parquet", ".pq"):
        raise ValueError(f"--out {out_path}: predictions are written as Parquet: name a .parquet (or .pq) file")
    if out_path is not None and not Path(out_path).parent.is_dir():  # a typo is not a new directory
        raise ValueError(f"--out {out_path}: the directory {Path(out_path).parent} does not exist: create it first")
    version, onnx_bytes, meta = _champion(settings, model)
    gcfg = _graph_config(settings.models[model], meta)  # what a row holds: the input columns
    fn, mcfg = transform.for_version(meta, gcfg)  # what the graph takes: after the version's transform
    raw = _columns(path, fmt)
    spelled = {column_name(c): c for c in raw}  # the config's spelling -> the file's
    have = [column_name(c) for c in raw]
    twice = [c for c in dict.fromkeys(have) if have.count(c) > 1 and c in gcfg.features]
    if twice:  # as ingest refuses it: which one would be the feature?
        n = have.count(twice[0])
        raise ValueError(f"{path}: column {twice[0]!r} appears {n} times (as spelled after Unicode NFC)")
    missing = [c for c in gcfg.features if c not in have]
    if missing:
        raise ValueError(
            f"{path}: missing column {missing[0]!r} (a feature of model {model!r})"
            + (f"; also missing: {', '.join(map(repr, missing[1:]))}" if missing[1:] else "")
        )
    id_col = gcfg.id_column if gcfg.id_column in have else None
    wanted = list(gcfg.features) + ([id_col] if id_col and id_col not in gcfg.features else [])
    columns = [spelled[c] for c in have if c in wanted]  # file order: what read_csv(usecols) returns

    if out_path is None:
        stem = path.name[: path.name.lower().rfind(".csv")] if fmt == "csv" else path.stem
        out_path = path.with_name(f"{stem}.predictions.parquet")
    out_path = Path(out_path)

    sess = session(onnx_bytes, threads=1)
    classification = gcfg.task == "classification"
    classes = meta.get("classes") or []
    prob_names = [f"p_{c}" for c in classes]
    out_names = [o.name for o in sess.get_outputs()]
    parallel = _parallel_chunks()

    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    writer: pq.ParquetWriter | None = None
    rows = 0
    pending: deque = deque()  # (chunk, future of sess.run), in file order

    def write_oldest() -> None:
        nonlocal writer, rows
        chunk, fut = pending.popleft()
        table = _output_table(chunk, fut.result(), id_col, classification, prob_names, version)
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema)
        elif table.schema != writer.schema:
            try:
                table = table.cast(writer.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise BatchReadError(
                    f"{path}: column {id_col!r} changes type after row {rows} "
                    f"({writer.schema.field(id_col).type} -> "
                    f"{table.schema.field(id_col).type}): {e}"
                ) from None
        writer.write_table(table)
        rows += len(chunk)
        if progress is not None:
            progress(rows)

    try:
        # This thread reads and types chunk k+1 (and writes chunk k-1) while ONNX Runtime
        # scores up to ``parallel`` chunks in pool threads (it releases the GIL). Each call
        # is single-threaded, so results are bit-identical to onnx_predict (more intra-op
        # threads reorder the tree sums), and at most parallel + 1 chunks are in memory.
        with ThreadPoolExecutor(parallel, thread_name_prefix="score") as pool:
            try:
                for chunk in _chunks(path, fmt, columns, chunk_rows):
                    chunk.columns = [column_name(c) for c in chunk.columns]
                    if len(chunk):
                        pending.append(
                            (
                                chunk,
                                pool.submit(
                                    sess.run, out_names, feeds_of(transform.model_rows(chunk, fn, meta), mcfg.features)
                                ),
                            )
                        )
                    while len(pending) > parallel:
                        write_oldest()
                while pending:
                    write_oldest()
            finally:
                for _, fut in pending:
                    fut.cancel()
        if writer is None:  # no rows: an empty file with the output columns
            writer = pq.ParquetWriter(tmp, _empty_schema(id_col, classification, classes, prob_names))
        writer.close()
        writer = None
        os.replace(tmp, out_path)
    finally:
        if writer is not None:
            writer.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
    seconds = time.perf_counter() - t0
    return {
        "rows": rows,
        "seconds": seconds,
        "rows_per_second": rows / seconds if seconds > 0 else math.inf,
        "model_version": version,
        "out_path": str(out_path),
    }
