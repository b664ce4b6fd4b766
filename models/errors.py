"""Named errors of the pipeline. Each says what went wrong and what to do next."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: the command line prints the message and exits non-zero, without a traceback."""


class UnknownModelError(PipelineError):
    pass


class UnsupportedModelError(PipelineError):
    pass


class CardError(PipelineError):
    pass


class CheckpointNotFoundError(PipelineError):
    pass


class CheckpointFormatError(PipelineError):
    pass


class CheckpointMismatchError(PipelineError):
    pass


class ZeroWeightError(PipelineError):
    pass


class ArtifactMissingError(PipelineError):
    pass


class VerificationError(PipelineError):
    pass


class ImageError(PipelineError):
    pass


class UsageError(PipelineError):
    """A combination of options the pipeline cannot honour for this model."""
