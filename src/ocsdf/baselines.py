"""A conventional (unconstrained) one-class network, the reference OCSDF is compared with.

Same shape as the Lipschitz MLP but plain ``nn.Linear`` + ReLU, trained with binary
cross-entropy (Adam) against negatives from the same complementary sampler (Algorithm 1 run on
its own logit). Its scores are not distances and its Lipschitz constant is unconstrained, which
is what the robustness and 2-D studies measure.
"""

from __future__ import annotations

import torch
from torch import nn

from .core.domain import Domain
from .core.sampling import newton_raphson_negatives

__all__ = ["make_conventional_mlp", "train_conventional"]


def make_conventional_mlp(in_features: int, width: int = 128, depth: int = 3) -> nn.Sequential:
    """``in_features -> [Linear -> ReLU] x depth -> Linear(1)``; output shape ``(n,)``."""
    layers: list[nn.Module] = []
    size = in_features
    for _ in range(depth):
        layers += [nn.Linear(size, width), nn.ReLU()]
        size = width
    layers += [nn.Linear(size, 1), nn.Flatten(0)]
    return nn.Sequential(*layers)


def train_conventional(
    x: torch.Tensor,
    domain: Domain,
    width: int = 128,
    depth: int = 3,
    n_steps: int = 2000,
    batch_size: int = 128,
    n_newton_steps: int = 4,
    margin: float = 0.05,
    lr: float = 1e-3,
    seed: int = 0,
) -> nn.Sequential:
    """Train the conventional network on normal rows ``x`` (shape (n, d), network input units).

    Returns the network in eval mode; its output is a logit, > 0 = normal.
    """
    n, d = x.shape
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG left alone
        torch.manual_seed(seed)
        net = make_conventional_mlp(d, width, depth).to(x.device)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    bce = nn.BCEWithLogitsLoss()
    for _ in range(n_steps):
        neg = newton_raphson_negatives(net, domain, batch_size, d, n_newton_steps, margin, gen,
                                       x.device)
        pos = x[torch.randint(n, (batch_size,), generator=gen, device=x.device)]
        logits = net(torch.cat((pos, neg)))
        target = torch.cat((torch.ones(batch_size), torch.zeros(batch_size))).to(x.device)
        loss = bce(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()
