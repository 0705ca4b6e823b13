"""The edges to the outside: object storage (minio SDK), MLflow, local services and the environment's settings.
These are the only modules that import minio or mlflow, or start a server."""
