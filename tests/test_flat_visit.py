"""The flat GRU over visits: shapes, padding invariance, no leakage across visits, and blind
to which diagnosis a treatment belongs to (the structure MiME reads)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ehrseq.data.visit_objects import ObjectVocab, mime_seqs_to_objects, pad_visit_objects
from ehrseq.models.flat_visit import FlatVisitConfig, FlatVisitGRU, visit_multi_hot
from ehrseq.models.mime import MiME, MiMEConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SEQS = [
    [[(0, [0, 1], []), (1, [0], [0, 2])], [(2, [2], [])], [(3, [], [1]), (0, [1], [])]],
    [[(1, [], [])]],
    [[(2, [1, 2], [2]), (4, [0], [])], [(0, [], [0])]],
]
# SEQS with drug 1 of the first visit moved from diagnosis 0 to diagnosis 1
MOVED = [[[(0, [0], []), (1, [0, 1], [0, 2])], *SEQS[0][1:]], *SEQS[1:]]


def batch_of(seqs, vocab=None):
    vo = mime_seqs_to_objects(seqs)
    vocab = vocab or ObjectVocab.fit(vo)
    return pad_visit_objects(vo, vocab)[0], vocab


def tiny(vocab) -> FlatVisitGRU:
    torch.manual_seed(0)
    return FlatVisitGRU(FlatVisitConfig.from_vocab(vocab, d_embed=8, d_object=12, d_hidden=10))


def test_shapes_and_loss():
    batch, vocab = batch_of(SEQS)
    B, V, _ = batch["dx_codes"].shape
    model = tiny(vocab).eval()
    out = model(batch)
    assert out.logits.shape == (B,) and out.visit_logits.shape == (B, V)
    assert out.states.shape == (B, V, 10) and out.objects.shape == (B, V, 12)
    assert (out.visit_logits[~batch["visit_mask"]] == 0).all()
    labels = torch.tensor([1.0, 0.0, 1.0])
    losses = model.loss(batch, labels)
    want = F.binary_cross_entropy_with_logits(out.logits, labels)
    torch.testing.assert_close(losses["loss"], want)
    with pytest.raises(ValueError, match="labels"):
        model.loss(batch, labels[:2])


def test_multi_hot_counts_each_code_once_per_visit():
    batch, vocab = batch_of(SEQS)
    hot = visit_multi_hot(batch, vocab.sizes)
    n_dx, n_rx, _ = vocab.sizes
    assert hot.max() == 1.0 and (hot[..., [0, n_dx, n_dx + n_rx]] == 0).all()
    # first visit of patient 0: dx 0, 1; drugs 0, 1 (drug 0 listed twice); procedures 0, 2
    assert int(hot[0, 0].sum()) == 2 + 2 + 2
    assert (hot[~batch["visit_mask"]] == 0).all()


def test_padding_changes_nothing():
    batch, vocab = batch_of(SEQS)
    model = tiny(vocab).eval()
    out = model(batch)
    more = dict(batch)
    for k in ("dx_codes", "dx_mask"):
        more[k] = F.pad(batch[k], (0, 3, 0, 2))
    for k in ("rx_codes", "rx_mask", "pr_codes", "pr_mask"):
        more[k] = F.pad(batch[k], (0, 2, 0, 3, 0, 2))
    more["visit_mask"] = F.pad(batch["visit_mask"], (0, 2))
    torch.testing.assert_close(model(more).logits, out.logits)


def test_later_visits_do_not_change_earlier_logits():
    batch, vocab = batch_of(SEQS)
    model = tiny(vocab).eval()
    out = model(batch)
    changed = dict(batch)
    codes = batch["dx_codes"].clone()
    codes[:, 1:][batch["dx_mask"][:, 1:]] = 2
    changed["dx_codes"] = codes
    out2 = model(changed)
    torch.testing.assert_close(out2.visit_logits[:, 0], out.visit_logits[:, 0])
    assert not torch.allclose(out2.logits[0], out.logits[0])


def test_blind_to_links_where_mime_is_not():
    batch, vocab = batch_of(SEQS)
    moved, _ = batch_of(MOVED, vocab)
    flat = tiny(vocab).eval()
    torch.testing.assert_close(flat(moved).logits, flat(batch).logits)
    torch.manual_seed(0)
    mime = MiME(MiMEConfig.from_vocab(vocab, d_embed=8, d_object=12, d_hidden=10)).eval()
    assert not torch.allclose(mime(moved).logits[0], mime(batch).logits[0])
    torch.testing.assert_close(mime(moved).logits[1:], mime(batch).logits[1:])


def test_config_checks():
    with pytest.raises(ValueError, match="n_rx"):
        FlatVisitConfig(n_dx=5, n_rx=1, n_pr=3)
    with pytest.raises(ValueError, match="activation"):
        FlatVisitConfig(n_dx=5, n_rx=3, n_pr=3, activation="gelu")
