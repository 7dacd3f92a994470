"""The exceptions maskaudit raises; the CLI turns each into one line on stderr and an exit code."""

from __future__ import annotations


class MaskauditError(Exception):
    """Base of every error a user can cause or fix. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class DatasetError(MaskauditError):
    """The dataset directory cannot be used at all (missing, empty, no usable pairs)."""

    exit_code = 2


class InputFileError(MaskauditError):
    """One input file cannot be read or decoded; ingestion records it as skipped."""

    exit_code = 2


class OutputDirError(MaskauditError):
    """The output directory is unsafe or already holds another run's results."""

    exit_code = 3


class CheckpointError(MaskauditError):
    """A checkpoint is missing, corrupt or belongs to another configuration."""

    exit_code = 4


class TrainingError(MaskauditError):
    """Training cannot go on (for example the loss became NaN)."""

    exit_code = 5


class ExportError(MaskauditError):
    """A results directory cannot be exported (not a finished scan, nothing selected, a foreign decisions CSV)."""

    exit_code = 6
