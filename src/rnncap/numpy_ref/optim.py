"""Small NumPy optimisers (SGD with momentum, Adam) that update a dict of parameters in place.

The update rules match torch.optim.SGD(momentum, dampening=0) and torch.optim.Adam.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SGDMomentum:
    lr: float = 1e-2
    momentum: float = 0.9
    velocity: dict[str, np.ndarray] = field(default_factory=dict)

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """v = momentum * v + grad; w -= lr * v, for every name in grads."""
        for name, grad in grads.items():
            v = self.velocity.get(name)
            v = grad.copy() if v is None else self.momentum * v + grad
            self.velocity[name] = v
            params[name] -= self.lr * v


@dataclass
class Adam:
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    t: int = 0
    m: dict[str, np.ndarray] = field(default_factory=dict)
    v: dict[str, np.ndarray] = field(default_factory=dict)

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """One bias-corrected Adam update of every name in grads."""
        self.t += 1
        for name, grad in grads.items():
            m = self.beta1 * self.m.get(name, 0.0) + (1 - self.beta1) * grad
            v = self.beta2 * self.v.get(name, 0.0) + (1 - self.beta2) * grad**2
            self.m[name], self.v[name] = m, v
            m_hat = m / (1 - self.beta1**self.t)
            v_hat = v / (1 - self.beta2**self.t)
            params[name] -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
