"""The leakage test: a hazard at visit t must not move when later visits change.

A per-visit hazard is a prediction made at visit :math:`t`; if the encoder lets it read
visits after :math:`t` (a bidirectional mask, a pooled summary of the whole record), the
model is scored on a future it would not have had. The test edits a batch two ways after a
cut visit :math:`t_b` per patient, and measures the largest change of any hazard at a visit
:math:`\\le t_b`:

- *perturbed*: every token of a later visit gets a random code, an older age and another gap;
- *removed*: every token of a later visit becomes padding.

A visit-causal encoder changes nothing (to float precision); a bidirectional one does.
Chapter 6 writes these functions inline and checks they agree with this module, which
chapter 6b and a user's own model use.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ehrseq.data.vocab import SPECIAL_TOKENS
from ehrseq.models import encoder_inputs

__all__ = [
    "leakage_test",
    "perturb_later_visits",
    "truncate_after",
    "visit_hazards",
    "visits_per_patient",
]


def _later(batch: dict, cut: torch.Tensor) -> torch.Tensor:
    if cut.shape != batch["visit_ids"].shape[:1]:
        raise ValueError(
            f"cut must hold one visit per patient ({batch['visit_ids'].shape[0]}), "
            f"got shape {tuple(cut.shape)}"
        )
    return batch["visit_ids"] > cut[:, None]  # (B, L)


def perturb_later_visits(
    batch: dict, cut: torch.Tensor, generator: torch.Generator, vocab_size: int
) -> dict:
    """Copy of ``batch`` with every token of a visit after ``cut[b]`` replaced at random.

    Codes are drawn among the real (non-special) ids below ``vocab_size``, ages move up by
    up to 10 years and gaps become up to 400 days.
    """
    out = {k: v.clone() for k, v in batch.items()}
    later = _later(out, cut)
    n_later = int(later.sum())
    out["codes"][later] = torch.randint(
        len(SPECIAL_TOKENS), vocab_size, (n_later,), generator=generator
    )
    out["ages"][later] += torch.rand(n_later, generator=generator) * 10.0  # years
    out["time_deltas"][later] = torch.rand(n_later, generator=generator) * 400.0  # days
    return out


def truncate_after(batch: dict, cut: torch.Tensor) -> dict:
    """Copy of ``batch`` in which every token of a visit after ``cut[b]`` becomes padding."""
    out = {k: v.clone() for k, v in batch.items()}
    later = _later(out, cut)
    for key in ("codes", "visit_ids", "positions", "domain_ids"):
        out[key][later] = 0
    out["ages"][later] = 0.0
    out["time_deltas"][later] = 0.0
    out["attention_mask"] = out["attention_mask"] & ~later
    return out


def visit_hazards(encoder, head, batch: dict, causal: bool, n_visits: int) -> torch.Tensor:
    """Per-visit hazards ``(B, V)`` of ``encoder`` + a per-visit ``head``, with or without the
    visit-causal mask (``V = n_visits``)."""
    with torch.no_grad():
        states = encoder(**encoder_inputs(batch), causal=causal)  # (B, L, d)
        return head(states, batch["visit_ids"], batch["attention_mask"], n_visits).hazards


def leakage_test(
    encoder, head, batch: dict, cut: torch.Tensor, generator: torch.Generator, vocab_size: int
) -> pd.Series:
    """Largest change of a hazard at a visit ``<= cut``, causal and not, for both edits.

    Args:
        encoder: a flat encoder taking ``causal=`` (e.g. :class:`~ehrseq.models.BehrtEncoder`).
        head: a per-visit head (e.g. :class:`~ehrseq.models.VisitHazardHead`).
        batch: a flat batch (``collate_flat``) of patients with at least ``cut + 1`` visits.
        cut: ``(B,)`` the last visit of each patient whose hazards must stay put.
        generator: draws the perturbation.
        vocab_size: the vocabulary size (random codes are drawn below it).

    Returns:
        A series indexed by (``"visit-causal"`` | ``"bidirectional"``, edit).
    """
    n_visits = int(batch["visit_ids"].max())  # V, kept when later visits are removed
    earlier = torch.arange(n_visits)[None, :] < cut[:, None]  # (B, V): visits 1..cut
    changes = {}
    for causal in (True, False):
        base = visit_hazards(encoder, head, batch, causal, n_visits)
        for name, edited in [
            ("later visits perturbed", perturb_later_visits(batch, cut, generator, vocab_size)),
            ("later visits removed", truncate_after(batch, cut)),
        ]:
            moved = (visit_hazards(encoder, head, edited, causal, n_visits) - base).abs()
            changes[("visit-causal" if causal else "bidirectional", name)] = float(
                moved[earlier].max()
            )
    return pd.Series(changes, name="largest change of a hazard at a visit <= t")


def visits_per_patient(dataset) -> np.ndarray:
    """Number of visits of each patient of ``dataset`` (a task split), from the flat arrays."""
    enc = dataset.encoding
    return np.maximum.reduceat(enc.arrays["visit_ids"], enc.offsets[:-1])  # (n,)
