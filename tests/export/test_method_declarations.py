"""The attribution methods' parameters are declared once (``runtime/methods.py``): the exporter's modules, the
export command's options and the runtime's feeds must agree with that declaration."""

from __future__ import annotations

import inspect

import click

from auditor_rt.cli.commands.export import command as export_command
from auditor_rt.export.attribution import ATTRIBUTIONS
from auditor_rt.runtime.methods import METHODS


def test_every_exporter_module_takes_the_declared_parameters_with_the_declared_defaults():
    assert set(ATTRIBUTIONS) == set(METHODS)
    for name, method in METHODS.items():
        signature = inspect.signature(ATTRIBUTIONS[name].__init__)
        taken = {key: p.default for key, p in signature.parameters.items()
                 if key not in ("self", "audit", "example", "eager", "target")}  # how it is built
        assert taken == method.defaults(), name


def test_export_options_match_the_declaration():
    options = {option: parameter for parameter in export_command.params for option in parameter.opts}
    for method in METHODS.values():
        for param in method.params:
            if param.option is None:
                continue
            option = options[param.option]
            assert option.default == param.default, param.option
            if param.choices:
                assert isinstance(option.type, click.Choice) and tuple(option.type.choices) == param.choices


def test_images_per_input_follows_the_parameters():
    assert METHODS["ig"].per_input(METHODS["ig"].resolved({"steps": 8})) == 10
    assert METHODS["smoothgrad"].per_input(METHODS["smoothgrad"].defaults()) == 17
    assert METHODS["gradcam"].per_input({}) == 1
