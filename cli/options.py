"""Option groups shared by several commands, applied as decorators."""

from __future__ import annotations

import click


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


def method_options(function):
    """One option per attribution-method parameter that declares one (``runtime/methods.py``), reaching the command
    as ``method_params``: {method: {param: value}} for every method."""
    from auditor_rt.runtime.methods import METHODS

    declared = {param.option: param for method in METHODS.values() for param in method.params if param.option}

    def build(**values):
        return {name: {p.name: values[p.option.lstrip("-").replace("-", "_")] for p in method.params if p.option}
                for name, method in METHODS.items()}

    return option_group("method_params", build, *(_method_option(param) for param in declared.values()))(function)


def _method_option(param):
    if param.choices:
        kind = click.Choice(param.choices)
    elif isinstance(param.default, bool) or param.default is None:
        kind = None
    else:
        number = click.IntRange if isinstance(param.default, int) else click.FloatRange
        kind = number(min=param.minimum) if param.minimum is not None else type(param.default)
    return click.option(param.option, type=kind, default=param.default, show_default=param.default is not None,
                        help=param.help)


_BACKEND_OPTIONS = (
    click.option("--backend", type=click.Choice(["auto", "onnxruntime", "tensorrt"]), default="auto",
                 show_default=True, help="Runtime backend."),
    click.option("--providers", default="auto", show_default=True,
                 help="ORT execution providers, comma separated: auto, tensorrt, cuda, cpu."),
    click.option("--threads", type=click.IntRange(min=1), default=None,
                 help="Intra-op threads for ONNX Runtime (default: all cores)."),
)
