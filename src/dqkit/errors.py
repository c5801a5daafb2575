"""dqkit's exceptions: one tree, so callers can catch what they mean."""

from __future__ import annotations


class DqkitError(Exception):
    """Base of every error dqkit raises on purpose."""


class InputError(DqkitError, ValueError):
    """A sample, reference file or argument cannot be used as given."""


class ConfigError(DqkitError, ValueError):
    """A setting (argument, environment variable) is invalid."""


class WarehouseError(DqkitError):
    """The warehouse file cannot be opened or written."""


class WarehouseBusyError(WarehouseError):
    """Another process holds the warehouse file for writing."""


class MissingColumnsError(DqkitError, ValueError):
    """A frame handed from one part of the pipeline to another lacks columns the other needs."""

    def __init__(self, what: str, missing: list[str]) -> None:
        """Name the frame (``what``) and the columns it lacks."""
        super().__init__(f"{what} lacks columns {', '.join(missing)}")
        self.missing = missing


class StageError(DqkitError):
    """A pipeline stage failed unexpectedly; names the stage, the chunk and the run.

    The original exception is the ``__cause__``. The chunk in hand is not committed, so a
    re-run of the same sample resumes from it.
    """

    def __init__(self, stage: str, chunk: int, run_id: str, cause: BaseException | None = None) -> None:
        """Describe the failure of ``stage`` on chunk number ``chunk`` (1-based) of run ``run_id``."""
        why = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        super().__init__(f"stage {stage} failed on chunk {chunk} of run {run_id}{why}; the chunk was not committed, "
                         "so re-running the same sample resumes from it")
        self.stage = stage
        self.chunk = chunk
        self.run_id = run_id

