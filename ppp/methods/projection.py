"""Closed-form edits of CLIP's image projection that remove directions of its own embedding space (CCUP,
the multimodal nullspace): no training and no forget images.

An operator M (d x d) with M f ~ 0 for the forget directions f is applied to the image projection as
`visual.proj <- visual.proj @ M`, so an image embedding e becomes M^T e and its similarity to any text
embedding t becomes e^T M t: zero along the forget directions. Variants (`method.variant`):
- `plain`: M = I - Q Q^T, Q an orthonormal basis of the forget directions;
- `orthogonalised`: the forget directions first lose their component in the span of the retained ones, so
  that every retained direction r keeps M r = r exactly;
- `ridge`: M = (lam R R^T + mu I)(F F^T + lam R R^T + mu I)^-1, the minimiser of
  |M F|^2 + lam |M R - R|^2 + mu |M - I|^2 (soft on both sides).
Partial strength alpha: M_alpha = I - alpha (I - M); alpha = 0 is the identity.
"""

from __future__ import annotations

import torch
from torch import nn

from ppp.errors import ConfigError
from ppp.schema import number, one_of, schema, setting

VARIANTS = ("plain", "orthogonalised", "ridge")


@schema
class Projection:
    """The projection block (`method/projection/default.yaml`) that ccup and clip_nullspace share."""

    alpha: float = setting(number(0, 1))
    variant: str = setting(one_of(*VARIANTS))
    ridge_lambda: float = setting(number(0))
    ridge_mu: float = setting(number(0, low_open=True))


def orthonormal_basis(vectors: torch.Tensor, rel_eps: float = 1e-6) -> torch.Tensor:
    """(d, r): an orthonormal basis of the columns of `vectors` (d, m), singular values below rel_eps times
    the largest dropped."""
    if vectors.shape[1] == 0:
        return vectors
    u, s, _ = torch.linalg.svd(vectors.double(), full_matrices=False)
    return u[:, s > rel_eps * s.max()].to(vectors.dtype) if s.max() > 0 else u[:, :0].to(vectors.dtype)


def forget_operator(
    forget: torch.Tensor,
    retain: torch.Tensor,
    variant: str,
    ridge_lambda: float = 1.0,
    ridge_mu: float = 1e-3,
    rel_eps: float = 1e-6,
) -> torch.Tensor:
    """M (d, d) that annihilates the forget directions (columns of `forget`), under `variant`."""
    d = forget.shape[0]
    eye = torch.eye(d, dtype=torch.float64)
    f, r = forget.double(), retain.double()
    if variant == "ridge":
        keep = ridge_lambda * r @ r.T + ridge_mu * eye
        return torch.linalg.solve((f @ f.T + keep).T, keep.T).T.to(forget.dtype)  # keep @ inv(f f^T + keep)
    if variant == "orthogonalised":
        q_r = orthonormal_basis(r, rel_eps)
        f = f - q_r @ (q_r.T @ f)
    elif variant != "plain":
        raise ConfigError(f"method.variant must be one of {', '.join(VARIANTS)}; got '{variant}'")
    q = orthonormal_basis(f, rel_eps)
    return (eye - q @ q.T).to(forget.dtype)


def partial(operator: torch.Tensor, alpha: float) -> torch.Tensor:
    """I - alpha (I - M): alpha = 1 is M, alpha = 0 the identity."""
    eye = torch.eye(len(operator), dtype=operator.dtype)
    return eye - alpha * (eye - operator)


def image_projection(clip: nn.Module) -> nn.Parameter:
    proj = getattr(clip.visual, "proj", None)
    if not isinstance(proj, torch.Tensor):
        raise ConfigError(f"{type(clip.visual).__name__} has no image projection (visual.proj) to edit")
    return proj


@torch.no_grad()
def edit_image_projection(clip: nn.Module, operator: torch.Tensor) -> None:
    """visual.proj <- visual.proj @ M: every image embedding e becomes M^T e."""
    proj = image_projection(clip)
    proj.copy_(proj @ operator.to(proj))
