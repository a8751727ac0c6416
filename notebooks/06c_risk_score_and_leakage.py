# ---
# jupyter:
#   ehrseq:
#     runs_after: [06b_survival_training]
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The score to rank with, and the leakage test after training
#
# ## Outline
# {doc}`06b_survival_training` trained a small visit-causal BEHRT with the per-bin hazard
# head on the shared survival task, over several seeds, and scored its risk at the horizon
# against the oracle and the life table. {doc}`06_survival_head` had made two arguments on
# an untrained model: that a *sum* of per-visit hazards is a biased risk score, and that a
# visit-causal encoder does not let later visits leak into earlier hazards. This chapter
# loads the trained models of 6b from their artefacts and checks both on them.
#
# We will
# 1. load the models of {doc}`06b_survival_training` (or train them the same way, if this
#    chapter runs first);
# 2. see on data why the *sum* of hazards is a biased risk score;
# 3. run the leakage test again, on the trained encoder.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size. The
# model and its training are not set here: they are the recipe of
# {doc}`06b_survival_training`, `ehrseq.behrt_survival.behrt_survival()`. With the task and
# the seed it makes the key of each trained model, so this chapter loads the models that
# chapter saved.

# %%
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy import stats

import ehrseq
from ehrseq.behrt_survival import behrt_survival, load_or_fit_seed
from ehrseq.book import keep
from ehrseq.config import for_profile, format_config
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.evaluate import NOT_RESOLVED
from ehrseq.leakage import leakage_test, visits_per_patient
from ehrseq.metrics import (
    bootstrap_ci,
    concordance_index,
    concordance_index_resampler,
)
from ehrseq.models import VisitHazardHead, encoder_inputs
from ehrseq.models.survival_head import last_visit_index, pool_visits
from ehrseq.plotting import apply_style
from ehrseq.runs import predict_survival
from ehrseq.survival import hazards_to_survival


@dataclass(frozen=True)
class Config:
    profile: str = "book"
    n_boot: int = 200  # bootstrap resamples per confidence interval
    leak_patients: int = 16  # test patients of the leakage test


cfg = for_profile(Config, {"smoke": {"n_boot": 50}, "full": {"n_boot": 1000}})
recipe = behrt_survival()  # the models of chapter 6b: widths, training, seeds
device = ehrseq.get_device()
rng = ehrseq.seed_everything(recipe.seeds[0])
apply_style()
print(format_config(cfg))
print(format_config(recipe))
print(f"device: {device}; CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS)")
chapter_start = time.perf_counter()

# %% [markdown]
# The checks run on the CPU. Models trained on a GPU can differ in their last digits from
# run to run (the scatter-add of the pooling); on the CPU they repeat bit for bit.
#
# ## Data
# The shared survival task of {doc}`06_survival_head`, built by `prepare_survival_task`.

# %%
task = prepare_survival_task(shared_task_config())  # the same task in every chapter
tc = task.config
n_bins = tc.n_bins
test_frame = task.frame("test")
d_test = test_frame["duration"].to_numpy()
e_test = test_frame["event"].to_numpy()
oracle_risk = task.oracle_risk("test")  # (n,)
task.summary()

# %% [markdown]
# ## Model
# ### The models of chapter 6b
# The same composition as in {doc}`06b_survival_training`: the BEHRT encoder, then the
# per-bin head on the mean state of the last real visit, its bias started at the life table
# of the training patients. Each seed's trained model is an artefact
# (`ehrseq.artifacts.load_or_train`) keyed by the task, the encoder config and the training
# recipe; run after 6b, `load_or_fit_seed` loads them. Run first, it trains each seed
# exactly as 6b does, through `train_seeds`, and saves it under 6b's key.

# %%
models, loaded = {}, {}
for seed in recipe.seeds:
    model, loaded[seed] = load_or_fit_seed(task, recipe, seed)  # loaded, or trained
    models[seed] = model.cpu().eval()
print("loaded from chapter 6b:" if all(loaded.values()) else "loaded:", loaded)

first_model = models[recipe.seeds[0]]
# (n, K): survival at the bin edges, as 6b predicted it
model_surv = predict_survival(first_model, task, hierarchical=False)
model_risk = 1.0 - model_surv[:, -1]  # (n,), risk by the horizon
assert model_surv.shape == (len(d_test), n_bins)

# %% [markdown]
# ## Evaluate
# ### Why not the sum of hazards
# {doc}`06_survival_head` argued that a sum of per-visit hazards grows with the number of
# visits, whatever the risk. Here is the measurement. The trained encoder is visit-causal,
# so the state of visit $t$ is what the model would know had the history ended at visit $t$.
# Reading the per-bin head there gives, at every visit, the hazard of the next quarter as
# seen from that visit: the kind of sequence a per-visit model outputs. The head read at the
# last visit is exactly the model's prediction (checked below). Now compare two scores per
# patient: the **sum of those per-visit hazards** and the **risk at the horizon**, and ask
# how each depends on the number of visits in the history. The oracle tells how much
# dependence is real: patients who are sicker are seen more often.


# %%
def per_visit_bin_hazards(model, dataset, batch_size=256):
    """Next-quarter hazard read at every visit, (n, V), and the visit mask."""
    hazards, masks = [], []
    V = int(visits_per_patient(dataset).max())  # visit slots of every batch
    with torch.no_grad():
        for lo in range(0, len(dataset), batch_size):
            b = dataset.batch(np.arange(lo, min(lo + batch_size, len(dataset))))
            states = model.encoder(**encoder_inputs(b))  # (B, L, d), visit-causal
            vs, vm = pool_visits(states, b["visit_ids"], b["attention_mask"], V)
            out = model.head(vs.reshape(-1, vs.shape[-1]))  # (B*V, K)
            h = out.hazards.reshape(vs.shape[0], vs.shape[1], -1)  # (B, V, K)
            hazards.append(h * vm[..., None])
            masks.append(vm)
    return torch.cat(hazards), torch.cat(masks)


test_set = task.dataset("test")
seq_hazards, seq_mask = per_visit_bin_hazards(first_model, test_set)
last = last_visit_index(seq_mask)  # (n,)
# (n, K): the head read at the last visit
at_last = seq_hazards[torch.arange(len(last)), last]
assert np.allclose(hazards_to_survival(at_last.double().numpy()), model_surv, atol=1e-5)
sum_of_hazards = seq_hazards[..., 0].sum(dim=1).numpy()  # (n,): sum over visits
n_visits_test = seq_mask.sum(dim=1).numpy()  # (n,)

scores = {
    "sum of per-visit hazards": sum_of_hazards,
    "risk at the horizon (model)": model_risk,
    "oracle risk": oracle_risk,
}
bias_rows = {}
for name, score in scores.items():
    rho_visits = stats.spearmanr(score, n_visits_test).statistic
    bias_rows[name] = {
        "Spearman with number of visits": rho_visits,
        "Harrell C": concordance_index(d_test, score, e_test),
    }
bias_table = pd.DataFrame(bias_rows).T
rho = bias_table["Spearman with number of visits"]
keep("rho_sum", float(rho["sum of per-visit hazards"]))
keep("rho_risk", float(rho["risk at the horizon (model)"]))
keep("rho_oracle", float(rho["oracle risk"]))
keep("c_sum", float(bias_table.loc["sum of per-visit hazards", "Harrell C"]))
keep("c_risk", float(bias_table.loc["risk at the horizon (model)", "Harrell C"]))


def c_difference_resampler(d, e, a, b):
    """Both C-indices on whole blocks of resamples (the same draws as the loop)."""
    c_a = concordance_index_resampler(d, a, e)
    c_b = concordance_index_resampler(d, b, e)
    return lambda resamples: c_a(resamples) - c_b(resamples)


c_diff = bootstrap_ci(  # paired: the same resampled patients for both scores
    lambda d, e, a, b: concordance_index(d, a, e) - concordance_index(d, b, e),
    d_test,
    e_test,
    model_risk,
    sum_of_hazards,
    n_boot=cfg.n_boot,
    resampler=c_difference_resampler,
)
keep("diff_c_sum", c_diff.estimate)
keep("diff_c_sum_lower", c_diff.lower)
keep("diff_c_sum_upper", c_diff.upper)
if c_diff.lower > 0 or c_diff.upper < 0:
    better = "the risk at the horizon" if c_diff.lower > 0 else "the sum"
    c_sum_verdict = f"{better} ranks better"
else:
    c_sum_verdict = NOT_RESOLVED
keep("verdict_c_sum", c_sum_verdict)
assert rho["sum of per-visit hazards"] > 0.5
if cfg.profile != "smoke":
    assert rho["sum of per-visit hazards"] > rho["risk at the horizon (model)"] + 0.1
    assert c_diff.upper > 0  # the sum of hazards does not rank better than the risk
bias_table.round(3)

# %% mystnb={"figure": {"caption": "Mean percentile rank of three risk scores among test patients, by the number of visits in the history before the prediction time. The sum of per-visit hazards climbs with the number of visits far more than the true risk does.", "name": "fig-sum-of-hazards"}}
edges = [0, 1, 2, 4, 7, 12, np.inf]
groups = pd.cut(n_visits_test, edges, labels=["1", "2", "3-4", "5-7", "8-12", "13+"])
ranks = pd.DataFrame({name: stats.rankdata(s) / len(s) for name, s in scores.items()})
by_group = ranks.groupby(np.asarray(groups), observed=True).mean()
by_group = by_group.reindex(groups.categories)
fig, ax = plt.subplots(figsize=(7.5, 3.6), layout="constrained")
for (name, col), style in zip(by_group.items(), ["o-", "s-", "k^--"], strict=True):
    ax.plot(by_group.index.astype(str), col, style, label=name)
ax.set_xlabel("visits in the history before the prediction time")
ax.set_ylabel("mean percentile rank of the score")
ax.set_ylim(0, 1.02)
fig.legend(loc="outside right upper")  # beside the axes: the lines can run anywhere
plt.show()

# %% [markdown]
# The sum of per-visit hazards has a rank correlation of {glue:text}`rho_sum:.2f` with the
# number of visits, the model's risk at the horizon {glue:text}`rho_risk:.2f`, and the true
# risk {glue:text}`rho_oracle:.2f`. The sum mostly counts visits: patients seen often are
# ranked high whether they are at risk or not. Its C-index is {glue:text}`c_sum:.3f`,
# against {glue:text}`c_risk:.3f` for the risk at the horizon: a paired difference of
# {glue:text}`diff_c_sum:+.3f` (95% interval {glue:text}`diff_c_sum_lower:+.3f` to
# {glue:text}`diff_c_sum_upper:+.3f`; {glue:text}`verdict_c_sum`). Whatever the verdict on
# this test set, the risk $1 - S$ at a fixed horizon asks every patient the same question;
# that is the score to rank with (and, with per-visit hazards, it needs their interval end
# times: `risk_at_horizon(..., time_grid=...)`).
#
# ### The leakage test on the trained model
# A freshly initialised encoder passed the test in {doc}`06_survival_head`; the trained one
# must too, and its bidirectional reading must fail it. The per-visit head here is a fresh
# one on the trained encoder: what is tested is the encoder. The test's functions, written
# out in that chapter, come from `ehrseq.leakage`.


# %%
several = np.flatnonzero(visits_per_patient(test_set) >= 3)  # 3 visits or more
leak_batch = test_set.batch(several[: cfg.leak_patients])
cut = leak_batch["visit_ids"].max(dim=1).values // 2 + 1  # (B,): visit t, mid-history
generator = torch.Generator().manual_seed(0)
ehrseq.seed_everything(recipe.seeds[0])  # the fresh head's weights
leak_head = VisitHazardHead(recipe.d_model).eval()
trained_changes = leakage_test(
    first_model.encoder, leak_head, leak_batch, cut, generator, len(task.vocab)
)
assert trained_changes["visit-causal"].max() < 1e-6
assert trained_changes["bidirectional"].min() > 1e-4
print(f"chapter ran in {(time.perf_counter() - chapter_start) / 60:.1f} min")
trained_changes.to_frame().style.format("{:.4f}")  # 4 decimals, not 6

# %% [markdown]
# ## Summary
# - Survival is $\prod (1 - h)$ and the score to rank with is the risk at a fixed horizon.
#   The sum of per-visit hazards counts visits (rank correlation {glue:text}`rho_sum:.2f`
#   with their number); against the risk at the horizon in C: {glue:text}`verdict_c_sum`.
# - The trained visit-causal encoder passes the leakage test; read bidirectionally, it
#   fails it.
# - The models came from {doc}`06b_survival_training` as artefacts: a chapter that only
#   reads a trained model loads it by the key of the chapter that trained it.
#
# ## Exercises
# 1. Train with `causal=False` (`behrt_survival(causal=False)`, in both chapters, so that
#    the keys match). Does the C-index
#    of the per-bin head change? Why is a bidirectional encoder harmless for this head and
#    not for a per-visit one? Run the leakage test on that model.
# 2. Use `TaskConfig(n_bins=60)` (monthly bins). How does the sum of the 60 bin hazards
#    compare with $-\log S$ at the horizon, and the sum of per-visit hazards with the risk?
# 3. Instead of the sum, take the *maximum* of the per-visit hazards, or the hazard at the
#    last visit alone. How does each depend on the number of visits, and how does it rank?
