"""PBU's quadratic penalties, with their gradient added analytically."""
from __future__ import annotations

import torch


class PenaltyAnchor:
    """theta* and the elementwise weights of PBU's two quadratic penalties.

    d/dtheta [beta F (theta - theta*)^2 + gamma (theta - theta*)^2] = 2 (beta F + gamma)
    (theta - theta*): one weight per element, so the gradient is added with three foreach ops
    instead of autograd through flattened parameter copies.
    """

    def __init__(self, named: list[tuple[str, torch.Tensor]], fisher: dict[str, torch.Tensor],
                 *, beta: float, gamma: float) -> None:
        self.params = [p for _, p in named]
        self.anchors = [p.detach().clone() for p in self.params]
        self.weights = [2.0 * (beta * fisher[n] + gamma) if n in fisher
                        else torch.full_like(p, 2.0 * gamma) for n, p in named]

    @torch.no_grad()
    def add_penalty_grad(self) -> None:
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        drift = torch._foreach_sub(self.params, self.anchors)
        torch._foreach_mul_(drift, self.weights)
        torch._foreach_add_([p.grad for p in self.params], drift)
