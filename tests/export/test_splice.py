"""A traced gradient converted once and spliced into each method's graph computes what a whole-module export
computes, and the parity check still refuses a spliced graph whose gradient is wrong."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from auditor_rt.export.attribution import create_attribution, splice
from auditor_rt.export.attribution.compiler import shared_traces
from auditor_rt.export.models.checkpoint import load_checkpoint
from auditor_rt.export.conversion.torch_to_onnx import export_model, tensor_specs
from auditor_rt.export.graphs.artifact_writer import example_images
from auditor_rt.export.graphs.risk_head_export import build_audit_module
from auditor_rt.export.verification.parity import check_parity
from auditor_rt.export.errors import ExportError


@pytest.fixture(scope="module")
def audit(checkpoint_dir):
    return build_audit_module(load_checkpoint(checkpoint_dir))


def spliced(module, opset: int = 18):
    with splice.opaque_gradients(module) as swapped:
        model, _ = export_model(module, example_images(module.input_size), opset, ("image",),
                                translations=splice.translation_table(swapped))
    gradients = {key: splice.export_gradient(graph, opset) for key, graph in swapped}
    return model, gradients, swapped


def run(model, feed):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feed)))


def test_methods_of_one_export_share_one_trace(audit):
    example = example_images(audit.input_size)
    with shared_traces():
        saliency = create_attribution("saliency", audit, example)
        gradxinput = create_attribution("gradxinput", audit, example)
        gradcam = create_attribution("gradcam", audit, example)
        gradcam_pp = create_attribution("gradcam++", audit, example)
    assert saliency.compiled is gradxinput.compiled
    assert gradcam.compiled is gradcam_pp.compiled and gradcam.compiled is not saliency.compiled
    again = create_attribution("saliency", audit, example)  # outside the scope: traced anew
    assert again.compiled is not saliency.compiled


@pytest.mark.parametrize("method", ["gradxinput", "gradcam"])
def test_a_spliced_graph_equals_the_whole_module_export(audit, method):
    module = create_attribution(method, audit, example_images(audit.input_size))
    whole, _ = export_model(module, example_images(audit.input_size))
    model, gradients, _ = spliced(module)
    assert splice.splice(model, gradients) == 1
    assert not [n for n in model.graph.node if n.domain == splice.DOMAIN]
    assert all(o.domain != splice.DOMAIN for o in model.opset_import)
    onnx.checker.check_model(model)
    feed = {"image": np.random.default_rng(3).integers(0, 256, (3, *audit.input_size, 3), dtype=np.uint8)}
    ours, reference = run(model, feed), run(whole, feed)
    assert ours.keys() == reference.keys()
    for name in reference:
        scale = max(float(np.abs(reference[name]).max()), 1e-12)
        assert np.abs(ours[name] - reference[name]).max() / scale < 1e-5, name


def test_parity_refuses_a_spliced_graph_with_a_wrong_gradient(audit, tmp_path):
    from onnx import numpy_helper

    module = create_attribution("saliency", audit, example_images(audit.input_size))
    model, gradients, _ = spliced(module)
    (gradient,) = gradients.values()
    weights = [t for t in gradient.graph.initializer if len(t.dims) == 4]  # convolution weights
    damaged = numpy_helper.from_array(numpy_helper.to_array(weights[0]) * 1.01, weights[0].name)
    weights[0].CopyFrom(damaged)
    splice.splice(model, gradients)
    path = tmp_path / "saliency.onnx"
    onnx.save(model, str(path))
    inputs, outputs = tensor_specs(path)
    with pytest.raises(ExportError, match="differs from PyTorch"):
        check_parity(module, path, inputs, outputs, audit.input_size)
