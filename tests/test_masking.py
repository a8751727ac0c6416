"""ehrseq.masking.bert_mask against a loop over positions on the same random draws."""

from __future__ import annotations

import pytest
import torch

from ehrseq.masking import IGNORE_INDEX, bert_mask


def _naive(ids, mask, special, regular, mask_id, p, r, q, seed):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(ids.shape, generator=g)
    how = torch.rand(ids.shape, generator=g)
    draw = torch.randint(len(regular), ids.shape, generator=g)
    masked, labels = ids.clone(), torch.full_like(ids, IGNORE_INDEX)
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            x = int(ids[b, t])
            if not mask[b, t] or x in special.tolist() or not u[b, t] < p:
                continue
            labels[b, t] = x
            if how[b, t] < r:
                masked[b, t] = mask_id
            elif how[b, t] < r + q:
                masked[b, t] = regular[draw[b, t]]
    return masked, labels


@pytest.mark.parametrize("p, r, q", [(0.15, 0.8, 0.1), (0.9, 0.3, 0.5), (1.0, 0.0, 1.0)])
def test_bert_mask_equals_a_loop(p, r, q):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 12, (5, 9), generator=g)
    mask = torch.rand(5, 9, generator=g) > 0.2
    special, regular = torch.tensor([0, 1, 2, 7]), torch.tensor([3, 4, 5, 6, 8, 9, 10, 11])
    ours = bert_mask(
        ids,
        mask,
        special,
        regular,
        2,
        mask_prob=p,
        replace_prob=r,
        random_prob=q,
        generator=torch.Generator().manual_seed(5),
    )
    naive = _naive(ids, mask, special, regular, 2, p, r, q, 5)
    assert torch.equal(ours[0], naive[0]) and torch.equal(ours[1], naive[1])
    assert int((ours[1] != IGNORE_INDEX).sum()) > 0


def test_bert_mask_names_what_is_wrong():
    ids, special, regular = (
        torch.zeros(2, 3, dtype=torch.long),
        torch.tensor([0]),
        torch.tensor([1]),
    )
    ok = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"^f: codes \(2, 3\) and attention_mask \(2, 4\) differ"):
        bert_mask(
            ids, torch.ones(2, 4, dtype=torch.bool), special, regular, 0, name="codes", where="f: "
        )
    with pytest.raises(ValueError, match="^bad probabilities"):
        bert_mask(ids, ok, special, regular, 0, replace_prob=0.95)
    with pytest.raises(ValueError, match="^regular is empty"):
        bert_mask(ids, ok, special, regular[:0], 0)
    with pytest.raises(ValueError, match="^no word$"):
        bert_mask(ids, ok, special, regular[:0], 0, no_regular="no word")
