"""Kubeflow pipeline wiring and its compiled IR YAML."""
