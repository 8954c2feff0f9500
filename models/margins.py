"""Classification heads for training the embedder: SoftMax, SphereFace, CosFace, ArcFace (paper Table 4).

Every head is an ``nn.Module`` called as ``head(embeddings, labels)`` and returns logits for
``F.cross_entropy(logits, labels)``. ``embeddings`` are the embedder's L2-normalised outputs (N, dim).
With ``labels=None`` a head returns its margin-free logits (``s * cos(theta_j)`` for the margin heads),
which is what accuracy is measured on.

Notation (paper Eqs. 1-6): W_j is class j's weight row, normalised for the margin heads, x_i the
embedding; cos(theta_j,i) = W_j^T x_i. Only the target logit (j = y_i) gets a margin:

* ``SoftmaxHead``      plain ``Linear(dim, classes)`` (weights and bias free, not normalised).
* ``SphereFaceHead``   A-Softmax, multiplicative angular margin m (integer, default 4):
                       psi(theta) = (-1)^k cos(m theta) - 2k  for theta in [k pi/m, (k+1) pi/m], k in 0..m-1.
                       Target logit = s * (lambda cos(theta) + psi(theta)) / (1 + lambda), others s * cos(theta).
                       cos(m theta) is evaluated with the Chebyshev polynomial T_m(cos theta) (as the reference
                       implementation does: no acos in the gradient path); k comes from acos without gradient.
                       lambda anneals as in the reference Caffe solver:
                         lambda = max(lambda_min, lambda_base * (1 + gamma * iteration) ** -power),
                       defaults base 1000, gamma 0.12, power 1, lambda_min 5; ``iteration`` is a buffer
                       that counts training-mode forward calls with labels (so it is saved in checkpoints).
                       Without this blend the pure m=4 margin does not converge from a random start; lambda
                       begins near 1000 (plain normalised softmax) and relaxes towards the full margin.
                       Feature norm: Eq. 1 multiplies by ||x_i||; our embeddings are unit-norm, so a fixed
                       scale s stands in for ||x_i|| (default 30, as for CosFace/ArcFace; with s = 1 logits
                       would live in [-7, 1] and the softmax could never become confident).
* ``CosFaceHead``      target s * (cos(theta) - m); defaults s = 30, m = 0.35.
* ``ArcFaceHead``      target s * cos(theta + m); defaults s = 30, m = 0.5. As in the reference ArcFace
                       implementation (``ArcMarginProduct``): cos(theta + m) = cos cos_m - sin sin_m; when
                       theta + m would pass pi (cos(theta) <= cos(pi - m)) the target uses
                       cos(theta) - m sin(m) instead, which keeps the logit monotonic in theta;
                       ``easy_margin=True`` instead applies the margin only where cos(theta) > 0.

Margin heads compute in fp32 with autocast disabled (margins on bf16 cosines are too coarse).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class _NormalisedHead(nn.Module):
    def __init__(self, dim: int, classes: int, s: float):
        super().__init__()
        self.dim, self.classes, self.s = int(dim), int(classes), float(s)
        self.weight = nn.Parameter(torch.empty(self.classes, self.dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """cos(theta_j,i) between normalised embeddings and normalised class weights, fp32, clamped."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            x = F.normalize(embeddings.float(), dim=1)
            w = F.normalize(self.weight.float(), dim=1)
            return F.linear(x, w).clamp(-1.0, 1.0)

    def target_logit(self, cos_t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = self.cosine(embeddings)
        if labels is None:
            return self.s * cos
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            labels = labels.long().view(-1, 1)
            cos_t = cos.gather(1, labels)
            target = self.target_logit(cos_t)  # already scaled by s
            return (self.s * cos).scatter(1, labels, target)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, classes={self.classes}, s={self.s}"


class SoftmaxHead(nn.Module):
    """The paper's SoftMax baseline: a plain linear classifier on the embedding."""

    def __init__(self, dim: int, classes: int, bias: bool = True):
        super().__init__()
        self.fc = nn.Linear(dim, classes, bias=bias)

    @property
    def weight(self) -> torch.Tensor:
        return self.fc.weight

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(embeddings)


class CosFaceHead(_NormalisedHead):
    """Large-margin cosine loss: target logit s * (cos(theta) - m)."""

    def __init__(self, dim: int, classes: int, s: float = 30.0, m: float = 0.35):
        super().__init__(dim, classes, s)
        self.m = float(m)

    def target_logit(self, cos_t):
        return self.s * (cos_t - self.m)

    def extra_repr(self):
        return super().extra_repr() + f", m={self.m}"


class ArcFaceHead(_NormalisedHead):
    """Additive angular margin: target logit s * cos(theta + m), with the reference threshold handling."""

    def __init__(self, dim: int, classes: int, s: float = 30.0, m: float = 0.5, easy_margin: bool = False):
        super().__init__(dim, classes, s)
        self.m = float(m)
        self.easy_margin = bool(easy_margin)
        self.cos_m, self.sin_m = math.cos(self.m), math.sin(self.m)
        self.th = math.cos(math.pi - self.m)  # beyond this, theta + m > pi
        self.mm = math.sin(math.pi - self.m) * self.m  # = m sin(m): the fallback margin

    def target_logit(self, cos_t):
        sin_t = (1.0 - cos_t * cos_t).clamp(min=1e-12).sqrt()  # the floor keeps the gradient finite at theta=0
        phi = cos_t * self.cos_m - sin_t * self.sin_m  # cos(theta + m)
        if self.easy_margin:
            phi = torch.where(cos_t > 0, phi, cos_t)
        else:
            phi = torch.where(cos_t > self.th, phi, cos_t - self.mm)
        return self.s * phi

    def extra_repr(self):
        return super().extra_repr() + f", m={self.m}, easy_margin={self.easy_margin}"


def _chebyshev(c: torch.Tensor, m: int) -> torch.Tensor:
    """cos(m theta) as T_m(cos theta)."""
    t_prev, t = torch.ones_like(c), c
    if m == 0:
        return t_prev
    for _ in range(m - 1):
        t_prev, t = t, 2 * c * t - t_prev
    return t


class SphereFaceHead(_NormalisedHead):
    """A-Softmax with multiplicative margin m and the reference lambda annealing (see module doc)."""

    def __init__(
        self,
        dim: int,
        classes: int,
        m: int = 4,
        s: float = 30.0,
        lambda_base: float = 1000.0,
        gamma: float = 0.12,
        power: float = 1.0,
        lambda_min: float = 5.0,
    ):
        super().__init__(dim, classes, s)
        if int(m) != m or m < 1:
            raise ValueError("SphereFace margin m must be an integer >= 1")
        self.m = int(m)
        self.lambda_base, self.gamma, self.power, self.lambda_min = (
            float(lambda_base),
            float(gamma),
            float(power),
            float(lambda_min),
        )
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    @property
    def lambda_(self) -> float:
        it = int(self.iteration)
        return max(self.lambda_min, self.lambda_base * (1.0 + self.gamma * it) ** (-self.power))

    def psi(self, cos_t: torch.Tensor) -> torch.Tensor:
        """(-1)^k cos(m theta) - 2k, k = floor(m theta / pi) in 0..m-1."""
        with torch.no_grad():
            theta = torch.acos(cos_t.clamp(-1.0, 1.0))
            k = torch.floor(self.m * theta / math.pi).clamp(0, self.m - 1)
            sign = 1.0 - 2.0 * torch.remainder(k, 2)  # (-1)^k
        return sign * _chebyshev(cos_t, self.m) - 2.0 * k

    def target_logit(self, cos_t):
        lam = self.lambda_
        return self.s * (lam * cos_t + self.psi(cos_t)) / (1.0 + lam)

    def forward(self, embeddings, labels=None):
        out = super().forward(embeddings, labels)
        if labels is not None and self.training:
            self.iteration += 1  # after computing: the first call uses iteration 0
        return out

    def extra_repr(self):
        return (
            super().extra_repr() + f", m={self.m}, lambda=max({self.lambda_min}, {self.lambda_base}"
            f"*(1+{self.gamma}*it)^-{self.power})"
        )


HEADS = {"softmax": SoftmaxHead, "sphereface": SphereFaceHead, "cosface": CosFaceHead, "arcface": ArcFaceHead}


def make_head(name: str, dim: int, classes: int, **kw) -> nn.Module:
    """``make_head("cosface", 512, 14, s=30, m=0.35)``; names: softmax, sphereface, cosface, arcface."""
    try:
        cls = HEADS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown head {name!r}; choose one of {', '.join(HEADS)}") from None
    return cls(dim, classes, **kw)
