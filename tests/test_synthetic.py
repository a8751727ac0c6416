"""The synthetic cohort: invariants of the tables, reproducibility, and an honest signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index

from ehrseq.data.synthetic import (
    ACUTE,
    DAYS_PER_MONTH,
    HF_INTERACTION_LOG_HR,
    HF_LOG_HR,
    NSAID_GROUP,
    LazyTables,
    SyntheticCohort,
    SyntheticConfig,
    generate_cohort,
    generate_two_sites,
    read_parquet,
)

EVENT_TABLES = {
    "visit_occurrence": "visit_start_date",
    "condition_occurrence": "condition_start_date",
    "drug_exposure": "drug_exposure_start_date",
    "procedure_occurrence": "procedure_date",
    "measurement": "measurement_date",
}


@pytest.fixture(scope="module")
def cohort():
    return generate_cohort(SyntheticConfig(n_patients=1500, seed=3))


@pytest.fixture(scope="module")
def big():
    """Large enough for the survival checks (about 400 observed heart-failure events)."""
    return generate_cohort(SyntheticConfig(n_patients=5000, seed=11))


def _survival_frame(c) -> pd.DataFrame:
    """Observed time to heart failure from enrolment (censored at the end of observation)."""
    p = c.truth.persons
    hf = p["hf_date"].notna() & (p["hf_date"] <= p["obs_end_date"])
    end = p["hf_date"].where(hf, p["obs_end_date"])
    days = (end - p["enrol_date"]).dt.days.clip(lower=1)
    return pd.DataFrame({"person_id": p["person_id"], "duration": days, "event": hf.astype(int)})


def test_every_event_inside_observation_and_before_death(cohort):
    t = cohort.tables
    obs = t["observation_period"].set_index("person_id")
    death = t["death"].set_index("person_id")["death_date"]
    for table, col in EVENT_TABLES.items():
        df = t[table]
        start = obs.loc[df["person_id"], "observation_period_start_date"].to_numpy()
        end = obs.loc[df["person_id"], "observation_period_end_date"].to_numpy()
        date = df[col].to_numpy()
        assert (date >= start).all(), f"{table}: event before observation start"
        assert (date <= end).all(), f"{table}: event after observation end"
        died = df["person_id"].isin(death.index).to_numpy()
        dd = death.reindex(df["person_id"]).to_numpy()
        assert (date[died] <= dd[died]).all(), f"{table}: event after death"


def test_ages_only_increase_along_each_record(cohort):
    t = cohort.tables
    birth = t["person"].set_index("person_id")["birth_datetime"]
    ev = pd.concat(
        [
            t[name][["person_id", col]].set_axis(["person_id", "date"], axis=1)
            for name, col in EVENT_TABLES.items()
        ]
    ).sort_values(["person_id", "date"], kind="stable")
    age = (
        (ev["date"].to_numpy() - birth.loc[ev["person_id"]].to_numpy())
        / np.timedelta64(1, "D")
        / 365.25
    )
    same = ev["person_id"].to_numpy()[1:] == ev["person_id"].to_numpy()[:-1]
    assert (np.diff(age)[same] >= 0).all()
    assert age.min() >= 40 - 1e-9 and age.max() < 100


def test_foreign_keys_resolve(cohort):
    t = cohort.tables
    persons = set(t["person"]["person_id"])
    visits = t["visit_occurrence"].set_index("visit_occurrence_id")["person_id"]
    concepts = set(cohort.vocabulary.concept["concept_id"])
    for name in [*EVENT_TABLES, "observation_period", "death"]:
        assert set(t[name]["person_id"]) <= persons, name
    for name, col in [
        ("condition_occurrence", "condition_concept_id"),
        ("condition_occurrence", "condition_source_concept_id"),
        ("drug_exposure", "drug_concept_id"),
        ("procedure_occurrence", "procedure_concept_id"),
        ("measurement", "measurement_concept_id"),
        ("measurement", "unit_concept_id"),
        ("visit_occurrence", "visit_concept_id"),
        ("person", "gender_concept_id"),
    ]:
        missing = set(t[name][col]) - concepts
        assert not missing, f"{name}.{col}: {sorted(missing)[:5]} not in the vocabulary"
    for name in ["condition_occurrence", "drug_exposure", "procedure_occurrence", "measurement"]:
        df = t[name]
        owner = visits.reindex(df["visit_occurrence_id"]).to_numpy()
        assert (owner == df["person_id"].to_numpy()).all(), f"{name}: visit of another person"
    for name in EVENT_TABLES:
        idcol = t[name].columns[0]
        assert t[name][idcol].is_unique, f"{name}.{idcol} not unique"


def test_links_point_at_a_diagnosis_of_the_same_visit(cohort):
    t = cohort.tables
    cond = t["condition_occurrence"].set_index("condition_occurrence_id")
    groups = cohort.truth.concept_groups.set_index("concept_id")["group"]
    drug = t["drug_exposure"]
    assert drug["linked_condition_occurrence_id"].notna().all(), "every drug treats a diagnosis"
    target = cond.loc[drug["linked_condition_occurrence_id"]]
    assert (
        target["visit_occurrence_id"].to_numpy() == drug["visit_occurrence_id"].to_numpy()
    ).all()
    assert (target["person_id"].to_numpy() == drug["person_id"].to_numpy()).all()
    # the drug belongs to the diagnosis' group (site A records clinical drugs of the group)
    same_group = (
        groups.loc[drug["drug_concept_id"]].to_numpy()
        == groups.loc[target["condition_concept_id"]].to_numpy()
    )
    assert same_group.all()
    proc = t["procedure_occurrence"]
    linked = proc.dropna(subset=["linked_condition_occurrence_id"])
    assert len(linked) > 0
    assert linked["linked_condition_occurrence_id"].isin(cond.index).all()
    unlinked_groups = set(
        groups.loc[proc.loc[proc["linked_condition_occurrence_id"].isna(), "procedure_concept_id"]]
    )
    assert unlinked_groups == {"routine"}, "only routine care is unlinked"
    assert "linked_condition_occurrence_id" not in cohort.omop_tables()["drug_exposure"].columns


def test_same_seed_identical_different_seed_differs():
    a = generate_cohort(SyntheticConfig(n_patients=300, seed=5))
    b = generate_cohort(SyntheticConfig(n_patients=300, seed=5))
    c = generate_cohort(SyntheticConfig(n_patients=300, seed=6))
    for name in a.tables:
        pd.testing.assert_frame_equal(a.tables[name], b.tables[name])
    for name in a.truth.hazard:
        np.testing.assert_array_equal(a.truth.hazard[name], b.truth.hazard[name])
    assert not a.tables["measurement"].equals(c.tables["measurement"])
    assert not a.tables["person"]["year_of_birth"].equals(c.tables["person"]["year_of_birth"])


@pytest.mark.parametrize(
    "bad",
    [
        {"n_patients": 0},
        {"seed": -1},
        {"age_min": 90, "age_max": 50},
        {"dropout_per_year": -0.1},
        {"visit_rate": 0},
        {"hazard_scale": -1},
        {"site": "C"},
        {"start_date": "not a date"},
        {"followup_years": 0},
    ],
)
def test_bad_parameters_raise(bad):
    with pytest.raises(ValueError, match="SyntheticConfig"):
        generate_cohort(SyntheticConfig(**bad))


def test_cox_on_true_covariates_recovers_signs(big):
    df = _survival_frame(big).merge(big.truth.baseline, on="person_id").drop(columns="person_id")
    cph = CoxPHFitter(penalizer=0.001).fit(df, "duration", "event")
    coef = cph.params_
    for name in [
        "age_per_decade",
        "male",
        "coronary_artery_disease",
        "atrial_fibrillation",
        "type2_diabetes",
        "chronic_kidney_disease",
    ]:
        assert HF_LOG_HR[name] > 0
        assert coef[name] > 0, (
            f"{name}: Cox coefficient {coef[name]:.2f}, documented {HF_LOG_HR[name]}"
        )
    # the documented effect of age per decade is recovered within a wide tolerance
    assert abs(coef["age_per_decade"] - HF_LOG_HR["age_per_decade"]) < 0.3


def test_shuffled_outcomes_carry_no_signal(big):
    df = _survival_frame(big).merge(big.truth.baseline, on="person_id").drop(columns="person_id")
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(df))
    df[["duration", "event"]] = df[["duration", "event"]].to_numpy()[perm]
    train, test = df.iloc[: len(df) // 2], df.iloc[len(df) // 2 :]
    cph = CoxPHFitter(penalizer=0.01).fit(train, "duration", "event")
    c = concordance_index(test["duration"], -cph.predict_partial_hazard(test), test["event"])
    assert abs(c - 0.5) < 0.05
    # and the unshuffled model is clearly better than chance
    df0 = _survival_frame(big).merge(big.truth.baseline, on="person_id").drop(columns="person_id")
    cph0 = CoxPHFitter(penalizer=0.01).fit(df0.iloc[: len(df0) // 2], "duration", "event")
    test0 = df0.iloc[len(df0) // 2 :]
    c0 = concordance_index(test0["duration"], -cph0.predict_partial_hazard(test0), test0["event"])
    assert c0 > 0.65


def test_event_and_censoring_rates_in_documented_ranges(big):
    p = big.truth.persons
    hf = (p["hf_date"].notna() & (p["hf_date"] <= p["obs_end_date"])).mean()
    reasons = p["end_reason"].value_counts(normalize=True)
    assert 0.06 <= hf <= 0.16, f"observed heart-failure rate {hf:.3f}"
    assert 0.04 <= reasons["death"] <= 0.14
    assert 0.15 <= reasons["dropout"] <= 0.35
    assert reasons["admin"] >= 0.5


def test_true_hazard_matches_observed_events(big):
    """Expected events (sum of the true monthly hazards at risk) agree with the realised count."""
    truth = big.truth
    p = truth.persons
    h = truth.hazard["heart_failure"].astype(np.float64)
    enrol = p["enrol_date"].to_numpy()
    # months at risk: from enrolment to latent heart failure, death, or the data end
    end = p["hf_date"].fillna(p["death_date"]).fillna(p["data_end_date"]).to_numpy()
    days = (end - enrol) / np.timedelta64(1, "D")
    months_at_risk = np.minimum(np.ceil(days / DAYS_PER_MONTH).astype(int), h.shape[1])
    at_risk = np.arange(h.shape[1])[None, :] < months_at_risk[:, None]
    expected = float((h * at_risk).sum())
    observed = int(p["hf_date"].notna().sum())
    assert abs(observed - expected) < 4 * np.sqrt(expected) + 5, (observed, expected)


def test_true_risk_ranks_outcomes(big):
    truth = big.truth
    risk = truth.true_risk("heart_failure", index_days=0, horizon_days=5 * 365.25)
    s = _survival_frame(big)
    assert concordance_index(s["duration"], -risk, s["event"]) > 0.7
    with pytest.raises(ValueError, match="outcome"):
        truth.true_risk("stroke", 0, 365)
    with pytest.raises(ValueError, match="horizon"):
        truth.true_risk("death", 0, 0)


def test_two_sites_differ_in_vocabulary_and_population():
    a, b = generate_two_sites(SyntheticConfig(n_patients=800, seed=2))
    vocab = a.vocabulary.concept.set_index("concept_id")["vocabulary_id"]
    src_a = set(vocab.loc[a.tables["condition_occurrence"]["condition_source_concept_id"]])
    src_b = set(vocab.loc[b.tables["condition_occurrence"]["condition_source_concept_id"]])
    assert src_a == {"ICD10CM"} and src_b == {"SNOMED"}
    classes = a.vocabulary.concept.set_index("concept_id")["concept_class_id"]
    assert (
        classes.loc[a.tables["drug_exposure"]["drug_concept_id"]] == "Clinical Drug"
    ).mean() > 0.8
    assert set(classes.loc[b.tables["drug_exposure"]["drug_concept_id"]]) == {"Ingredient"}
    assert (
        b.truth.persons["age_at_enrolment"].mean() > a.truth.persons["age_at_enrolment"].mean() + 3
    )
    assert set(a.tables["person"]["person_id"]).isdisjoint(b.tables["person"]["person_id"])
    assert len(ACUTE) == 6


def test_written_cohort_passes_strict_omop_validation(cohort, tmp_path):
    """What the generator writes is a clean OMOP CDM: the reader's strict mode accepts it whole."""
    from ehrseq.data.events import check_events
    from ehrseq.data.omop import load_omop

    cohort.write_omop(tmp_path, fmt="csv")
    data = load_omop(tmp_path, mode="strict")
    report = data.report.to_frame()
    assert set(report["action"]) <= {"read", "kept"}
    n_rows = sum(len(cohort.tables[t]) for t in EVENT_TABLES)
    assert len(check_events(data.events)) >= n_rows


def test_true_survival_agrees_with_true_risk(cohort):
    truth = cohort.truth
    ids = truth.persons["person_id"].to_numpy()[:50]
    index = np.linspace(0, 900, 50)
    surv = truth.true_survival("heart_failure", index, n_months=24, person_ids=ids)
    assert surv.shape == (50, 24)
    assert (np.diff(surv, axis=1) <= 1e-12).all() and (surv > 0).all() and (surv <= 1).all()
    risk = truth.true_risk("heart_failure", index, horizon_days=24 * DAYS_PER_MONTH, person_ids=ids)
    np.testing.assert_allclose(1 - surv[:, -1], risk, rtol=1e-10)
    with pytest.raises(ValueError, match="unknown person"):
        truth.rows([-5])


# --------------------------------------------------------------------------------------------
# The interaction hazard setting
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def additive():
    return generate_cohort(SyntheticConfig(n_patients=1500, seed=3, hazard="additive"))


def test_interaction_is_the_default_and_additive_has_no_extra_terms(cohort, additive):
    assert cohort.truth.hazard_setting == "interaction"
    assert set(cohort.truth.terms) == set(HF_INTERACTION_LOG_HR)
    assert additive.truth.terms == {} and additive.truth.hazard_setting == "additive"
    nsaids = set(cohort.vocabulary.ids(NSAID_GROUP, "drug_clinical")) | set(
        cohort.vocabulary.ids(NSAID_GROUP, "drug_ingredient")
    )
    assert cohort.tables["drug_exposure"]["drug_concept_id"].isin(nsaids).sum() > 100
    assert not additive.tables["drug_exposure"]["drug_concept_id"].isin(nsaids).any()
    # the additive setting's own draws are untouched by the interaction processes
    assert len(additive.tables["visit_occurrence"]) < len(cohort.tables["visit_occurrence"])


def test_interaction_hazard_is_exactly_its_documented_terms(monkeypatch):
    """With every state term of HF_LOG_HR at 0, the log-rate is intercept + age + sex + the
    interaction terms exactly as Truth.terms returns them, month by month."""
    for k in HF_LOG_HR:
        if k not in ("intercept", "age_per_decade", "male"):
            monkeypatch.setitem(HF_LOG_HR, k, 0.0)
    c = generate_cohort(SyntheticConfig(n_patients=600, seed=5))
    p = c.truth.persons
    h = c.truth.hazard["heart_failure"].astype(np.float64)
    m = np.arange(h.shape[1])[None, :]
    dec = ((p["age_at_enrolment"].to_numpy() - 60.0) / 10.0)[:, None] + m / 120.0
    eta = (
        HF_LOG_HR["intercept"]
        + HF_LOG_HR["age_per_decade"] * dec
        + HF_LOG_HR["male"] * p["male"].to_numpy()[:, None]
        + sum(HF_INTERACTION_LOG_HR[t] * v.astype(np.float64) for t, v in c.truth.terms.items())
    )
    expected = -np.expm1(-np.exp(eta) / 12.0)
    # before the outcome, death or the data end, the hazard is live (then it is frozen)
    enrol = p["enrol_date"]
    stop = np.fmin(
        (p["hf_date"] - enrol).dt.days.to_numpy(float), (p["death_date"] - enrol).dt.days
    )
    stop = np.nan_to_num(stop, nan=np.inf)
    live = (m + 1) * DAYS_PER_MONTH < stop[:, None]
    live &= m < ((p["data_end_date"] - enrol).dt.days.to_numpy() / DAYS_PER_MONTH)[:, None] - 1
    assert live.sum() > 10_000
    np.testing.assert_allclose(h[live], expected[live], rtol=2e-6)
    for t in HF_INTERACTION_LOG_HR:  # every term is switched on for someone
        assert (c.truth.terms[t] != 0).any(), t


def test_no_antihypertensive_is_recorded_during_a_gap(cohort):
    gap = cohort.truth.terms["antihypertensive_gap"]
    assert gap.any()
    drug = cohort.tables["drug_exposure"]
    htn = set(cohort.vocabulary.ids("hypertension", "drug_clinical"))
    rx = drug.loc[drug["drug_concept_id"].isin(htn)]
    p = cohort.truth.persons.set_index("person_id")
    days = (
        rx["drug_exposure_start_date"] - p.loc[rx["person_id"], "enrol_date"].to_numpy()
    ).dt.days
    months = days.to_numpy() / DAYS_PER_MONTH
    month = np.floor(months).astype(int)
    # dates are whole days: leave out records within a day of a month boundary
    inside = np.abs(months - np.round(months)) > 1.0 / DAYS_PER_MONTH
    rows = cohort.truth.rows(rx["person_id"].to_numpy())
    assert inside.mean() > 0.9
    assert not gap[rows, np.minimum(month, gap.shape[1] - 1)][inside].any()


def test_order_term_needs_hypertension_recorded_before_diabetes(cohort):
    term = cohort.truth.terms["hypertension_then_diabetes"][:, -1]
    on = cohort.truth.onsets.set_index(["person_id", "disease"])["diagnosed_date"]
    persons = cohort.truth.persons["person_id"].to_numpy()
    rows = [
        (pid, on.get((pid, "hypertension"), pd.NaT), on.get((pid, "type2_diabetes"), pd.NaT))
        for pid in persons
    ]
    both = np.array([pd.notna(a) and pd.notna(b) for _, a, b in rows])
    htn_first = np.array([pd.notna(a) and pd.notna(b) and a < b for _, a, b in rows])
    dm_first = np.array([pd.notna(a) and pd.notna(b) and b < a for _, a, b in rows])
    assert both.sum() > 20 and dm_first.sum() > 5
    assert not term[dm_first].any()  # the reverse order never switches it on
    assert term[htn_first].mean() > 0.9  # (same-month diagnoses count as no order)


def test_natriuretic_peptide_rises_along_the_latent_slope(cohort):
    m = cohort.tables["measurement"]
    code = cohort.vocabulary.concept.set_index("concept_id")["concept_code"]
    bnp = m.loc[code.reindex(m["measurement_concept_id"]).to_numpy() == "33762-6"]
    p = cohort.truth.persons.set_index("person_id")
    t = (
        bnp["measurement_date"] - p.loc[bnp["person_id"], "enrol_date"].to_numpy()
    ).dt.days / 365.25
    df = pd.DataFrame(
        {
            "pid": bnp["person_id"].to_numpy(),
            "t": t.to_numpy(),
            "v": bnp["value_as_number"].to_numpy(),
        }
    )
    df = df.groupby("pid").filter(lambda d: len(d) >= 4 and np.ptp(d["t"]) > 1)
    fitted = df.groupby("pid").apply(
        lambda d: np.polyfit(d["t"], d["v"], 1)[0], include_groups=False
    )
    r = np.corrcoef(fitted.to_numpy(), p.loc[fitted.index, "bnp_slope"].to_numpy())[0, 1]
    assert len(fitted) > 100 and r > 0.5


def test_read_parquet_equals_pandas_with_repeated_and_missing_strings(tmp_path):
    frame = pd.DataFrame(
        {
            "domain": ["condition", "drug", "condition", "measurement"] * 50,
            "source": ["a", None, "b", "a"] * 50,  # missing: stays None, not NaN
            "value": np.arange(200, dtype=float),
        },
        index=pd.Index(np.arange(200) * 3, name="row"),
    )
    frame.to_parquet(tmp_path / "f.parquet")
    ours, theirs = read_parquet(tmp_path / "f.parquet"), pd.read_parquet(tmp_path / "f.parquet")
    pd.testing.assert_frame_equal(ours, theirs)
    assert ours["domain"].dtype == object and ours["source"].iloc[1] is None


def test_loaded_cohort_reads_each_table_on_first_use(tmp_path):
    cohort = generate_cohort(SyntheticConfig(n_patients=30, seed=3))
    cohort.save(tmp_path / "c")
    loaded = SyntheticCohort.load(tmp_path / "c")
    assert isinstance(loaded.tables, LazyTables)
    assert list(loaded.tables) == list(cohort.tables)  # names, nothing read yet
    assert "read: []" in repr(loaded.tables)
    pd.testing.assert_frame_equal(loaded.tables["measurement"], cohort.tables["measurement"])
    assert loaded.tables["measurement"] is loaded.tables["measurement"]  # read once
    assert "read: ['measurement']" in repr(loaded.tables)
    with pytest.raises(KeyError):
        loaded.tables["note"]
