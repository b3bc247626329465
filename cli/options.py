"""Option groups shared by several commands, applied as decorators."""

from __future__ import annotations

import click


def backend_options(function):
    function = click.option("--threads", type=click.IntRange(min=1), default=None,
                            help="Intra-op threads for ONNX Runtime (default: all cores).")(function)
    function = click.option("--providers", default="auto", show_default=True,
                            help="ORT execution providers, comma separated: auto, tensorrt, cuda, cpu.")(function)
    function = click.option("--backend", type=click.Choice(["auto", "onnxruntime", "tensorrt"]), default="auto",
                            show_default=True, help="Runtime backend.")(function)
    return function


def parse_providers(value: str):
    if value == "auto":
        return "auto"
    providers = [p.strip() for p in value.split(",") if p.strip()]
    if not providers:
        raise click.BadParameter("name at least one provider (auto, tensorrt, cuda, cpu)", param_hint="--providers")
    return providers
