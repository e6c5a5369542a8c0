"""Which parameters a method moved: share and median relative change per module and per tower.

An entry counts as changed when it moved by more than `THRESHOLD` relative to its original value,
|theta - theta_0| > THRESHOLD * |theta_0| (an entry that was 0 counts when it moved at all), so a
finetune shows as changing almost everything and a dampening method as changing what it selected.
The groups come from the system (`System.parameter_group`: modules such as token_table, text_tower,
image_tower, heads or body / head, and towers image / text); `all` is the whole net. For each group:
`changed/<group>_share` (changed entries / entries), `changed/<group>_count` and
`changed/<group>_median_rel` (median of |theta - theta_0| / |theta_0| over the changed entries; 0 when
none changed).
"""

from __future__ import annotations

import torch

THRESHOLD = 1e-6


@torch.no_grad()
def parameter_changes(system, original, threshold: float = THRESHOLD) -> dict[str, float]:
    """The change metrics of `system.net` against `original.net` (same architecture)."""
    before = dict(original.net.named_parameters())
    totals: dict[str, int] = {}
    relative: dict[str, list[torch.Tensor]] = {}
    for name, p in system.net.named_parameters():
        theta0 = before[name].detach().float().cpu().flatten()
        moved = (p.detach().float().cpu().flatten() - theta0).abs()
        changed = moved > threshold * theta0.abs()
        rel = moved[changed] / theta0.abs()[changed].clamp_min(torch.finfo(torch.float32).tiny)
        tower, module = system.parameter_group(name)
        for group in dict.fromkeys((module, tower, "all")):
            totals[group] = totals.get(group, 0) + theta0.numel()
            relative.setdefault(group, []).append(rel)
    out = {}
    for group, total in totals.items():
        rel = torch.cat(relative[group])
        out[f"changed/{group}_share"] = rel.numel() / total
        out[f"changed/{group}_count"] = rel.numel()
        out[f"changed/{group}_median_rel"] = float(rel.median()) if rel.numel() else 0.0
    return out
