"""Pretrained encoders are artefacts: trained once per (task, encoder config, recipe), then loaded."""

from __future__ import annotations

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
