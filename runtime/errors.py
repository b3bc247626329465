"""The project's exception hierarchy.

Every error a user can cause is an ``AuditorError`` whose message says what was wrong and what to do. The CLI turns
these into one-line errors with a non-zero exit code; anything else is a bug and keeps its traceback.
"""


class AuditorError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, wrong artifact)."""

    exit_code = 2


class ConfigError(AuditorError):
    """An option, checkpoint config or manifest field has a value that cannot be used."""


class ArtifactError(AuditorError):
    """An artifact folder is missing, incomplete or unreadable."""


class DigestMismatchError(ArtifactError):
    """A file on disk is not the one the manifest names (its SHA-256 differs)."""


class InputValidationError(AuditorError):
    """A tensor fed to a runner has the wrong name, dtype or shape."""


class ImageDecodeError(AuditorError):
    """An image file or buffer could not be decoded."""


class ImageTooLargeError(ImageDecodeError):
    """An image has more pixels than the limit (a decompression bomb, or simply too large to hold)."""


class DecodeTooCostlyError(ImageDecodeError):
    """Decoding an image went past the decoder's memory budget or its deadline (a hostile or pathological file)."""


class DecoderCrashError(ImageDecodeError):
    """The decoder process died while it decoded an image (a codec bug that the file triggers)."""


class FormatNotAcceptedError(ImageDecodeError):
    """An image is in a format outside the accepted list (``serve --formats``), or in no known format."""


class DecoderUnavailableError(AuditorError):
    """The image decoder processes cannot start (the Python interpreter or OpenCV cannot be run as a subprocess)."""


class NotSupportedError(AuditorError):
    """A capability this version states that it lacks (an operator without a gradient rule, a classifier in
    serve). A forgotten abstract method stays a ``NotImplementedError``: a bug, with its traceback."""


class BackendUnavailableError(AuditorError):
    """The requested backend or execution provider is not installed or cannot run here."""


class OutputError(AuditorError):
    """A result could not be written (full or read-only disk, a file where a folder should be)."""
