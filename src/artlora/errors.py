"""The errors a user or the environment can cause, as opposed to bugs.

Each message names the input (file, field, URI, host) and says what to do; the CLI prints it as one line,
`artlora <command>: error: <message>`, and exits with code 2. Each layer raises its own kind (ConfigError,
StorageError, ModelLoadError, TrackingError), all of them an ArtloraError.
"""


class ArtloraError(Exception):
    """A problem with the input or the environment, phrased for the user: what is wrong, and what to do."""
