"""The ``auditor-rt`` command. Subcommands load on first use, so ``--help`` imports neither torch nor onnxruntime."""

from __future__ import annotations

import difflib
import importlib

import click

from auditor_rt.cli.errors import handle_errors

COMMANDS = {
    "demo": "auditor_rt.cli.commands.demo",
    "train": "auditor_rt.cli.commands.train",
    "export": "auditor_rt.cli.commands.export",
    "infer": "auditor_rt.cli.commands.infer",
    "info": "auditor_rt.cli.commands.info",
    "verify": "auditor_rt.cli.commands.verify",
    "build": "auditor_rt.cli.commands.build",
    "serve": "auditor_rt.cli.commands.serve",
}


class LazyGroup(click.Group):
    """Imports a command's module only when the command is looked up. Command modules import only click at the
    top, so listing them for ``--help`` stays instant."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        module = COMMANDS.get(name)
        if module is None:
            return None
        return importlib.import_module(module).command

    def resolve_command(self, ctx, args):
        """click says only "No such command"; a near miss (``expor``) also gets the command it probably meant."""
        name = click.utils.make_str(args[0]) if args else ""
        if args and name not in COMMANDS and not ctx.resilient_parsing and not name.startswith("-"):
            close = difflib.get_close_matches(name, sorted(COMMANDS), n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else f" Commands: {', '.join(sorted(COMMANDS))}."
            ctx.fail(f"No such command {name!r}.{hint}")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx):
        with handle_errors():
            return super().invoke(ctx)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="auditor-rt", prog_name="auditor-rt")
def cli():
    """Audit vision models with heatmaps: train a risk head on a frozen timm backbone, export it to ONNX, and
    run it with ONNX Runtime.

    Start with `auditor-rt demo`, which builds a demo data set, trains, exports and audits held-out images.
    """
