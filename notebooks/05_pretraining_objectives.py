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
# # Pretraining objectives
#
# ## Outline
# Labels are scarce: the {glue:text}`n_train:,` training patients of the shared task hold
# {glue:text}`events_text`. Codes are plentiful: a training history holds
# {glue:text}`median_tokens:.0f` tokens at the median. **Self-supervised pretraining** turns
# the codes themselves into training signal, so that the encoder has learned what codes mean
# and how they go together before it ever sees a survival label. This chapter and the two after it
# train the BEHRT encoder of the previous chapter with two such objectives and ask what each
# teaches:
#
# - **masked-code modelling** (MLM), BERT's objective {cite}`devlin2019bert` as BEHRT used it
#   {cite}`li2020behrt`: hide some codes and predict them from everything else, past *and*
#   future;
# - **next-visit prediction**: from the visits up to $t$, predict the set of codes of visit
#   $t+1$, looking only backwards (the visit-causal mask), which is how a survival model will
#   read a history.
#
# Here we build each objective by hand on one batch and check it against `ehrseq.pretrain`,
# then the model that carries both heads on one encoder, and a next-visit head with a
# **copy term** over the history. {doc}`05b_pretraining_schedules` pretrains with each
# objective alone, with both at once (**joint**) and one after the other (**sequential**);
# compares them on held-out patients with lookup-table baselines, the sharpest of which
# simply repeat the patient's own record (the last visit, the chronic codes), and tests
# whether the copy term lets the next-visit head beat them. Every comparison there comes
# with a paired interval over test patients, and its verdict goes to the book's results
# page. {doc}`05c_inside_the_encoder` looks inside the learned code embedding and checks it
# against the generator's truth (do diabetes codes sit together?), and saves the encoder of
# the best schedule for the chapters that fine-tune it.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size.

# %%
import inspect
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.ticker import MaxNLocator

import ehrseq
from ehrseq.book import keep, plural, start_claims
from ehrseq.config import for_profile, format_config
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.data.tensors import collate_flat
from ehrseq.models import BehrtConfig, BehrtEncoder, encoder_inputs, visit_causal_mask
from ehrseq.next_visit import HistoryCopyHead, visit_history
from ehrseq.plotting import apply_style
from ehrseq.pretrain import (
    IGNORE_INDEX,
    BehrtForPretraining,
    TokenIds,
    mask_codes,
    mlm_loss,
    next_visit_targets,
)

CHAPTER = "05_pretraining_objectives"


# the encoder settings are those of 05b_pretraining_schedules, which trains it
@dataclass(frozen=True)
class Config:
    profile: str = "book"
    seed: int = 7  # seed of the setup and of every model built here
    d_model: int = 64  # encoder width
    n_layers: int = 2  # transformer blocks
    n_heads: int = 4  # attention heads
    d_ff: int = 128  # feed-forward width
    # on embeddings and residual branches (not attention: see BehrtConfig)
    dropout: float = 0.1
    # standard deviation of the initial weights (BERT: 0.02; 05b says why)
    init_std: float = 0.1
    batch_size: int = 32  # patients per pretraining batch
    mask_prob: float = 0.15  # share of the real codes picked for masked-code modelling


cfg = for_profile(
    Config,
    {
        "smoke": {"d_model": 32, "d_ff": 64},
        "full": {"d_model": 128, "n_layers": 4, "d_ff": 512, "init_std": 0.02},
    },
)
device = ehrseq.get_device()
rng = ehrseq.seed_everything(cfg.seed)
apply_style()
print(format_config(cfg))
print(f"device: {device}; CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS)")
# no claims here (05d records them): clears those of an older build
start_claims(CHAPTER)

keep("mask_prob", cfg.mask_prob)
# BERT's 80/10/10 split and the copy head's half-lives, as the library's
# defaults hold them
corruption = inspect.signature(mask_codes).parameters
keep("replace_prob", corruption["replace_prob"].default)
keep("random_prob", corruption["random_prob"].default)
unchanged = 1.0 - corruption["replace_prob"].default - corruption["random_prob"].default
keep("unchanged_prob", unchanged)
half_lives = inspect.signature(HistoryCopyHead).parameters["half_lives"].default
*first, last = (f"{h:g}" for h in half_lives)
keep("half_lives_text", f"{', '.join(first)} and {last}" if first else last)

# %% [markdown]
# ## Data
# The survival task every modelling chapter shares (`shared_task_config()`: the same people,
# splits and vocabulary, so the encoders pretrained in {doc}`05b_pretraining_schedules` are
# the ones later chapters load), for its token tensors: the training split's histories
# before the prediction time are the pretraining data ({doc}`04b_embedding_ablation` says
# why). This chapter needs only the training batches; the validation and test splits come
# in with the training and the scores of {doc}`05b_pretraining_schedules`.

# %%
task = prepare_survival_task(shared_task_config())
vocab = task.vocab
ids = TokenIds.from_vocab(vocab)
train_loader = task.loader("train", cfg.batch_size)
keep("d_model", cfg.d_model)
split_summary = task.summary()
keep("n_train", int(split_summary.loc["train", "patients"]))
n_events = int(split_summary.loc["train", "events"])
keep("events_text", plural(n_events, "heart-failure event", ","))
keep("median_tokens", float(split_summary.loc["train", "median tokens"]))
split_summary

# %% [markdown]
# ### Masked-code modelling, by hand
# BERT's recipe, applied to codes: pick each real, non-special token with probability
# {glue:text}`mask_prob`; of the picked ones, replace {glue:text}`replace_prob:.0%` by
# `[MASK]`, {glue:text}`random_prob:.0%` by a random code and leave
# {glue:text}`unchanged_prob:.0%` as they are. The model predicts the original code at the picked positions
# only, and the loss is the cross-entropy there:
#
# $$
# \mathcal L_\text{MLM} = -\frac{1}{|M|}\sum_{(b,l)\in M} \log p_\theta\big(c_{b,l} \mid \tilde c_b\big).
# $$
#
# Why not always `[MASK]`? Because `[MASK]` never appears when the encoder is used later;
# the random and the unchanged tokens force it to produce a useful vector for *every*
# input token, not only for masked ones. Age, visit, position, time and domain are left
# alone: only the code is hidden. The inline version draws its random numbers in the same
# order as the library's, so with the same generator the two must agree exactly.

# %%
# The example batch: cfg.batch_size training patients drawn with the chapter's seed
# and padded together (any batch would do). A batch of `train_loader` holds patients of
# about the same length (length bucketing); this one mixes short and long histories, so
# it has padding to leave alone and short histories to show.
train_set = task.dataset("train")
example_patients = torch.randperm(
    len(train_set), generator=torch.Generator().manual_seed(cfg.seed)
)[: cfg.batch_size]
batch = collate_flat([train_set[int(i)] for i in example_patients])
B, L = batch["codes"].shape


def mask_inline(codes, attention_mask, gen, p=0.15, p_mask=0.8, p_random=0.1):
    """BERT's 80/10/10 corruption; labels are -100 where nothing is predicted."""
    eligible = attention_mask & ~torch.isin(codes, ids.special_tensor())  # (B, L)
    picked = eligible & (torch.rand(codes.shape, generator=gen) < p)  # (B, L)
    how = torch.rand(codes.shape, generator=gen)  # (B, L): which of the three fates
    regular = ids.regular_tensor()
    # (B, L)
    random_codes = regular[torch.randint(len(regular), codes.shape, generator=gen)]
    masked = torch.where(picked & (how < p_mask), ids.mask_id, codes)
    randomised = picked & (how >= p_mask) & (how < p_mask + p_random)
    masked = torch.where(randomised, random_codes, masked)
    return masked, torch.where(picked, codes, IGNORE_INDEX)


gen = torch.Generator().manual_seed(0)
inputs = (batch["codes"], batch["attention_mask"])
masked, labels = mask_inline(*inputs, gen, p=cfg.mask_prob)
lib_masked, lib_labels = mask_codes(
    batch["codes"],
    batch["attention_mask"],
    ids,
    mask_prob=cfg.mask_prob,
    generator=torch.Generator().manual_seed(0),
)
assert torch.equal(masked, lib_masked) and torch.equal(labels, lib_labels)
assert masked.shape == labels.shape == (B, L)

row = int(((labels != IGNORE_INDEX).sum(1)).argmax())  # the patient with the most picks
n_show = int(batch["lengths"][row])
label_ids = labels[row, :n_show].tolist()
masked_view = pd.DataFrame(
    {
        "original": [vocab.itos[i] for i in batch["codes"][row, :n_show].tolist()],
        "model input": [vocab.itos[i] for i in masked[row, :n_show].tolist()],
        "label": [vocab.itos[i] if i != IGNORE_INDEX else "" for i in label_ids],
    }
)
masked_view[masked_view["label"] != ""]

# %% [markdown]
# These are the picked tokens of one patient: most became `[MASK]`, some a random code, some
# stayed; every one of them has its original code as the label, and every other token of the
# patient has none. Over the whole training set the shares come out as designed:

# %%
gen = torch.Generator().manual_seed(1)
tally = dict.fromkeys(["eligible", "picked", "[MASK]", "random", "unchanged"], 0)
for b in train_loader:
    real = b["attention_mask"]
    m, y = mask_codes(b["codes"], real, ids, mask_prob=cfg.mask_prob, generator=gen)
    eligible = real & ~torch.isin(b["codes"], ids.special_tensor())
    picked = y != IGNORE_INDEX
    assert not (picked & ~eligible).any()  # never a special token, never padding
    tally["eligible"] += int(eligible.sum())
    tally["picked"] += int(picked.sum())
    tally["[MASK]"] += int((m[picked] == ids.mask_id).sum())
    tally["unchanged"] += int((m[picked] == b["codes"][picked]).sum())
tally["random"] = tally["picked"] - tally["[MASK]"] - tally["unchanged"]
shares = {
    "picked / eligible": (tally["picked"] / tally["eligible"], cfg.mask_prob),
    "[MASK] / picked": (tally["[MASK]"] / tally["picked"], 0.8),
    "random code / picked": (tally["random"] / tally["picked"], 0.1),
    "unchanged / picked": (
        tally["unchanged"] / tally["picked"],
        0.1 + 0.1 / ids.vocab_size,
    ),
}
for name, (got, want) in shares.items():  # within 5 binomial standard errors
    n = tally["eligible"] if name.startswith("picked") else tally["picked"]
    assert abs(got - want) < 5 * np.sqrt(want * (1 - want) / n), (name, got, want)
keep("n_picked", tally["picked"])
pd.DataFrame(shares, index=["measured", "designed"]).T.style.format("{:.2%}")

# %% [markdown]
# ("Unchanged" is a hair above {glue:text}`unchanged_prob:.0%` because a random replacement can draw the original code.)
# The loss is an ordinary cross-entropy restricted to the picked positions. The library's
# model returns logits at those positions only, so the $(B, L, V)$ tensor of logits for all
# positions is never built; written out with the full tensor and `ignore_index`, it is the
# same number.

# %%
logits_all = torch.randn(B, L, ids.vocab_size)  # (B, L, V): any scores will do
flat_logits = logits_all.reshape(-1, ids.vocab_size)  # (B * L, V)
flat_labels = labels.reshape(-1)  # (B * L,)
inline_loss = F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX)
picked = labels != IGNORE_INDEX  # (B, L)
torch.testing.assert_close(mlm_loss(logits_all[picked], labels[picked]), inline_loss)
torch.testing.assert_close(mlm_loss(logits_all, labels), inline_loss)

# %% [markdown]
# ### Next-visit prediction, by hand
# The second objective reads a history forwards. Let $z_{b,t}$ be the encoder's summary of
# patient $b$ after visit $t$ (here: the hidden state of the `[SEP]` that closes visit $t$)
# and $y_{b,t+1}$ the **set** of codes of the next visit, a multi-hot vector over the
# vocabulary. Each code is a yes/no question, scored by a binary cross-entropy:
#
# $$
# \mathcal L_\text{NV} = \frac{1}{|P|\,|V|}\sum_{(b,t)\in P}\sum_{c \in V}
# \text{BCE}\big(\sigma(W z_{b,t})_c,\; y_{b,t+1,c}\big).
# $$
#
# The targets of one patient, written as a loop over visits:

# %%
visit_ids, codes = batch["visit_ids"], batch["codes"]
attention_mask = batch["attention_mask"]


def next_visit_sets(codes_1d: torch.Tensor, visits_1d: torch.Tensor) -> torch.Tensor:
    """Row t - 1: the multi-hot set of the codes of visit t + 1 (no special tokens)."""
    n_visits = int(visits_1d.max())
    targets = torch.zeros(n_visits - 1, ids.vocab_size)
    for t in range(1, n_visits):
        nxt = codes_1d[visits_1d == t + 1]
        nxt = nxt[~torch.isin(nxt, ids.special_tensor())]
        targets[t - 1, nxt] = 1.0
    return targets


targets, valid = next_visit_targets(codes, visit_ids, attention_mask, ids)
V = int(visit_ids.max())
assert targets.shape == (B, V - 1, ids.vocab_size) and valid.shape == (B, V - 1)
for b in range(B):
    real = attention_mask[b]
    mine = next_visit_sets(codes[b, real], visit_ids[b, real])
    assert torch.equal(targets[b, : len(mine)], mine)
    assert not targets[b, len(mine) :].any()
visits_of = visit_ids.max(1).values  # (B,) visits per patient
# several short visits
one = int(torch.where(batch["lengths"] <= 40, visits_of, 0).argmax())
example = pd.DataFrame(
    {
        "visit t": np.arange(1, int(visits_of[one])),
        "codes of visit t + 1 (the target of the state after visit t)": [
            ", ".join(vocab.itos[i] for i in target.nonzero().flatten().tolist())
            for target in targets[one, : int(visits_of[one]) - 1]
        ],
    }
)
example.style.hide(axis="index")

# %% [markdown]
# The summary $z_{b,t}$ must not see visit $t+1$, or the task is copying. A plain
# bidirectional encoder would let it; the **visit-causal mask** lets a token of visit $t$
# attend to tokens of visits $\le t$ only (tokens of one visit see each other: they share a
# day and their order carries no time). Here it is for the patient above, and the check that
# makes it trustworthy: change the codes of the patient's last visit, and the hidden states
# of all earlier visits must not move at all, while without the mask they do.

# %%
real = attention_mask[one]
v_one = visit_ids[one, real]  # (n,) the patient's visits, unpadded
allowed_inline = v_one[None, :] <= v_one[:, None]  # (n, n): query visit >= key visit
span = slice(one, one + 1)  # keeps the batch dimension
allowed = visit_causal_mask(visit_ids[span, real], attention_mask[span, real])
assert torch.equal(allowed[0, 0], allowed_inline)

torch.manual_seed(cfg.seed)
probe = BehrtEncoder(
    BehrtConfig.from_vocab(
        vocab, d_model=cfg.d_model, n_layers=cfg.n_layers, max_len=task.config.max_len
    )
).eval()
changed = dict(batch)
last_visit = (visit_ids == visit_ids.max(1, keepdim=True).values) & attention_mask
is_special = torch.isin(codes, ids.special_tensor())
changed["codes"] = torch.where(last_visit & ~is_special, ids.regular_tensor()[0], codes)
earlier = attention_mask & ~last_visit  # (B, L): tokens of every visit but the last
with torch.no_grad():
    drift = {}
    for causal in (True, False):
        h = probe(**encoder_inputs(batch), causal=causal)  # (B, L, d)
        h_changed = probe(**encoder_inputs(changed), causal=causal)  # (B, L, d)
        drift[causal] = float((h - h_changed)[earlier].abs().max())
assert drift[True] < 1e-5 < drift[False]
keep("drift_bidirectional", drift[False])
print(
    f"largest change of an earlier visit's state: causal {drift[True]:.1e}, "
    f"bidirectional {drift[False]:.1e}"
)

# %% mystnb={"figure": {"name": "fig-visit-causal-mask", "caption": "The visit-causal mask of one patient: a query token (row) may attend to a key token (column) when the key's visit is not later than the query's. The blocks on the diagonal are the visits."}}
fig, ax = plt.subplots(figsize=(4.2, 4.2))
ax.imshow(allowed[0, 0].numpy(), cmap="Blues", interpolation="none")
ax.set_xlabel("key token (position)")
ax.set_ylabel("query token (position)")
for axis in (ax.xaxis, ax.yaxis):  # positions are whole numbers
    axis.set_major_locator(MaxNLocator(integer=True))
ax.grid(False)
plt.show()

# %% [markdown]
# ## Model
# `BehrtForPretraining` puts two heads on one encoder: BERT's masked-code head (a dense
# layer, GELU, LayerNorm and an output layer that shares its weights with the code
# embedding) and a linear next-visit head on the pooled visit states. One call per task:
# the masked batch through the bidirectional encoder, the clean batch through the causal one.

# %%
behrt_cfg = BehrtConfig.from_vocab(
    vocab,
    d_model=cfg.d_model,
    n_layers=cfg.n_layers,
    n_heads=cfg.n_heads,
    d_ff=cfg.d_ff,
    dropout=cfg.dropout,
    max_len=task.config.max_len,
    init_std=cfg.init_std,
)
torch.manual_seed(cfg.seed)
model = BehrtForPretraining(BehrtEncoder(behrt_cfg), tie_weights=True, pool="last")
model = model.eval()
with torch.no_grad():
    out = model({**batch, "masked_codes": masked, "mlm_labels": labels}, task="joint")
n_masked = int((labels != IGNORE_INDEX).sum())
assert out["mlm_logits"].shape == (n_masked, ids.vocab_size)
assert out["next_visit_logits"].shape == (B, V, ids.vocab_size)
assert out["visit_exists"].shape == (B, V)
assert model.mlm_head.decoder.weight is model.encoder.embeddings.code.weight  # tied
{k: tuple(v.shape) for k, v in out.items()}

# %% [markdown]
# ### A head that can copy
# A record repeats itself: the drugs of a chronic disease are refilled, its labs measured
# again, its diagnosis coded at every visit. To say "the codes of the last visit again",
# the linear head has to squeeze every code of the history through the
# {glue:text}`d_model` numbers of one pooled state and decode them back, for hundreds of
# codes at once. It is easier to let the head *copy*. The **copy head** (a
# pointer-generator, as {cite:t}`see2017get` built for summaries, here for sets of
# codes) mixes two probabilities per
# code: one *generated* from the pooled state $z_t$ as before, and one *copied* that exists
# only for codes already in the history $H_t$ up to visit $t$,
#
# $$
# \begin{aligned}
# p_{t,c} &= (1 - g_t)\,\sigma(w_c^\top z_t + b_c) \\
#   &\quad + g_t\,\mathbb 1[c \in H_t]\,\sigma\big(a_c + (u + U_c)^\top \phi_{t,c}\big), \\
# g_t &= \sigma(v^\top z_t + v_0),
# \end{aligned}
# $$
#
# where the gate $g_t$ says how much of visit $t+1$ is repetition, and $\phi_{t,c}$
# describes code $c$'s place in the history: whether it was recorded at visit $t$, at how
# many visits so far ($\log(1+n)$), and how recently ($2^{-\Delta/h}$ for half-lives $h$ of
# {glue:text}`half_lives_text` days, $\Delta$ the days since its last record). A per-code weight $U_c$
# lets a course of an NSAID fade quickly and a statin persist. The head returns
# $\operatorname{logit}(p_{t,c})$, so the loss is the same binary cross-entropy as before,
# now of the mixture.
#
# The features come from `ehrseq.next_visit.visit_history`; written as a loop over the
# visits of the patient above, they are:

# %%
hist = visit_history(
    codes[one : one + 1], visit_ids[one : one + 1], batch["ages"][one : one + 1],
    attention_mask[one : one + 1], ids,
)  # fmt: skip
count_inline = torch.zeros(int(visits_of[one]), ids.vocab_size)  # (V, vocab)
# (V, vocab)
days_inline = torch.full((int(visits_of[one]), ids.vocab_size), float("inf"))
# age (years) at the last record
last_seen = torch.full((ids.vocab_size,), float("nan"))
for t in range(1, int(visits_of[one]) + 1):
    in_t = real & (visit_ids[one] == t) & ~torch.isin(codes[one], ids.special_tensor())
    age_t = float(batch["ages"][one][real & (visit_ids[one] == t)].min())
    count_inline[t - 1] = (count_inline[t - 2] if t > 1 else 0) + torch.isin(
        torch.arange(ids.vocab_size), codes[one][in_t]
    ).float()
    last_seen[codes[one][in_t]] = age_t
    days = (age_t - last_seen) * 365.25
    days_inline[t - 1] = torch.where(last_seen.isnan(), float("inf"), days)
torch.testing.assert_close(hist.count[0], count_inline)
torch.testing.assert_close(hist.days_since[0], days_inline)
n_visits_one = int(visits_of[one])
assert hist.count.shape == hist.days_since.shape == (1, n_visits_one, ids.vocab_size)

# %% [markdown]
# Two properties make the copy head trustworthy, and the library's tests check both on
# tiny data: the copied part puts mass *only* on codes of the history up to visit $t$, and
# row $t$ reads visits $\le t$ only. Here is the second on the batch above: change the codes
# of every patient's last visit, and the predictions made after all earlier visits stay
# exactly where they were.

# %%
torch.manual_seed(cfg.seed)
copy_probe = BehrtForPretraining(
    BehrtEncoder(behrt_cfg), next_visit_head=HistoryCopyHead(cfg.d_model, ids)
).eval()
with torch.no_grad():
    nv0 = copy_probe(batch, task="next_visit")["next_visit_logits"]  # (B, V, vocab)
    nv1 = copy_probe(changed, task="next_visit")["next_visit_logits"]  # (B, V, vocab)
# (B, V): t < last visit
before_last = torch.arange(V)[None, :] < (visits_of - 1)[:, None]
assert nv0.shape == (B, V, ids.vocab_size)
torch.testing.assert_close(nv0[before_last], nv1[before_last], atol=1e-5, rtol=0)
hist_batch = visit_history(codes, visit_ids, batch["ages"], attention_mask, ids)
parts = copy_probe.next_visit_head.mix(torch.randn(B, V, cfg.d_model), hist_batch)
assert (parts["copied"][~hist_batch.seen] == 0).all()  # copies only from the history

# %% [markdown]
# ## Summary
# - **Masked-code modelling** hides {glue:text}`mask_prob:.0%` of the real codes
#   ({glue:text}`replace_prob:.0%` `[MASK]`, {glue:text}`random_prob:.0%` random,
#   {glue:text}`unchanged_prob:.0%` unchanged) and scores the prediction at those positions
#   only; **next-visit prediction** predicts the multi-hot set of codes of visit $t+1$ from
#   the visits up to $t$ under the visit-causal mask, which we checked leaves earlier states
#   untouched when a later visit changes. Both were written inline and agree with
#   `ehrseq.pretrain`.
# - `BehrtForPretraining` puts both heads on one encoder. The **copy head** mixes a
#   generated probability per code with one copied from the patient's history, described by
#   whether, how often and how recently each code was recorded; its features agree with a
#   loop over the visits, it copies only codes of the history, and its predictions after a
#   visit do not move when a later visit changes.
# - {doc}`05b_pretraining_schedules` trains these objectives in four schedules, with and
#   without the copy head, and scores them against lookup tables that read the same history.
#
# ## Exercises
# 1. Pool each visit by the mean of its tokens (`pool="mean"`) instead of its `[SEP]`. Is
#    the next visit predicted better or worse?
# 2. Masked-code modelling with the visit-causal mask (`BehrtForPretraining(...,
#    mlm_causal=True)`) can only use the past of a hidden code. How much does top-1 drop?
#    What does that say about what the bidirectional objective learns from the future?
