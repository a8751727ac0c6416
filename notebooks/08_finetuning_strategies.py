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
# # Frozen, LoRA or full fine-tuning
#
# ## Outline
# A pretrained encoder {cite}`devlin2019bert,li2020behrt` is only useful once it is adapted
# to the question at hand, here the heart-failure survival task that every modelling chapter
# shares. There are three common ways to adapt it, and they differ in what they train:
#
# - **frozen encoder**: keep every pretrained weight and train only the survival head on top
#   (a few thousand parameters);
# - **LoRA** {cite}`hu2022lora`: keep the pretrained weights, but add a trainable low-rank
#   update to some of the linear layers (the attention projections), plus the head;
# - **full fine-tuning**: train everything, starting from the pretrained weights.
#
# We will
# 1. pretrain a small BEHRT encoder on the training patients' histories (masked codes and
#    next-visit codes, cached as an artefact);
# 2. write LoRA in a few lines, check that the library's version is the same layer, and show
#    on our encoder that it does what it promises: the same outputs at initialisation,
#    gradients only in the adapters, merging and unmerging without loss;
# 3. fine-tune a per-bin survival head under each regime, at several LoRA ranks, with
#    several seeds, measuring discrimination, calibration, trainable parameters, time and
#    memory;
# 4. repeat it all on a small training cohort, to see how the ranking depends on how much
#    labelled data there is;
# 5. place everything beside a model trained from scratch and beside the oracle, the true risk
#    that no model reading the records can beat, and explain the remaining gap.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size.

# %%
import copy
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from myst_nb import glue
from scipy import stats
from torch import nn
from torch.utils.data import DataLoader

import ehrseq
from ehrseq.artifacts import artifact_root, config_key, load_or_train
from ehrseq.config import for_profile
from ehrseq.data.task import TaskConfig, prepare_survival_task
from ehrseq.data.tensors import LengthBucketSampler, SequenceDataset, collate_flat
from ehrseq.losses import hazard_nll
from ehrseq.metrics import (
    bootstrap_ci,
    concordance_index,
    concordance_index_ipcw,
    integrated_brier_score,
)
from ehrseq.models import (
    BehrtConfig,
    BehrtEncoder,
    BinHazardHead,
    HazardOutput,
    LoRALinear,
    SurvivalModel,
    apply_lora,
    count_parameters,
    freeze,
    merge_lora,
    unmerge_lora,
)
from ehrseq.models.lora import ATTENTION_MODULES, lora_modules
from ehrseq.plotting import apply_style
from ehrseq.pretrain import (
    BehrtForPretraining,
    TokenIds,
    code_counts,
    evaluate_masked_codes,
    pretrain,
)
from ehrseq.survival import life_table_hazards
from ehrseq.train import TrainConfig, fit, to_device


@dataclass(frozen=True)
class Config:
    profile: str = "book"
    n_patients: int = 8000  # people generated for the shared task (TaskConfig.n_patients)
    task_seed: int = 7  # generator and split seed of the shared task
    torch_threads: int = 1  # intra-op threads (1 is fastest on a shared 2-core machine)
    d_model: int = 64  # encoder width
    n_layers: int = 2  # transformer blocks
    n_heads: int = 4  # attention heads
    d_ff: int = 128  # feed-forward width
    dropout: float = 0.1  # encoder dropout (pretraining and fine-tuning) and head dropout
    pretrain_schedule: str = "joint"  # masked codes + next-visit codes in every step
    pretrain_epochs: int = 5  # passes over the training histories
    pretrain_lr: float = 1e-3  # peak learning rate of pretraining
    batch_size: int = 64  # patients per batch
    lr_full: float = 5e-4  # peak learning rate when every pretrained weight trains
    lr_scratch: float = 1e-3  # the same network from random weights
    lr_lora: float = 5e-3  # LoRA adapters and head
    lr_frozen: float = 1e-2  # the head alone
    lora_ranks: tuple[int, ...] = (2, 8, 16)  # ranks r of the LoRA sweep
    lora_alpha: float = 16.0  # the update is scaled by alpha / r
    lora_mlp: bool = False  # also adapt the feed-forward layers
    epochs_large: int = 4  # most fine-tuning epochs on the whole training split
    epochs_small: int = 14  # most epochs on the small cohort (fewer steps per epoch)
    patience: int = 2  # epochs without a better validation loss before stopping
    small_fraction: float = 0.15  # share of the training split in the small cohort
    seeds: tuple[int, ...] = (0, 1, 2)  # fine-tuning seeds (initialisation, batch order)
    n_boot: int = 200  # bootstrap resamples per confidence interval


cfg = for_profile(
    Config,
    {
        "smoke": {
            "n_patients": 1500,
            "d_model": 32,
            "d_ff": 64,
            "pretrain_epochs": 2,
            "lora_ranks": (2, 8),
            "epochs_large": 1,
            "epochs_small": 2,
            "seeds": (0,),
            "small_fraction": 0.3,
            "n_boot": 50,
        },
        "full": {
            "n_patients": 100_000,
            "torch_threads": 8,
            "d_model": 128,
            "n_layers": 4,
            "d_ff": 512,
            "pretrain_epochs": 20,
            "pretrain_lr": 5e-4,
            "batch_size": 256,
            "lr_full": 2e-4,
            "lr_scratch": 5e-4,
            "lora_ranks": (2, 8, 16, 64),
            "epochs_large": 20,
            "epochs_small": 40,
            "patience": 4,
            "small_fraction": 0.05,
            "seeds": (0, 1, 2, 3, 4),
            "n_boot": 1000,
        },
    },
)
torch.set_num_threads(cfg.torch_threads)
device = ehrseq.get_device()
rng = ehrseq.seed_everything(cfg.task_seed)
apply_style()
print(cfg)
print(f"device: {device}")
chapter_started = time.perf_counter()


def keep(name: str, value: object) -> None:
    """Glue a number for the prose, as a plain Python number (the book cannot show numpy's)."""
    glue(name, value.item() if isinstance(value, np.generic) else value, display=False)


keep("n_seeds", len(cfg.seeds))
keep("small_fraction", float(cfg.small_fraction))

# %% [markdown]
# On a CPU everything here is repeatable bit for bit. On a GPU, the atomic adds of the
# visit pooling and of the attention backward pass leave the last bits of each run
# nondeterministic, and the memory column below becomes the CUDA peak allocation.
#
# ## Data
# The shared survival task: the synthetic cohort written as OMOP, heart-failure labels from a
# prediction time one year after enrolment, five years of follow-up cut into equal bins, a
# patient-level split into training, validation and test patients, and the vocabulary fitted
# on the training patients. Every modelling chapter builds exactly this.

# %%
task = prepare_survival_task(TaskConfig(n_patients=cfg.n_patients, seed=cfg.task_seed))
n_bins = task.config.n_bins
train_frame, val_frame, test_frame = (task.frame(s) for s in ("train", "val", "test"))
train_set, val_set, test_set = (task.dataset(s) for s in ("train", "val", "test"))
assert (test_set.encoding.person_ids == test_frame["subject_id"].to_numpy()).all()
keep("n_train", len(train_frame))
keep("n_test", len(test_frame))
keep("n_bins", n_bins)
task.summary().round(3)

# %% [markdown]
# **Two training cohorts.** To see how the choice of regime depends on the amount of labelled
# data, every regime is trained twice: on all {glue:text}`n_train` training patients
# (*large*), and on a random {glue:text}`small_fraction:.0%` of them (*small*). The small
# cohort is drawn once, so every regime and seed sees the same patients. The encoder is
# pretrained on the histories of the whole training split in both cases: the common
# situation of many unlabelled records and few labelled ones. Validation and test patients
# stay the same.


# %%
def subset(dataset: SequenceDataset, rows: np.ndarray) -> SequenceDataset:
    """The patients ``rows`` of ``dataset`` (positions), with their labels."""
    enc = dataset.encoding.select(dataset.encoding.person_ids[rows])
    return SequenceDataset(enc, **{k: v[rows] for k, v in dataset.labels.items()})


n_small = int(round(cfg.small_fraction * len(train_set)))
small_rows = np.sort(rng.choice(len(train_set), size=n_small, replace=False))
cohorts = {"small": subset(train_set, small_rows), "large": train_set}
epochs_of = {"small": cfg.epochs_small, "large": cfg.epochs_large}
cohort_table = pd.DataFrame(
    {
        name: {
            "patients": len(ds),
            "events": int(ds.labels["events"].sum()),
            "max epochs": epochs_of[name],
        }
        for name, ds in cohorts.items()
    }
).T
keep("n_small", n_small)
keep("events_small", int(cohort_table.loc["small", "events"]))
keep("events_large", int(cohort_table.loc["large", "events"]))
cohort_table


# %%
def train_loader(dataset: SequenceDataset, seed: int) -> DataLoader:
    """Shuffled, length-bucketed batches (the same recipe as ``task.loader``)."""
    sampler = LengthBucketSampler(dataset.lengths, cfg.batch_size, shuffle=True, seed=seed)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_flat)


def life_table(dataset: SequenceDataset) -> np.ndarray:
    """h_k = d_k / n_k per bin: the best hazards without features (where the head starts)."""
    return life_table_hazards(dataset.labels["durations"], dataset.labels["events"], n_bins)


# %% [markdown]
# **The ceiling.** The oracle's risk is the generator's true probability of heart failure
# within the horizon, computed from each test patient's realised hazard path. Every number
# below is read against it.

# %%
d_train, e_train = train_frame["duration"].to_numpy(), train_frame["event"].to_numpy()
d_test, e_test = test_frame["duration"].to_numpy(), test_frame["event"].to_numpy()
d_val, e_val = val_frame["duration"].to_numpy(), val_frame["event"].to_numpy()
horizon_days = task.config.horizon_days
eval_times = task.cuts[1:-1]  # bin edges inside the window (the last edge cannot be scored)


def harrell(d, e, risk):
    return concordance_index(d, risk, e)


def uno(d, e, risk):
    return concordance_index_ipcw(
        d, risk, e, tau=horizon_days, durations_train=d_train, events_train=e_train
    )


def ibs(d, e, surv):
    """IBS over the bin edges; ``surv`` is the survival at ``task.cuts[1:]``, ``(n, K)``."""
    return integrated_brier_score(
        d, surv[:, :-1], e, eval_times, durations_train=d_train, events_train=e_train
    )


oracle_risk = task.oracle_risk("test")  # (n,)
oracle_surv = task.oracle_survival("test")  # (n, K)
oracle = {
    "Harrell C": harrell(d_test, e_test, oracle_risk),
    "Uno C": uno(d_test, e_test, oracle_risk),
    "IBS": ibs(d_test, e_test, oracle_surv),
}
keep("oracle_c", oracle["Harrell C"])
pd.Series(oracle, name="oracle (true risk)").round(4).to_frame()

# %% [markdown]
# **How much of the ceiling do the records hold?** The oracle knows things no record shows:
# diseases that have started but not been diagnosed, diseases and acute episodes still to
# come during follow-up. The true hazard is documented (the synthetic-cohort chapter), so
# its own formula can be evaluated on less information. Using the generator's coefficients
# (for evaluation only, never for training), three rankings of the test patients at the
# prediction time:
#
# - age and sex alone;
# - age, sex and the chronic diseases that have a **record** before the prediction time;
# - age, sex and the chronic diseases that are **latently present** at the prediction time.
#
# They leave out the acute terms of the hazard (a recent myocardial infarction or pneumonia)
# and treatment, so they are references, not ceilings.

# %%
truth = task.cohort.truth
beta = truth.coefficients["heart_failure"]  # the true log hazard ratios
test_ids = test_frame["subject_id"].to_numpy()
people = truth.persons.set_index("person_id").loc[test_ids]
index_days = (test_frame["prediction_time"] - people["enrol_date"].to_numpy()).dt.days
age = people["age_at_enrolment"].to_numpy() + index_days.to_numpy(float) / 365.25  # (n,)
male = people["male"].to_numpy(float)  # (n,)
onsets = truth.onsets.merge(
    test_frame[["subject_id", "prediction_time"]], left_on="person_id", right_on="subject_id"
)
chronic = [d for d in onsets["disease"].unique() if beta.get(d, 0.0) != 0.0]


def true_formula(diseases: str | None) -> np.ndarray:
    """Age, sex and chronic-disease terms of the true log hazard at the prediction time.

    ``diseases``: None (left out), ``"recorded"`` (diagnosed before the prediction time) or
    ``"latent"`` (started before it, recorded or not).
    """
    eta = beta["age_per_decade"] * (age - 60) / 10 + beta["male"] * male  # (n,)
    if diseases is None:
        return eta
    since = onsets["diagnosed_date"] if diseases == "recorded" else onsets["onset_date"]
    present = onsets[since < onsets["prediction_time"]]  # NaT (never) compares False
    for disease in chronic:
        has = np.isin(test_ids, present.loc[present["disease"] == disease, "person_id"])
        eta = eta + beta[disease] * has
    return eta


references = {
    "oracle (true risk over the horizon)": oracle["Harrell C"],
    "true formula: age, sex, latent chronic diseases": harrell(
        d_test, e_test, true_formula("latent")
    ),
    "true formula: age, sex, recorded chronic diagnoses": harrell(
        d_test, e_test, true_formula("recorded")
    ),
    "true formula: age and sex": harrell(d_test, e_test, true_formula(None)),
}
recorded_c = references["true formula: age, sex, recorded chronic diagnoses"]
age_sex_c = references["true formula: age and sex"]
keep("recorded_c", recorded_c)
keep("age_sex_c", age_sex_c)
keep("latent_c", references["true formula: age, sex, latent chronic diseases"])
assert np.isfinite(list(references.values())).all()
if cfg.profile != "smoke":
    assert age_sex_c < recorded_c < oracle["Harrell C"]
    assert oracle["Harrell C"] - recorded_c < 0.02  # "close to the oracle" below
pd.Series(references, name="test Harrell C").round(4).to_frame()

# %% [markdown]
# The records hold almost everything: the true formula on recorded diagnoses ranks the
# test patients with a C-index of {glue:text}`recorded_c:.3f`, close to the oracle's
# {glue:text}`oracle_c:.3f` (and to the {glue:text}`latent_c:.3f` of the same formula on the
# latent diseases), while age and sex alone reach {glue:text}`age_sex_c:.3f`. A
# model of the records is therefore not barred from the ceiling by missing information; what
# it lacks is the true formula, which it has to learn from the training events.

# %% [markdown]
# ## Model
# ### The pretrained encoder
# A BEHRT encoder of {glue:text}`d_model` dimensions and {glue:text}`n_layers` layers,
# pretrained with the chapter on pretraining objectives' recipe: masked-code modelling
# (BERT's objective, bidirectional) and next-visit prediction (the set of codes of the next
# visit, from a visit-causal pass) summed in every step, the next-visit term weighted by the
# vocabulary size so that it is a sum over codes rather than a mean. It reads only the
# histories of the training patients, never a label.
#
# Pretraining is the most expensive step, so its weights are an **artefact**: `load_or_train`
# loads them when a file keyed by a hash of the task, the encoder config and the recipe
# exists, and trains them otherwise.

# %%
encoder_cfg = BehrtConfig.from_vocab(
    task.vocab,
    d_model=cfg.d_model,
    n_layers=cfg.n_layers,
    n_heads=cfg.n_heads,
    d_ff=cfg.d_ff,
    dropout=cfg.dropout,
    max_len=task.config.max_len,
)
ids = TokenIds.from_vocab(task.vocab)
recipe = {
    "schedule": cfg.pretrain_schedule,
    "epochs": cfg.pretrain_epochs,
    "lr": cfg.pretrain_lr,
    "batch_size": cfg.batch_size,
    "mlm_weight": 1.0,
    "next_visit_weight": float(ids.vocab_size),
    "tie_weights": True,
    "pool": "last",
    "seed": cfg.task_seed,
}
parts = (task.config, encoder_cfg, recipe)


def train_pretrained(model: BehrtForPretraining, folder) -> None:
    """``load_or_train``'s training function: one call of the library's ``pretrain``."""
    pretrain(
        model,
        task.loader("train", recipe["batch_size"]),
        task.loader("val", 256),
        ids,
        TrainConfig(
            epochs=recipe["epochs"],
            lr=recipe["lr"],
            seed=recipe["seed"],
            out_dir=folder,
            desc="pretrain",
        ),
        schedule=recipe["schedule"],
        mlm_weight=recipe["mlm_weight"],
        next_visit_weight=recipe["next_visit_weight"],
    )


ehrseq.seed_everything(recipe["seed"])
started = time.perf_counter()
pretrained, loaded = load_or_train(
    BehrtForPretraining(
        BehrtEncoder(encoder_cfg), tie_weights=recipe["tie_weights"], pool=recipe["pool"]
    ),
    "behrt-pretrained-ch08",
    train_pretrained,
    *parts,
)
pretrain_seconds = time.perf_counter() - started
folder = artifact_root() / f"behrt-pretrained-ch08-{config_key(*parts)}"
pretrain_history = pd.read_csv(folder / "metrics.csv")
pretrained_state = copy.deepcopy(pretrained.encoder.state_dict())
print(f"{'loaded' if loaded else 'trained'} in {pretrain_seconds:.1f} s from {folder.name}")
keep("d_model", cfg.d_model)
keep("n_layers", cfg.n_layers)
pretrain_history[["epoch", "train_loss", "val_mlm_loss", "val_mlm_acc", "val_nv_loss"]].round(4)

# %% [markdown]
# Did pretraining learn anything? Masked codes of the validation patients are predicted
# clearly better than by always guessing the most frequent training codes:

# %%
counts = code_counts(task.loader("train", 256), ids)
masked = evaluate_masked_codes(pretrained.to(device), task.loader("val", 256), ids, counts=counts)
keep("mlm_top10", masked["top10"])
keep("mlm_base10", masked["baseline_top10"])
assert np.isfinite(pretrain_history["train_loss"]).all()
assert pretrain_history["train_loss"].iloc[-1] < pretrain_history["train_loss"].iloc[0]
if cfg.profile != "smoke":
    assert masked["top10"] > masked["baseline_top10"]
pd.Series(masked).round(3).to_frame("validation")

# %% [markdown]
# The true code is among the encoder's ten best guesses for {glue:text}`mlm_top10:.1%` of the
# masked validation codes, against {glue:text}`mlm_base10:.1%` for the ten most frequent
# codes. A small encoder, a few epochs and short histories: a modest start, but one the
# survival model can build on.

# %% [markdown]
# ### The survival model
# On top of the encoder sits the per-bin hazard head of the survival-head chapter: the mean
# token state of each patient's last visit before the prediction time goes through a linear
# layer to {glue:text}`n_bins` hazard logits, trained with the discrete-time negative
# log-likelihood. The head starts at the life table of the cohort it trains on (its bias is
# set with `base_hazards`), the best prediction without features.
#
# One detail matters for the frozen regime. `freeze` switches off gradients but not dropout,
# and `fit` puts the model in training mode every epoch, so a frozen encoder would still
# drop a tenth of its activations at random: noise on the features the head learns from,
# and not the network the head will see at test time. The library's `SurvivalModel` keeps a
# frozen encoder in evaluation mode when the model trains.


# %%
def step_fn(model, batch):
    out = model(batch)
    return hazard_nll(out.logits, batch["durations"], batch["events"])


def new_model(pretrained_weights: bool, base_hazards: np.ndarray) -> SurvivalModel:
    encoder = BehrtEncoder(encoder_cfg)
    if pretrained_weights:
        encoder.load_state_dict(pretrained_state)
    head = BinHazardHead(  # starts at the life table
        encoder_cfg.d_model, n_bins, dropout=cfg.dropout, base_hazards=base_hazards
    )
    return SurvivalModel(encoder, head)  # a flat batch -> HazardOutput of shape (B, K)


batch = train_set.batch(np.arange(8))  # eight training patients, padded
model = new_model(True, life_table(train_set)).eval()
with torch.no_grad():
    out = model(batch)
assert out.logits.shape == out.hazards.shape == (8, n_bins)
assert out.surv.shape == (8, n_bins)
print(f"logits {tuple(out.logits.shape)}, survival {tuple(out.surv.shape)}")

# %% [markdown]
# ### LoRA in a few lines
# A linear layer computes $y = x W_0^\top + b$ with a pretrained $W_0 \in \mathbb R^{d_\text{out}
# \times d_\text{in}}$. LoRA {cite}`hu2022lora` freezes $W_0$ and learns a low-rank change of
# it,
#
# $$
# W = W_0 + \frac{\alpha}{r}\, B A, \qquad
# A \in \mathbb R^{r \times d_\text{in}},\quad B \in \mathbb R^{d_\text{out} \times r},
# \quad r \ll \min(d_\text{in}, d_\text{out}),
# $$
#
# computed as $y = x W_0^\top + b + \frac{\alpha}{r} (x A^\top) B^\top$ without ever forming
# $BA$. $A$ starts random and $B$ at zero, so the adapted network starts as the pretrained
# one; $\alpha / r$ keeps the size of the update comparable across ranks, so the learning
# rate need not be retuned when $r$ changes. A layer with $d_\text{in} = d_\text{out} = d$
# trains $2 r d$ numbers instead of $d^2$. After training, $\frac{\alpha}{r} BA$ can be added
# into $W_0$ (*merged*), and the adapted model costs nothing extra at inference.
#
# The whole idea, inline:


# %%
class TinyLoRA(nn.Module):
    """y = base(x) + (alpha / r) x A^T B^T, with base frozen, A random and B = 0."""

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.A = nn.Parameter(torch.randn(r, base.in_features) / base.in_features**0.5)
        self.B = nn.Parameter(torch.zeros(base.out_features, r))
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + self.scaling * (x @ self.A.T) @ self.B.T  # (*, d_out)


torch.manual_seed(0)
base = nn.Linear(cfg.d_model, cfg.d_model)
tiny = TinyLoRA(copy.deepcopy(base), r=4, alpha=cfg.lora_alpha)
library = LoRALinear(copy.deepcopy(base), r=4, alpha=cfg.lora_alpha)
x = torch.randn(5, 7, cfg.d_model)  # (B, L, d)
assert torch.equal(tiny(x), base(x)) and torch.equal(library(x), base(x))  # B = 0: no change
with torch.no_grad():
    tiny.B.normal_()  # pretend training moved B
    library.lora_A.copy_(tiny.A)
    library.lora_B.copy_(tiny.B)
assert library(x).shape == x.shape
assert torch.allclose(tiny(x), library(x), atol=1e-5)  # the library's layer is the same layer
assert not torch.allclose(tiny(x), base(x), atol=1e-3)

# %% [markdown]
# ### LoRA on our encoder
# `apply_lora` wraps the query, key, value and output projections of every attention block
# (`q_proj`, `k_proj`, `v_proj`, `o_proj`) in `LoRALinear`, freezes everything else, and
# keeps the modules named in `trainable` (the head) trainable. Four promises to check on the
# pretrained encoder, with a real batch:
#
# 1. at initialisation ($B = 0$) the adapted model computes exactly what the pretrained one
#    computes;
# 2. once $B \neq 0$ the outputs change;
# 3. a backward pass gives gradients to $A$, $B$ and the head, and none to the pretrained
#    weights;
# 4. merging $\frac{\alpha}{r} BA$ into the weights changes no output, and unmerging gives the
#    original weights back.

# %%
rank = cfg.lora_ranks[-1]
base_model = new_model(True, life_table(train_set)).eval()
lora_model = apply_lora(
    copy.deepcopy(base_model), r=rank, alpha=cfg.lora_alpha, trainable=("head",)
).eval()
wrapped = lora_modules(lora_model)
assert len(wrapped) == len(ATTENTION_MODULES) * cfg.n_layers
with torch.no_grad():
    assert torch.equal(lora_model(batch).logits, base_model(batch).logits)  # 1. B = 0

    for _, m in wrapped:
        m.lora_B.normal_(std=0.02)  # 2. a non-zero B changes the function
    adapted = lora_model(batch).logits
assert not torch.allclose(adapted, base_model(batch).logits, atol=1e-4)

lora_model.train()  # 3. gradients only where they should be
step_fn(lora_model, batch).backward()
for name, p in lora_model.named_parameters():
    is_adapter = name.endswith(("lora_A", "lora_B"))
    if is_adapter or name.startswith("head."):
        assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
    else:
        assert not p.requires_grad and p.grad is None, name
lora_model.eval()

before = {n: m.base.weight.detach().clone() for n, m in wrapped}  # 4. merge / unmerge
with torch.no_grad():
    merge_lora(lora_model)
    assert all(m.merged for _, m in wrapped)
    assert torch.allclose(lora_model(batch).logits, adapted, atol=1e-5)
    unmerge_lora(lora_model)
    assert torch.allclose(lora_model(batch).logits, adapted, atol=1e-5)
assert all(torch.allclose(m.base.weight, before[n], atol=1e-6) for n, m in wrapped)

n_adapter = sum(m.lora_A.numel() + m.lora_B.numel() for _, m in wrapped)
n_head = sum(p.numel() for p in lora_model.head.parameters())
counted = count_parameters(lora_model)
assert n_adapter == len(wrapped) * rank * 2 * cfg.d_model  # r (d_in + d_out) per layer
assert counted["trainable"] == n_adapter + n_head
print(
    f"LoRA r={rank}: {counted['trainable']:,} trainable of {counted['total']:,} "
    f"({counted['share']:.1%}): {n_adapter:,} in {len(wrapped)} adapters, {n_head:,} in the head"
)

# %% [markdown]
# ### The regimes
# One builder for every regime, so the models differ only in what trains. The learning rate
# follows what trains: the head alone takes large steps, the adapters medium ones, and a whole
# pretrained network small ones so as not to wipe out what it learnt. The model trained from
# scratch has the same architecture with random weights, and the learning rate of the
# survival-head chapter, which trains this network from scratch.

# %%
REGIMES = {
    "frozen": {"kind": "frozen", "rank": None, "pretrained": True, "lr": cfg.lr_frozen},
    **{
        f"LoRA r={r}": {"kind": "lora", "rank": r, "pretrained": True, "lr": cfg.lr_lora}
        for r in cfg.lora_ranks
    },
    "full": {"kind": "full", "rank": None, "pretrained": True, "lr": cfg.lr_full},
    "from scratch": {"kind": "full", "rank": None, "pretrained": False, "lr": cfg.lr_scratch},
}


def build(regime: str, base_hazards: np.ndarray) -> SurvivalModel:
    spec = REGIMES[regime]
    model = new_model(spec["pretrained"], base_hazards)
    if spec["kind"] == "frozen":
        freeze(model.encoder)
    elif spec["kind"] == "lora":
        apply_lora(
            model,
            r=spec["rank"],
            alpha=cfg.lora_alpha,
            include_mlp=cfg.lora_mlp,
            trainable=("head",),
        )
    return model


sizes = pd.DataFrame(
    {name: count_parameters(build(name, life_table(train_set))) for name in REGIMES}
).T
sizes["trainable"] = sizes["trainable"].astype(int)
sizes["total"] = sizes["total"].astype(int)
frozen_model = build("frozen", life_table(train_set)).train()
assert not frozen_model.encoder.training and frozen_model.head.training
assert sizes.loc["frozen", "trainable"] == n_bins * (cfg.d_model + 1)
assert sizes.loc["full", "trainable"] == sizes.loc["full", "total"]
sizes.style.format({"share": "{:.2%}", "trainable": "{:,}", "total": "{:,}"})

# %% [markdown]
# What training holds in memory besides the model also follows from what trains. For every
# trainable number AdamW keeps a gradient and two moments (three float32 numbers). And for
# every layer that a gradient has to flow back through, autograd keeps the activations of
# the forward pass until the backward pass. `saved_for_backward_mib` measures the second:
# it records every tensor that autograd saves while one training batch of
# {glue:text}`batch_size` patients goes forward (counting each storage once, weights
# excluded). It is exact and does not depend on the device or on what the allocator reuses.

# %%
probe = to_device(train_set.batch(np.arange(cfg.batch_size)), device)  # one training batch
keep("batch_size", cfg.batch_size)
memory = pd.DataFrame(index=list(REGIMES))
for regime in REGIMES:
    m = build(regime, life_table(train_set)).to(device).train()
    memory.loc[regime, "activations MiB"] = ehrseq.saved_for_backward_mib(
        lambda m=m: step_fn(m, probe), exclude=m.parameters()
    )
memory["grad + AdamW MiB"] = sizes["trainable"] * 3 * 4 / 2**20
# a frozen encoder keeps only the head's input; every LoRA rank keeps the whole forward pass
assert memory.loc["frozen", "activations MiB"] < 0.1 * memory.loc["full", "activations MiB"]
assert (
    memory.loc[[f"LoRA r={r}" for r in cfg.lora_ranks], "activations MiB"]
    > 0.5 * memory.loc["full", "activations MiB"]
).all()
keep("act_frozen", float(memory.loc["frozen", "activations MiB"]))
keep("act_lora", float(memory.loc[f"LoRA r={cfg.lora_ranks[0]}", "activations MiB"]))
keep("act_full", float(memory.loc["full", "activations MiB"]))
keep("lora_r0", cfg.lora_ranks[0])
keep("adam_lora", float(memory.loc[f"LoRA r={cfg.lora_ranks[0]}", "grad + AdamW MiB"]))
keep("adam_full", float(memory.loc["full", "grad + AdamW MiB"]))
memory.round(3)

# %% [markdown]
# A frozen encoder keeps {glue:text}`act_frozen:.2f` MiB for this batch, the input of the
# head. LoRA keeps {glue:text}`act_lora:.1f` MiB (rank {glue:text}`lora_r0`): to reach $A$
# and $B$ in the first layer, the gradient has to pass back through every layer above it,
# so nearly the whole forward pass is kept, as for full fine-tuning
# ({glue:text}`act_full:.1f` MiB). What LoRA saves is the optimiser state:
# {glue:text}`adam_lora:.2f` MiB against {glue:text}`adam_full:.2f` MiB for full
# fine-tuning here, small either way at this encoder's size; on a large encoder the
# optimiser state of full fine-tuning is what matters.

# %% [markdown]
# ## Train
# Every (cohort, regime, seed) is one call of the library's `fit`: AdamW with warm-up and
# cosine decay, gradient clipping, early stopping on the validation loss (patience
# {glue:text}`patience`), best weights restored. `ehrseq.measure` wraps each call and records
# its wall time and peak memory. After training, the model predicts the validation and test
# patients; the validation C-index is what we use to *choose* a regime, the test metrics are
# what we *report*.


# %%
def predict(model: nn.Module, dataset: SequenceDataset, batch_size: int = 256) -> HazardOutput:
    """Hazard output of every patient of ``dataset``, in its order (eval mode, no grad, CPU)."""
    model.eval()
    parts = []
    with torch.no_grad():
        for lo in range(0, len(dataset), batch_size):
            idx = np.arange(lo, min(lo + batch_size, len(dataset)))
            parts.append(model(to_device(dataset.batch(idx), device)))
    return HazardOutput(
        logits=torch.cat([p.logits for p in parts]).cpu(),  # (n, K)
        hazards=torch.cat([p.hazards for p in parts]).cpu(),  # (n, K)
        mask=torch.cat([p.mask for p in parts]).cpu(),  # (n, K)
    )


keep("patience", cfg.patience)
runs, test_risks = [], {}
for cohort, dataset in cohorts.items():
    base_hazards = life_table(dataset)
    for regime, spec in REGIMES.items():
        for seed in cfg.seeds:
            ehrseq.seed_everything(seed)
            model = build(regime, base_hazards)
            n_params = count_parameters(model)
            with ehrseq.measure(device) as used:
                result = fit(
                    model,
                    train_loader(dataset, seed),
                    task.loader("val", 256),
                    step_fn,
                    config=TrainConfig(
                        epochs=epochs_of[cohort],
                        lr=spec["lr"],
                        patience=cfg.patience,
                        seed=seed,
                        desc=f"{cohort} / {regime} / seed {seed}",
                    ),
                )
            history = result.history
            assert np.isfinite(history[["train_loss", "val_loss"]].to_numpy()).all()
            val_out, test_out = predict(model, val_set), predict(model, test_set)
            risk = test_out.risk(n_bins - 1).numpy()  # P(event by the horizon), (n,)
            surv = test_out.surv.numpy()  # (n, K)
            test_risks[cohort, regime, seed] = risk
            runs.append(
                {
                    "cohort": cohort,
                    "regime": regime,
                    "seed": seed,
                    "trainable": n_params["trainable"],
                    "val C": harrell(d_val, e_val, val_out.risk(n_bins - 1).numpy()),
                    "Harrell C": harrell(d_test, e_test, risk),
                    "Uno C": uno(d_test, e_test, risk),
                    "IBS": ibs(d_test, e_test, surv),
                    "epochs": len(history),
                    "best epoch": result.best_epoch,
                    "seconds": used.seconds,
                    "s / epoch": used.seconds / len(history),
                    "peak MiB": used.peak_mib,
                    "first loss": history["train_loss"].iloc[0],
                    "last loss": history["train_loss"].iloc[-1],
                }
            )
runs = pd.DataFrame(runs)
shown = ["regime", "seed", "val C", "Harrell C", "Uno C", "IBS", "epochs", "best epoch", "seconds"]
runs.loc[runs["cohort"] == "large", shown].round(4).reset_index(drop=True)

# %%
assert np.isfinite(runs[["Harrell C", "Uno C", "IBS", "val C"]].to_numpy()).all()
assert (runs["last loss"] <= runs["first loss"] + 1e-3).all()  # training never made it worse
assert runs.groupby("regime")["trainable"].nunique().eq(1).all()  # same size in both cohorts
if cfg.profile != "smoke":
    assert (runs.loc[runs["cohort"] == "large", "Harrell C"] > 0.6).all()

# %% [markdown]
# ## Evaluate
# ### The regimes side by side
# For each cohort and regime, the mean over the {glue:text}`n_seeds` seeds of each test metric,
# with a 95% interval over seeds (Student's $t$, so it says how much the number moves with
# the initialisation and the batch order, on this split), the number of trainable
# parameters, and the cost: wall time of the whole `fit` call, time per epoch, and the peak
# memory.


# %%
def seed_summary(values: pd.Series) -> pd.Series:
    """Mean and 95% t-interval over seeds (the interval is empty with a single seed)."""
    n, mean = len(values), float(values.mean())
    half = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    return pd.Series({"mean": mean, "lower": mean - half, "upper": mean + half})


order = list(REGIMES)
summary = (
    runs.groupby(["cohort", "regime"])[["Harrell C", "Uno C", "IBS", "val C"]]
    .apply(lambda g: pd.concat({m: seed_summary(g[m]) for m in g.columns}))
    .reindex(pd.MultiIndex.from_product([["large", "small"], order]))
)
costs = (
    runs.groupby(["cohort", "regime"])[["trainable", "seconds", "s / epoch", "peak MiB", "epochs"]]
    .mean()
    .reindex(summary.index)
)


def show(metric: str) -> pd.Series:
    s = summary[metric]
    if len(cfg.seeds) == 1:
        return s["mean"].map(lambda m: f"{m:.3f}")
    return s.apply(lambda r: f"{r['mean']:.3f} ({r['lower']:.3f}-{r['upper']:.3f})", axis=1)


table = pd.DataFrame(
    {
        "trainable": costs["trainable"].map(lambda v: f"{v:,.0f}"),
        "Harrell C": show("Harrell C"),
        "Uno C": show("Uno C"),
        "IBS": summary["IBS"]["mean"].map(lambda m: f"{m:.4f}"),
        "fit (s)": costs["seconds"].round(1),
        "s / epoch": costs["s / epoch"].round(2),
        "peak MiB": costs["peak MiB"].round(0),
        "activations MiB": costs.index.get_level_values(1).map(memory["activations MiB"]),
        "grad + AdamW MiB": (costs["trainable"] * 3 * 4 / 2**20).round(2),
        "epochs": costs["epochs"].round(1),
    }
)
table["activations MiB"] = table["activations MiB"].round(2)
if device.type != "cuda":  # the resident-memory rise on a CPU: allocator reuse hides it
    table = table.drop(columns="peak MiB")
oracle_row = pd.DataFrame(
    {
        "Harrell C": f"{oracle['Harrell C']:.3f}",
        "Uno C": f"{oracle['Uno C']:.3f}",
        "IBS": f"{oracle['IBS']:.4f}",
    },
    index=pd.MultiIndex.from_tuples([("", "oracle (true risk)")]),
)
table = pd.concat([table, oracle_row]).fillna("")
table

# %% [markdown]
# Wall times depend on the machine and, on a shared one, on its load: compare them within
# the table, not with another run. The two memory columns are exact: the activations one
# training batch keeps for the backward pass (measured above) and the float32 gradient and
# two AdamW moments of every trainable number. On a GPU the table also shows the peak of
# allocated memory during the whole fit (`peak MiB`); on a CPU that column would be the rise
# of the process's resident memory, which allocator reuse hides, so it is left out. For an encoder of this size the optimiser states are small, while the
# activations of a batch ({glue:text}`act_lora:.0f` to {glue:text}`act_full:.0f` MiB) are
# not; on a large encoder and a GPU, the optimiser states of full fine-tuning are what LoRA
# saves.
#
# The figure puts discrimination against the number of trainable parameters.

# %% mystnb={"figure": {"name": "fig-c-vs-params", "caption": "Test Harrell C-index against the number of trainable parameters (log scale) for each regime, on the small (left) and large (right) training cohort: mean over seeds with 95% intervals over seeds. Dashed: the oracle; dash-dot and thin grey: the true hazard formula on age, sex and recorded diagnoses, and on age and sex alone; dotted: the model trained from scratch (same size as full fine-tuning, shifted right to be seen)."}}
markers = {"frozen": "s", "full": "D", "from scratch": "X"}
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
for ax, cohort in zip(axes, ["small", "large"]):
    for i, regime in enumerate(order):
        s = summary.loc[(cohort, regime), "Harrell C"]
        x = costs.loc[(cohort, regime), "trainable"] * (1.15 if regime == "from scratch" else 1)
        ax.errorbar(
            x,
            s["mean"],
            yerr=[[s["mean"] - s["lower"]], [s["upper"] - s["mean"]]],
            fmt=markers.get(regime, "o"),
            color=f"C{i}",
            capsize=3,
            label=regime,
        )
    ax.axhline(oracle["Harrell C"], color="k", linestyle="--", linewidth=1, label="oracle")
    ax.axhline(
        recorded_c, color="0.5", linestyle="-.", linewidth=1, label="true formula, recorded dx"
    )
    ax.axhline(age_sex_c, color="0.5", linestyle="-", linewidth=0.8, label="true formula, age+sex")
    ax.axhline(
        summary.loc[(cohort, "from scratch"), "Harrell C"]["mean"],
        color=f"C{order.index('from scratch')}",
        linestyle=":",
        linewidth=1,
    )
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_title(f"{cohort} cohort ({len(cohorts[cohort]):,} training patients)")
axes[0].set_ylabel("test Harrell C-index")
axes[1].legend(loc="lower right", fontsize=8)
plt.show()

# %% [markdown]
# ### How the ranking moves with the amount of data
# The rank of each regime by mean test C-index in each cohort (1 is best), and what
# pretraining is worth: full fine-tuning minus the same network trained from scratch. Read
# the ranks with the intervals of the table above: two regimes whose intervals overlap
# widely have no reliable order, whatever their ranks say.

# %%
mean_c = summary["Harrell C"]["mean"].unstack(0)[["small", "large"]].reindex(order)
ranks = mean_c.rank(ascending=False).astype(int).add_suffix(" rank")
pd.concat([mean_c.round(3).add_suffix(" C"), ranks], axis=1)

# %%
gain = {c: float(mean_c.loc["full", c] - mean_c.loc["from scratch", c]) for c in cohorts}
best_lora = {c: mean_c.loc[[f"LoRA r={r}" for r in cfg.lora_ranks], c].idxmax() for c in cohorts}
for c in cohorts:
    keep(f"gain_{c}", gain[c])
    keep(f"full_{c}", float(mean_c.loc["full", c]))
    keep(f"scratch_{c}", float(mean_c.loc["from scratch", c]))
    keep(f"frozen_{c}", float(mean_c.loc["frozen", c]))
    keep(f"lora_{c}", float(mean_c.loc[best_lora[c], c]))
    glue(f"best_lora_{c}", best_lora[c], display=False)
keep(
    "drop_scratch", float(mean_c.loc["from scratch", "small"] - mean_c.loc["from scratch", "large"])
)
keep("drop_full", float(mean_c.loc["full", "small"] - mean_c.loc["full", "large"]))
if cfg.profile != "smoke":
    assert gain["small"] > gain["large"]  # pretraining matters most when labels are few
    assert gain["small"] > 0
    assert mean_c.loc["from scratch", "small"] < mean_c.loc["from scratch", "large"]
pd.Series(gain, name="full fine-tuning - from scratch (test C)").round(4).to_frame()

# %% [markdown]
# ### The best fine-tuned model beside the oracle
# Which regime is "best" must be decided without the test patients: we take the pretrained
# regime with the highest mean validation C-index on the large cohort, then report its test
# numbers. Its gap to the oracle comes with two intervals: over seeds (training noise), and
# a paired bootstrap over test patients for the model that averages the seeds' predicted
# risks (sampling noise of a test set of {glue:text}`n_test` patients).

# %%
val_c = summary["val C"]["mean"].loc["large"].drop("from scratch")
best = val_c.idxmax()
best_c = summary.loc[("large", best), "Harrell C"]
best_runs = runs[(runs["cohort"] == "large") & (runs["regime"] == best)]
seed_gap = seed_summary(oracle["Harrell C"] - best_runs["Harrell C"])
ensemble_risk = np.mean([test_risks["large", best, s] for s in cfg.seeds], axis=0)  # (n,)
ensemble_c = harrell(d_test, e_test, ensemble_risk)
gap_ci = bootstrap_ci(
    lambda d, e, r_oracle, r_model: harrell(d, e, r_oracle) - harrell(d, e, r_model),
    d_test,
    e_test,
    oracle_risk,
    ensemble_risk,
    n_boot=cfg.n_boot,
    seed=cfg.task_seed,
)
glue("best", best, display=False)
keep("best_c", float(best_c["mean"]))
keep("best_c_lower", float(best_c["lower"]))
keep("best_c_upper", float(best_c["upper"]))
keep("gap", float(seed_gap["mean"]))
keep("gap_lower", float(seed_gap["lower"]))
keep("gap_upper", float(seed_gap["upper"]))
keep("ensemble_c", ensemble_c)
keep("ensemble_gap", gap_ci.estimate)
keep("ensemble_gap_lower", gap_ci.lower)
keep("ensemble_gap_upper", gap_ci.upper)
assert oracle["Harrell C"] > best_c["mean"] > 0.5
pd.DataFrame(
    {
        "test Harrell C": [best_c["mean"], ensemble_c, oracle["Harrell C"]],
        "gap to oracle": [seed_gap["mean"], gap_ci.estimate, 0.0],
        "95% interval of the gap": [
            f"{seed_gap['lower']:.3f} to {seed_gap['upper']:.3f} (seeds)",
            f"{gap_ci.lower:.3f} to {gap_ci.upper:.3f} (bootstrap)",
            "",
        ],
    },
    index=[f"{best}, mean over seeds", f"{best}, seeds averaged", "oracle (true risk)"],
).round(4)

# %% [markdown]
# **What limits the gap.** The references of the Data section split it in two. Between the
# oracle and the true formula on recorded diagnoses lies what the records cannot show
# (undiagnosed disease, onsets and acute episodes still to come); between that formula and
# our model lies what the records show but the model has not learnt.

# %%
gap_unseen = oracle["Harrell C"] - recorded_c  # information the records do not hold
gap_unlearnt = recorded_c - float(best_c["mean"])  # information they hold, not learnt
keep("gap_unseen", gap_unseen)
keep("gap_unlearnt", gap_unlearnt)
keep("above_age_sex", float(best_c["mean"]) - age_sex_c)
# how far the model has come from the age-and-sex ranking towards the formula with diagnoses
keep("share_dx", (float(best_c["mean"]) - age_sex_c) / (recorded_c - age_sex_c))
if cfg.profile != "smoke":
    assert gap_unlearnt > gap_unseen  # most of the gap is learning, not information
print(f"chapter compute so far: {time.perf_counter() - chapter_started:.0f} s")
pd.Series(
    {
        **references,
        f"{best} (mean over seeds)": float(best_c["mean"]),
        f"{best} (seeds averaged)": ensemble_c,
    },
    name="test Harrell C",
).round(4).to_frame()

# %% [markdown]
# Of the gap of {glue:text}`gap:.3f`, only {glue:text}`gap_unseen:.3f` is information the
# records do not hold; {glue:text}`gap_unlearnt:.3f` is there to be learnt. Where does the
# model stand? Its C-index is {glue:text}`above_age_sex:+.3f` away from that of the true
# formula on age and sex alone ({glue:text}`age_sex_c:.3f`): of the way from that ranking to the
# formula that adds the recorded diagnoses, it has covered {glue:text}`share_dx:.0%`, with
# {glue:text}`events_large` events in the training split.
# A dozen coefficients are easy to estimate from a few hundred events when the form of the
# model is known; a network that has to discover which of hundreds of codes matter, through
# an encoder, needs far more. What would close the gap is more labelled events and the
# compute to use them; what no model of these records can close is the last
# {glue:text}`gap_unseen:.3f`.

# %% [markdown]
# ## Summary
# - **What each regime trains.** The frozen encoder trains
#   {glue:text}`n_bins` × ({glue:text}`d_model` + 1) head parameters, LoRA adds
#   $2 r d$ per adapted projection, full fine-tuning trains everything. The asserts above
#   show LoRA doing what it promises on our encoder: identical outputs at initialisation,
#   gradients only in $A$, $B$ and the head, and a lossless merge and unmerge.
# - **With all {glue:text}`n_train` labelled training patients**, full fine-tuning reaches a
#   test C-index of {glue:text}`full_large:.3f` against {glue:text}`scratch_large:.3f` for the
#   same network trained from scratch (a gain of {glue:text}`gain_large:+.3f`); the best LoRA
#   ({glue:text}`best_lora_large`) reaches {glue:text}`lora_large:.3f` and the frozen encoder
#   {glue:text}`frozen_large:.3f`.
# - **With {glue:text}`n_small` labelled patients** ({glue:text}`events_small` events), the
#   picture changes: the network trained from scratch falls to
#   {glue:text}`scratch_small:.3f`, while full fine-tuning of the pretrained encoder keeps
#   {glue:text}`full_small:.3f` (a gain of {glue:text}`gain_small:+.3f`), the best LoRA
#   ({glue:text}`best_lora_small`) {glue:text}`lora_small:.3f` and the frozen encoder
#   {glue:text}`frozen_small:.3f`.
#   Pretraining on unlabelled histories is worth most when labels are scarce.
# - **Against the ceiling.** The regime chosen on validation, {glue:text}`best`, has a test
#   C-index of {glue:text}`best_c:.3f` ({glue:text}`best_c_lower:.3f` to
#   {glue:text}`best_c_upper:.3f` over seeds), {glue:text}`gap:.3f` below the oracle's
#   {glue:text}`oracle_c:.3f` (interval over seeds {glue:text}`gap_lower:.3f` to
#   {glue:text}`gap_upper:.3f`); averaging its seeds gives {glue:text}`ensemble_c:.3f`, a gap
#   of {glue:text}`ensemble_gap:.3f` (bootstrap {glue:text}`ensemble_gap_lower:.3f` to
#   {glue:text}`ensemble_gap_upper:.3f`).
# - **What limits it.** Not the information in the records: the generator's own formula
#   applied to the recorded diagnoses reaches {glue:text}`recorded_c:.3f`, so only
#   {glue:text}`gap_unseen:.3f` of the gap is undiagnosed disease and the future. The other
#   {glue:text}`gap_unlearnt:.3f` is learning: {glue:text}`events_large` training events,
#   a small model and a CPU budget of a few minutes; the model has covered
#   {glue:text}`share_dx:.0%` of the way from the true formula on age and sex alone
#   ({glue:text}`age_sex_c:.3f`) to the one with recorded diagnoses. Going from
#   {glue:text}`events_large` to {glue:text}`events_small` training events changes the
#   C-index of the network trained from scratch by {glue:text}`drop_scratch:+.3f`, that of
#   the fully fine-tuned pretrained one by {glue:text}`drop_full:+.3f`.
#
# ## Exercises
# 1. Adapt the feed-forward layers too (`lora_mlp=True` in the config). How many parameters
#    does that add at each rank, and does it close the gap to full fine-tuning?
# 2. Fix $\alpha = 2r$ instead of a constant $\alpha$. Which ranks change behaviour, and
#    why does the constant $\alpha$ make the learning rate easier to carry across ranks?
# 3. Pretrain with masked-code modelling alone (`pretrain_schedule="mlm"`). Which regime
#    suffers most, and what does that say about what the next-visit objective puts into the
#    last visit's state?
# 4. Shrink the small cohort to 5% of the training split. Where does the frozen encoder
#    overtake full fine-tuning, if it ever does?
# 5. Switch dropout back on in the frozen encoder during training (a `fit` step function
#    that calls `model.encoder.train()` before the forward pass). What happens to the frozen regime's C-index?
# 6. Give the head the age at the prediction time explicitly: concatenate
#    $(\text{age} - 60) / 10$ to the last visit's state and widen `BinHazardHead` by one
#    input. Which regime gains most, and what does that say about how well masked-code and
#    next-visit pretraining encode age?
