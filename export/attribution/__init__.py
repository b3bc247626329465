"""The attribution compiler: reverse-mode gradients written as ordinary forward ops, so they export to ONNX.

PyTorch's autograd builds the joint forward+backward graph (``torch.func.grad`` traced by ``make_fx``); every aten
``*_backward`` op in it is then replaced by forward ops from a registry of vector-Jacobian rules (``rules.py``).
"""
