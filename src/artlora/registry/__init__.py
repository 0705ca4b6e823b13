"""Looking registered styles up in MLflow: list, show, compare, download and promote model versions.

Everything goes through `artlora.io.model_registry`, so it works against any MLflow server (MLFLOW_TRACKING_URI) or the
local store; a version is named `NAME`, `NAME@alias` or `NAME/VERSION`, with or without `models:/` before it.
"""
