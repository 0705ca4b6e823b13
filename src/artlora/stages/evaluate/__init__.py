"""The evaluate stage: the adapter against its base model, with per-style evidence and a report (`run.run`).
Light on purpose: importing one of its modules loads only what that module needs."""
