"""Pretrained encoders are artefacts: trained once per (task, encoder config, recipe), then loaded."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from ehrseq.data.task import TaskConfig, prepare_survival_task
from ehrseq.models import BehrtConfig
from ehrseq.pretrained import PretrainRecipe, load_or_pretrain

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def task():
    return prepare_survival_task(TaskConfig(n_patients=200, seed=5, n_bins=5), cache=False)


def _cfg(task) -> BehrtConfig:
    return BehrtConfig.from_vocab(
        task.vocab, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=task.config.max_len
    )


def test_trains_once_then_loads(task, tmp_path, monkeypatch):
    monkeypatch.setenv("EHRSEQ_ARTIFACTS", str(tmp_path))
    recipe = PretrainRecipe(schedule="joint", epochs=1, batch_size=64, seed=1)
    first = load_or_pretrain(task, _cfg(task), recipe, device="cpu")
    assert not first.loaded and (first.folder / "model.pt").is_file()
    assert first.recipe.next_visit_weight == float(len(task.vocab))  # resolved into the key
    assert list(first.history["epoch"]) == [1]
    explicit = PretrainRecipe(
        schedule="joint", epochs=1, batch_size=64, seed=1, next_visit_weight=len(task.vocab)
    )
    second = load_or_pretrain(task, _cfg(task), explicit, device="cpu")
    assert second.loaded and second.folder == first.folder
    for name, tensor in first.model.state_dict().items():
        torch.testing.assert_close(second.model.state_dict()[name], tensor)
    other = load_or_pretrain(
        task,
        _cfg(task),
        PretrainRecipe(epochs=1, batch_size=64, seed=2),
        device=torch.device("cpu"),
    )
    assert not other.loaded and other.folder != first.folder  # another seed, another artefact


def test_sequential_and_copy_head(task, tmp_path, monkeypatch):
    monkeypatch.setenv("EHRSEQ_ARTIFACTS", str(tmp_path))
    seq = load_or_pretrain(
        task, _cfg(task), PretrainRecipe(schedule="sequential", epochs=2, batch_size=64)
    )
    assert list(seq.history["phase"]) == ["mlm", "next_visit"]
    assert list(seq.history["epoch"]) == [1, 2]
    copy = load_or_pretrain(
        task,
        _cfg(task),
        PretrainRecipe(schedule="next_visit", head="copy", epochs=1, batch_size=64),
    )
    assert type(copy.model.next_visit_head).__name__ == "HistoryCopyHead"


def test_bad_recipes():
    with pytest.raises(ValueError, match="schedule"):
        PretrainRecipe(schedule="both")
    with pytest.raises(ValueError, match="head"):
        PretrainRecipe(head="attention")
    with pytest.raises(ValueError, match="epochs"):
        PretrainRecipe(schedule="sequential", epochs=1)


def test_book_settings_cover_every_profile(task):
    from ehrseq.config import PROFILES
    from ehrseq.pretrained import book_encoder_config, book_recipe

    for profile in PROFILES:
        cfg = book_encoder_config(task, profile)
        assert cfg.vocab_size == len(task.vocab) and cfg.max_len == task.config.max_len
        assert book_recipe(profile).schedule == "joint"
        assert book_recipe(profile, schedule="mlm").schedule == "mlm"


def test_root_and_init(task, tmp_path):
    """``root`` holds the artefact; ``init`` starts the encoder and joins the key."""
    from ehrseq.models import BehrtEncoder
    from ehrseq.pretrained import pretrained_model

    recipe = PretrainRecipe(schedule="joint", epochs=1, batch_size=64, seed=1)
    first = load_or_pretrain(task, _cfg(task), recipe, device="cpu", root=tmp_path)
    assert first.folder.parent == tmp_path and (first.folder / "model.pt").is_file()
    state = first.model.encoder.state_dict()
    start = pretrained_model(task, _cfg(task), recipe, init=state)
    for name, tensor in state.items():
        torch.testing.assert_close(start.encoder.state_dict()[name], tensor)
    again = load_or_pretrain(task, _cfg(task), recipe, device="cpu", root=tmp_path, init=state)
    assert not again.loaded and again.folder.parent == tmp_path
    assert again.folder != first.folder  # started elsewhere: another artefact
    other = BehrtConfig.from_vocab(task.vocab, d_model=8, n_layers=1, n_heads=2, d_ff=16)
    with pytest.raises(ValueError, match="do not fit this encoder: size mismatch"):
        pretrained_model(task, _cfg(task), recipe, init=BehrtEncoder(other).state_dict())


# ------------------------------------------------------ evaluation tables as artefacts
def _runs(task) -> dict:
    """Two tiny pretrained runs: one trains the masked-code head, one the next visit."""
    return {
        schedule: load_or_pretrain(
            task, _cfg(task), PretrainRecipe(schedule=schedule, epochs=1, batch_size=64)
        )
        for schedule in ("mlm", "next_visit")
    }


def _folders(root, name: str) -> set[str]:
    return {p.name for p in root.glob(f"{name}-*") if p.is_dir()}


def test_next_visit_scores_scored_once_equal_fresh(task, tmp_path, monkeypatch):
    import ehrseq.next_visit as nv
    from ehrseq.pretrain import TokenIds, code_counts
    from ehrseq.pretrained import SCORES, load_or_score_next_visit

    monkeypatch.setenv("EHRSEQ_ARTIFACTS", str(tmp_path))
    ids = TokenIds.from_vocab(task.vocab)
    counts = code_counts(task.loader("train", 64), ids)
    recurrence = nv.recurring_codes(task.loader("train", 64), ids)
    chronic = nv.chronic_codes(recurrence, 0.3, 1)
    run = _runs(task)["next_visit"]
    scorers = {
        "model": run,
        "last": nv.repeat_last_visit(counts),
        "chronic": nv.repeat_codes(chronic, counts),
    }
    fresh = nv.next_visit_table(
        {"model": nv.model_scorer(run.model), "last": scorers["last"]}
        | {"chronic": scorers["chronic"]},
        task.loader("val", 16),
        ids,
        k=5,
    )
    first = load_or_score_next_visit(task, "val", scorers, batch_size=16, k=5)
    pd.testing.assert_frame_equal(first, fresh, check_exact=True)
    assert len(_folders(tmp_path, SCORES)) == 3  # one artefact per scorer

    def fail(*args, **kwargs):
        raise AssertionError("scored again: the artefacts were not loaded")

    monkeypatch.setattr(nv, "next_visit_table", fail)
    # other names, another order, fewer scorers
    again = {"repeat chronic": scorers["chronic"], "the model": run}
    loaded = load_or_score_next_visit(task, "val", again, batch_size=16, k=5)
    expected = fresh[[(c, n) for n in ("chronic", "model") for c in ("recall@5", "ap")]]
    expected = fresh[["n_codes"]].join(expected)
    expected.columns = pd.MultiIndex.from_tuples(
        [("n_codes", "")]
        + [(c, n) for n in ("repeat chronic", "the model") for c in ("recall@5", "ap")]
    )
    pd.testing.assert_frame_equal(loaded, expected, check_exact=True)
    assert len(_folders(tmp_path, SCORES)) == 3


def test_next_visit_scores_key_changes_with_each_input(task, tmp_path, monkeypatch):
    import dataclasses
    from types import SimpleNamespace

    import ehrseq.next_visit as nv
    from ehrseq.pretrain import TokenIds, code_counts
    from ehrseq.pretrained import SCORES, load_or_score_next_visit

    monkeypatch.setenv("EHRSEQ_ARTIFACTS", str(tmp_path))
    ids = TokenIds.from_vocab(task.vocab)
    counts = code_counts(task.loader("train", 64), ids)
    runs = _runs(task)

    def score(scorer, task=task, split="val", batch_size=32, k=5):
        load_or_score_next_visit(task, split, {"x": scorer}, batch_size=batch_size, k=k)
        return _folders(tmp_path, SCORES)

    seen = score(nv.most_frequent(counts))
    assert len(seen) == 1
    assert score(nv.most_frequent(counts.clone())) == seen  # the same values: loaded
    other_config = dataclasses.replace(task.config, n_bins=6)
    other_task = SimpleNamespace(config=other_config, vocab=task.vocab)
    other_task.loader = task.loader
    changes = [
        dict(scorer=nv.repeat_last_visit(counts)),  # another rule, the same inputs
        dict(scorer=nv.most_frequent(counts + (torch.arange(len(counts)) == 5))),
        dict(scorer=runs["next_visit"]),
        dict(scorer=runs["mlm"]),  # another pretrained run
        dict(split="test"),
        dict(batch_size=16),
        dict(k=3),
        dict(task=other_task),
    ]
    for change in changes:
        now = score(**({"scorer": nv.most_frequent(counts)} | change))
        assert len(now) == len(seen) + 1, change
        seen = now


def test_masked_ranks_ranked_once_equal_fresh(task, tmp_path, monkeypatch):
    import ehrseq.pretrain as pt
    from ehrseq.pretrained import RANKS, load_or_rank_masked_codes

    monkeypatch.setenv("EHRSEQ_ARTIFACTS", str(tmp_path))
    ids = pt.TokenIds.from_vocab(task.vocab)
    runs = _runs(task)
    first = load_or_rank_masked_codes(task, "val", runs, batch_size=16)
    for name, run in runs.items():
        fresh = pt.masked_code_ranks(run.model, task.loader("val", 16), ids)
        pd.testing.assert_frame_equal(first[name], fresh, check_exact=True)
    assert not first["mlm"]["rank"].equals(first["next_visit"]["rank"])  # two models
    assert len(_folders(tmp_path, RANKS)) == 2

    def fail(*args, **kwargs):
        raise AssertionError("ranked again: the artefacts were not loaded")

    monkeypatch.setattr(pt, "masked_code_ranks", fail)
    best = {"best": runs["mlm"]}
    loaded = load_or_rank_masked_codes(task, "val", best, batch_size=16)
    pd.testing.assert_frame_equal(loaded["best"], first["mlm"], check_exact=True)
    monkeypatch.undo()
    monkeypatch.setenv("EHRSEQ_ARTIFACTS", str(tmp_path))
    for change in (dict(split="test"), dict(batch_size=32), dict(seed=1)):
        before = len(_folders(tmp_path, RANKS))
        kwargs = dict(split="val", batch_size=16) | change
        split = kwargs.pop("split")
        load_or_rank_masked_codes(task, split, {"best": runs["mlm"]}, **kwargs)
        assert len(_folders(tmp_path, RANKS)) == before + 1, change


def test_history_rule_key_reads_the_rule_and_the_values():
    from ehrseq.next_visit import most_frequent, repeat_codes, repeat_last_visit

    counts = torch.tensor([0.0, 3.0, 1.0, 2.0])
    mask = torch.tensor([False, True, False, True])
    key = most_frequent(counts).key()
    assert most_frequent(counts.clone()).key() == key
    assert repeat_last_visit(counts).key() != key
    assert most_frequent(counts + 1).key() != key
    assert most_frequent(counts.double()).key() != key  # another dtype
    assert repeat_codes(mask, counts).key() != repeat_codes(~mask, counts).key()
