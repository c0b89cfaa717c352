"""The errors diffbench raises, each with the class stored next to a failed result.

    DiffbenchError
    ├── ConfigError (also ValueError)     "config"
    ├── ServerError
    │   ├── ServerExited                  "server_exit"
    │   │   └── ServerArgsRejected        "bad_serve_args"
    │   ├── OutOfMemory                   "oom"
    │   ├── NotReady                      "timeout"
    │   ├── ImageMissing                  "image_missing"
    │   └── DockerUnavailable             "docker_unavailable"
    ├── RequestFailed                     "http_error"
    │   └── RequestTimeout                "request_timeout"
    ├── BadOutput                         "bad_output"
    ├── DownloadError                     "download"
    │   └── InputMissing                  "input_missing"
    ├── EnvironmentFailed                 "environment"
    ├── CaseTimeout                       "case_timeout"
    ├── ShardLost                         "crashed"
    ├── Cancelled                         "cancelled"
    ├── RunNotStored                      "unknown_run"
    └── StorageUnavailable                "storage"

`error_class` is the short string stored with a result; `retryable` says whether
running the same step again can help.
"""

from __future__ import annotations


class DiffbenchError(Exception):
    """Base of every error diffbench raises on purpose."""

    error_class = "internal"
    retryable = False


class ConfigError(DiffbenchError, ValueError):
    """A case matrix that fails validation; `problems` holds one line per problem."""

    error_class = "config"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class ServerError(DiffbenchError):
    """An inference server that could not serve; carries the tail of its log."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        self.summary = message
        self.log_tail = log_tail
        super().__init__(f"{message}\n--- server log tail ---\n{log_tail}" if log_tail else message)


class ServerExited(ServerError):
    """The server process ended while we needed it."""

    error_class = "server_exit"
    retryable = True


class ServerArgsRejected(ServerExited):
    """The server's own CLI parser refused its arguments; the same arguments fail again."""

    error_class = "bad_serve_args"
    retryable = False


class OutOfMemory(ServerError):
    """The server reported running out of accelerator memory; retrying cannot help."""

    error_class = "oom"


class NotReady(ServerError):
    """The server was alive but not ready before its deadline."""

    error_class = "timeout"
    retryable = True


class ImageMissing(ServerError):
    """The engine's container image is not on this host (no registry is pulled from)."""

    error_class = "image_missing"


class DockerUnavailable(ServerError):
    """The Docker Engine could not be reached."""

    error_class = "docker_unavailable"
    retryable = True


class RequestFailed(DiffbenchError):
    """A request got no usable HTTP answer: connection error or an error status.

    A 4xx other than 408 and 429 is the server refusing this very request: sending it again
    gets the same answer, so it is not retried.
    """

    error_class = "http_error"

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        self.status_code = status_code
        self.retryable = status_code is None or status_code >= 500 or status_code in (408, 429)
        super().__init__(message)


class RequestTimeout(RequestFailed):
    """A request did not finish before its deadline."""

    error_class = "request_timeout"


class BadOutput(DiffbenchError):
    """The server answered, but with an output that is not what was asked for."""

    error_class = "bad_output"


class DownloadError(DiffbenchError):
    """The model could not be fetched; `retryable` is set when the cause may pass."""

    error_class = "download"

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(message)


class InputMissing(DownloadError):
    """A case's input image could not be read or fetched."""

    error_class = "input_missing"


class EnvironmentFailed(DiffbenchError):
    """The engine's environment could not be found or built (a bad pip spec, a missing interpreter)."""

    error_class = "environment"


class CaseTimeout(DiffbenchError):
    """A case used up its whole time budget (`deadlines.case_minutes`)."""

    error_class = "case_timeout"


class StorageUnavailable(DiffbenchError):
    """The results database could not be reached; what was measured goes to the spool."""

    error_class = "storage"
    retryable = True


class RunNotStored(DiffbenchError):
    """A run named on the command line or as a baseline is not in the results database."""

    error_class = "unknown_run"


class ShardLost(DiffbenchError):
    """The shard flow run measuring a case crashed or vanished (its worker or host died)."""

    error_class = "crashed"


class Cancelled(DiffbenchError):
    """The run is being cancelled: no new server is started."""

    error_class = "cancelled"
