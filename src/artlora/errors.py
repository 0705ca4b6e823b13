"""The errors a user or the environment can cause, as opposed to bugs.

Each message names the input (file, field, URI, host) and says what to do; the CLI prints it as one line,
`artlora <command>: error: <message>`, and exits with code 2. Each layer raises its own kind (ConfigError,
StorageError, ModelLoadError, TrackingError), all of them an ArtloraError.
"""

import signal


class ArtloraError(Exception):
    """A problem with the input or the environment, phrased for the user: what is wrong, and what to do."""


class Stopped(KeyboardInterrupt):
    """This process was told to stop (Ctrl-C's SIGINT, or SIGTERM from a scheduler or `kill`); the CLI exits with
    128 + the signal's number, after the blocks that were running have cleaned up."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
