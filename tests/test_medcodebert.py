"""MedCodeBERT: code vectors against naive loops, InfoNCE by hand, the switched-off time
path, and a combined loss that learns structure a shuffled control lacks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ehrseq.medcodebert import (
    MedCodeBert,
    MedCodeBertConfig,
    contextual_code_vectors,
    info_nce,
    mean_pool,
    pretrain_medcodebert,
    static_code_vectors,
    token_concepts,
)
from ehrseq.models import encoder_inputs
from ehrseq.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

PAD, UNK, MASK, CLS, SEP = range(5)
N_GROUPS, PER_GROUP = 4, 5


class TinyVocab:
    """What the module reads of a :class:`~ehrseq.data.vocab.Vocab`: ``itos``, ``stoi``,
    ``len``. Concepts 100..119 (four groups of five); concept 119 is a measurement with two
    decile tokens besides its value-free one."""

    def __init__(self) -> None:
        tokens = [f"condition:{100 + i}" for i in range(N_GROUPS * PER_GROUP - 1)]
        tokens += ["measurement:119", "measurement:119:q0", "measurement:119:q1"]
        self.itos = ["[PAD]", "[UNK]", "[MASK]", "[CLS]", "[SEP]", *tokens]
        self.stoi = {s: i for i, s in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)


VOCAB = TinyVocab()
V = len(VOCAB)


def make_patient(visits: list[list[int]], rng: np.random.Generator) -> dict:
    """Flat tokens of one patient: [CLS], then each visit's codes closed by [SEP]."""
    codes, visit_ids = [CLS], [1]
    for v, visit in enumerate(visits, start=1):
        codes += [*visit, SEP]
        visit_ids += [v] * (len(visit) + 1)
    codes_t, visits_t = torch.tensor(codes), torch.tensor(visit_ids)
    first = torch.cat([torch.tensor([False]), visits_t[1:] != visits_t[:-1]])
    gaps = torch.as_tensor(rng.uniform(10, 400, len(codes)), dtype=torch.float32)
    special = torch.isin(codes_t, torch.tensor([CLS, SEP]))
    return {
        "codes": codes_t,
        "ages": 50.0 + 0.5 * (visits_t - 1).float(),
        "visit_ids": visits_t,
        "positions": torch.arange(len(codes)),
        "time_deltas": first.float() * gaps,
        "domain_ids": torch.where(special, 8, torch.where(codes_t >= V - 3, 4, 1)),
        "attention_mask": torch.ones(len(codes), dtype=torch.bool),
        "person_ids": torch.tensor(0),
    }


def collate(items: list[dict]) -> dict:
    L = max(len(it["codes"]) for it in items)
    out = {}
    for k in items[0]:
        if k == "person_ids":
            out[k] = torch.arange(len(items))
            continue
        buf = torch.zeros((len(items), L), dtype=items[0][k].dtype)
        for b, it in enumerate(items):
            buf[b, : len(it[k])] = it[k]
        out[k] = buf
    return out


def patients(n: int, seed: int, shuffled: bool = False) -> list[dict]:
    """Each patient draws every code from one of four groups of five, so a masked code and
    the next visit are predictable from the rest; ``shuffled`` draws every code uniformly
    (same lengths), the control with nothing to learn beyond frequencies."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        g = rng.integers(N_GROUPS)
        visits = []
        for _ in range(rng.integers(2, 5)):
            k = rng.integers(2, 5)
            if shuffled:
                visits.append((5 + rng.integers(0, V - 5, size=k)).tolist())
            else:
                visits.append((5 + g * PER_GROUP + rng.integers(0, PER_GROUP, size=k)).tolist())
        out.append(make_patient(visits, rng))
    return out


def tiny(seed: int = 0, **kw) -> MedCodeBert:
    torch.manual_seed(seed)
    cfg = MedCodeBertConfig(d_model=16, n_heads=2, d_ff=32, dropout=0.0, max_len=64, **kw)
    return MedCodeBert(cfg, VOCAB)


# ------------------------------------------------------------------------------- code vectors
def test_token_concepts_pools_deciles_into_their_concept():
    concept = token_concepts(VOCAB)
    assert (concept[:5] == -1).all()
    assert concept[-3:].tolist() == [119, 119, 119]
    assert concept[5] == 100


def test_static_vectors_equal_a_loop_over_tokens():
    enc = tiny().encoder
    emb = static_code_vectors(enc, VOCAB)
    table = enc.embeddings.code.weight.detach().double().numpy()
    assert emb.concept_ids.tolist() == list(range(100, 120))
    for row, cid in enumerate(emb.concept_ids):
        tokens = [i for i in range(5, V) if int(VOCAB.itos[i].split(":")[1]) == cid]
        np.testing.assert_allclose(emb.vectors[row], table[tokens].mean(0), atol=1e-12)


def test_contextual_vectors_equal_a_naive_loop_and_ignore_padding():
    model = tiny(seed=1)
    enc = model.encoder.eval()
    items = patients(9, seed=3)
    # measurement tokens appear too
    items[0]["codes"][1] = V - 2
    items[1]["codes"][2] = V - 1
    batches = [collate(items[:4]), collate(items[4:])]
    emb = contextual_code_vectors(enc, batches, VOCAB)
    # naive: every token of every patient, one at a time, unpadded
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    with torch.no_grad():
        for it in items:
            b = collate([it])
            h = enc(**encoder_inputs(b))[0].double().numpy()  # (L, d)
            for pos, tok in enumerate(it["codes"].tolist()):
                if tok < 5:
                    continue
                cid = int(VOCAB.itos[tok].split(":")[1])
                sums[cid] = sums.get(cid, 0) + h[pos]
                counts[cid] = counts.get(cid, 0) + 1
    assert sorted(sums) == emb.concept_ids.tolist()
    for row, cid in enumerate(emb.concept_ids):
        np.testing.assert_allclose(emb.vectors[row], sums[cid] / counts[cid], atol=1e-5)
    # one big padded batch: the same vectors (padding changes nothing)
    again = contextual_code_vectors(enc, [collate(items)], VOCAB)
    np.testing.assert_allclose(again.vectors, emb.vectors, atol=1e-5)
    assert enc.training is False  # its mode is put back


def test_contextual_vectors_check_their_input():
    enc = tiny().encoder
    with pytest.raises(ValueError, match="token ids"):
        short = TinyVocab()
        short.itos = short.itos[:-1]  # one token fewer than the encoder's table
        static_code_vectors(enc, short)
    with pytest.raises(ValueError, match="no concept occurs"):
        contextual_code_vectors(enc, [], VOCAB)


# ------------------------------------------------------------------------------- InfoNCE
def test_info_nce_equals_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    tau = 0.3
    a = z1 / z1.norm(dim=1, keepdim=True)
    b = z2 / z2.norm(dim=1, keepdim=True)
    total = 0.0
    for i in range(5):
        s_row = [float(a[i] @ b[j]) / tau for j in range(5)]
        s_col = [float(a[j] @ b[i]) / tau for j in range(5)]
        total -= s_row[i] - math.log(sum(math.exp(s) for s in s_row))
        total -= s_col[i] - math.log(sum(math.exp(s) for s in s_col))
    assert float(info_nce(z1, z2, tau)) == pytest.approx(total / 10, rel=1e-5)


def test_info_nce_is_log_b_for_unrelated_views_and_small_for_matching_ones():
    g = torch.Generator().manual_seed(1)
    B = 16
    z1, z2 = torch.randn(B, 4096, generator=g), torch.randn(B, 4096, generator=g)
    assert float(info_nce(z1, z2, 1.0)) == pytest.approx(math.log(B), abs=0.05)
    eye = torch.eye(B)
    assert float(info_nce(eye, eye, 0.05)) < 1e-6  # each view finds its twin
    with pytest.raises(ValueError, match="no negative"):
        info_nce(z1[:1], z2[:1], 1.0)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(z1, z2, 0.0)
    with pytest.raises(ValueError, match=r"\(B, k\)"):
        info_nce(z1, z2[:, :3], 1.0)


def test_mean_pool_and_config_checks():
    h = torch.arange(12.0).reshape(1, 3, 4)
    m = torch.tensor([[True, True, False]])
    assert torch.equal(mean_pool(h, m), h[0, :2].mean(0, keepdim=True))
    with pytest.raises(ValueError, match="all padding"):
        mean_pool(h, torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="temperature"):
        MedCodeBertConfig(temperature=0)
    with pytest.raises(ValueError, match="view_mask_prob"):
        MedCodeBertConfig(view_mask_prob=1.0)
    with pytest.raises(ValueError, match="contrastive_weight"):
        MedCodeBertConfig(contrastive_weight=-1)
    assert MedCodeBertConfig(use_time=False, contrastive_weight=0.1).name == "no Δt + InfoNCE"


# ------------------------------------------------------------------------------- ablations
@pytest.mark.parametrize("use_time", [False, True])
def test_time_off_removes_the_time_path(use_time):
    enc = tiny(use_time=use_time).encoder.eval()
    batch = collate(patients(4, seed=5))
    later = {**batch, "time_deltas": batch["time_deltas"] * 7 + 30}
    with torch.no_grad():
        h = enc(**encoder_inputs(batch))
        h_later = enc(**encoder_inputs(later))
    assert torch.allclose(h, h_later) is (not use_time)


@pytest.mark.parametrize("use_type", [False, True])
def test_type_off_removes_the_type_path(use_type):
    enc = tiny(use_type=use_type).encoder.eval()
    batch = collate(patients(4, seed=6))
    other = {**batch, "domain_ids": torch.where(batch["attention_mask"], 3, 0)}
    with torch.no_grad():
        same = torch.allclose(enc(**encoder_inputs(batch)), enc(**encoder_inputs(other)))
    assert same is (not use_type)


# ------------------------------------------------------------------------------- learning
def _train(shuffled: bool):
    batches = [collate(patients(16, seed=s, shuffled=shuffled)) for s in range(4)]
    cfg = MedCodeBertConfig(
        d_model=16, n_heads=2, d_ff=32, dropout=0.0, max_len=64, contrastive_weight=0.5
    )
    run = TrainConfig(epochs=25, lr=5e-3, warmup_steps=0, progress=False, device="cpu", seed=0)
    loader = DataLoader(batches, batch_size=None)  # the ready batches, in order
    _, result = pretrain_medcodebert(cfg, VOCAB, loader, run)
    return result.history


def test_the_combined_loss_falls_and_learns_what_a_shuffled_control_cannot():
    real, control = _train(False), _train(True)
    assert {"train_mlm_loss", "train_nv_loss", "train_infonce"} <= set(real.columns)
    first, last = real.iloc[0], real.iloc[-1]
    assert last["train_loss"] < 0.7 * first["train_loss"]
    assert last["train_infonce"] < first["train_infonce"]
    # grouped codes are predictable from the rest of a history; shuffled ones are not: the
    # same training ends far lower on the grouped patients (next visit and masked codes)
    end = control.iloc[-1]
    assert last["train_loss"] < end["train_loss"] - 1.0
    assert last["train_nv_loss"] < end["train_nv_loss"] - 0.03
    assert last["train_mlm_loss"] < end["train_mlm_loss"]
