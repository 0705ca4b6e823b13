"""Kubeflow Pipelines components, one thin wrapper per stage."""
