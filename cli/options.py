"""Option groups shared by several commands, applied as decorators."""

from __future__ import annotations

import click


def backend_options(function):
    """--backend, --providers, --threads as three parameters."""
    for option in reversed(_BACKEND_OPTIONS):
        function = option(function)
    return function


def parse_providers(value: str):
    if value == "auto":
        return "auto"
    providers = [p.strip() for p in value.split(",") if p.strip()]
    if not providers:
        raise click.BadParameter("name at least one provider (auto, tensorrt, cuda, cpu)", param_hint="--providers")
    return providers


def option_group(target: str, build, *options):
    """Click options whose values reach the command as one object, ``target=build(**values)``, so that a command
    takes what it uses (a ``SaveRule``, ``StreamOptions``) instead of one parameter per flag."""
    import functools

    def decorator(function):
        names: list[str] = []

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            kwargs[target] = build(**{name: kwargs.pop(name) for name in names})
            return function(*args, **kwargs)

        wrapper.__click_params__ = list(getattr(function, "__click_params__", []))
        for option in reversed(options):
            wrapper = option(wrapper)
        names.extend(param.name for param in wrapper.__click_params__[-len(options):])
        return wrapper

    return decorator


def runner_options(function):
    """--backend, --providers, --threads as one dict for ``Auditor.load``."""
    return option_group("runner", lambda backend, providers, threads: {
        "backend": backend, "providers": parse_providers(providers), "threads": threads}, *_BACKEND_OPTIONS)(function)


_BACKEND_OPTIONS = (
    click.option("--backend", type=click.Choice(["auto", "onnxruntime", "tensorrt"]), default="auto",
                 show_default=True, help="Runtime backend."),
    click.option("--providers", default="auto", show_default=True,
                 help="ORT execution providers, comma separated: auto, tensorrt, cuda, cpu."),
    click.option("--threads", type=click.IntRange(min=1), default=None,
                 help="Intra-op threads for ONNX Runtime (default: all cores)."),
)
