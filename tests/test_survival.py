"""ehrseq.survival: hazards -> survival and risk, one function for NumPy and torch; the life table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lifelines import KaplanMeierFitter

from ehrseq.survival import hazards_to_survival, life_table_hazards, risk_at_horizon


def test_hazards_to_survival_numpy_and_torch():
    hazards = np.array([[0.1, 0.2, 0.5], [0.0, 0.0, 1.0]])
    expected = np.array([[0.9, 0.72, 0.36], [1.0, 1.0, 0.0]])
    np.testing.assert_allclose(hazards_to_survival(hazards), expected)
    h_t = torch.tensor(hazards, requires_grad=True)
    s_t = hazards_to_survival(h_t)
    assert isinstance(s_t, torch.Tensor) and s_t.requires_grad
    torch.testing.assert_close(s_t.detach(), torch.tensor(expected, dtype=h_t.dtype))
    np.testing.assert_allclose(risk_at_horizon(hazards, 1), [0.28, 0.0])
    np.testing.assert_allclose(risk_at_horizon(h_t, 1).detach(), [0.28, 0.0])
    grid = np.array([30.0, 60.0, 90.0])
    np.testing.assert_allclose(risk_at_horizon(hazards, 75.0, grid), [0.28, 0.0])
    np.testing.assert_allclose(risk_at_horizon(hazards, 10.0, grid), [0.0, 0.0])


def test_numpy_and_torch_give_the_same_risk():
    gen = torch.Generator().manual_seed(4)
    hazards = torch.rand(6, 5, generator=gen) * 0.3
    torch.testing.assert_close(hazards_to_survival(hazards), torch.cumprod(1 - hazards, dim=1))
    for k in range(5):
        risk = risk_at_horizon(hazards, k)
        assert isinstance(risk, torch.Tensor)
        np.testing.assert_allclose(risk.numpy(), risk_at_horizon(hazards.numpy(), k), atol=1e-6)
    grid = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0])
    for t in (0.5, 1.0, 3.0, 16.0, 20.0):
        np.testing.assert_allclose(
            risk_at_horizon(hazards, t, time_grid=grid).numpy(),
            risk_at_horizon(hazards.numpy(), t, time_grid=grid.numpy()),
            rtol=0,
            atol=1e-6,
        )
    # numpy integer horizons are bin indices too
    torch.testing.assert_close(risk_at_horizon(hazards, np.int64(2)), risk_at_horizon(hazards, 2))


def test_per_patient_grid_and_mask():
    hazards = torch.tensor([[0.1, 0.2, 0.3, 0.9], [0.5, 0.5, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    grid = torch.tensor([[10.0, 20.0, 30.0, 40.0], [5.0, 50.0, 1e9, 1e9]])
    risk = risk_at_horizon(hazards, 30.0, time_grid=grid, mask=mask)
    expected = [1 - 0.9 * 0.8 * 0.7, 1 - 0.5]
    torch.testing.assert_close(risk, torch.tensor(expected))
    np.testing.assert_allclose(
        risk_at_horizon(hazards.numpy(), 30.0, grid.numpy(), mask.numpy()), expected, atol=1e-6
    )
    masked = torch.tensor([[0.1, 0.7, 0.2]]), torch.tensor([[True, False, True]])
    torch.testing.assert_close(hazards_to_survival(*masked), torch.tensor([[0.9, 0.9, 0.72]]))
    np.testing.assert_allclose(
        hazards_to_survival(*(m.numpy() for m in masked)), [[0.9, 0.9, 0.72]], atol=1e-6
    )
    # the sum of hazards is not a fixed-horizon risk: it grows with the number of visits
    short, long_ = torch.tensor([[0.2, 0.2]]), torch.tensor([[0.2, 0.2, 0.2, 0.2]])
    assert long_.sum() > short.sum()
    torch.testing.assert_close(risk_at_horizon(short, 1), risk_at_horizon(long_, 1))


def test_life_table_is_the_kaplan_meier_step_per_bin():
    rng = np.random.default_rng(0)
    durations = rng.integers(0, 6, size=300)
    events = rng.random(300) < 0.4
    h = life_table_hazards(durations, events, n_bins=6)
    at_risk = np.array([(durations >= k).sum() for k in range(6)])  # the loop of chapter 6
    n_events = np.bincount(durations[events], minlength=6)
    np.testing.assert_allclose(h, np.clip(n_events / at_risk, 1e-4, 1 - 1e-4))
    # its survival is the Kaplan-Meier curve at the bin ends
    km = KaplanMeierFitter().fit(durations, events)
    np.testing.assert_allclose(
        hazards_to_survival(h[None])[0], km.survival_function_at_times(np.arange(6)), atol=1e-9
    )
    # a bin nobody reaches gets the floor, not a division by zero
    assert life_table_hazards([0, 1], [1, 0], n_bins=4)[3] == pytest.approx(1e-4)


ERROR_CASES = {
    "hazards above one": (lambda: hazards_to_survival([[0.5, 1.5]]), r"\[0, 1\]"),
    "hazards 1-D": (lambda: hazards_to_survival([0.5, 0.5]), r"shape \(n, T\)"),
    "torch nan": (lambda: hazards_to_survival(torch.tensor([[0.1, float("nan")]])), "NaN"),
    "torch above one": (lambda: hazards_to_survival(torch.full((2, 3), 1.1)), r"\[0, 1\]"),
    "mask shape": (
        lambda: hazards_to_survival(torch.full((2, 3), 0.1), torch.ones(2, 2, dtype=torch.bool)),
        "mask",
    ),
    "bin out of range": (lambda: risk_at_horizon([[0.1, 0.2]], 2), "outside"),
    "float bin": (lambda: risk_at_horizon([[0.1, 0.2]], 1.5), "integer"),
    "grid shape": (
        lambda: risk_at_horizon(torch.full((2, 3), 0.1), 1.0, time_grid=torch.ones(4)),
        "time_grid",
    ),
    "grid decreasing": (lambda: risk_at_horizon([[0.1, 0.2]], 1.0, [2.0, 1.0]), "non-decreasing"),
    "life table: bin past the last": (
        lambda: life_table_hazards([0, 3], [1, 1], n_bins=3),
        "patient 1 has 3",
    ),
    "life table: events not 0/1": (lambda: life_table_hazards([0, 1], [1, 2], n_bins=3), "0/1"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
def test_bad_inputs_raise_value_error(case):
    fn, match = ERROR_CASES[case]
    with pytest.raises(ValueError, match=match):
        fn()
