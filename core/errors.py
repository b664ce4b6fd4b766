"""Named errors of the pipeline. Each says what went wrong and what to do next."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: the command line prints the message and exits non-zero, without a traceback."""


class PackagingError(PipelineError):
    """A file cannot go into a bundle (unverified, failed, changed since verification, too big)."""


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


class UnverifiedFileError(PipelineError):
    """A file that failed verification, was never verified, or changed since, given to a command that uses
    verified files only (evaluate, arm-check, bench, package) without ``--allow-unverified``."""


class ImageError(PipelineError):
    pass


class UsageError(PipelineError):
    """A combination of options the pipeline cannot honour for this model."""


class NonFiniteWeightError(PipelineError):
    """A checkpoint tensor holds NaN or infinity: refused like an all-zero weight."""


class ArtifactCorruptError(PipelineError):
    """An artifact an earlier stage wrote is truncated, changed since, or not a readable model."""


class OutputDirError(PipelineError):
    """OUT (or a folder under it) is a file, or cannot be created or written."""


class ArtifactsLockedError(PipelineError):
    """Another run holds this model's artifact directory."""


class CalibrationError(PipelineError):
    """No usable calibration image."""


class PhotoPoolError(PipelineError):
    """The photo pool is not installed, or a photo in it is not the one its manifest names."""


class FileAccessError(PipelineError):
    """The operating system refused a read or write (permissions, disk full, a vanished file)."""


class ArmSetupError(PipelineError):
    """The ARM64 emulation set-up (QEMU, aarch64 Python sysroot, aarch64 wheels) could not be made or is broken."""


class ArmRunError(PipelineError):
    """A file did not run under ARM64 emulation (the emulator or the aarch64 interpreter failed)."""


class NativeBuildError(PipelineError):
    """The native C runner could not be compiled or linked (no compiler, no libLiteRt.so, a compile error)."""


class NativeRunError(PipelineError):
    """The native C runner refused a file or its inputs, or its outputs do not match the golden vectors."""


class BrowserSetupError(PipelineError):
    """The browsers or LiteRT.js for ``make web-check`` are missing and could not be set up."""


class KotlinSetupError(PipelineError):
    """The Kotlin compiler or a JVM for checking the bundle's Kotlin is missing, or the Kotlin does not compile."""


class PortInUseError(UsageError):
    """``make web``'s port is taken by another program (the message names the port and ``PORT=``)."""


class WebCheckError(PipelineError):
    """A browser run a file differently from the golden vectors, or the page failed its end-to-end check."""


class NotAVideoError(PipelineError):
    """A file FFmpeg cannot read as a video (text, a truncated header), or a still image."""


class NoVideoTrackError(PipelineError):
    """A media file without a video track (audio only, subtitles only)."""


class EmptyVideoError(PipelineError):
    """A video with no decodable frame (0 bytes, a zero-length clip)."""


class CorruptVideoError(PipelineError):
    """FFmpeg failed while decoding or encoding the video stream."""


class OutputExistsError(PipelineError):
    """An output that already exists is not replaced without ``--force`` (``FORCE=1``)."""


class TruncatedVideoError(PipelineError):
    """Under ``--strict``: a clip whose decodable frames fall short of what its container declares."""


class ClipSetError(PipelineError):
    """The real clips of video/clips.json are not installed, or one is not the file its manifest names."""
