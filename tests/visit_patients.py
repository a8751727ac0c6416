"""Hand-built patients for the visit-level models (LSTM, hierarchical BEHRT) tests."""

from __future__ import annotations

import torch

from ehrseq.data.tensors import SPECIAL_DOMAIN_ID, collate_hierarchical

VOCAB = 40


def patient(visit_sizes: list[int], seed: int) -> dict[str, torch.Tensor]:
    """One patient's unpadded tokens, as ``SequenceDataset`` yields them: [CLS], then each
    visit's codes closed by [SEP] (the hierarchical collate drops the special tokens)."""
    g = torch.Generator().manual_seed(seed)
    start = 40 + 30 * float(torch.rand(1, generator=g))  # drawn first: a prefix of visits
    codes, visits, domains, deltas, vdeltas = [3], [1], [SPECIAL_DOMAIN_ID], [0.0], [0.0]
    for v, n in enumerate(visit_sizes, start=1):
        gap = float(torch.randint(1, 400, (1,), generator=g)) if v > 1 else 0.0
        for k in range(n):
            codes.append(int(torch.randint(5, VOCAB, (1,), generator=g)))
            domains.append(int(torch.randint(1, 8, (1,), generator=g)))
            deltas.append(gap if k == 0 else 0.0)
        codes.append(4)
        domains.append(SPECIAL_DOMAIN_ID)
        deltas.append(0.0)
        visits += [v] * (n + 1)
        vdeltas += [gap] * (n + 1)
    ages = torch.tensor([start + (v - 1) * 0.7 for v in visits])
    return {
        "codes": torch.tensor(codes),
        "ages": ages,
        "visit_ids": torch.tensor(visits),
        "positions": torch.arange(len(codes)),
        "time_deltas": torch.tensor(deltas),
        "domain_ids": torch.tensor(domains),
        "visit_ages": ages,
        "visit_deltas": torch.tensor(vdeltas),
        "person_id": torch.tensor(seed),
    }


def batch_of(*items: dict, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The hierarchical batch of ``ehrseq.data.tensors.collate_hierarchical``."""
    return {k: v.to(device) for k, v in collate_hierarchical(list(items)).items()}
