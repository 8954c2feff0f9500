"""Margin heads against logits worked out by hand (math.cos on known angles), not by the heads' own code."""

from __future__ import annotations

import math

import pytest
import torch

from models.margins import ArcFaceHead, CosFaceHead, SoftmaxHead, SphereFaceHead, make_head

# Three classes in 2-d: class weights point at 0, 90 and 180 degrees. They are given unnormalised
# (lengths 2, 3 and 0.5): the margin heads must normalise them.
W = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-0.5, 0.0]])
# Unit embeddings at 30, 100 and 170 degrees, labelled 0, 2 and 0.
ANGLES = [30.0, 100.0, 170.0]
LABELS = torch.tensor([0, 2, 0])
X = torch.tensor([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in ANGLES])
# theta_{j,i} in degrees (row = sample, column = class), read off the picture:
THETA = [[30.0, 60.0, 150.0], [100.0, 10.0, 80.0], [170.0, 80.0, 10.0]]
# target angle of each sample: 30 (class 0), 80 (class 2), 170 (class 0)


def cosd(deg: float) -> float:
    return math.cos(math.radians(deg))


def expected(s: float, target_values: list[float]) -> torch.Tensor:
    """s * cos(theta) everywhere, with the given (already scaled) target logits at the labels."""
    out = [[s * cosd(t) for t in row] for row in THETA]
    for i, (label, v) in enumerate(zip(LABELS.tolist(), target_values)):
        out[i][label] = v
    return torch.tensor(out)


def with_weights(head):
    with torch.no_grad():
        head.weight.copy_(W)
    return head


def test_cosface_logits():
    s, m = 30.0, 0.35
    head = with_weights(CosFaceHead(2, 3))  # defaults are the paper's s=30, m=0.35
    got = head(X, LABELS)
    want = expected(s, [s * (cosd(30) - m), s * (cosd(80) - m), s * (cosd(170) - m)])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


def test_arcface_logits_with_threshold():
    s, m = 30.0, 0.5
    head = with_weights(ArcFaceHead(2, 3))
    got = head(X, LABELS)
    # 30 and 80 degrees: cos(theta + m). 170 degrees: theta + m would pass 180 (cos 170 = -0.985 is below
    # cos(pi - 0.5) = -0.878), so the reference falls back to cos(theta) - m*sin(m).
    assert cosd(170) < math.cos(math.pi - m)
    want = expected(
        s, [s * math.cos(math.radians(30) + m), s * math.cos(math.radians(80) + m), s * (cosd(170) - m * math.sin(m))]
    )
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


def test_arcface_easy_margin():
    s, m = 30.0, 0.5
    head = with_weights(ArcFaceHead(2, 3, easy_margin=True))
    got = head(X, LABELS)
    # margin only where cos(theta) > 0; at 170 degrees the target stays s*cos(theta)
    want = expected(s, [s * math.cos(math.radians(30) + m), s * math.cos(math.radians(80) + m), s * cosd(170)])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


def test_sphereface_psi_without_lambda():
    s = 30.0
    head = with_weights(SphereFaceHead(2, 3, m=4, lambda_base=0.0, lambda_min=0.0))
    got = head(X, LABELS)
    # psi = (-1)^k cos(4 theta) - 2k with k = floor(4 theta / 180deg):
    # 30 deg -> k=0; 80 deg -> k=1 (320/180); 170 deg -> k=3 (680/180)
    want = expected(s, [s * cosd(120), s * (-cosd(320) - 2), s * (-cosd(680) - 6)])
    torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-5)


def test_sphereface_lambda_annealing():
    s = 30.0
    head = with_weights(SphereFaceHead(2, 3))  # base 1000, gamma 0.12, power 1, min 5
    psi = [cosd(120), -cosd(320) - 2, -cosd(680) - 6]
    cos_t = [cosd(30), cosd(80), cosd(170)]

    def blended(lam):
        return expected(s, [s * (lam * c + p) / (1 + lam) for c, p in zip(cos_t, psi)])

    head.eval()  # eval: forward does not advance the schedule
    torch.testing.assert_close(head(X, LABELS), blended(1000.0), atol=1e-3, rtol=1e-5)
    head.iteration.fill_(50)
    torch.testing.assert_close(head(X, LABELS), blended(1000.0 / (1 + 0.12 * 50)), atol=1e-3, rtol=1e-5)
    head.iteration.fill_(100_000)
    torch.testing.assert_close(head(X, LABELS), blended(5.0), atol=1e-3, rtol=1e-5)
    assert int(head.iteration) == 100_000
    head.train()
    head(X, LABELS)
    head(X, LABELS)
    assert int(head.iteration) == 100_002


def test_softmax_head_is_plain_linear():
    head = SoftmaxHead(2, 3)
    with torch.no_grad():
        head.fc.weight.copy_(W)
        head.fc.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    got = head(X, LABELS)
    want = torch.tensor(
        [[2 * cosd(a) + 0.1, 3 * math.sin(math.radians(a)) - 0.2, -0.5 * cosd(a) + 0.3] for a in ANGLES]
    )
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["sphereface", "cosface", "arcface"])
def test_inference_logits_have_no_margin(name):
    head = with_weights(make_head(name, 2, 3))
    torch.testing.assert_close(
        head(X), expected(30.0, [30 * cosd(30), 30 * cosd(80), 30 * cosd(170)]), atol=1e-4, rtol=1e-5
    )


@pytest.mark.parametrize("name", ["softmax", "sphereface", "cosface", "arcface"])
def test_gradients_finite_when_embedding_hits_a_class_weight(name):
    head = with_weights(make_head(name, 2, 3))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], requires_grad=True)  # theta = 0 exactly
    loss = torch.nn.functional.cross_entropy(head(x, torch.tensor([0, 1, 2])), torch.tensor([0, 1, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()


def test_make_head_names_and_kwargs():
    assert isinstance(make_head("CosFace", 8, 4, s=16, m=0.2), CosFaceHead)
    h = make_head("cosface", 8, 4, s=16, m=0.2)
    assert (h.s, h.m) == (16, 0.2)
    assert isinstance(make_head("arcface", 8, 4), ArcFaceHead)
    assert isinstance(make_head("sphereface", 8, 4), SphereFaceHead)
    assert isinstance(make_head("softmax", 8, 4), SoftmaxHead)
    with pytest.raises(ValueError):
        make_head("triplet", 8, 4)
    with pytest.raises(ValueError):
        SphereFaceHead(8, 4, m=1.5)
