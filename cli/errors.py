"""Turn the project's errors into one-line CLI errors with their exit codes; warnings print as one line too."""

from __future__ import annotations

import contextlib
import warnings

import click


EXPORT_MODULES = {"torch", "timm", "onnx", "onnxscript", "safetensors", "skimage", "matplotlib", "tqdm",
                  "torchvision"}


class CliError(click.ClickException):
    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def _show_warning(message, category, filename, lineno, file=None, line=None):
    click.secho(f"warning: {message}", fg="yellow", err=True)


@contextlib.contextmanager
def handle_errors():
    from auditor_rt.runtime.errors import AuditorError

    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        yield
    except AuditorError as exc:
        raise CliError(str(exc), exc.exit_code) from None
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in EXPORT_MODULES:
            from auditor_rt.export.versions import INSTALL_HINT

            raise CliError(f"this command needs {exc.name}, which the runtime-only install lacks; {INSTALL_HINT}") \
                from None
        raise
    except UnicodeDecodeError as exc:  # a binary file given where a text manifest or list file was expected
        raise CliError(f"a file given as text (a manifest or list file) is not UTF-8 text: {exc.reason} at byte "
                       f"{exc.start}; save it as UTF-8 CSV or JSON lines") from None
    except OSError as exc:  # a file where a folder should be, a read-only disk, a missing parent...
        where = f"{exc.filename}: " if exc.filename else ""
        raise CliError(f"{where}{exc.strerror or exc}") from None
    except KeyboardInterrupt:
        raise CliError("interrupted", 130) from None
    finally:
        warnings.showwarning = previous
