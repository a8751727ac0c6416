r"""BERT's masked-token corruption, shared by the code MLM and the word MLM.

:func:`ehrseq.pretrain.mask_codes` (medical codes, layer 6) and
:func:`ehrseq.medrep.text_mlm.mask_tokens` (words of concept descriptions, layer 4) corrupt
a batch in the same way and from the same random draws; :func:`bert_mask` is that one
corruption, given the special ids to leave alone, the ids to draw replacements from and the
``[MASK]`` id. It imports nothing from ``ehrseq``, so both layers can call it.
"""

from __future__ import annotations

import torch

__all__ = ["IGNORE_INDEX", "bert_mask"]

IGNORE_INDEX = -100  # label of a position not predicted (PyTorch's cross-entropy default)


def bert_mask(
    ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special: torch.Tensor,
    regular: torch.Tensor,
    mask_id: int,
    *,
    mask_prob: float = 0.15,
    replace_prob: float = 0.8,
    random_prob: float = 0.1,
    generator: torch.Generator | None = None,
    name: str = "ids",
    where: str = "",
    no_regular: str = "regular is empty: no id to draw a replacement from",
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""BERT's corruption of a batch of token ids, and the labels of the picked positions.

    A real token whose id is not in ``special`` is picked with probability ``mask_prob``
    (uniform :math:`u_{b,l} < p_\text{mask}`); a picked token becomes ``mask_id`` when a
    second uniform :math:`h_{b,l} < p_\text{replace}`, an id of ``regular`` drawn uniformly
    when :math:`p_\text{replace} \le h_{b,l} < p_\text{replace} + p_\text{random}`, and stays
    itself otherwise. The draws are, in this order, ``u`` and ``h`` (``torch.rand``) and the
    index into ``regular`` (``torch.randint``), each of the batch's shape, so a generator
    seeded alike gives the same corruption whatever the caller.

    .. math:: \text{labels}_{b,l} = \begin{cases} x_{b,l} & (b, l)\ \text{picked} \\
              -100 & \text{otherwise} \end{cases}

    Args:
        ids: token ids.
        attention_mask: True on real tokens.
        special: the ids never picked (padding, ``[MASK]``, ``[CLS]``, ...).
        regular: the ids a random replacement is drawn from, on ``ids.device``.
        mask_id: the ``[MASK]`` id.
        mask_prob, replace_prob, random_prob: BERT's 0.15, 0.8, 0.1.
        generator: a ``torch.Generator`` on ``ids.device`` for reproducible masks; None uses
            the global RNG.
        name: what the error messages call ``ids``.
        where: a prefix of the error messages (the caller's name, say).
        no_regular: the error message, after ``where``, when ``regular`` is empty.

    Returns:
        ``(masked_ids, labels)``.

    Shapes:
        ids, attention_mask: ``(B, L)``; special: ``(S,)``; regular: ``(R,)``; both outputs
        ``(B, L)`` long.

    Reference:
        Devlin et al., "BERT", arXiv 1810.04805, section 3.1.

    Raises:
        ValueError: shapes differ, probabilities outside [0, 1] (or ``replace_prob +
            random_prob > 1``), or ``regular`` is empty.
    """
    if ids.shape != attention_mask.shape:
        raise ValueError(
            f"{where}{name} {tuple(ids.shape)} and attention_mask "
            f"{tuple(attention_mask.shape)} differ"
        )
    ok = 0 <= mask_prob <= 1 and 0 <= replace_prob and 0 <= random_prob
    if not (ok and replace_prob + random_prob <= 1):
        raise ValueError(
            f"{where}bad probabilities: mask {mask_prob}, replace {replace_prob}, "
            f"random {random_prob}"
        )
    if regular.numel() == 0:
        raise ValueError(f"{where}{no_regular}")
    device = ids.device
    eligible = attention_mask.bool() & ~torch.isin(ids, special)  # (B, L)
    u = torch.rand(ids.shape, generator=generator, device=device)  # (B, L)
    picked = eligible & (u < mask_prob)  # (B, L)
    how = torch.rand(ids.shape, generator=generator, device=device)  # (B, L)
    draw = torch.randint(len(regular), ids.shape, generator=generator, device=device)  # (B, L)
    masked = torch.where(picked & (how < replace_prob), mask_id, ids)  # (B, L)
    to_random = picked & (how >= replace_prob) & (how < replace_prob + random_prob)
    masked = torch.where(to_random, regular[draw], masked)  # (B, L)
    labels = torch.where(picked, ids, IGNORE_INDEX)  # (B, L)
    return masked, labels
