"""The augment stage: augmented views of a dataset, encoded into the latent cache (`run.run`). Light on purpose:
importing one of its modules loads only what that module needs."""
