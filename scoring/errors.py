"""The project's few named errors. Every layer raises these; the service maps them to HTTP in one place.

Imports flow service -> corpus -> scoring, so the base types live here at the bottom.
"""

from __future__ import annotations


class ReweighError(Exception):
    """Base of every error reweigh raises on purpose (anything else is a bug)."""


class ConfigError(ReweighError, ValueError):
    """A setting, or a combination of settings, that cannot work. The message names the values."""


class VocabularyMismatchError(ConfigError):
    """Teacher and reference tokenizers differ: difference scores would compare different token streams."""


class InputError(ReweighError):
    """An input (file, shard, request body) that cannot be read. The message names which one and why."""


class JobConflictError(ReweighError):
    """An output directory already holds a job made with different settings."""


class PathNotAllowedError(ReweighError):
    """A path outside the configured data roots (absolute elsewhere, `..`, or an escaping symlink)."""


class NotFoundError(ReweighError):
    """A job, manifest or shard that does not exist."""


class StorageError(ReweighError):
    """An object store (s3://, gs://, hf://) refused or failed an operation. The message names the URL."""


class BucketNotFoundError(StorageError, NotFoundError):
    """The bucket a URL names does not exist (or is not visible with these credentials)."""


class StorageCredentialsError(StorageError):
    """No credentials for a store were found where its library looks for them (environment, config files)."""


class StoragePermissionError(StorageError):
    """The store denied the operation to the credentials in use."""


class OverloadedError(ReweighError):
    """The scoring queue is full; the caller should retry later."""


class EngineDeadError(ReweighError):
    """The scoring engine failed in a way a retry will not fix (unlike a per-request error)."""


class JobCancelledError(ReweighError):
    """A job stopped on request at a chunk boundary; its partial output is kept and a rerun resumes it."""


# --- Added for the HTTP service (service/errors.py maps each to a status code) ---


class AuthenticationError(ReweighError):
    """A request to a protected route without a valid API key."""


class JobStateError(ReweighError):
    """An operation that the job's current state does not allow (e.g. the manifest of an unfinished job)."""


class RequestTooLargeError(ReweighError):
    """A request body over the configured byte limit."""


class RequestTimeoutError(ReweighError):
    """A request that was not answered within the configured time; the work it queued is dropped."""


class EngineNotReadyError(ReweighError):
    """The models are not loaded (yet, or any more): the service cannot score."""
