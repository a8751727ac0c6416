# ---
# jupyter:
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
# # Survival head and token-to-visit aggregation
#
# ## Outline
# A BEHRT encoder {cite}`li2020behrt` turns a patient's history into one vector per token,
# `(B, L, d)`. A survival model needs something else: discrete-time **hazards**, from which
# the survival curve and the risk at a horizon follow {cite}`kvamme2019continuous`. This
# chapter builds the bridge; the next one, {doc}`06b_survival_training`, trains the first
# sequence model of the book on the shared survival task.
#
# We will
# 1. average token states into **visit states** with one vectorised scatter-add (a masked
#    mean), step by step on a batch small enough to check by hand, and meet the **visit
#    mask**;
# 2. put a **hazard head** on top, in its two conventions: one hazard per visit
#    (`VisitHazardHead`) and one hazard per time bin after the prediction time
#    (`BinHazardHead`), and choose the one that fits the task's labels;
# 3. go from hazards to the survival curve $S(t) = \prod (1 - h)$ and the risk at a fixed
#    horizon, and see why the *sum* of hazards is a biased risk score;
# 4. run **the leakage test**: with a visit-causal encoder the hazard at visit $t$ does not
#    move when later visits change (and it does without the mask), and the inputs end at the
#    prediction time.
#
# {doc}`06b_survival_training` then trains a small BEHRT with the per-bin head, scores it on
# the test patients beside the **oracle** over several seeds, measures the bias of the sum of
# hazards on data, and runs the leakage test again on the trained encoder.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size. The
# cohort, its splits, the prediction times, the horizon and the bins are not chosen here:
# they come from `ehrseq.data.task.shared_task_config()`, the one task the modelling
# chapters share, so every one of them scores its models on the same test patients.

# %%
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

import ehrseq
import ehrseq.leakage
from ehrseq.book import keep, plural
from ehrseq.config import for_profile, format_config
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.data.vocab import SPECIAL_TOKENS
from ehrseq.losses import hazard_nll
from ehrseq.models import (
    BehrtConfig,
    BehrtEncoder,
    BinHazardHead,
    HazardOutput,
    VisitHazardHead,
    encoder_inputs,
)
from ehrseq.models.survival_head import last_visit_index, last_visit_state, pool_visits
from ehrseq.survival import risk_at_horizon


@dataclass(frozen=True)
class Config:
    profile: str = "book"
    d_model: int = 64  # width of the token states
    n_layers: int = 2  # transformer blocks
    n_heads: int = 4  # attention heads
    d_ff: int = 128  # feed-forward hidden width
    # encoder dropout on embeddings and residual branches (off in eval)
    dropout: float = 0.1
    causal: bool = True  # visit-causal attention in the encoder
    seed: int = 0  # seed of the untrained encoders and heads


cfg = for_profile(
    Config,
    {
        "smoke": {},  # nothing here trains: the book sizes are already quick
        "full": {"d_model": 128, "n_layers": 4, "d_ff": 512},
    },
)
device = ehrseq.get_device()
rng = ehrseq.seed_everything(cfg.seed)
print(format_config(cfg))
print(f"device: {device}; CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS)")
chapter_start = time.perf_counter()

# %% [markdown]
# The tensors of this chapter live on the CPU, where they are bit-for-bit repeatable; on a
# GPU the scatter-add of the pooling uses atomic adds, so its last bits are not.
#
# ## Data
# `prepare_survival_task` runs the whole path of the previous chapters in one call: the
# synthetic cohort written as an OMOP CDM and read back, heart-failure labels from a
# prediction time {glue:text}`history_text` after enrolment over a five-year horizon, a train / validation /
# test split made before anything is fitted, sequences cut strictly before the prediction
# time, a vocabulary fitted on the training patients, and the follow-up cut into bins.

# %%
task = prepare_survival_task(shared_task_config())  # the same task in every chapter
keep("history_text", plural(task.config.history_days / 365.25, "year", ".0f"))
tc = task.config
n_bins = tc.n_bins
print(task.vocab)
task.summary()

# %% [markdown]
# Each patient's label is a duration in days, an event indicator and the **bin** that holds
# the event or the censoring: bin $k$ covers $(c_k, c_{k+1}]$ days after the prediction
# time, with `task.cuts` = $c_0 = 0 < c_1 < \dots < c_K$ = the horizon. A patient followed
# to the end of the window is censored in the last bin.

# %%
train_frame, test_frame = task.frame("train"), task.frame("test")
keep("n_bins", n_bins)
keep("bin_days", float(tc.bin_days))
keep("horizon_years", float(tc.horizon_years))
keep("n_train", len(train_frame))
keep("n_test", len(test_frame))
keep("n_test_events", int(test_frame["event"].sum()))
assert len(task.cuts) == n_bins + 1 and task.cuts[-1] == tc.horizon_days
assert train_frame["bin"].between(0, n_bins - 1).all()
test_frame.head()

# %% [markdown]
# ### The inputs end at the prediction time
# The one rule no model may break: every token a model reads is dated **strictly before**
# the patient's prediction time, and the outcome itself never appears in the history (a
# patient with heart failure before the prediction time is a prevalent case and has no
# label). Both are checked on every token of the task, not on a sample.

# %%
frame = task.sequences.frame  # one row per token
prediction_time = task.labels.set_index("subject_id")["prediction_time"]
token_pt = prediction_time.reindex(frame["person_id"]).to_numpy()  # (n_tokens,)
hf_concepts = task.cohort.vocabulary.ids("heart_failure", "condition")
assert frame["person_id"].isin(task.labels["subject_id"]).all()
assert task.labels["subject_id"].isin(frame["person_id"]).all()
assert (frame["time"].to_numpy() < token_pt).all()  # strictly before, every token
assert not frame["concept_id"].isin(hf_concepts).any()  # the outcome is never an input
n_cut = task.sequences.report["events_at_or_after_prediction_time"]
assert n_cut > 0  # the cut did remove something: the future exists in the tables
keep("n_cut", n_cut)
keep("n_tokens", len(frame))

# %% [markdown]
# The tables hold {glue:text}`n_cut:,` events at or after the prediction times of the
# labelled patients; none of them made it into the {glue:text}`n_tokens:,` tokens.
#
# ## Model
# ### From tokens to visits: a masked mean by scatter-add
# A visit is the natural unit of time in a health record: its codes share a date, and the
# order of codes inside it carries no information. To get one vector per visit we average
# the states of its tokens,
#
# $$
# \bar x_{b,t} = \frac{\sum_l m_{b,l}\,[v_{b,l} = t + 1]\; x_{b,l}}
#                     {\max\bigl(1, \sum_l m_{b,l}\,[v_{b,l} = t + 1]\bigr)},
# $$
#
# where $v_{b,l}$ is the visit id of token $l$ of patient $b$ (1 for the first visit, 0 for
# padding) and $m_{b,l}$ the attention mask. Slot $t$ of the output holds visit $t + 1$.
#
# A double loop over patients and visits would do, and would be slow. The vectorised way
# flattens the batch: the pair (patient $b$, visit slot $t$) gets the single index
# $bV + t$, and one `index_add` adds every token's state into the row of its pair. A second
# `index_add` of ones counts the tokens. Here it is on a batch of two patients, seven token
# positions and states of width two, chosen so that the sums can be checked by eye. The
# first patient has three visits, the second two visits and three padded positions, whose
# states we fill with 99 to see that padding never leaks in.

# %%
x = torch.tensor(
    [
        [[1, 0], [3, 0], [0, 2], [0, 4], [0, 6], [5, 5], [7, 7]],
        [[2, 2], [4, 0], [6, 0], [2, 3], [99, 99], [99, 99], [99, 99]],
    ],
    dtype=torch.float32,
)  # (B, L, d) = (2, 7, 2)
visit_ids = torch.tensor([[1, 1, 2, 2, 2, 3, 3], [1, 2, 2, 2, 0, 0, 0]])  # (B, L)
attention_mask = visit_ids > 0  # (B, L)
B, L, d = x.shape
V = int(visit_ids.max())  # visit slots: the most visits of any patient in the batch

# (B, L): b*V + t
slot = torch.arange(B).unsqueeze(1) * V + (visit_ids - 1).clamp(min=0)
print("flat slot of each token:\n", slot)

# %% [markdown]
# Padded positions get slot $bV + 0$ (the clamp keeps the index legal) but they will add
# zeros there, because the states are masked before the sum.

# %%
keep_token = attention_mask.reshape(B * L, 1)  # (B*L, 1)
flat_x = torch.where(keep_token, x.reshape(B * L, d), 0.0)  # (B*L, d), padding zeroed
sums = torch.zeros(B * V, d).index_add(0, slot.reshape(B * L), flat_x)  # (B*V, d)
ones = keep_token.squeeze(1).float()  # (B*L,): 1 for a real token
counts = torch.zeros(B * V).index_add(0, slot.reshape(B * L), ones)  # (B*V,)
means = (sums / counts.clamp(min=1).unsqueeze(1)).reshape(B, V, d)  # (B, V, d)
visit_mask = (counts > 0).reshape(B, V)  # (B, V)
print("sums (row b*V + t):\n", sums)
print("counts:", counts)
print("visit means:\n", means)

# %% [markdown]
# Patient 0, visit 2 (slot 1) holds tokens 2 to 4: the sum is $(0, 12)$ over 3 tokens, the
# mean $(0, 4)$. Patient 1's visit 2 (row 4) is $(12, 3)$ over 3 tokens, mean $(4, 1)$, and
# its padded 99s are nowhere. There is no third visit for patient 1: row 5 received
# nothing, its count is 0, and the $\max(1, \cdot)$ in the denominator leaves its mean at 0 instead of
# dividing by zero. The same computation, written as the double loop it replaces, and the
# library's `pool_visits` must agree with it.


# %%
def pool_visits_loop(x, visit_ids, attention_mask, n_visits):
    """Reference: the masked mean of each visit, one patient and one visit at a time."""
    out = torch.zeros(x.shape[0], n_visits, x.shape[2])
    for b in range(x.shape[0]):
        for t in range(n_visits):
            chosen = (visit_ids[b] == t + 1) & attention_mask[b]  # (L,)
            if chosen.any():
                out[b, t] = x[b, chosen].mean(dim=0)
    return out


lib_states, lib_mask = pool_visits(x, visit_ids, attention_mask)
assert torch.equal(means[0, 1], torch.tensor([0.0, 4.0]))
assert torch.equal(means[1, 1], torch.tensor([4.0, 1.0])) and (means[1, 2] == 0).all()
assert torch.allclose(lib_states, means)
assert torch.allclose(lib_states, pool_visits_loop(x, visit_ids, attention_mask, V))
assert torch.equal(lib_mask, visit_mask)

# %% [markdown]
# ### The visit mask
# Patient 1's third slot is padding at the level of visits: it exists only because patient 0
# has three visits. Asking for more slots than any patient has (as when a batch is padded to
# a fixed number of visits) adds more such rows. The **visit mask** marks the real ones:
# `visit_mask[b, t]` is True when visit $t + 1$ of patient $b$ has at least one real token.
# An empty slot's state is 0, not a visit, and everything downstream must skip it: the
# per-visit head sets its hazard to 0, the loss never reads it, and the last real visit of
# each patient (what the per-bin head reads) is the last True of its row.

# %%
padded_states, padded_mask = pool_visits(x, visit_ids, attention_mask, n_visits=5)
print(padded_mask)
assert padded_states.shape == (2, 5, 2) and (padded_states[:, 3:] == 0).all()
assert torch.equal(padded_mask.sum(dim=1), torch.tensor([3, 2]))
assert torch.equal(last_visit_index(padded_mask), torch.tensor([2, 1]))
assert torch.equal(last_visit_state(padded_states, padded_mask), means[[0, 1], [2, 1]])

# %% [markdown]
# ### On a real batch
# Now a real batch of the task through a fresh BEHRT encoder: token states `(B, L, d)`, then
# visit states `(B, V, d)` with their mask. [CLS] sits in the first visit and each [SEP] in
# the visit it closes, so they are pooled with their visit.

# %%
encoder_cfg = BehrtConfig.from_vocab(
    task.vocab,
    d_model=cfg.d_model,
    n_layers=cfg.n_layers,
    n_heads=cfg.n_heads,
    d_ff=cfg.d_ff,
    dropout=cfg.dropout,
    max_len=tc.max_len,
    causal=cfg.causal,
)
encoder = BehrtEncoder(encoder_cfg).eval()
train_set = task.dataset("train")
batch = train_set.batch(np.arange(6))  # the first six training patients, padded
with torch.no_grad():
    states = encoder(**encoder_inputs(batch))  # (B, L, d)
pooled = pool_visits(states, batch["visit_ids"], batch["attention_mask"])
visit_states, batch_visit_mask = pooled
n_visits = batch["visit_ids"].max(dim=1).values  # (B,): visits per patient
Lb, Vb = batch["codes"].shape[1], int(n_visits.max())
assert states.shape == (6, Lb, cfg.d_model)
assert visit_states.shape == (6, Vb, cfg.d_model) and batch_visit_mask.shape == (6, Vb)
assert torch.equal(batch_visit_mask.sum(dim=1), n_visits)
pd.DataFrame(
    {"tokens": batch["lengths"].numpy(), "visits": n_visits.numpy()},
    index=pd.Index(batch["person_ids"].numpy(), name="person_id"),
).T

# %% [markdown]
# ### Two hazard heads
# A head maps states to **logits** $x$; the hazards are $h = \sigma(x)$. The loss is computed
# from the logits (in log space, so that it stays finite), and the survival and risk from the
# hazards. The library offers two conventions.
#
# **One hazard per visit** (`VisitHazardHead`). A linear layer on each visit state gives
# slot $t$ (visit $t + 1$) the logit of
#
# $$
# \begin{aligned}
# h_t = P\bigl(&\text{event in } (\tau_t, \tau_{t+1}] \bigm| T > \tau_t,\\
#               &\text{history up to and including visit } t\bigr),
# \end{aligned}
# $$
#
# the hazard of the event in the interval **after** visit $t$: from the visit's time
# $\tau_t$ to the next visit, or to the end of follow-up after the last one. The intervals
# have unequal lengths, so $h_t$ is a probability per interval, not per unit of time. Its
# labels for the loss are the slot of the visit whose following interval holds the event or
# censoring (every earlier visit survived), and the visit that records the event must not
# be in the input. The head mixes nothing across visits, so with a visit-causal encoder
# $h_t$ depends on visits $\le t$ only.
#
# **One hazard per time bin** (`BinHazardHead`). One patient state at the prediction time,
# by default the mean state of the last real visit, is mapped to $K$ logits, one for each
# bin of the fixed grid after the prediction time,
#
# $$
# \begin{aligned}
# h_k = P\bigl(&T \in (c_k, c_{k+1}] \bigm| T > c_k,\\
#               &\text{history before the prediction time}\bigr),
#                \qquad k = 0, \dots, K - 1,
# \end{aligned}
# $$
#
# the logistic-hazard model of {cite}`kvamme2019continuous`. Its labels are the bin index of
# the event or censoring, exactly the `bin` column of the task.

# %%
visit_head = VisitHazardHead(cfg.d_model).eval()
bin_head = BinHazardHead(cfg.d_model, n_bins).eval()
with torch.no_grad():
    per_visit = visit_head(states, batch["visit_ids"], batch["attention_mask"])
    per_bin = bin_head(states, batch["visit_ids"], batch["attention_mask"])
assert isinstance(per_visit, HazardOutput) and isinstance(per_bin, HazardOutput)
assert per_visit.logits.shape == per_visit.hazards.shape == (6, Vb)
assert torch.equal(per_visit.mask, batch_visit_mask)
assert (per_visit.hazards[~per_visit.mask] == 0).all()  # padded visits: hazard 0
assert per_bin.logits.shape == per_bin.hazards.shape == (6, n_bins)
assert per_bin.mask.all()
assert torch.allclose(per_bin.hazards, torch.sigmoid(per_bin.logits))

# %% [markdown]
# **Which one to train.** {doc}`06b_survival_training` trains the per-bin head. The shared
# task asks one question at one time: from the history up to the prediction time, what are
# the hazards of the {glue:text}`n_bins` quarters that follow? Its labels are bin indices on
# that grid, and the per-bin head fits them directly with `hazard_nll`. A per-visit head does
# not fit this design: every history ends before the prediction time and prevalent cases are
# excluded, so every earlier visit is "survived" by construction, and every event falls in
# the single interval after the last visit, an interval that lasts from days to six years
# depending on the patient. All the information would sit on one hazard whose meaning changes from
# patient to patient, and the risk at a fixed horizon would not be identified. The per-visit
# head is the right tool for a different design, in which hazards are updated at every visit
# along the record and events can happen between visits of the history (dynamic
# prediction); we keep it for the leakage test below, where its visit-by-visit output is
# exactly what must not see the future.
#
# ### The loss, from the hazards
# With the bin $j$ and the event indicator $e$ of a patient, the likelihood says: survived
# every bin before $j$, then had the event in bin $j$ ($e = 1$) or was still event-free at
# its end ($e = 0$). As a sum of binary cross-entropies over the bins at risk (the
# person-period form of the logistic-hazard likelihood
# {cite}`kvamme2019time,kvamme2019continuous`), it takes a few lines; the library's
# `hazard_nll` computes the same from the logits.


# %%
def hazard_nll_inline(logits, bins, events):
    """Mean over patients of -[sum_{k<j} log(1-h_k) + e log h_j + (1-e) log(1-h_j)]."""
    k = torch.arange(logits.shape[1])  # (T,)
    # (B, T): 1 at the event
    target = ((k == bins[:, None]) & (events[:, None] == 1)).float()
    at_risk = (k <= bins[:, None]).float()  # (B, T): bins 0..j
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # (B, T)
    return (bce * at_risk).sum(dim=1).mean()


logits = per_bin.logits
assert torch.allclose(
    hazard_nll_inline(logits, batch["durations"], batch["events"]),
    hazard_nll(logits, batch["durations"], batch["events"]),
)

# %% [markdown]
# ### From hazards to survival and risk
# The survival after bin $k$ is the chance of getting through bins $0..k$,
# $S(c_{k+1}) = \prod_{j \le k} (1 - h_j)$, and the **risk at the horizon** is
# $1 - S(c_K)$: the predicted probability of heart failure within
# {glue:text}`horizon_years:.0f` years. `HazardOutput.surv` and `HazardOutput.risk` compute
# them (with padded slots counted as survived) through `ehrseq.survival.risk_at_horizon`, which
# takes NumPy arrays (stored predictions) as well as tensors.

# %%
hazards = per_bin.hazards
surv = torch.cumprod(1.0 - hazards, dim=1)  # (B, T)
risk = 1.0 - surv[:, -1]  # (B,)
assert torch.allclose(surv, per_bin.surv)
assert torch.allclose(risk, per_bin.risk(n_bins - 1))
assert np.allclose(risk.numpy(), risk_at_horizon(hazards.numpy(), n_bins - 1))
edges = torch.as_tensor(task.cuts[1:])  # right edge of every bin, days
assert torch.allclose(risk, per_bin.risk(tc.horizon_days, edges))

# %% [markdown]
# Why not rank patients by $\sum_k h_k$? On a common grid of bins the sum is close to the
# cumulative hazard $-\log S$ and ranks much like the risk. With one hazard per visit it does
# not: the number of terms is the number of visits, so the sum grows with how often a patient
# was seen, whatever their risk, and it is not a probability. {doc}`06b_survival_training`
# measures that on the trained model.
#
# ### The leakage test
# A hazard read at visit $t$ is a prediction made at visit $t$, so it may depend on visits
# $\le t$ only. The encoder's **visit-causal mask** enforces it: a token of visit $t$ attends
# to tokens of visits $\le t$ (both directions inside a visit, whose codes share a date). The
# test: take patients with at least three visits, pick a visit $t$ in the middle of each
# history, **perturb every later visit** (new random codes, ages and time gaps), and compare
# the per-visit hazards at visits $\le t$. We also cut the later visits off entirely (turn
# them into padding): a prediction at visit $t$ must be the one made from the history that
# ends there. Dropout is off (`eval()`), so any difference comes from the inputs. The
# functions are written out here; `ehrseq.leakage` holds the same ones, for
# {doc}`06b_survival_training` and for your own models.


# %%
def perturb_later_visits(batch, cut, generator):
    """Copy of ``batch``, every token of a visit after ``cut[b]`` replaced at random."""
    out = {k: v.clone() for k, v in batch.items()}
    later = out["visit_ids"] > cut[:, None]  # (B, L)
    n_later = int(later.sum())
    n_special = len(SPECIAL_TOKENS)
    n_tokens = len(task.vocab)
    random_codes = torch.randint(n_special, n_tokens, (n_later,), generator=generator)
    out["codes"][later] = random_codes
    out["ages"][later] += torch.rand(n_later, generator=generator) * 10.0  # years
    out["time_deltas"][later] = torch.rand(n_later, generator=generator) * 400.0  # days
    return out


def truncate_after(batch, cut):
    """Copy of ``batch``, each token of a visit after ``cut[b]`` made padding."""
    out = {k: v.clone() for k, v in batch.items()}
    later = out["visit_ids"] > cut[:, None]  # (B, L)
    for key in ("codes", "visit_ids", "positions", "domain_ids"):
        out[key][later] = 0
    out["ages"][later] = 0.0
    out["time_deltas"][later] = 0.0
    out["attention_mask"] = out["attention_mask"] & ~later
    return out


def visit_hazards(encoder, head, batch, causal, n_visits):
    """Per-visit hazards (B, V) of ``encoder`` + ``head``, causal mask on or off."""
    with torch.no_grad():
        states = encoder(**encoder_inputs(batch), causal=causal)  # (B, L, d)
        out = head(states, batch["visit_ids"], batch["attention_mask"], n_visits)
        return out.hazards  # (B, V)


def leakage_test(encoder, head, batch, cut, generator):
    """Largest change of a hazard at a visit <= cut, causal and not, for both edits."""
    n_visits = int(batch["visit_ids"].max())  # V, kept when later visits are removed
    earlier = torch.arange(n_visits)[None, :] < cut[:, None]  # (B, V): visits 1..cut
    changes = {}
    for causal in (True, False):
        base = visit_hazards(encoder, head, batch, causal, n_visits)
        for name, edited in [
            ("later visits perturbed", perturb_later_visits(batch, cut, generator)),
            ("later visits removed", truncate_after(batch, cut)),
        ]:
            hazards = visit_hazards(encoder, head, edited, causal, n_visits)
            moved = (hazards - base).abs()
            mask_name = "visit-causal" if causal else "bidirectional"
            changes[(mask_name, name)] = float(moved[earlier].max())
    return pd.Series(changes, name="largest change of a hazard at a visit <= t")


def visits_per_patient(dataset) -> np.ndarray:
    """Visits of each patient of ``dataset``, counted on the flat arrays (no loop)."""
    enc = dataset.encoding
    return np.maximum.reduceat(enc.arrays["visit_ids"], enc.offsets[:-1])  # (n,)


test_set = task.dataset("test")
# 16 test patients with 3 visits or more
several = np.flatnonzero(visits_per_patient(test_set) >= 3)[:16]
leak_batch = test_set.batch(several)
cut = leak_batch["visit_ids"].max(dim=1).values // 2 + 1  # (B,): visit t, mid-history
generator = torch.Generator().manual_seed(0)
leak_encoder = BehrtEncoder(encoder_cfg).eval()
leak_head = VisitHazardHead(cfg.d_model).eval()
fresh_changes = leakage_test(leak_encoder, leak_head, leak_batch, cut, generator)
assert fresh_changes["visit-causal"].max() < 1e-6
assert fresh_changes["bidirectional"].min() > 1e-4
# the library's version (ehrseq.leakage, used by 06b and for your own models) draws
# the same perturbation from the same seed and finds the same changes
library_changes = ehrseq.leakage.leakage_test(
    leak_encoder,
    leak_head,
    leak_batch,
    cut,
    torch.Generator().manual_seed(0),
    len(task.vocab),
)
pd.testing.assert_series_equal(library_changes, fresh_changes)
print(f"chapter ran in {(time.perf_counter() - chapter_start) / 60:.1f} min")
fresh_changes.to_frame().style.format("{:.4f}")  # 4 decimals, not 6

# %% [markdown]
# With the causal mask the hazards at visits $\le t$ do not move (the changes are at the
# level of float rounding, if any); without it, visits after $t$ flow into the state of
# visit $t$ and its hazard moves. A bidirectional encoder is fine for a head that reads only
# the last visit at the prediction time (everything it sees is in the past there), but its
# per-visit outputs would be predictions that peeked at the future. The test runs again on
# the trained model in {doc}`06b_survival_training`.
#
# ## Summary
# - Visit states are a masked mean of token states, computed for the whole batch by one
#   scatter-add into the flat index $bV + t$ and one count; the **visit mask** marks the
#   slots that hold a real visit, and everything downstream skips the others.
# - `VisitHazardHead` gives the hazard of the event in the interval **after** each visit;
#   `BinHazardHead` gives the hazards of fixed time bins after the prediction time from the
#   last visit's state. The shared task's labels are bins after one prediction time, so the
#   per-bin head is the one {doc}`06b_survival_training` trains.
# - Survival is $\prod (1 - h)$ and the score to rank with is the risk at a fixed horizon.
#   The sum of per-visit hazards has as many terms as visits, so it grows with how often a
#   patient was seen.
# - With the visit-causal mask, changing or removing later visits leaves the hazard at visit
#   $t$ unchanged; without it, it does not. The inputs of the task end strictly before the
#   prediction time, checked on every token.
#
# ## Exercises
# 1. Why is a bidirectional encoder harmless for the per-bin head and not for a per-visit one?
#    (Exercise 1 of {doc}`06b_survival_training` trains with `causal=False`.)
# 2. Under the visit-causal mask, which visits can the `[CLS]` token see? (Exercise 3 of
#    {doc}`06b_survival_training` trains a head on its state.)
