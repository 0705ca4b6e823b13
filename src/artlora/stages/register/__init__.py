"""The register stage: the adapter as an MLflow model version, aliased by the gate (`run.run`). Light on purpose:
importing one of its modules loads only what that module needs."""
