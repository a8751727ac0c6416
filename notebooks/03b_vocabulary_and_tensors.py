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
# # Vocabulary and tensors
#
# ## Outline
# {doc}`03_ehr_to_tokens` read an OMOP export, fixed a prediction time and an outcome per
# patient, and cut each history into a sequence of tokens. A sequence model reads integers;
# this chapter walks the rest of the road:
#
# $$
# \text{sequences} \xrightarrow{\texttt{Vocab}, \texttt{encode}} \text{tensors}.
# $$
#
# We will
# 1. fit the **vocabulary** on training patients only, with value-decile tokens for labs and
#    `[UNK]` for codes never seen in training;
# 2. pad patients into **tensors** that follow one contract, bucket them by length, and
#    check that padding never changes what a model computes;
# 3. export everything as **MEDS**, the format that sequence-model tools exchange.
#
# There is no model to train here: each stage ends with the assertions that keep it honest.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size.

# %%
import shutil
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

import ehrseq
from ehrseq.book import keep, plural
from ehrseq.config import for_profile, format_config
from ehrseq.data.labels import Outcome, survival_labels
from ehrseq.data.meds import (
    read_meds,
    read_survival_labels,
    validate_meds,
    write_meds,
    write_survival_labels,
)
from ehrseq.data.omop import load_omop, open_cdm
from ehrseq.data.sequences import build_sequences
from ehrseq.data.synthetic import SyntheticConfig, generate_cohort
from ehrseq.data.tensors import (
    SPECIAL_DOMAIN_ID,
    LengthBucketSampler,
    SequenceDataset,
    collate_flat,
    collate_hierarchical,
    encode,
)
from ehrseq.data.vocab import PAD_ID, SPECIAL_TOKENS, UNK_ID, Vocab
from ehrseq.plotting import apply_style


@dataclass(frozen=True)
class Config:
    profile: str = "book"
    n_patients: int = 5000  # people in the synthetic cohort
    seed: int = 7  # one seed for the generator, the split and the samplers
    threads: int = 2  # DuckDB worker threads of the OMOP reader
    # prediction time = start of observation + this much history
    history_days: float = 365.0
    horizon_years: float = 5.0  # follow-up window after the prediction time
    max_len: int = 96  # most tokens per patient ([CLS] and [SEP] included)
    # share of persons held out (split before anything is fitted)
    test_fraction: float = 0.3
    # a token enters the vocabulary when seen this often in training
    min_frequency: int = 5
    batch_size: int = 32  # patients per batch


profiles = {"smoke": {"n_patients": 1000}, "full": {"n_patients": 50_000}}
cfg = for_profile(Config, profiles)
device = ehrseq.get_device()
rng = ehrseq.seed_everything(cfg.seed)
apply_style()
print(format_config(cfg))
print(f"device: {device}")


keep("max_len", cfg.max_len)
keep("min_frequency", cfg.min_frequency)
keep("batch_size", cfg.batch_size)
keep("test_fraction", cfg.test_fraction)
keep("horizon_years", cfg.horizon_years)
# every file this chapter writes goes here, and is removed at the end
work = Path(tempfile.mkdtemp(prefix="ehrseq_ch03b_"))

# %% [markdown]
# Nothing here runs on the device: every stage is NumPy, pandas and DuckDB on the CPU, and
# the tensors are built on the CPU, where a `DataLoader` builds them during training too.
#
# ## Data: the sequences of the previous chapter
# The steps of {doc}`03_ehr_to_tokens`, in one cell and without their checks: write the
# synthetic cohort as an OMOP export and read it back with `load_omop`, label heart failure
# over {glue:text}`horizon_years:.0f` years from the prediction time, and build the `visit`
# sequences, cut strictly before the prediction time and truncated to the most recent
# {glue:text}`max_len` tokens. The same config gives the same events, labels and sequences.

# %%
cohort = generate_cohort(SyntheticConfig(n_patients=cfg.n_patients, seed=cfg.seed))
export = work / "omop"
cohort.write_omop(export)
omop = load_omop(open_cdm(export, threads=cfg.threads))
events, person, observation_period = omop.events, omop.person, omop.observation_period
concept_name = cohort.vocabulary.concept.set_index("concept_id")["concept_name"]

hf_concepts = cohort.vocabulary.ids("heart_failure", "condition")
outcome = Outcome.of_concepts("heart_failure", hf_concepts)
horizon_days = cfg.horizon_years * 365.25
history = cfg.history_days
labels = survival_labels(
    events, person, observation_period, outcome, history, horizon_days=horizon_days
)
label_table = labels.table
prediction_times = labels.prediction_times  # person_id, prediction_time

seqs = build_sequences(
    events,
    person,
    prediction_times,
    strategy="visit",
    max_len=cfg.max_len,
    add_cls=True,
    add_sep=True,
)
print(omop)
n_labelled, n_history = len(label_table), len(seqs.person_ids)
print(f"{n_labelled:,} labelled patients, {n_history:,} with a history")

# %% [markdown]
# ## Vocabulary: fitted on training patients only
# Token strings become integer ids through a **vocabulary**, and the vocabulary is a fitted
# object: which codes it knows, and for each lab the cut points of its value deciles, are
# learned from data. Fitting it on all patients would leak the test patients into training
# (their rare codes, their lab distribution). So the **persons are split first**, before
# anything is fitted, and the vocabulary sees the training patients only.

# %%
person_ids = person["person_id"].to_numpy()
is_test = rng.random(len(person_ids)) < cfg.test_fraction
split = pd.DataFrame(
    {"subject_id": person_ids, "split": np.where(is_test, "held_out", "train")}
)  # MEDS split names
train_ids = np.intersect1d(person_ids[~is_test], seqs.person_ids)
test_ids = np.intersect1d(person_ids[is_test], seqs.person_ids)
vocab = Vocab.fit(seqs.frame, train_ids, min_frequency=cfg.min_frequency)
keep("n_train", len(train_ids))
keep("n_test", len(test_ids))
keep("vocab_size", len(vocab))
keep("n_tokens", len(vocab.tokens))
print(vocab)
top = pd.DataFrame({"token": vocab.itos[:12]})
n_special = len(SPECIAL_TOKENS)
counts = [None] * n_special + vocab.counts[: 12 - n_special]
top["training rows"] = pd.array(counts, dtype="Int64")
ids = [None if t in SPECIAL_TOKENS else int(t.split(":")[1]) for t in top["token"]]
top["concept"] = ["" if c is None else concept_name.get(c, "") for c in ids]
top.index.name = "id"
top

# %% [markdown]
# Ids 0 to 4 are the special tokens: `[PAD]` (0, padding), `[UNK]` (a code the vocabulary
# does not know), `[MASK]` (for masked-code pre-training, a later chapter), `[CLS]` and
# `[SEP]`. The other {glue:text}`n_tokens` tokens follow by training frequency, and
# only those seen in at least {glue:text}`min_frequency` training rows get an id.
#
# A token is `domain:concept_id`, and a lab with a value adds its **decile** among the
# training values of that lab: `measurement:<id>:q0` is the lowest tenth, `q9` the highest.
# A decile is a number of cut points at or below the value; three lines do it, and they must
# agree with the library on every held-out measurement.

# %%
lab = cohort.vocabulary.by_code("LOINC", "8480-6")  # systolic blood pressure
cuts = vocab.value_cuts[lab]  # 9 cut points, from training values only
test_rows = seqs.frame[seqs.frame["person_id"].isin(test_ids)]
sbp = test_rows[(test_rows["concept_id"] == lab) & test_rows["value_as_number"].notna()]
decile = np.searchsorted(cuts, sbp["value_as_number"].to_numpy(), side="right")  # 0..9
inline = [vocab.stoi.get(f"measurement:{lab}:q{q}", UNK_ID) for q in decile]
library_ids, _ = vocab.encode(sbp)
assert np.array_equal(inline, library_ids)
cut_text = f"{concept_name[lab]}: cut points {np.round(cuts, 1).tolist()} (mm Hg)"
print(textwrap.fill(cut_text, 86, subsequent_indent="    "))
pd.DataFrame(
    {
        "value": sbp["value_as_number"].to_numpy()[:6],
        "token": [vocab.itos[i] for i in library_ids[:6]],
        "id": library_ids[:6],
    }
)

# %% [markdown]
# The cut points come from training values only. A check that would catch a leak: scramble
# every held-out value and refit; nothing in the vocabulary may move.

# %%
scrambled = seqs.frame.copy()
held_out_rows = scrambled["person_id"].isin(test_ids).to_numpy()
scrambled.loc[held_out_rows, "value_as_number"] *= 100.0
refit = Vocab.fit(scrambled, train_ids, min_frequency=cfg.min_frequency)
assert refit.itos == vocab.itos
value_cuts = vocab.value_cuts
assert all(np.array_equal(refit.value_cuts[c], value_cuts[c]) for c in value_cuts)

# %% [markdown]
# ### Unseen codes on held-out patients
# A held-out patient may carry a code that no training patient had, or had too rarely. It
# becomes `[UNK]`, and the encoder counts how often. Before giving up, it backs off: a lab
# decile too rare becomes the lab's value-free token, and, given the concept hierarchy of the
# export, an unknown code becomes its nearest ancestor that the vocabulary knows.

# %%
hierarchy = omop.cdm.concept_ancestor()  # built from the export's 'Is a' relationships
order = ["descendant_concept_id", "min_levels_of_separation", "ancestor_concept_id"]
hierarchy = hierarchy[
    (hierarchy["min_levels_of_separation"] > 0)
    & hierarchy["descendant_concept_id"].isin(events["concept_id"].unique())
].sort_values(order)
by_code = hierarchy.groupby("descendant_concept_id")["ancestor_concept_id"]
ancestors = by_code.apply(list).to_dict()

test_ids_enc, test_report = vocab.encode(test_rows)
n_test_events = test_report["tokens"] - test_report["special"]
keep("unk_rate", test_report["unknown"] / n_test_events)
keep("n_unk", test_report["unknown"])
keep("n_unk_concepts", test_report["unknown_concepts"])
n_unk, n_unk_concepts = test_report["unknown"], test_report["unknown_concepts"]
unk_text = (  # "0 of the tokens (0.00%, from 0 concepts)" would read oddly
    f"none of the {n_test_events:,} event tokens is"
    if n_unk == 0
    else f"{n_unk:,} of the {n_test_events:,} event tokens"
    f" ({n_unk / n_test_events:.2%}, from {plural(n_unk_concepts, 'distinct concept')})"
    " are"
)
keep("unk_text", unk_text)
assert (test_ids_enc == UNK_ID).sum() == test_report["unknown"]
pd.Series(test_report, name="held-out tokens").to_frame()

# %% [markdown]
# On held-out patients {glue:text}`unk_text` `[UNK]`. The threshold `min_frequency` trades vocabulary size against unknown tokens:

# %%
rows = []
for mf in sorted({1, cfg.min_frequency, 20, 50, 100, 200}):
    v = Vocab.fit(seqs.frame, train_ids, min_frequency=mf)
    _, r = v.encode(test_rows)
    _, r_anc = v.encode(test_rows, ancestors)
    rows.append(
        {
            "min_frequency": mf,
            "vocabulary size": len(v),
            "[UNK] share": r["unknown"] / n_test_events,
            "decile -> value-free": r["value_dropped"] / n_test_events,
            "[UNK] share with ancestor back-off": r_anc["unknown"] / n_test_events,
        }
    )
sweep = pd.DataFrame(rows).set_index("min_frequency")
assert sweep["[UNK] share"].is_monotonic_increasing
assert (sweep["[UNK] share with ancestor back-off"] <= sweep["[UNK] share"]).all()
keep("unk_rate_200", float(sweep.loc[200, "[UNK] share"]))
sweep.style.format("{:.2%}", subset=sweep.columns[1:])

# %% [markdown]
# The ancestor back-off rescues little here: in this export a parent concept (say, a
# grouping of heart-failure codes) is rarely recorded itself, so it is rarely in the
# vocabulary to back off to. On a real site, where the same disease is coded at different
# levels of detail, it matters more; the ontology chapter returns to it.
#
# ## Tensors
# ### The contract
# `encode` maps every token of every patient to its id at once and keeps them in flat arrays
# with an offset per patient. A batch is cut from them and **padded** to its longest patient.
# Every model in the book reads this contract, so it is worth seeing once in full. The
# labelled training patients form the dataset; durations and events ride along.

# %%
labelled = label_table[label_table["subject_id"].isin(seqs.person_ids)]
train_labels = labelled[labelled["subject_id"].isin(train_ids)]
encoding = encode(seqs, vocab)  # all patients with a history
train_enc = encoding.select(train_labels["subject_id"])  # label order
train_ds = SequenceDataset(
    train_enc, durations=train_labels["duration"], events=train_labels["event"]
)
loader = DataLoader(
    train_ds,
    batch_size=cfg.batch_size,
    shuffle=True,
    collate_fn=collate_flat,
    generator=torch.Generator().manual_seed(cfg.seed),
)
batch = next(iter(loader))
B, L = len(batch["person_ids"]), int(batch["lengths"].max())
contract = {  # key: (shape, dtype, meaning)
    "codes": ("(B, L)", torch.long, "vocabulary id; [PAD] = 0"),
    "ages": ("(B, L)", torch.float32, "age in years; 0 at padding"),
    "visit_ids": ("(B, L)", torch.long, "visit index from 1; 0 only at padding"),
    "positions": ("(B, L)", torch.long, "token index from 0"),
    "time_deltas": ("(B, L)", torch.float32, "days since the previous token"),
    "domain_ids": ("(B, L)", torch.long, "0 pad, 1..7 domain, 8 special token"),
    "attention_mask": ("(B, L)", torch.bool, "True on real tokens"),
    "lengths": ("(B,)", torch.long, "real tokens per patient"),
    "person_ids": ("(B,)", torch.long, "patient of each row"),
    "durations": ("(B,)", torch.float32, "days to event or censoring"),
    "events": ("(B,)", torch.long, "1 event, 0 censored"),
}
size = {"(B, L)": (B, L), "(B,)": (B,)}
assert set(batch) == set(contract)
for key, (shape, dtype, _) in contract.items():
    assert batch[key].shape == size[shape] and batch[key].dtype == dtype, key
keep("B", B)
keep("L", L)
pd.DataFrame(
    [
        {
            "key": k,
            "shape": s,
            "this batch": tuple(batch[k].shape),
            "dtype": str(d)[6:],
            "meaning": m,
        }
        for k, (s, d, m) in contract.items()
    ]
).set_index("key")

# %% [markdown]
# This batch has $B$ = {glue:text}`B` patients padded to $L$ = {glue:text}`L` tokens. The
# contract promises more than shapes, so we check that too: the mask and the lengths agree,
# padding is zero everywhere, visit ids never decrease along a sequence.

# %%
mask = batch["attention_mask"]  # (B, L)
assert torch.equal(mask.sum(1), batch["lengths"])
# right padding
assert torch.equal(mask, torch.arange(L)[None, :] < batch["lengths"][:, None])
for key in ("codes", "visit_ids", "positions", "domain_ids"):
    assert (batch[key][~mask] == 0).all(), key
assert (batch["codes"][mask] != PAD_ID).all() and (batch["visit_ids"][mask] >= 1).all()
assert ((batch["visit_ids"].diff(dim=1) >= 0) | ~mask[:, 1:]).all()
batch["codes"][:4, :12]

# %% [markdown]
# ### The hierarchical batch
# Visit-level models (RETAIN, hierarchical transformers) read a patient as visits of codes:
# a `(B, V, C)` tensor, $V$ the most visits and $C$ the most codes of one visit in the batch,
# with two masks. `[CLS]` and `[SEP]` are left out, since the visit structure replaces them.
# Read row-major, its real codes are exactly the flat batch's real non-special tokens.

# %%
items = [train_ds[i] for i in range(cfg.batch_size)]
flat = collate_flat(items)
hier = collate_hierarchical(items)
B_h, V, C = hier["codes"].shape
assert B_h == len(items)
for key in ("codes", "code_mask", "domain_ids"):
    assert hier[key].shape == (B_h, V, C), key
for key in ("visit_mask", "ages", "time_deltas"):
    assert hier[key].shape == (B_h, V), key
assert torch.equal(hier["visit_mask"], hier["code_mask"].any(-1))
# visits per patient
assert torch.equal(hier["lengths"], flat["visit_ids"].max(1).values)
special = flat["domain_ids"] == SPECIAL_DOMAIN_ID  # [CLS], [SEP]
assert torch.equal(
    hier["codes"][hier["code_mask"]], flat["codes"][flat["attention_mask"] & ~special]
)
keep("V", int(V))
keep("C", int(C))
for key, value in hier.items():  # one line per tensor: name and shape
    print(f"{key:>14}: {tuple(value.shape)}")

# %% [markdown]
# Here $V$ = {glue:text}`V` and $C$ = {glue:text}`C`.
#
# ### Length bucketing
# Dynamic padding pads each batch to its own longest patient. With patients drawn at random,
# one long history makes the whole batch long, and most of the tensor is padding: compute
# spent on nothing. `LengthBucketSampler` takes a large random bucket of patients, sorts it
# by length, cuts it into batches and shuffles the batches, so each batch holds patients of
# similar length while the epoch stays random.


# %%
def padding_share(batches, lengths: np.ndarray) -> float:
    """Share of the padded tensors that is padding, over a list of index batches."""
    real = sum(int(lengths[b].sum()) for b in batches)
    total = sum(len(b) * int(lengths[b].max()) for b in batches)
    return 1.0 - real / total


def random_batches(n: int, batch_size: int) -> list[list[int]]:
    sampler = RandomSampler(range(n), generator=torch.Generator().manual_seed(cfg.seed))
    return list(BatchSampler(sampler, batch_size, drop_last=False))


n_train = len(train_ds)
bucketed = list(LengthBucketSampler(train_ds.lengths, cfg.batch_size, seed=cfg.seed))
shuffled = random_batches(n_train, cfg.batch_size)
# one epoch, each once
assert sorted(np.concatenate(bucketed).tolist()) == list(range(n_train))

# the same share, measured on the padded tensors a DataLoader really builds
measured = {}
for name, sampler in (("random", shuffled), ("bucketed", bucketed)):
    dl = DataLoader(train_ds, batch_sampler=sampler, collate_fn=collate_flat)
    masks = [b["attention_mask"] for b in dl]
    n_real, n_slots = sum(int(m.sum()) for m in masks), sum(m.numel() for m in masks)
    measured[name] = 1.0 - n_real / n_slots
    assert np.isclose(measured[name], padding_share(sampler, train_ds.lengths))
keep("pad_random", measured["random"])
keep("pad_bucketed", measured["bucketed"])

sizes = [8, 16, 32, 64, 128, 256]
lens = train_ds.lengths
random_pad = [padding_share(random_batches(n_train, b), lens) for b in sizes]
buckets = [list(LengthBucketSampler(lens, b, seed=cfg.seed)) for b in sizes]
pad = pd.DataFrame(
    {
        "random batches": random_pad,
        "LengthBucketSampler": [padding_share(batches, lens) for batches in buckets],
    },
    index=pd.Index(sizes, name="batch size"),
)
assert (pad["LengthBucketSampler"] < pad["random batches"]).all()
keep("size_min", sizes[0])
keep("size_max", sizes[-1])
keep("pad_random_min", float(pad["random batches"].iloc[0]))
keep("pad_random_max", float(pad["random batches"].iloc[-1]))
keep("pad_bucketed_min", float(pad["LengthBucketSampler"].iloc[0]))
keep("pad_bucketed_max", float(pad["LengthBucketSampler"].iloc[-1]))
pad.style.format("{:.1%}")

# %% mystnb={"figure": {"name": "fig-padding", "caption": "Share of each padded batch tensor that is padding, over one epoch of the training patients, for batches drawn at random and from LengthBucketSampler."}}
fig, ax = plt.subplots(figsize=(5.5, 3.4), constrained_layout=True)
pad.plot(ax=ax, marker="o", logx=True)
# above the axes, clear of data
ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2)
ax.set_xticks(sizes, [str(s) for s in sizes])
ax.minorticks_off()
ax.set_xlabel("batch size (patients)")
ax.set_ylabel("padding share of the batch tensors")
ax.set_ylim(0, 1)
ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda y, _: f"{y:.0%}"))
plt.show()

# %% [markdown]
# At {glue:text}`batch_size` patients per batch, {glue:text}`pad_random:.0%` of a randomly
# drawn batch is padding, and {glue:text}`pad_bucketed:.0%` of a bucketed one. From
# {glue:text}`size_min` to {glue:text}`size_max` patients per batch, random batches go from
# {glue:text}`pad_random_min:.0%` to {glue:text}`pad_random_max:.0%` padding (the longest
# patient of a batch grows with its size). Bucketed ones go from
# {glue:text}`pad_bucketed_min:.0%` to {glue:text}`pad_bucketed_max:.0%`, since a larger
# batch must span a wider range of lengths, and at every size they stay below random ones.
#
# ## Evaluate: the padding discipline
# Padding is only harmless if nothing downstream reads it. Two places commonly do: attention
# (a real token attends to padding keys, unless the padding is masked out) and pooling (a
# mean over all $L$ positions divides by the padded length). Neither bug raises an error; the
# numbers are merely wrong, and wrong differently depending on *who else is in the batch*.
#
# The check that catches both is an equivalence: **a patient's output must not change when
# the same patient is padded to a longer length**. We run each patient alone (no padding) and
# inside a batch with longer patients, and compare. A tiny encoder (an embedding and one
# self-attention layer) and mean pooling are enough to see it.


# %%
class TinyEncoder(nn.Module):
    """Token embedding and one self-attention layer: enough to show padding's effect."""

    def __init__(self, n_tokens: int, d: int = 16):
        super().__init__()
        self.embed = nn.Embedding(n_tokens, d, padding_idx=PAD_ID)
        self.qkv = nn.Linear(d, 3 * d)

    def forward(
        self,
        codes: torch.Tensor,
        attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        x = self.embed(codes)  # (B, L, d)
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 x (B, L, d)
        # (B, 1, L)
        keys = None if attention_mask is None else attention_mask[:, None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keys)  # (B, L, d)


def mean_pool(h: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the real tokens (over all L positions when no mask is given)."""
    if attention_mask is None:
        return h.mean(1)  # (B, d): divides by the padded length
    m = attention_mask[..., None].to(h.dtype)  # (B, L, 1)
    return (h * m).sum(1) / m.sum(1)  # (B, d)


def check_padding_invariance(represent, encoding, idx) -> None:
    """A patient alone (no padding) and in a padded batch must give the same output."""
    together = represent(encoding.pad(idx))  # (B, d), padded to the longest of idx
    alone = torch.cat([represent(encoding.pad([i])) for i in idx])  # (B, d), no padding
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


torch.manual_seed(cfg.seed)
tiny = TinyEncoder(len(vocab)).eval()
order = np.argsort(train_enc.lengths)
# shortest to longest patient
idx = order[np.linspace(0, len(order) - 1, 8).astype(int)]
print("lengths in the test batch:", train_enc.lengths[idx].tolist())

variants = {  # (mask the attention?, mask the pooling?)
    "no masks (the bug)": (False, False),
    "attention mask only": (True, False),
    "pooling mask only": (False, True),
    "both masks": (True, True),
}
results = []
with torch.no_grad():
    for name, (mask_attention, mask_pooling) in variants.items():

        def represent(b, mask_attention=mask_attention, mask_pooling=mask_pooling):
            m = b["attention_mask"]
            h = tiny(b["codes"], m if mask_attention else None)  # (B, L, d)
            return mean_pool(h, m if mask_pooling else None)  # (B, d)

        try:
            check_padding_invariance(represent, train_enc, idx)
            outcome_text = "passes"
        except AssertionError:
            outcome_text = "fails"
        together = represent(train_enc.pad(idx))
        alone = torch.cat([represent(train_enc.pad([i])) for i in idx])
        if outcome_text == "fails" and name.startswith("no masks"):  # what it found
            changed = ~torch.isclose(together, alone, rtol=1e-5, atol=1e-5)
            print(f"{name}: check_padding_invariance fails:")
            print(
                f"  {int(changed.sum())} of {changed.numel()} output values change"
                f" with padding, by up to {float((together - alone).abs().max()):.2g}"
                " (tolerance 1e-05)"
            )
        results.append(
            {
                "variant": name,
                "padding check": outcome_text,
                "largest change from padding": float((together - alone).abs().max()),
            }
        )
padding_table = pd.DataFrame(results).set_index("variant")
assert padding_table["padding check"].tolist() == ["fails", "fails", "fails", "passes"]
change = padding_table["largest change from padding"]
keep("pad_bug_change", float(change["no masks (the bug)"]))
keep("pad_attention_only_change", float(change["attention mask only"]))
keep("pad_pooling_only_change", float(change["pooling mask only"]))
padding_table.style.format({"largest change from padding": "{:.1e}"})

# %% [markdown]
# Only the version that masks **both** the attention and the pooling survives. Each half-fix
# still changes a patient's representation: by as much as
# {glue:text}`pad_attention_only_change:.2g` with the attention mask only and
# {glue:text}`pad_pooling_only_change:.2g` with the pooling mask only, against
# {glue:text}`pad_bug_change:.2g` with no mask at all. The check is cheap, needs no labels
# and no training, and the encoders of later chapters are tested with it in `tests/`.
#
# ## MEDS: the exchange format
# The **Medical Event Data Standard** (MEDS) stores exactly what this chapter and
# {doc}`03_ehr_to_tokens` built: one row per event with `subject_id`, `time`, `code` and
# `numeric_value`, sharded parquet files, a code table, and the subject splits. Tools for EHR
# foundation models read and write it. We export the event table with our split, check the
# files against the MEDS schemas, read them back, and demand the same events.

# %%
meds_root = write_meds(events, person, work / "meds", splits=split)
validate_meds(meds_root)
events_back, person_back, split_back, meds_report = read_meds(meds_root)
pd.testing.assert_frame_equal(
    events_back.drop(columns="value_as_number"), events.drop(columns="value_as_number")
)
# MEDS stores values as float32
values32 = events["value_as_number"].astype(np.float32)
np.testing.assert_allclose(events_back["value_as_number"], values32, equal_nan=True)
pd.testing.assert_frame_equal(person_back, person)
split_of = split.set_index("subject_id")["split"]
assert split_back.set_index("subject_id")["split"].equals(split_of)
files = [p for p in meds_root.rglob("*") if p.is_file()]
print("\n".join(sorted(str(p.relative_to(meds_root)) for p in files)))
meds_rows = pq.read_table(meds_root / "data" / "0.parquet").slice(0, 8)
meds_rows = meds_rows.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
meds_rows[["subject_id", "time", "code", "numeric_value"]]  # the MEDS core columns

# %% [markdown]
# Codes are written `domain/concept_id`, birth and death get the MEDS codes `MEDS_BIRTH` and
# `MEDS_DEATH`, and sex is a static row with no time. The label sidecar goes beside it: the
# MEDS label columns (`subject_id`, `prediction_time`, `boolean_value`) plus the survival
# columns every later chapter needs.

# %%
sidecar = write_survival_labels(label_table, work / "labels" / "heart_failure.parquet")
labels_back = read_survival_labels(sidecar)
pd.testing.assert_frame_equal(labels_back, label_table, check_dtype=False)
pq.read_table(sidecar).to_pandas().head()

# %%
shutil.rmtree(work)  # the export and the MEDS files were temporary

# %% [markdown]
# ## Summary
# - The vocabulary is fitted on training patients only ({glue:text}`vocab_size` ids, the
#   special tokens included, at `min_frequency` {glue:text}`min_frequency`); {glue:text}`unk_rate:.2%` of held-out tokens
#   are `[UNK]`, {glue:text}`unk_rate_200:.1%` at a threshold of 200.
# - Batches follow one tensor contract. Bucketing by length cuts padding from
#   {glue:text}`pad_random:.0%` to {glue:text}`pad_bucketed:.0%` of the tensor, and a
#   padded-versus-alone equivalence check catches a missing mask.
# - MEDS export and import round-trip the event table exactly (values in float32).
#
# ## Exercises
# 1. Fit the vocabulary on *all* patients and encode the held-out ones. Which rows of the
#    `[UNK]` table change, and why is that number an optimistic estimate of what a deployed
#    model meets?
# 2. Write a `max_pool` that ignores padding (hint: fill padded positions with $-\infty$
#    before the maximum) and show that `check_padding_invariance` passes for it and fails for
#    the naive version.
