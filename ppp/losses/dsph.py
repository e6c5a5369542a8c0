"""The DSPH proxy loss (Huo et al., TCSVT 2024; called DSAP in the PPP paper).

Learnable class proxies P (C x K). For each modality's real-valued code h, with cosines to the
proxies: a positive term (1 - cos) over the sample's classes, a negative term relu(cos - delta) over
the rest, each normalised by the number of positive / negative entries in the batch; and, among
samples with >= 2 labels, an "irrelevant pair" term weight * relu(cos - delta) over pairs sharing
no label, for image-image, text-text and image-text. The total is the sum of the seven terms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ppp.errors import ConfigError

# (bits, ceil(log2 C)) -> delta as read from DSPH's code table (COCO: C=80 -> 7).
_MARGIN_TABLE = {(16, 6): 0.25, (16, 7): 0.25, (32, 6): 0.0, (32, 7): 0.125, (64, 6): 0.0, (64, 7): 0.0}


def dsph_margin(bits: int, num_classes: int) -> float:
    """delta = max(0, 1 - 2 d*/K), d* the best minimum Hamming distance of 2^ceil(log2 C) codewords.

    For C <= 32 and K >= 16 a Hadamard-type code reaches d* >= K/2, so delta = 0 (DSPH's Flickr rows);
    for 33..128 classes we use the table's entries. Other cases need an explicit `delta`.
    """
    m = max(1, math.ceil(math.log2(num_classes)))
    if m <= 5 and bits >= 16:
        return 0.0
    if (bits, m) in _MARGIN_TABLE:
        return _MARGIN_TABLE[(bits, m)]
    raise ConfigError(
        f"no DSPH margin known for {bits} bits and {num_classes} classes; set backbone.loss.delta explicitly"
    )


class DSPHLoss(nn.Module):
    def __init__(
        self,
        num_classes: int,
        bits: int,
        delta: float | None = None,
        irrelevant_weight: float = 0.8,
        proxy_seed: int = 0,
    ):
        super().__init__()
        self.delta = dsph_margin(bits, num_classes) if delta is None else float(delta)
        self.irrelevant_weight = irrelevant_weight
        gen = torch.Generator().manual_seed(proxy_seed)
        proxies = torch.empty(num_classes, bits)
        # Kaiming-normal with fan_out (= num_classes for a (C, K) tensor), drawn from a private generator.
        proxies.normal_(0.0, math.sqrt(2.0 / num_classes), generator=gen)
        self.proxies = nn.Parameter(proxies)

    def proxy_cosines(self, codes: torch.Tensor) -> torch.Tensor:
        return F.normalize(codes, dim=1) @ F.normalize(self.proxies, dim=1).T

    def _proxy_terms(self, codes, labels):
        cos = self.proxy_cosines(codes)
        pos_mask, neg_mask = labels > 0, labels <= 0
        pos = torch.where(pos_mask, 1 - cos, torch.zeros_like(cos)).sum() / pos_mask.sum().clamp_min(1)
        neg = torch.where(neg_mask, F.relu(cos - self.delta), torch.zeros_like(cos)).sum() / neg_mask.sum().clamp_min(1)
        return pos, neg

    def _irrelevant_terms(self, img, txt, labels):
        multi = labels.sum(dim=1) > 1
        y = labels[multi]
        mask = (y @ y.T) == 0
        n_pairs = mask.sum()
        if n_pairs == 0:
            zero = img.sum() * 0.0
            return zero, zero, zero
        a, b = F.normalize(img[multi], dim=1), F.normalize(txt[multi], dim=1)

        def term(sim):
            return (
                self.irrelevant_weight
                * torch.where(mask, F.relu(sim - self.delta), torch.zeros_like(sim)).sum()
                / n_pairs
            )

        return term(a @ a.T), term(b @ b.T), term(a @ b.T)

    def terms(self, img: torch.Tensor, txt: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        labels = labels.float()
        pos_i, neg_i = self._proxy_terms(img, labels)
        pos_t, neg_t = self._proxy_terms(txt, labels)
        irr_ii, irr_tt, irr_it = self._irrelevant_terms(img, txt, labels)
        return {
            "pos_img": pos_i,
            "neg_img": neg_i,
            "pos_txt": pos_t,
            "neg_txt": neg_t,
            "irr_img": irr_ii,
            "irr_txt": irr_tt,
            "irr_cross": irr_it,
        }

    def forward(self, img: torch.Tensor, txt: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return sum(self.terms(img, txt, labels).values())

    def sample_loss(
        self,
        img: torch.Tensor,
        txt: torch.Tensor,
        label: torch.Tensor,
        batch_img: torch.Tensor,
        batch_txt: torch.Tensor,
        batch_labels: torch.Tensor,
    ) -> torch.Tensor:
        """The DSPH loss of one sample (codes `img`, `txt` of shape (K,)), for per-sample Fisher.

        Proxy terms are normalised by the sample's own positive / negative counts (the batch loss
        of a batch of one). Irrelevant-pair terms pair the sample, when it has >= 2 labels, with the
        multi-label samples of a context batch (`batch_*`, constants) that share no label with it. The
        context must not depend on the set being measured: a batch of forget samples all share the
        forget label, so it would silence these terms for D_f alone. The cross-modal term averages
        both directions (img_i.txt_j, txt_i.img_j).
        Written without data-dependent shapes so that torch.func.vmap can batch it.
        """
        label = label.float()
        pos_i, neg_i = self._proxy_terms(img[None], label[None])
        pos_t, neg_t = self._proxy_terms(txt[None], label[None])
        batch_labels = batch_labels.float()
        pair = ((batch_labels @ label) == 0) & (batch_labels.sum(1) > 1) & (label.sum() > 1)
        n_pairs = pair.sum().clamp_min(1)
        a, b = F.normalize(img, dim=0), F.normalize(txt, dim=0)
        other_img, other_txt = F.normalize(batch_img, dim=1), F.normalize(batch_txt, dim=1)

        def term(sim):
            return (
                self.irrelevant_weight
                * torch.where(pair, F.relu(sim - self.delta), torch.zeros_like(sim)).sum()
                / n_pairs
            )

        cross = (term(other_txt @ a) + term(other_img @ b)) / 2
        return pos_i + neg_i + pos_t + neg_t + term(other_img @ a) + term(other_txt @ b) + cross
