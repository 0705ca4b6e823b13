"""What the train stage refuses, phrased for the user (a cache made for another base, a checkpoint of another run)."""

from artlora.errors import ArtloraError


class TrainError(ArtloraError):
    """The inputs of a training run do not fit together; the message says which and what to do."""
