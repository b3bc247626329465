"""Turn the project's errors into one-line CLI errors with their exit codes; warnings print as one line too."""

from __future__ import annotations

import contextlib
import warnings

import click


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
    except KeyboardInterrupt:
        raise CliError("interrupted", 130) from None
    finally:
        warnings.showwarning = previous
