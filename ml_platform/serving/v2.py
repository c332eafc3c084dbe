"""The Open Inference Protocol (KServe V2) in one place: request tensors in, output
tensors and model metadata out.

A request's ``inputs`` are one tensor per feature column (``shape`` ``[N]`` or ``[N, 1]``,
a ``datatype`` and flat or ``[[v], ...]`` data); they are checked here (shape, datatype
against the feature's type) and handed to the model's :class:`~ml_platform.serving.requests.Schema`
as columns, so a value gets the same typing rules (``features.py``) as in the MLflow
formats. Answers name the model and version and carry ``label`` + ``probabilities``
(classification) or ``predictions`` (regression), or the ``outputs`` the request asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ml_platform.names import column_name
from ml_platform.serving.errors import RequestError
from ml_platform.serving.features import Feature, json_type, shown

if TYPE_CHECKING:
    from ml_platform.serving.model import LoadedModel
    from ml_platform.serving.requests import Parsed, Schema

NUMERIC_TYPES = frozenset(
    ("FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
)
INT_TYPES = frozenset(t for t in NUMERIC_TYPES if "INT" in t)
TYPES = NUMERIC_TYPES | {"BYTES", "BOOL"}
# ONNX Runtime output type -> V2 datatype (the label output's, in the metadata and answers)
FROM_ORT = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(string)": "BYTES",
    "tensor(bool)": "BOOL",
    "tensor(float16)": "FP16",
}


# ---------------------------------------------------------------- requests
def parse_request(schema: Schema, body) -> tuple[Parsed, list | None, object]:
    """-> (parsed, requested output names or None, request id or None)."""
    if not isinstance(body, dict):
        raise RequestError(
            "bad_request", f'the body must be a JSON object {{"inputs": [...]}}, got {json_type(body)}', None
        )
    for k in body:
        if k not in ("id", "inputs", "outputs", "parameters"):
            raise RequestError(
                "bad_request",
                f"unsupported key {k!r} (expected 'inputs' and optionally 'id', 'outputs', 'parameters')",
                k,
            )
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        raise RequestError("bad_request", f"'inputs' must be a list of tensors, got {json_type(inputs)}", "inputs")
    if not inputs:
        raise RequestError("empty", "'inputs' is empty", "inputs")
    rid = body.get("id")
    if rid is not None and not isinstance(rid, str):
        raise RequestError("bad_request", "'id' must be a string", "id")
    params = body.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise RequestError("bad_request", "'parameters' must be an object", "parameters")
    outputs = body.get("outputs")
    wanted = None
    if outputs is not None:
        if not isinstance(outputs, list):
            raise RequestError("bad_request", "'outputs' must be a list of {\"name\": ...}", "outputs")
        wanted = []
        for j, o in enumerate(outputs):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise RequestError(
                    "bad_request", f"outputs[{j}] must be an object with a string 'name'", f"outputs[{j}]"
                )
            wanted.append(o["name"])
    cols, n = {}, None
    for j, t in enumerate(inputs):
        if not isinstance(t, dict):
            raise RequestError(
                "bad_request",
                f"inputs[{j}] must be a tensor object {{name, shape, datatype, data}}",
                f"inputs[{j}]",
            )
        name = t.get("name")
        if not isinstance(name, str):
            raise RequestError("bad_request", f"inputs[{j}].name must be a string", f"inputs[{j}].name")
        if name not in schema.allowed:
            name = column_name(name)  # `café` sent NFD is the model's `café`
            if name not in schema.allowed:
                schema._unknown(name)
        if name in cols:
            raise RequestError("bad_request", f"input {name!r} appears twice", name)
        for k in t:
            if k not in ("name", "shape", "datatype", "data", "parameters"):
                raise RequestError("bad_request", f"input {name!r}: unsupported key {k!r}", name)
        shape = t.get("shape")
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= 2
            or any(type(s) is not int or s < 0 for s in shape)
            or (len(shape) == 2 and shape[1] != 1)
        ):
            raise RequestError(
                "bad_request", f"input {name!r}: shape must be [N] or [N, 1] with N >= 0, got {shown(shape)}", name
            )
        dtype = t.get("datatype")
        if type(dtype) is not str or dtype not in TYPES:  # not hashable, not a type name
            raise RequestError(
                "bad_request",
                f"input {name!r}: datatype must be one of {sorted(TYPES)}, got {json_type(dtype)} {shown(dtype)}",
                f"inputs[{j}].datatype",
            )
        data = t.get("data")
        if not isinstance(data, list):
            raise RequestError("bad_request", f"input {name!r}: data must be a list, got {json_type(data)}", name)
        if data and type(data[0]) is list:  # nested [[v], [v], ...]
            flat = []
            for i, sub in enumerate(data):
                if type(sub) is not list or len(sub) != 1:
                    raise RequestError(
                        "bad_request", f"input {name!r}: element {i} must be [value] in nested data", name
                    )
                flat.append(sub[0])
            data = flat
        rows = shape[0]
        if len(data) != rows:
            raise RequestError(
                "bad_request", f"input {name!r}: shape {shape} needs {rows} values, data has {len(data)}", name
            )
        if n is None:
            n = rows
        elif rows != n:
            raise RequestError("bad_request", f"input {name!r} has {rows} rows, other inputs have {n}", name)
        feat = schema.by_name.get(name)
        if feat is not None:
            _check_dtype(feat, dtype, data)
        cols[name] = data
    for f in schema.names:
        if f not in cols:
            schema._missing(f)
    if not n:
        raise RequestError("empty", "the inputs have no rows (N = 0)", "inputs")
    ids = cols.get(schema.id_column) if schema.id_column else None
    return schema.from_columns(cols, n, ids, where="element"), wanted, rid


def _check_dtype(feat: Feature, dtype: str, data: list) -> None:
    if dtype == "BOOL":
        # One typing rule with batches: a boolean is a category ("true"/"false"), never a number.
        if feat.numeric:
            raise RequestError(
                "wrong_type", f"input {feat.name!r} is numeric: use FP32, FP64 or INT64, not BOOL", feat.name
            )
        for i, v in enumerate(data):
            if v is not None and type(v) is not bool:  # null: the nullability rule decides
                raise RequestError(
                    "wrong_type",
                    f"element {i}: input {feat.name!r} has datatype BOOL but holds a {json_type(v)}",
                    feat.name,
                )
        return
    if feat.numeric and dtype == "BYTES":
        raise RequestError(
            "wrong_type", f"input {feat.name!r} is numeric: use FP32, FP64 or INT64, not BYTES", feat.name
        )
    if not feat.numeric and dtype != "BYTES":
        # integer codes are fine as numbers; everything else is caught on conversion
        for i, v in enumerate(data):
            if type(v) is str:
                raise RequestError(
                    "wrong_type",
                    f"element {i}: input {feat.name!r} has datatype {dtype} but holds a string",
                    feat.name,
                )
    if dtype in INT_TYPES:
        for i, v in enumerate(data):
            if type(v) is float and not v.is_integer():
                raise RequestError(
                    "wrong_type",
                    f"element {i}: input {feat.name!r} has datatype {dtype} but holds {v!r}",
                    feat.name,
                )


# ---------------------------------------------------------------- answers
def output_names(model: LoadedModel) -> tuple[str, ...]:
    return ("label", "probabilities") if model.classification else ("predictions",)


def check_outputs(model: LoadedModel, wanted: list | None) -> None:
    """The request's ``outputs`` (None: all) are outputs this model has."""
    if wanted is None:
        return
    avail = output_names(model)
    for nm in wanted:
        if nm not in avail:
            raise RequestError("bad_request", f"unknown output {nm!r}: this model has {list(avail)}", "outputs")


def output_tensors(model: LoadedModel, outs: list, n: int, wanted: list | None) -> list:
    if model.classification:
        k = len(model.classes)
        avail = {
            "label": lambda: {
                "name": "label",
                "shape": [n],
                "datatype": model.label_datatype,
                "data": outs[0].tolist(),
            },
            "probabilities": lambda: {
                "name": "probabilities",
                "shape": [n, k],
                "datatype": "FP32",
                "data": outs[1].reshape(-1).tolist(),
            },
        }
    else:
        avail = {
            "predictions": lambda: {
                "name": "predictions",
                "shape": [n],
                "datatype": "FP32",
                "data": outs[0].reshape(-1).tolist(),
            }
        }
    names = wanted if wanted is not None else list(avail)
    return [avail[nm]() for nm in names]


def response(model: LoadedModel, outs: list, n: int, wanted: list | None, rid) -> dict:
    """The answer to an infer request of ``n`` rows (``rid``: the request's ``id``, echoed)."""
    payload = {
        "model_name": model.name,
        "model_version": model.version_str,
        "outputs": output_tensors(model, outs, n, wanted),
    }
    if rid is not None:
        payload["id"] = rid
    return payload


# ---------------------------------------------------------------- metadata (GET /v2/models/<name>)
def input_metadata(model: LoadedModel) -> list:
    return [
        {"name": f.name, "datatype": "FP32" if f.numeric else "BYTES", "shape": [-1, 1] if f.rank2 else [-1]}
        for f in model.schema.features
    ]


def output_metadata(model: LoadedModel) -> list:
    if model.classification:
        return [
            {"name": "label", "datatype": model.label_datatype, "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(model.classes)]},
        ]
    return [{"name": "predictions", "datatype": "FP32", "shape": [-1]}]
