"""NumPy SGD-with-momentum and Adam against torch.optim on the same gradient sequence."""

import numpy as np
import pytest
import torch

from rnncap.numpy_ref import Adam, SGDMomentum


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (
            lambda: SGDMomentum(lr=0.1, momentum=0.9),
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        ),
        (
            lambda: Adam(lr=0.05, beta1=0.8, beta2=0.99, eps=1e-6),
            lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.8, 0.99), eps=1e-6),
        ),
    ],
)
def test_optimiser_matches_torch(ours, theirs):
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    torch_params = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    optimiser, torch_optimiser = ours(), theirs(list(torch_params.values()))
    for _ in range(5):
        grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        optimiser.step(params, grads)
        for name, tensor in torch_params.items():
            tensor.grad = torch.from_numpy(grads[name])
        torch_optimiser.step()
    for name, tensor in torch_params.items():
        np.testing.assert_allclose(params[name], tensor.detach().numpy(), rtol=1e-12, atol=1e-14)
