"""The endpoint's OpenAPI 3.0 document (``GET /openapi.json``): every route, the request
and response bodies of both scoring protocols, and the one error body.

Kept by hand next to the routes (``app.py``) rather than generated: the scoring routes
bypass Starlette's routing (the fast path), and the bodies are plain JSON checked by
``requests.py`` / ``v2.py``, not by a schema library.
"""

from __future__ import annotations

from ml_platform.serving import v2

JSON = "application/json"


def _err_ref():
    return {"description": "Error", "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}


def openapi_document(models: list[str]) -> dict:
    """The document for an endpoint serving ``models`` (the ``name`` path parameter's values)."""
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": models}}
    version_header = {
        "X-Model-Version": {"schema": {"type": "string"}, "description": "Version of the model that answered"}
    }
    errors = {c: _err_ref() for c in ("400", "404", "413", "415", "503")}
    mlflow_body = {"required": True, "content": {JSON: {"schema": {"$ref": "#/components/schemas/MlflowRequest"}}}}
    mlflow_resp = {
        "200": {
            "description": "Predictions",
            "headers": version_header,
            "content": {JSON: {"schema": {"$ref": "#/components/schemas/MlflowResponse"}}},
        },
        **errors,
    }
    plain = {"200": {"description": "OK", "content": {JSON: {"schema": {"type": "object"}}}}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "ml_platform endpoint",
            "version": "1",
            "description": "ONNX Runtime scoring endpoint: MLflow scoring protocol and Open "
            "Inference Protocol (KServe V2). Errors: {error: {kind, field, message}}.",
        },
        "paths": {
            "/models/{name}/invocations": {
                "post": {
                    "summary": "Score rows (MLflow scoring protocol)",
                    "parameters": [name_param],
                    "requestBody": mlflow_body,
                    "responses": mlflow_resp,
                }
            },
            "/invocations": {
                "post": {
                    "summary": "Score rows with the only configured model",
                    "requestBody": mlflow_body,
                    "responses": mlflow_resp,
                }
            },
            "/v2/models/{name}/infer": {
                "post": {
                    "summary": "Score rows (Open Inference Protocol)",
                    "parameters": [name_param],
                    "requestBody": {
                        "required": True,
                        "content": {JSON: {"schema": {"$ref": "#/components/schemas/V2Request"}}},
                    },
                    "responses": {
                        "200": {
                            "description": "Outputs",
                            "headers": version_header,
                            "content": {JSON: {"schema": {"$ref": "#/components/schemas/V2Response"}}},
                        },
                        **errors,
                    },
                }
            },
            "/v2/models/{name}": {
                "get": {
                    "summary": "Model metadata",
                    "parameters": [name_param],
                    "responses": {**plain, "404": _err_ref()},
                }
            },
            "/v2/models/{name}/ready": {
                "get": {
                    "summary": "Model readiness",
                    "parameters": [name_param],
                    "responses": {**plain, "503": _err_ref()},
                }
            },
            "/v2/health/live": {"get": {"summary": "Liveness", "responses": plain}},
            "/v2/health/ready": {
                "get": {
                    "summary": "Readiness: every model with a champion pointer serves exactly the pointer's version",
                    "responses": {**plain, "503": {"description": "Not ready"}},
                }
            },
            "/v2": {"get": {"summary": "Server metadata", "responses": plain}},
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/admin/reload": {
                "post": {
                    "summary": "Reload champions now (Bearer token when configured)",
                    "parameters": [{"name": "model", "in": "query", "required": False, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {
                            "description": "Per-model outcome",
                            "content": {JSON: {"schema": {"$ref": "#/components/schemas/ReloadResponse"}}},
                        },
                        "401": _err_ref(),
                        "404": _err_ref(),
                    },
                }
            },
            "/openapi.json": {"get": {"summary": "This document", "responses": plain}},
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["kind", "field", "message"],
                            "properties": {
                                "kind": {"type": "string"},
                                "field": {"type": "string", "nullable": True},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
                "MlflowRequest": {
                    "type": "object",
                    "description": "Exactly one of the keys.",
                    "properties": {
                        "dataframe_split": {
                            "type": "object",
                            "required": ["columns", "data"],
                            "properties": {
                                "columns": {"type": "array", "items": {"type": "string"}},
                                "data": {"type": "array", "items": {"type": "array", "items": {}}},
                            },
                        },
                        "dataframe_records": {"type": "array", "items": {"type": "object"}},
                        "inputs": {
                            "oneOf": [
                                {"type": "array", "items": {"type": "object"}},
                                {"type": "object", "additionalProperties": {"type": "array"}},
                            ]
                        },
                    },
                },
                "MlflowResponse": {
                    "type": "object",
                    "properties": {
                        "predictions": {
                            "type": "array",
                            "items": {
                                "oneOf": [
                                    {"type": "number"},
                                    {
                                        "type": "object",
                                        "properties": {
                                            "label": {},
                                            "probabilities": {
                                                "type": "object",
                                                "additionalProperties": {"type": "number"},
                                            },
                                        },
                                    },
                                ]
                            },
                        }
                    },
                },
                "V2Tensor": {
                    "type": "object",
                    "required": ["name", "shape", "datatype", "data"],
                    "properties": {
                        "name": {"type": "string"},
                        "shape": {"type": "array", "items": {"type": "integer"}},
                        "datatype": {"type": "string", "enum": sorted(v2.TYPES)},
                        "data": {"type": "array", "items": {}},
                    },
                },
                "V2Request": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"}},
                        "outputs": {
                            "type": "array",
                            "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                        },
                    },
                },
                "V2Response": {
                    "type": "object",
                    "properties": {
                        "model_name": {"type": "string"},
                        "model_version": {"type": "string"},
                        "id": {"type": "string"},
                        "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"}},
                    },
                },
                "ReloadResponse": {
                    "type": "object",
                    "properties": {
                        "models": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "properties": {
                                    "version": {"type": "integer", "nullable": True},
                                    "status": {
                                        "type": "string",
                                        "enum": ["loaded", "unchanged", "rejected", "unloaded"],
                                    },
                                    "reason": {"type": "string", "nullable": True},
                                    "serving_version": {"type": "integer", "nullable": True},
                                },
                            },
                        }
                    },
                },
            }
        },
    }
