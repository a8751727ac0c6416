r"""A synthetic OMOP CDM cohort whose outcome hazard is known exactly.

Real EHR data cannot ship with a book, so every chapter runs on this generator. Its story, in
order (all of it vectorised over patients; the only Python loop is over follow-up months):

1. **People.** Adults aged 40-85 at enrolment (dates between ``start_date`` and
   ``start_date + enrol_years``), sex, and a latent smoking status that is never recorded.
   Nobody has heart failure at enrolment (an incident-outcome cohort).
2. **Latent chronic diseases** (:data:`CHRONIC`) present at enrolment with an age-, sex- and
   comorbidity-dependent probability, then starting during follow-up with a monthly hazard
   :math:`1-\exp(-r/12)`, :math:`\log r = \log r_0 + a\,(\text{age}-60)/10 + s\,\text{male}
   + \sum_j g_j D_j`, where the :math:`D_j` are its parent diseases (obesity raises
   hypertension and diabetes, diabetes and hypertension raise CKD, ...: :data:`DISEASES`).
3. **Acute episodes** (:data:`ACUTE`): pneumonia, UTI, influenza (seasonal), myocardial
   infarction (mostly in coronary disease), fracture, gastroenteritis; each brings a visit.
4. **Visits**: outpatient and inpatient visits as a Poisson process per month whose rate rises
   with the number of active diseases and with age; inpatient stays last 1-10 days; emergency
   visits for acute episodes.
5. **Diagnosis and treatment**: a disease is first recorded at a visit some time after onset
   (under-diagnosis and delay), then recorded at later visits with a disease-specific
   probability; once diagnosed it is treated with a fixed per-patient propensity. Every drug
   and disease-specific procedure row carries ``linked_condition_occurrence_id`` pointing at the
   diagnosis row it treats, recorded at the same visit (a MiME-style link; routine care such
   as visit codes and vaccines carries none). :meth:`SyntheticCohort.omop_tables` leaves this
   column out, so a plain OMOP reader never sees it.
6. **Labs** (LOINC, with units): value = reference mean + reference sd x (patient effect +
   noise + disease shifts - treatment effect); e.g. HbA1c rises with diabetes and falls on
   treatment, so labs carry signal about diseases that are not yet diagnosed.
7. **Outcomes**. Heart failure onset (first occurrence; recorded on the onset day, at an
   admission or an outpatient visit) and death, each with a monthly hazard
   :math:`h_m = 1 - \exp(-e^{\eta_m}/12)` whose log-rate :math:`\eta_m` is a documented
   linear function of the history at the start of month :math:`m` (:data:`HF_LOG_HR`,
   :data:`DEATH_LOG_HR`): age, sex, active diseases, a myocardial infarction in the last 12
   months, pneumonia in the last 3 months, and (for heart failure) treated hypertension.
8. **Censoring** is non-informative: administrative end of data plus an exponential dropout
   independent of everything else. For the heart-failure outcome, death is a competing risk
   (the true hazard returned is the cause-specific one).

The ground truth (:class:`Truth`) comes back beside the tables: each patient's monthly hazard
for both outcomes (the hazard that generated the events, so it knows latent onsets the records
do not show: a ceiling, not an achievable target), the latent onsets, the baseline covariates,
the coefficients, and the concept-to-group assignment.

The vocabulary is the project's own (:mod:`ehrseq.data.concepts`). ``site="B"`` runs the same
story at a second site that records diagnoses with SNOMED source codes instead of ICD-10-CM,
drugs at ingredient instead of clinical-drug granularity, with an older, more obese population
that visits more often: :func:`generate_two_sites`.

Derived in the chapter "The synthetic cohort" (``notebooks/01_synthetic_cohort.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ehrseq.data.concepts import Vocabulary, load_vocabulary
from ehrseq.runtime import progress as _progress

__all__ = [
    "SyntheticConfig",
    "SyntheticCohort",
    "LazyTables",
    "read_parquet",
    "Truth",
    "generate_cohort",
    "generate_two_sites",
    "CHRONIC",
    "ACUTE",
    "BACKGROUND",
    "DISEASES",
    "HF_LOG_HR",
    "HF_INTERACTION_LOG_HR",
    "INTERACTION",
    "HAZARDS",
    "NSAID_GROUP",
    "OWN_CODE_SHARE",
    "MALE",
    "FEMALE",
    "DEATH_LOG_HR",
    "DAYS_PER_MONTH",
]

DAYS_PER_MONTH = 365.25 / 12
EHR_TYPE = 32817  # OMOP Type Concept "EHR"
VISIT_OP, VISIT_IP, VISIT_ER = 9202, 9201, 9203
MALE, FEMALE = 8507, 8532
BNP_TRAJECTORY = ("33762-6", "30934-4")  # NT-proBNP, BNP: values follow the latent slope
NSAID_TRIG = 7  # visit trigger of an NSAID course (after the six acute kinds and HF onset)
#: Chance that a record of a chronic disease uses the patient's own code for it (else a code
#: of the disease drawn at random, which may be the same one).
OWN_CODE_SHARE = 0.85
NSAID_GROUP = "osteoarthritis"  # the background group whose drugs are the NSAIDs


@dataclass(frozen=True)
class Disease:
    """One latent chronic disease: prevalence at enrolment and onset rate afterwards.

    ``prev_logit`` is the log-odds of being present at enrolment for a 60-year-old woman with
    no parent disease who does not smoke; ``rate`` the yearly onset rate for the same person;
    ``age`` and ``male`` act on both (per decade, log scale); ``parents`` are log-odds /
    log-rate increments given each parent disease; ``smoker`` likewise.
    """

    prev_logit: float
    rate: float
    age: float
    male: float = 0.0
    smoker: float = 0.0
    parents: dict[str, float] = field(default_factory=dict)
    p_diagnose: float = 0.5  # chance that one visit of an undiagnosed, active case records it
    p_record: float = 0.5  # chance that a later visit records it again
    p_treat: float = 0.7  # share of diagnosed patients who are treated


# The chronic diseases in topological order (parents before children).
DISEASES: dict[str, Disease] = {
    "obesity": Disease(-0.7, 0.010, 0.0, p_diagnose=0.3, p_record=0.3, p_treat=0.2),
    "hypertension": Disease(
        -0.6, 0.030, 0.5, 0.1, parents={"obesity": 0.8}, p_record=0.6, p_treat=0.8
    ),
    "hyperlipidemia": Disease(-0.9, 0.020, 0.3, 0.2, parents={"obesity": 0.4}, p_treat=0.7),
    "type2_diabetes": Disease(
        -2.3, 0.008, 0.3, 0.2, parents={"obesity": 1.0, "hyperlipidemia": 0.3}, p_treat=0.85
    ),
    "chronic_kidney_disease": Disease(
        -3.1,
        0.006,
        0.6,
        parents={"type2_diabetes": 0.9, "hypertension": 0.7},
        p_diagnose=0.35,
        p_treat=0.5,
    ),
    "coronary_artery_disease": Disease(
        -3.4,
        0.006,
        0.6,
        0.6,
        0.7,
        parents={"hypertension": 0.5, "hyperlipidemia": 0.7, "type2_diabetes": 0.6},
        p_treat=0.85,
    ),
    "atrial_fibrillation": Disease(
        -3.4, 0.004, 0.8, 0.3, parents={"hypertension": 0.5}, p_diagnose=0.6, p_treat=0.8
    ),
    "copd": Disease(-3.4, 0.004, 0.4, 0.1, 1.8, p_treat=0.7),
    "depression": Disease(-2.2, 0.010, -0.1, -0.5, p_diagnose=0.4, p_treat=0.6),
}
CHRONIC: tuple[str, ...] = (*DISEASES, "heart_failure")
ACUTE: tuple[str, ...] = (
    "pneumonia",
    "urinary_tract_infection",
    "influenza",
    "acute_myocardial_infarction",
    "fracture",
    "gastroenteritis",
)
BACKGROUND: tuple[str, ...] = (
    "low_back_pain",
    "allergic_rhinitis",
    "osteoarthritis",
    "gerd",
    "headache",
    "insomnia",
    "dermatitis",
    "hypothyroidism",
    "anxiety",
    "sinusitis",
    "conjunctivitis",
    "vitamin_d_deficiency",
)

# Acute episodes: yearly rate at 60 (log-rate effects per decade of age, male, and diseases),
# and the chance the episode's visit is an admission.
ACUTE_RATES: dict[str, tuple[float, float, float, dict[str, float], float]] = {
    "pneumonia": (0.02, 0.4, 0.2, {"copd": 1.2, "heart_failure": 0.7}, 0.35),
    "urinary_tract_infection": (0.05, 0.2, -1.0, {"type2_diabetes": 0.4}, 0.05),
    "influenza": (0.04, 0.0, 0.0, {"copd": 0.5}, 0.05),
    "acute_myocardial_infarction": (
        0.0015,
        0.3,
        0.5,
        {"coronary_artery_disease": 2.3, "type2_diabetes": 0.3},
        0.95,
    ),
    "fracture": (0.01, 0.4, -0.4, {}, 0.3),
    "gastroenteritis": (0.04, -0.2, 0.0, {}, 0.05),
}

# log-hazard ratios of the outcomes (yearly rate exp(eta); monthly hazard 1 - exp(-rate/12)).
HF_LOG_HR: dict[str, float] = {
    "intercept": math.log(0.0025),  # yearly rate at age 60, female, no disease
    "age_per_decade": 0.55,  # (age - 60) / 10
    "male": 0.3,
    "hypertension": 0.5,
    "coronary_artery_disease": 0.8,
    "atrial_fibrillation": 0.8,
    "type2_diabetes": 0.5,
    "chronic_kidney_disease": 0.6,
    "copd": 0.4,
    "obesity": 0.3,
    "hyperlipidemia": 0.0,  # acts only through coronary disease
    "depression": 0.0,  # a disease with no effect on the outcome
    "recent_mi": 1.2,  # myocardial infarction in the previous 12 months
    "recent_pneumonia": 0.7,  # pneumonia in the previous 3 months
    "treated_hypertension": -0.4,  # diagnosed and treated hypertension
}
DEATH_LOG_HR: dict[str, float] = {
    "intercept": math.log(0.0015),
    "age_per_decade": 0.8,
    "male": 0.35,
    "smoker": 0.3,
    "heart_failure": 1.3,
    "chronic_kidney_disease": 0.6,
    "copd": 0.6,
    "coronary_artery_disease": 0.3,
    "type2_diabetes": 0.3,
    "recent_mi": 1.0,
    "recent_pneumonia": 0.5,
}

#: The hazard settings of :class:`SyntheticConfig`: ``"additive"`` (the log-rate is a sum of
#: present/absent states, :data:`HF_LOG_HR`; a bag-of-codes Cox model expresses it almost
#: fully) and ``"interaction"`` (the default: :data:`HF_LOG_HR` plus the order- and
#: time-dependent terms of :data:`HF_INTERACTION_LOG_HR`, which only a model that reads
#: when things happened, and in which order, can use).
HAZARDS = ("additive", "interaction")

# The extra heart-failure terms of the "interaction" setting (log-hazard ratios; each term's
# covariate path is returned exactly in ``Truth.terms``):
HF_INTERACTION_LOG_HR: dict[str, float] = {
    # an NSAID course in the last 90 days while chronic kidney disease is active (the same
    # drug longer ago, or without kidney disease, adds nothing)
    "nsaid_90d_x_ckd": 2.0,
    # the patient's natriuretic-peptide trajectory: slope of NT-proBNP/BNP in reference SD per
    # year (the measured values rise along it; the latest level alone mixes it with the
    # patient's own baseline)
    "bnp_slope": 0.8,
    # years since type 2 diabetes was first recorded, capped at 4 (the effect grows with
    # disease duration)
    "diabetes_years": 0.35,
    # a treated hypertensive patient who stopped refilling the antihypertensive (treatment
    # interruption: no antihypertensive records while it lasts)
    "antihypertensive_gap": 1.2,
    # hypertension recorded before type 2 diabetes (diabetes on top of known hypertension);
    # the reverse order adds nothing: an order effect
    "hypertension_then_diabetes": 1.5,
}
#: Settings of the latent processes behind :data:`HF_INTERACTION_LOG_HR`.
INTERACTION = {
    # the interaction setting halves the state terms of HF_LOG_HR (every term but the
    # intercept, age and sex), so the order- and time-dependent terms carry more of the signal
    "state_scale": 0.5,
    "nsaid_user_share": 0.35,  # people who take NSAID courses for joint pain
    "nsaid_courses_per_year": 3.0,  # among them (others: 0.1)
    "nsaid_window_days": 90.0,
    "bnp_slope_sd": 1.2,  # NT-proBNP slope per person, N(0, sd) in reference SD per year
    "bnp_offset_sd": 1.5,  # and its own level, N(0, sd), on top of the shared patient effect
    "bnp_centre_years": 1.0,  # the trajectory crosses the offset this long after enrolment
    "bnp_noise_sd": 0.3,  # measurement noise of the natriuretic peptides (other labs: 0.8)
    "bnp_visit_share": 0.9,  # chance a visit measures NT-proBNP
    "diabetes_years_cap": 4.0,
    "gap_start_per_month": 0.04,  # a treated hypertensive stops refilling
    "gap_end_per_month": 0.10,  # and restarts
    "antihypertensive_record": 0.9,  # chance a visit records the antihypertensive while taken
}

# Lab shifts, in reference standard deviations: LOINC code -> {disease: (shift, treated shift)}.
LAB_EFFECTS: dict[str, dict[str, tuple[float, float]]] = {
    "2345-7": {"type2_diabetes": (2.5, -1.2)},  # glucose
    "4548-4": {"type2_diabetes": (3.0, -1.5)},  # HbA1c
    "2160-0": {"chronic_kidney_disease": (2.5, 0.0), "heart_failure": (0.5, 0.0)},  # creatinine
    "33914-3": {"chronic_kidney_disease": (-2.5, 0.0)},  # eGFR (MDRD)
    "62238-1": {"chronic_kidney_disease": (-2.5, 0.0)},  # eGFR (CKD-EPI)
    "13457-7": {"hyperlipidemia": (2.0, -1.5)},  # LDL (calculated)
    "18262-6": {"hyperlipidemia": (2.0, -1.5)},  # LDL (direct)
    "2093-3": {"hyperlipidemia": (1.5, -1.0)},  # total cholesterol
    "8480-6": {"hypertension": (2.0, -1.2)},  # systolic BP
    "8462-4": {"hypertension": (1.5, -1.0)},  # diastolic BP
    "39156-5": {"obesity": (2.5, -0.3)},  # BMI
    "29463-7": {"obesity": (2.0, -0.3)},  # body weight
    "30934-4": {  # BNP
        "heart_failure": (3.0, -0.8),
        "coronary_artery_disease": (0.5, 0.0),
        "atrial_fibrillation": (0.7, 0.0),
    },
    "33762-6": {  # NT-proBNP
        "heart_failure": (3.0, -0.8),
        "coronary_artery_disease": (0.5, 0.0),
        "atrial_fibrillation": (0.7, 0.0),
    },
    "8867-4": {"atrial_fibrillation": (1.5, -1.0)},  # heart rate
    "718-7": {"chronic_kidney_disease": (-1.0, 0.0)},  # hemoglobin
    "2823-3": {"chronic_kidney_disease": (1.0, 0.0)},  # potassium
    "19926-5": {"copd": (-2.5, 0.3)},  # FEV1/FVC
    "44261-6": {"depression": (2.5, -1.0)},  # PHQ-9
    "10839-9": {"acute_myocardial_infarction": (4.0, 0.0)},  # troponin I
    "1988-5": {"pneumonia": (3.0, 0.0)},  # CRP
    "6690-2": {"pneumonia": (1.5, 0.0)},  # WBC
}
VITALS = ("8480-6", "8462-4", "8867-4", "29463-7", "39156-5")
PANEL = ("2345-7", "2160-0", "2951-2", "2823-3", "718-7", "6690-2")
ROUTINE_EM = {"op": ("99212", "99213", "99214", "99215"), "ip": ("99222", "99223")}
ROUTINE_EM_ER = ("99283", "99284", "99285")


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic cohort. Defaults give site A.

    Attributes:
        n_patients: people enrolled.
        seed: the one seed; the same config gives identical tables.
        start_date: first enrolment date (ISO).
        enrol_years: enrolment is spread uniformly over this many years.
        followup_years: data end ``start_date + enrol_years + followup_years`` (administrative
            censoring).
        age_min, age_max: age range at enrolment (years).
        dropout_per_year: yearly rate of an exponential dropout, independent of everything.
        visit_rate: outpatient visits per year of a healthy 60-year-old.
        hazard_scale: multiplies every log-hazard ratio of the outcome hazards (0 removes the
            signal; the intercept stays).
        hazard: ``"interaction"`` (default) or ``"additive"``: which heart-failure hazard
            generates the outcome (:data:`HAZARDS`). The interaction setting adds NSAID
            courses, an NT-proBNP trajectory and treatment gaps to the story, on a random
            stream of their own, so the additive setting draws exactly as before.
        site: ``"A"`` (ICD-10-CM diagnoses, clinical drugs) or ``"B"`` (SNOMED source codes,
            drug ingredients, older and more obese population, more visits).
        age_shift, obesity_shift, visit_rate_scale: population shift (site B sets them).
        person_id_offset: added to person ids (site B uses 10,000,000 so ids never collide).
    """

    n_patients: int = 2000
    seed: int = 0
    start_date: str = "2012-01-01"
    enrol_years: float = 3.0
    followup_years: float = 6.0
    age_min: float = 40.0
    age_max: float = 85.0
    dropout_per_year: float = 0.04
    visit_rate: float = 2.0
    hazard_scale: float = 1.0
    hazard: str = "interaction"
    site: str = "A"
    age_shift: float = 0.0
    obesity_shift: float = 0.0
    visit_rate_scale: float = 1.0
    person_id_offset: int = 0

    def validate(self) -> SyntheticConfig:
        """Raise ``ValueError`` naming the first parameter that does not make sense."""
        checks = [
            (
                isinstance(self.n_patients, int | np.integer) and self.n_patients >= 1,
                "n_patients must be an integer >= 1",
            ),
            (
                isinstance(self.seed, int | np.integer) and self.seed >= 0,
                "seed must be an integer >= 0",
            ),
            (self.enrol_years > 0, "enrol_years must be > 0"),
            (self.followup_years > 0, "followup_years must be > 0"),
            (18 <= self.age_min < self.age_max <= 100, "need 18 <= age_min < age_max <= 100"),
            (self.dropout_per_year >= 0, "dropout_per_year must be >= 0"),
            (self.visit_rate > 0, "visit_rate must be > 0"),
            (self.hazard_scale >= 0, "hazard_scale must be >= 0"),
            (self.hazard in HAZARDS, f"hazard must be one of {HAZARDS}"),
            (self.site in ("A", "B"), "site must be 'A' or 'B'"),
            (self.visit_rate_scale > 0, "visit_rate_scale must be > 0"),
            (self.person_id_offset >= 0, "person_id_offset must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"SyntheticConfig: {message} (got {self})")
        try:
            pd.Timestamp(self.start_date)
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"SyntheticConfig: start_date {self.start_date!r} is not a date"
            ) from err
        return self


@dataclass
class Truth:
    """What generated the data, returned beside the tables (never shown to a model).

    Attributes:
        persons: one row per person: ``person_id``, ``enrol_date``, ``age_at_enrolment``,
            ``male``, ``smoker``, ``obs_end_date``, ``end_reason`` (``admin``, ``dropout``,
            ``death``), ``data_end_date`` (administrative end), and per outcome the true event date (``hf_date``, ``death_date``;
            NaT if none before the data end, whether or not it was observed).
        baseline: the true covariates at enrolment (age per decade centred at 60, male, smoker,
            each chronic disease present at enrolment): the inputs of the Cox check.
        onsets: long frame ``person_id``, ``disease``, ``onset_date``, ``prevalent`` (present at
            enrolment), ``diagnosed_date`` (first record; NaT if never).
        hazard: ``{"heart_failure": (N, M), "death": (N, M)}`` monthly hazards; month ``m`` of a
            person covers days ``[m, m+1) * 365.25/12`` after enrolment. After the event the
            hazard is frozen at its value in the event month; after death both are frozen.
        concept_groups: ``concept_id``, ``group``, ``role`` for every clinical concept.
        coefficients: ``{"heart_failure": HF_LOG_HR, "death": DEATH_LOG_HR}`` as used (scaled);
            in the interaction setting the heart-failure table also holds
            :data:`HF_INTERACTION_LOG_HR`.
        terms: interaction setting only (else empty): the covariate of every
            :data:`HF_INTERACTION_LOG_HR` term per person and month, ``(N, M)``, as it entered
            the log-rate at the start of the month (``coefficient * covariate`` is the term).
            ``persons`` then also holds each person's latent ``bnp_slope`` (SD/year) and
            ``nsaid_courses_per_year``.
        hazard_setting: ``"additive"`` or ``"interaction"``.
    """

    persons: pd.DataFrame
    baseline: pd.DataFrame
    onsets: pd.DataFrame
    hazard: dict[str, np.ndarray]
    concept_groups: pd.DataFrame
    coefficients: dict[str, dict[str, float]]
    terms: dict[str, np.ndarray] = field(default_factory=dict)
    hazard_setting: str = "additive"

    def true_risk(
        self,
        outcome: str,
        index_days: np.ndarray | float,
        horizon_days: float,
        person_ids: np.ndarray | None = None,
    ) -> np.ndarray:
        r"""True probability of the outcome in ``(index, index + horizon]`` from the hazard path.

        .. math:: \text{risk} = 1 - \prod_{m \in \text{window}} (1 - h_m)

        with whole months ``m`` whose start lies in the window (index and horizon are rounded
        to months). Uses the realised latent path (it knows future onsets), so its C-index is a
        ceiling for any model that reads the records.

        Args:
            outcome: ``"heart_failure"`` or ``"death"``.
            index_days: days after enrolment of the prediction time, scalar or per person.
            horizon_days: length of the window in days (> 0).
            person_ids: the persons (default: all, in ``persons`` order).

        Shapes:
            index_days: () or (n,); returns (n,).

        Raises:
            ValueError: unknown outcome, unknown person ids, negative index, horizon <= 0.
        """
        if outcome not in self.hazard:
            raise ValueError(f"outcome must be one of {sorted(self.hazard)}, got {outcome!r}")
        if horizon_days <= 0:
            raise ValueError(f"horizon_days must be > 0, got {horizon_days}")
        h = self.hazard[outcome]
        rows = self._rows(person_ids)
        index = np.broadcast_to(np.asarray(index_days, dtype=float), rows.shape)
        if (index < 0).any():
            raise ValueError("index_days must be >= 0 (days after enrolment)")
        m0 = np.ceil(index / DAYS_PER_MONTH - 1e-9).astype(int)
        m1 = np.ceil((index + horizon_days) / DAYS_PER_MONTH - 1e-9).astype(int)
        log_s = np.concatenate(
            [np.zeros((h.shape[0], 1)), np.cumsum(np.log1p(-h.astype(np.float64)), axis=1)], axis=1
        )
        m0 = np.clip(m0, 0, h.shape[1])
        m1 = np.clip(m1, 0, h.shape[1])
        return 1.0 - np.exp(log_s[rows, m1] - log_s[rows, m0])

    def true_survival(
        self,
        outcome: str,
        index_days: np.ndarray | float,
        n_months: int,
        person_ids: np.ndarray | None = None,
    ) -> np.ndarray:
        r"""True survival after the prediction time, month by month, from the hazard path.

        .. math:: S(k) = \prod_{m = m_0}^{m_0 + k - 1} (1 - h_m), \quad k = 1, \dots, K

        where :math:`m_0` is the first whole month after the index. Column ``k - 1`` is the
        probability of no event by ``k * 365.25/12`` days after the index (months past the
        data end count as event-free).

        Args:
            outcome: ``"heart_failure"`` or ``"death"``.
            index_days: days after enrolment of the prediction time, scalar or per person.
            n_months: number of months ``K`` (>= 1).
            person_ids: the persons (default: all, in ``persons`` order).

        Shapes:
            returns (n, K).

        Raises:
            ValueError: unknown outcome or persons, negative index, ``n_months < 1``.
        """
        if outcome not in self.hazard:
            raise ValueError(f"outcome must be one of {sorted(self.hazard)}, got {outcome!r}")
        if n_months < 1:
            raise ValueError(f"n_months must be >= 1, got {n_months}")
        h = self.hazard[outcome]
        rows = self.rows(person_ids)
        index = np.broadcast_to(np.asarray(index_days, dtype=float), rows.shape)
        if (index < 0).any():
            raise ValueError("index_days must be >= 0 (days after enrolment)")
        m0 = np.ceil(index / DAYS_PER_MONTH - 1e-9).astype(int)
        cols = m0[:, None] + np.arange(n_months)[None, :]  # (n, K)
        inside = cols < h.shape[1]
        hk = np.where(inside, h[rows[:, None], np.minimum(cols, h.shape[1] - 1)], 0.0)
        return np.exp(np.cumsum(np.log1p(-hk.astype(np.float64)), axis=1))

    def rows(self, person_ids: np.ndarray | None = None) -> np.ndarray:
        """Row of each person in ``persons`` and in the hazard arrays.

        Raises:
            ValueError: if a person id is unknown.
        """
        return self._rows(person_ids)

    def _rows(self, person_ids: np.ndarray | None) -> np.ndarray:
        if person_ids is None:
            return np.arange(len(self.persons))
        pos = pd.Index(self.persons["person_id"]).get_indexer(np.asarray(person_ids))
        if (pos < 0).any():
            bad = np.asarray(person_ids)[pos < 0][:5]
            raise ValueError(f"unknown person ids, e.g. {bad.tolist()}")
        return pos


_TRUTH_FRAMES = ("persons", "baseline", "onsets", "concept_groups")


def read_parquet(path) -> pd.DataFrame:
    """``pd.read_parquet(path)``, equal frame, faster on repeated strings.

    A string column without missing values is read dictionary-encoded and turned back into
    the same ``object`` column: one Python string per distinct value instead of one per row
    (a cached task's 5 million events: 1.1 s instead of 2.8 s).
    """
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    # a column pandas wrote as categorical comes back categorical either way: leave it
    kinds = {c["name"]: c["pandas_type"] for c in (schema.pandas_metadata or {}).get("columns", [])}
    strings = [f.name for f in schema if _is_string(f.type) and kinds.get(f.name) != "categorical"]
    table = pq.read_table(path, read_dictionary=strings)
    # a missing value would come back as NaN, not None: leave such columns plain
    nulls = [c for c in strings if table.column(c).null_count]
    if nulls:
        table = pq.read_table(path, read_dictionary=[c for c in strings if c not in nulls])
    frame = table.to_pandas()
    for name in strings:
        if name in frame.columns and isinstance(frame[name].dtype, pd.CategoricalDtype):
            frame[name] = frame[name].astype(object)
    return frame


def _is_string(arrow_type) -> bool:
    """Whether an Arrow type is a (large) string."""
    import pyarrow as pa

    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


class LazyTables(Mapping):
    """Table name -> frame, each read by its loader on first use and kept.

    What :meth:`SyntheticCohort.load` returns as ``tables``: iterating over the names reads
    nothing; ``items()``, ``values()`` and ``[name]`` read the tables they reach.
    """

    def __init__(self, loaders: Mapping[str, Callable[[], pd.DataFrame]]):
        self._loaders = dict(loaders)
        self._frames: dict[str, pd.DataFrame] = {}

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self._frames:
            self._frames[name] = self._loaders[name]()  # KeyError for an unknown name
        return self._frames[name]

    def __iter__(self):
        return iter(self._loaders)

    def __len__(self) -> int:
        return len(self._loaders)

    def __repr__(self) -> str:
        read = [n for n in self._loaders if n in self._frames]
        return f"LazyTables({list(self._loaders)}, read: {read})"


@dataclass
class SyntheticCohort:
    """The generated OMOP CDM tables (``tables``), the vocabulary, and the ground truth.

    ``tables`` maps a table name to its frame: a dict when generated, a
    :class:`LazyTables` that reads each table on first use when :meth:`load` ed.
    """

    config: SyntheticConfig
    tables: Mapping[str, pd.DataFrame]
    vocabulary: Vocabulary
    truth: Truth

    LINK_COLUMN = "linked_condition_occurrence_id"

    def omop_tables(self, include_vocabulary: bool = True) -> dict[str, pd.DataFrame]:
        """The tables as a plain OMOP CDM export: the generator's link column removed."""
        out = {
            name: df.drop(columns=[self.LINK_COLUMN], errors="ignore")
            for name, df in self.tables.items()
        }
        if include_vocabulary:
            out["concept"] = self.vocabulary.concept.drop(columns=["description"], errors="ignore")
            out["concept_relationship"] = self.vocabulary.relationship
        return out

    def write_omop(self, folder, fmt: str = "parquet", include_vocabulary: bool = True) -> None:
        """Write :meth:`omop_tables` as one ``parquet`` or ``csv`` file per table into ``folder``."""
        from pathlib import Path

        if fmt not in ("parquet", "csv"):
            raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, df in self.omop_tables(include_vocabulary).items():
            if fmt == "parquet":
                df.to_parquet(folder / f"{name}.parquet", index=False)
            else:
                df.to_csv(folder / f"{name}.csv", index=False)

    def save(self, folder) -> None:
        """Write the cohort (tables, ground truth, config) into ``folder``; see :meth:`load`.

        Tables and the truth's frames become parquet files, its arrays one ``.npz`` (read
        back without pickle), the config and coefficients ``cohort.json``. The vocabulary
        is not written: :meth:`load` reads it from its data files.
        """
        import json
        from pathlib import Path

        folder = Path(folder)
        (folder / "tables").mkdir(parents=True, exist_ok=True)
        dtypes = {}  # parquet keeps dates in ms: the exact dtypes are restored on load
        for name, df in self.tables.items():
            df.to_parquet(folder / "tables" / f"{name}.parquet")
            dtypes[f"tables/{name}"] = df.dtypes.astype(str).to_dict()
        t = self.truth
        for name in _TRUTH_FRAMES:
            getattr(t, name).to_parquet(folder / f"truth_{name}.parquet")
            dtypes[f"truth_{name}"] = getattr(t, name).dtypes.astype(str).to_dict()
        arrays = {f"hazard.{k}": v for k, v in t.hazard.items()}
        arrays |= {f"terms.{k}": v for k, v in t.terms.items()}
        np.savez(folder / "truth_arrays.npz", **arrays)
        meta = {
            "config": dataclasses.asdict(self.config),
            "coefficients": t.coefficients,
            "hazard_setting": t.hazard_setting,
            "tables": list(self.tables),
            "dtypes": dtypes,
        }
        (folder / "cohort.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder, vocabulary: Vocabulary | None = None) -> SyntheticCohort:
        """The cohort :meth:`save` wrote into ``folder`` (equal frames and arrays).

        Args:
            folder: what :meth:`save` wrote.
            vocabulary: the vocabulary the cohort was generated with (default
                :func:`~ehrseq.data.concepts.load_vocabulary`).

        Raises:
            FileNotFoundError: if a file of the cohort is missing.
        """
        import json
        from pathlib import Path

        folder = Path(folder)
        meta = json.loads((folder / "cohort.json").read_text())

        def read(stem: str) -> pd.DataFrame:
            return read_parquet(folder / f"{stem}.parquet").astype(meta["dtypes"][stem])

        # most readers of a saved cohort need only its truth: tables are read when used
        tables = LazyTables({n: functools.partial(read, f"tables/{n}") for n in meta["tables"]})
        frames = {n: read(f"truth_{n}") for n in _TRUTH_FRAMES}
        with np.load(folder / "truth_arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        truth = Truth(
            **frames,
            hazard={k[7:]: v for k, v in arrays.items() if k.startswith("hazard.")},
            coefficients=meta["coefficients"],
            terms={k[6:]: v for k, v in arrays.items() if k.startswith("terms.")},
            hazard_setting=meta["hazard_setting"],
        )
        config = SyntheticConfig(**meta["config"])
        return cls(config, tables, vocabulary or load_vocabulary(), truth)

    def summary(self) -> pd.DataFrame:
        """Rows per table and persons with at least one row."""
        return pd.DataFrame(
            [
                {"table": name, "rows": len(df), "persons": df["person_id"].nunique()}
                for name, df in self.tables.items()
            ]
        )


# --------------------------------------------------------------------------------------------
# Codebook: the vocabulary resolved into arrays the generator can index.
# --------------------------------------------------------------------------------------------


@dataclass
class _Group:
    conditions: np.ndarray  # standard condition concept ids
    sources: np.ndarray  # per condition: ICD-10-CM source id (0 if none)
    ingredients: np.ndarray
    clinical: list[np.ndarray]  # per ingredient: clinical drug ids (may be empty)
    procedures: np.ndarray
    labs: np.ndarray  # measurement concept ids of this group


class _Codebook:
    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        maps = vocab.maps_to()
        parents = vocab.parents()
        src_of: dict[int, int] = {}
        ann = vocab.annotation
        sources = ann.loc[ann["role"] == "condition_source", "concept_id"].astype(int)
        for s in sources:
            std = maps.get(s)
            if std is not None and not isinstance(std, pd.Series):
                src_of.setdefault(int(std), int(s))
        self.groups: dict[str, _Group] = {}
        for g in (*CHRONIC, *ACUTE, *BACKGROUND):
            conds = np.array(vocab.ids(g, "condition"), dtype=np.int64)
            if len(conds) == 0:
                raise ValueError(f"vocabulary: group {g!r} has no 'condition' concepts")
            ingredients = np.array(vocab.ids(g, "drug_ingredient"), dtype=np.int64)
            clinical_ids = vocab.ids(g, "drug_clinical")
            by_ing: dict[int, list[int]] = {int(i): [] for i in ingredients}
            for c in clinical_ids:
                p = parents.get(c)
                for q in np.atleast_1d(p if p is not None else []):
                    if int(q) in by_ing:
                        by_ing[int(q)].append(int(c))
            self.groups[g] = _Group(
                conditions=conds,
                sources=np.array([src_of.get(int(c), 0) for c in conds], dtype=np.int64),
                ingredients=ingredients,
                clinical=[np.array(by_ing[int(i)], dtype=np.int64) for i in ingredients],
                procedures=np.array(
                    vocab.ids(g, "procedure") + vocab.ids(g, "procedure_pcs"), dtype=np.int64
                ),
                labs=np.array(vocab.ids(g, "measurement"), dtype=np.int64),
            )
        code = vocab.concept.set_index("concept_id")["concept_code"]
        self.code = code
        self.vocabulary_id = vocab.concept.set_index("concept_id")["vocabulary_id"]
        meas = ann.loc[ann["role"] == "measurement"].set_index("concept_id")
        self.lab_params = meas[
            ["unit_concept_id", "ref_mean", "ref_sd", "min_value", "max_value", "decimals"]
        ]
        self.loinc_to_id = {code[i]: int(i) for i in meas.index}

    def cpt(self, codes) -> np.ndarray:
        ids = [self.vocab.by_code("CPT4", c) for c in codes]
        return np.array([i for i in ids if i is not None], dtype=np.int64)


# --------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------


def generate_two_sites(
    config: SyntheticConfig | None = None, n_patients_b: int | None = None
) -> tuple[SyntheticCohort, SyntheticCohort]:
    """Site A (``config``) and site B: the same story, another vocabulary and population.

    Site B records diagnoses with SNOMED source codes instead of ICD-10-CM, drugs as RxNorm
    ingredients instead of clinical drugs, and has an older (+5 years), more obese population
    that visits 30 % more often; its person ids start at 10,000,000 and its seed differs.
    """
    a = (config or SyntheticConfig()).validate()
    if a.site != "A":
        raise ValueError("generate_two_sites: pass the site A config (site='A')")
    b = dataclasses.replace(
        a,
        site="B",
        seed=a.seed + 1_000_003,
        n_patients=n_patients_b or a.n_patients,
        age_shift=5.0,
        obesity_shift=0.5,
        visit_rate_scale=1.3,
        person_id_offset=10_000_000,
    )
    return generate_cohort(a), generate_cohort(b)


def generate_cohort(
    config: SyntheticConfig | None = None,
    vocabulary: Vocabulary | None = None,
    progress: bool = False,
) -> SyntheticCohort:
    """Generate the synthetic OMOP cohort and its ground truth (story in the module docstring).

    Args:
        config: parameters (default :class:`SyntheticConfig`).
        vocabulary: default :func:`ehrseq.data.concepts.load_vocabulary`.
        progress: show a progress bar over follow-up months.

    Raises:
        ValueError: on parameters that do not make sense, or a vocabulary that lacks a group.
    """
    cfg = (config or SyntheticConfig()).validate()
    vocab = vocabulary or load_vocabulary()
    book = _Codebook(vocab)
    rng = np.random.default_rng(cfg.seed)
    sim = _simulate_latent(cfg, rng, progress)
    return _write_tables(cfg, vocab, book, sim, rng)


def _simulate_latent(cfg: SyntheticConfig, rng: np.random.Generator, progress: bool) -> dict:
    """Month-by-month latent simulation, vectorised over people."""
    n = int(cfg.n_patients)
    scale = cfg.hazard_scale
    total_months = int(round((cfg.enrol_years + cfg.followup_years) * 12))
    enrol_month = rng.integers(0, int(round(cfg.enrol_years * 12)), size=n)
    enrol_day = enrol_month * DAYS_PER_MONTH + rng.uniform(0, DAYS_PER_MONTH, size=n)
    admin_months = total_months - enrol_month  # months of possible follow-up per person
    horizon = int(admin_months.max())
    admin_day = total_months * DAYS_PER_MONTH - enrol_day  # days after enrolment to data end

    male = rng.random(n) < 0.48
    age0 = rng.uniform(cfg.age_min, cfg.age_max, size=n) + cfg.age_shift
    smoker = rng.random(n) < np.where(male, 0.24, 0.17)
    dropout_day = (
        rng.exponential(365.25 / cfg.dropout_per_year, size=n)
        if cfg.dropout_per_year > 0
        else np.full(n, np.inf)
    )

    names = list(DISEASES)
    k_of = {d: i for i, d in enumerate(CHRONIC)}
    n_k = len(CHRONIC)
    hf = k_of["heart_failure"]
    active = np.zeros((n, n_k), dtype=bool)
    onset_day = np.full((n, n_k), np.inf)
    prevalent = np.zeros((n, n_k), dtype=bool)
    dec0 = (age0 - 60.0) / 10.0
    for d in names:
        spec = DISEASES[d]
        logit = spec.prev_logit + spec.age * dec0 + spec.male * male + spec.smoker * smoker
        if d == "obesity":
            logit = logit + cfg.obesity_shift
        for p, g in spec.parents.items():
            logit = logit + g * active[:, k_of[p]]
        present = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
        active[:, k_of[d]] = present
        prevalent[:, k_of[d]] = present
        onset_day[present, k_of[d]] = -rng.uniform(30, 3650, size=int(present.sum()))

    treat_flag = rng.random((n, n_k)) < np.array([DISEASES[d].p_treat for d in names] + [0.9])
    p_dx = np.array([DISEASES[d].p_diagnose for d in names] + [1.0])
    diagnosed = np.zeros((n, n_k), dtype=bool)
    dx_month = np.full((n, n_k), -1, dtype=np.int32)
    last_mi = np.full(n, -10_000, dtype=np.int64)  # month of the last myocardial infarction
    last_pna = np.full(n, -10_000, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    death_day = np.full(n, np.inf)
    haz = {
        "heart_failure": np.zeros((n, horizon), dtype=np.float32),
        "death": np.zeros((n, horizon), dtype=np.float32),
    }
    hf_done = np.zeros(n, dtype=bool)
    x = _InteractionState(cfg, n, horizon) if cfg.hazard == "interaction" else None
    episodes: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    visits: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    hf_visits: list[tuple[np.ndarray, np.ndarray]] = []
    acute_specs = [ACUTE_RATES[a] for a in ACUTE]
    calendar0 = pd.Timestamp(cfg.start_date).month - 1

    for m in _progress(range(horizon), desc="simulating months", disable=not progress, leave=False):
        start = m * DAYS_PER_MONTH
        dec = dec0 + m / 120.0
        within = m < admin_months
        observed = alive & within & (start < dropout_day)
        # Outcome hazards from the state at the start of the month (only the past counts).
        recent_mi = (m - last_mi) <= 12
        recent_pna = (m - last_pna) <= 3
        treated_htn = diagnosed[:, k_of["hypertension"]] & treat_flag[:, k_of["hypertension"]]
        extra, state = 0.0, 1.0
        if x is not None:
            state = INTERACTION[
                "state_scale"
            ]  # the interaction terms, from the state at the start of the month
            terms = x.terms_at(m, start, active, diagnosed, dx_month, treated_htn, k_of)
            extra = sum(HF_INTERACTION_LOG_HR[t] * v for t, v in terms.items())
            treated_htn = treated_htn & ~x.gap  # a gap suspends the treatment's benefit
        eta_hf = HF_LOG_HR["intercept"] + scale * (
            HF_LOG_HR["age_per_decade"] * dec
            + HF_LOG_HR["male"] * male
            + state
            * (
                sum(HF_LOG_HR[d] * active[:, k_of[d]] for d in names)
                + HF_LOG_HR["recent_mi"] * recent_mi
                + HF_LOG_HR["recent_pneumonia"] * recent_pna
                + HF_LOG_HR["treated_hypertension"] * treated_htn
            )
            + extra
        )
        eta_d = DEATH_LOG_HR["intercept"] + scale * (
            DEATH_LOG_HR["age_per_decade"] * dec
            + DEATH_LOG_HR["male"] * male
            + DEATH_LOG_HR["smoker"] * smoker
            + sum(DEATH_LOG_HR[d] * active[:, k_of[d]] for d in DEATH_LOG_HR if d in k_of)
            + DEATH_LOG_HR["recent_mi"] * recent_mi
            + DEATH_LOG_HR["recent_pneumonia"] * recent_pna
        )
        h_hf = -np.expm1(-np.exp(eta_hf) / 12.0)
        h_d = -np.expm1(-np.exp(eta_d) / 12.0)
        # Frozen after the event / after death.
        haz["heart_failure"][:, m] = np.where(
            hf_done | ~alive, haz["heart_failure"][:, m - 1] if m else h_hf, h_hf
        )
        haz["death"][:, m] = np.where(alive, h_d, haz["death"][:, m - 1] if m else h_d)

        # Heart failure onset and death this month.
        new_hf = alive & ~hf_done & (rng.random(n) < h_hf)
        day_hf = start + rng.uniform(0, DAYS_PER_MONTH, size=n)
        dies = alive & (rng.random(n) < h_d)
        day_d = start + rng.uniform(0, DAYS_PER_MONTH, size=n)
        # Both in one month: the one that comes first wins for HF (no HF after death).
        new_hf &= ~dies | (day_hf < day_d)
        onset_day[new_hf, hf] = day_hf[new_hf]
        hf_done |= new_hf
        seen_hf = new_hf & observed & (day_hf < dropout_day) & (day_hf < admin_day)
        if seen_hf.any():
            who = np.flatnonzero(seen_hf)
            hf_visits.append((who, day_hf[who]))
            dx_month[who, hf] = m
        death_day[dies] = day_d[dies]

        # Chronic onsets (latent; they continue after dropout, not after death).
        for d in names:
            k = k_of[d]
            spec = DISEASES[d]
            log_r = math.log(spec.rate) + spec.age * dec + spec.male * male + spec.smoker * smoker
            for p, g in spec.parents.items():
                log_r = log_r + g * active[:, k_of[p]]
            new = alive & ~active[:, k] & (rng.random(n) < -np.expm1(-np.exp(log_r) / 12.0))
            onset_day[new, k] = start + rng.uniform(0, DAYS_PER_MONTH, size=int(new.sum()))
        active |= onset_day <= start + DAYS_PER_MONTH
        active[:, hf] = hf_done

        # Acute episodes (one at most of each kind per month).
        for a_idx, (rate, a_age, a_male, effects, _) in enumerate(acute_specs):
            log_r = math.log(rate) + a_age * dec + a_male * male
            for d, g in effects.items():
                log_r = log_r + g * active[:, k_of[d]]
            if ACUTE[a_idx] == "influenza":
                month_of_year = (calendar0 + enrol_month + m) % 12
                log_r = log_r + np.where(np.isin(month_of_year, (11, 0, 1)), math.log(3.0), 0.0)
            p = -np.expm1(-np.exp(log_r) / 12.0)
            hit = alive & (rng.random(n) < p)
            who = np.flatnonzero(hit)
            if len(who):
                day = start + rng.uniform(0, DAYS_PER_MONTH, size=len(who))
                episodes.append((who, day, np.full(len(who), a_idx)))
                if ACUTE[a_idx] == "acute_myocardial_infarction":
                    last_mi[who] = m
                if ACUTE[a_idx] == "pneumonia":
                    last_pna[who] = m

        # Routine visits while observed: rate rises with disease burden and age.
        burden = active.sum(axis=1)
        op_rate = cfg.visit_rate * cfg.visit_rate_scale * np.exp(0.15 * burden + 0.1 * dec)
        ip_rate = 0.02 * np.exp(0.35 * burden + 0.2 * dec)
        n_op = rng.poisson(op_rate / 12.0) * observed
        n_ip = rng.poisson(ip_rate / 12.0) * observed
        for count, vtype in ((n_op, 0), (n_ip, 1)):
            who = np.repeat(np.arange(n), count)
            if len(who):
                day = start + rng.uniform(0, DAYS_PER_MONTH, size=len(who))
                visits.append((who, day, np.full(len(who), vtype)))
        # Diagnosis at this month's visits, from diseases active at the start of the month.
        had_visit = (n_op + n_ip) > 0
        p_month = 1.0 - (1.0 - p_dx[None, :]) ** np.maximum(n_op + n_ip, 1)[:, None]
        at_start = onset_day < start
        new_dx = at_start & ~diagnosed & had_visit[:, None] & (rng.random((n, n_k)) < p_month)
        new_dx[:, hf] = False
        dx_month[new_dx] = m
        diagnosed |= new_dx
        diagnosed[:, hf] |= seen_hf
        if x is not None:  # NSAID courses and treatment gaps move on to the next month
            x.advance(
                m, start, alive, observed, dropout_day, admin_day, diagnosed, treat_flag, k_of
            )
        alive &= ~dies

    obs_end = np.minimum.reduce([admin_day, dropout_day, death_day])
    end_reason = np.select(
        [death_day <= np.minimum(admin_day, dropout_day), dropout_day < admin_day],
        ["death", "dropout"],
        "admin",
    )
    return {
        "n": n,
        "horizon": horizon,
        "enrol_day": enrol_day,
        "male": male,
        "age0": age0,
        "smoker": smoker,
        "onset_day": onset_day,
        "prevalent": prevalent,
        "dx_month": dx_month,
        "treat_flag": treat_flag,
        "death_day": death_day,
        "dropout_day": dropout_day,
        "admin_day": admin_day,
        "obs_end": obs_end,
        "end_reason": end_reason,
        "hazard": haz,
        "episodes": _cat(episodes, 3),
        "visits": _cat(visits, 3),
        "hf_visits": _cat(hf_visits, 2),
        "interaction": x,
    }


class _InteractionState:
    """The latent processes of the ``"interaction"`` hazard, on a random stream of their own.

    - NSAID courses: a share of people (joint pain) take courses as a Poisson process; each
      course is prescribed at an outpatient visit (recorded while observed).
    - NT-proBNP slope: a share of people have a rising natriuretic peptide, ``slope`` SD/year.
    - Antihypertensive gaps: a treated hypertensive patient stops and restarts refills as a
      two-state monthly Markov chain; no antihypertensive is recorded during a gap.
    """

    def __init__(self, cfg: SyntheticConfig, n: int, horizon: int) -> None:
        p = INTERACTION
        self.rng = np.random.default_rng([cfg.seed, 20_261_207])
        user = self.rng.random(n) < p["nsaid_user_share"]
        self.nsaid_rate = np.where(user, p["nsaid_courses_per_year"], 0.1)
        self.bnp_slope = self.rng.normal(0.0, p["bnp_slope_sd"], n)
        self.bnp_offset = self.rng.normal(0.0, p["bnp_offset_sd"], n)
        self.last_nsaid = np.full(n, -np.inf)
        self.gap = np.zeros(n, dtype=bool)
        self.gap_months = np.zeros((n, horizon), dtype=bool)
        self.courses: list[tuple[np.ndarray, np.ndarray]] = []
        self.terms = {t: np.zeros((n, horizon), dtype=np.float32) for t in HF_INTERACTION_LOG_HR}

    def terms_at(self, m, start, active, diagnosed, dx_month, treated_htn, k_of):
        """Covariate of every interaction term at the start of month ``m`` (only the past)."""
        htn, dm = k_of["hypertension"], k_of["type2_diabetes"]
        dm_years = np.where(diagnosed[:, dm], (m - dx_month[:, dm]) / 12.0, 0.0)
        terms = {
            "nsaid_90d_x_ckd": (
                ((start - self.last_nsaid) <= INTERACTION["nsaid_window_days"])
                & active[:, k_of["chronic_kidney_disease"]]
            ),
            "bnp_slope": self.bnp_slope,
            "diabetes_years": np.minimum(dm_years, INTERACTION["diabetes_years_cap"]),
            "antihypertensive_gap": treated_htn & self.gap,
            "hypertension_then_diabetes": (
                diagnosed[:, htn] & diagnosed[:, dm] & (dx_month[:, htn] < dx_month[:, dm])
            ),
        }
        for t, v in terms.items():
            self.terms[t][:, m] = v
        self.gap_months[:, m] = self.gap
        return terms

    def advance(
        self, m, start, alive, observed, dropout_day, admin_day, diagnosed, treat_flag, k_of
    ):
        """This month's NSAID courses (recorded while observed) and the next gap state."""
        n = len(alive)
        p = -np.expm1(-self.nsaid_rate / 12.0)
        course = alive & (self.rng.random(n) < p)
        day = start + self.rng.uniform(0, DAYS_PER_MONTH, size=n)
        self.last_nsaid[course] = day[course]
        seen = course & observed & (day < dropout_day) & (day < admin_day)
        who = np.flatnonzero(seen)
        if len(who):
            self.courses.append((who, day[who]))
        htn = k_of["hypertension"]
        treated = diagnosed[:, htn] & treat_flag[:, htn]
        u = self.rng.random(n)
        stop = ~self.gap & (u < INTERACTION["gap_start_per_month"])
        restart = self.gap & (u < INTERACTION["gap_end_per_month"])
        self.gap = treated & ((self.gap & ~restart) | stop)


def _cat(parts: list[tuple], width: int) -> tuple[np.ndarray, ...]:
    if not parts:
        return tuple(np.zeros(0) for _ in range(width))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(width))


def _first_per_person(person: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Index of the first True row per person (rows sorted by person), ``INT_MAX`` if none."""
    out = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    rows = np.flatnonzero(mask)
    who, first = np.unique(person[rows], return_index=True)
    out[who] = rows[first]
    return out


def _pick(rng: np.random.Generator, choices: np.ndarray, size: int) -> np.ndarray:
    return choices[rng.integers(0, len(choices), size=size)]


class _Rows:
    """Collects event rows of one OMOP table as arrays, concatenated once at the end."""

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, **cols: np.ndarray) -> None:
        n = len(next(iter(cols.values())))
        if n:
            self.parts.append(
                {k: np.broadcast_to(v, (n,)) if np.ndim(v) == 0 else v for k, v in cols.items()}
            )

    def concat(self, columns: list[str]) -> dict[str, np.ndarray]:
        if not self.parts:
            return {c: np.zeros(0, dtype=np.int64) for c in columns}
        return {
            c: np.concatenate(
                [p.get(c, np.full(len(next(iter(p.values()))), -1)) for p in self.parts]
            )
            for c in columns
        }


def _write_tables(
    cfg: SyntheticConfig, vocab: Vocabulary, book: _Codebook, sim: dict, rng: np.random.Generator
) -> SyntheticCohort:
    n = sim["n"]
    k_of = {d: i for i, d in enumerate(CHRONIC)}
    hf = k_of["heart_failure"]
    site_a = cfg.site == "A"
    person_id = np.arange(1, n + 1, dtype=np.int64) + cfg.person_id_offset
    id_base = cfg.person_id_offset * 100
    start = np.datetime64(pd.Timestamp(cfg.start_date).date(), "D")
    enrol_day = sim["enrol_day"]
    obs_end = sim["obs_end"]

    # ---- visits: routine, acute episodes, heart-failure onsets (only while observed) -------
    rp, rd, rt = sim["visits"]
    ep, ed, et = sim["episodes"]
    hp, hd = sim["hf_visits"]
    x = sim["interaction"]
    np_, nd = _cat(x.courses, 2) if x is not None else (np.zeros(0), np.zeros(0))
    ep, et = ep.astype(np.int64), et.astype(np.int64)
    p_adm = np.array([ACUTE_RATES[a][4] for a in ACUTE])
    ep_type = np.where(rng.random(len(ep)) < p_adm[et], 1, np.where(np.isin(et, [0, 3, 4]), 2, 0))
    hf_type = np.where(rng.random(len(hp)) < 0.6, 1, 0)
    vp = np.concatenate([rp, ep, hp, np_]).astype(np.int64)
    vday = np.concatenate([rd, ed, hd, nd])
    vtype = np.concatenate([rt, ep_type, hf_type, np.zeros(len(np_))]).astype(np.int64)
    # trigger: -1 routine, an acute episode, a heart-failure onset, an NSAID course
    vtrig = np.concatenate(
        [np.full(len(rp), -1), et, np.full(len(hp), len(ACUTE)), np.full(len(np_), NSAID_TRIG)]
    ).astype(np.int64)
    keep = (vday >= 0) & (vday < obs_end[vp])
    order = np.lexsort((vday[keep], vp[keep]))
    vp, vday, vtype, vtrig = (x[keep][order] for x in (vp, vday, vtype, vtrig))
    # One visit of a kind per person and calendar day (an export would merge them): a
    # heart-failure onset visit wins over an acute-episode visit, which wins over an NSAID
    # course, which wins over a routine visit (an NSAID course merged away goes unrecorded).
    vdate_int = np.floor(enrol_day[vp] + vday).astype(np.int64)
    rank = np.where(vtrig == NSAID_TRIG, -0.5, vtrig)  # NSAID courses just above routine
    key = np.lexsort((-rank, vtype, vdate_int, vp))
    same = np.zeros(len(vp), dtype=bool)
    k_p, k_d, k_t = vp[key], vdate_int[key], vtype[key]
    same[key[1:]] = (k_p[1:] == k_p[:-1]) & (k_d[1:] == k_d[:-1]) & (k_t[1:] == k_t[:-1])
    drop = same & (vtrig != len(ACUTE))
    vp, vday, vtype, vtrig = (x[~drop] for x in (vp, vday, vtype, vtrig))
    n_v = len(vp)
    vidx = np.arange(n_v, dtype=np.int64)
    vmonth = np.floor(vday / DAYS_PER_MONTH).astype(np.int64)
    visit_id = id_base + 1 + vidx
    vdate = start + np.floor(enrol_day[vp] + vday).astype("timedelta64[D]")
    los = np.where(vtype == 1, 1 + np.minimum(rng.geometric(0.35, size=n_v), 30), 0)
    vend = np.minimum(
        vdate + los.astype("timedelta64[D]"),
        start + np.floor(enrol_day[vp] + obs_end[vp]).astype("timedelta64[D]"),
    )
    vend = np.maximum(vend, vdate)

    conds, drugs, procs, meas = _Rows(), _Rows(), _Rows(), _Rows()
    n_cond = 0  # running count of condition rows, for the links

    def add_conditions(v: np.ndarray, concept: np.ndarray, source: np.ndarray) -> np.ndarray:
        nonlocal n_cond
        ids = id_base + 1 + n_cond + np.arange(len(v), dtype=np.int64)
        conds.add(v=v, concept=concept, source=source, id=ids)
        n_cond += len(v)
        return ids

    def source_of(g: _Group, choice: np.ndarray) -> np.ndarray:
        return g.sources[choice] if site_a else g.conditions[choice]

    def add_drugs(
        v: np.ndarray, g: _Group, ing_choice: np.ndarray, link: np.ndarray, fixed: np.ndarray
    ) -> None:
        if not len(g.ingredients) or not len(v):
            return
        # site A records a clinical drug of the ingredient, site B the ingredient itself
        concept = _vector_clinical(g, ing_choice, fixed) if site_a else g.ingredients[ing_choice]
        supply = np.where(rng.random(len(v)) < 0.6, 30, 90)
        drugs.add(v=v, concept=concept, link=link, supply=supply)

    def add_labs(v: np.ndarray, concept: np.ndarray) -> None:
        meas.add(v=v, concept=concept)

    def add_procs(v: np.ndarray, concept: np.ndarray, link: np.ndarray) -> None:
        procs.add(v=v, concept=concept, link=link)

    # ---- chronic diseases: first record, later records, treatment, procedures, labs -------
    dx_vidx = np.full((n, len(CHRONIC)), np.iinfo(np.int64).max, dtype=np.int64)
    subtype = rng.integers(0, 1 << 30, size=(n, len(CHRONIC)))
    regimen = rng.integers(0, 1 << 30, size=(n, len(CHRONIC), 3))
    onset = sim["onset_day"]
    for k, d in enumerate(CHRONIC):
        g = book.groups[d]
        if k == hf:
            dx_vidx[:, k] = _first_per_person(vp, vtrig == len(ACUTE), n)
            p_rec = 0.8
        else:
            dx_vidx[:, k] = _first_per_person(vp, vmonth == sim["dx_month"][vp, k], n)
            p_rec = DISEASES[d].p_record
        first = dx_vidx[vp, k]
        after = vidx >= first
        is_dx = vidx == first
        rec = is_dx | (after & (onset[vp, k] <= vday) & (rng.random(n_v) < p_rec))
        p_rx, taking = 0.5, True
        if x is not None and d == "hypertension":  # no refills during a gap
            p_rx = INTERACTION["antihypertensive_record"]
            taking = ~x.gap_months[vp, np.clip(vmonth, 0, x.gap_months.shape[1] - 1)]
        rx = after & sim["treat_flag"][vp, k] & (rng.random(n_v) < p_rx) & (len(g.ingredients) > 0)
        rx &= taking
        rec |= rx
        v = np.flatnonzero(rec)
        choice = np.where(
            rng.random(len(v)) < OWN_CODE_SHARE,
            subtype[vp[v], k] % len(g.conditions),
            rng.integers(0, len(g.conditions), len(v)),
        )
        ids = add_conditions(v, g.conditions[choice], source_of(g, choice))
        if rx.any():
            r = np.flatnonzero(rx)
            link = ids[np.searchsorted(v, r)]
            reg = regimen[vp[r], k]
            add_drugs(r, g, reg[:, 0] % len(g.ingredients), link, reg[:, 2])
            second = rng.random(len(r)) < 0.4
            if len(g.ingredients) > 1 and second.any():
                other = (reg[second, 0] + 1 + reg[second, 1] % (len(g.ingredients) - 1)) % len(
                    g.ingredients
                )
                add_drugs(r[second], g, other, link[second], reg[second, 2])
        if len(g.procedures):
            pr = rng.random(len(v)) < (0.5 if k == hf else 0.12)
            add_procs(v[pr], _pick(rng, g.procedures, int(pr.sum())), ids[pr])
        if len(g.labs):
            lab = rng.random(len(v)) < 0.5
            add_labs(v[lab], _pick(rng, g.labs, int(lab.sum())))

    # ---- acute episodes: diagnosis, drug, labs, procedures at the episode's visit ----------
    for a_idx, a in enumerate(ACUTE):
        g = book.groups[a]
        v = np.flatnonzero(vtrig == a_idx)
        if not len(v):
            continue
        choice = rng.integers(0, len(g.conditions), len(v))
        ids = add_conditions(v, g.conditions[choice], source_of(g, choice))
        if len(g.ingredients):
            rx = rng.random(len(v)) < 0.8
            add_drugs(
                v[rx],
                g,
                rng.integers(0, len(g.ingredients), int(rx.sum())),
                ids[rx],
                rng.integers(0, 1 << 30, int(rx.sum())),
            )
        for lab_id in g.labs:
            lab = rng.random(len(v)) < 0.8
            add_labs(v[lab], np.full(int(lab.sum()), lab_id))
        if len(g.procedures):
            pr = rng.random(len(v)) < 0.5
            add_procs(v[pr], _pick(rng, g.procedures, int(pr.sum())), ids[pr])

    # ---- background conditions at outpatient visits (no effect on any outcome) -------------
    has_bg = rng.random((n, len(BACKGROUND))) < 0.15
    op = np.flatnonzero((vtype == 0) & (vtrig != NSAID_TRIG))  # an NSAID visit records its own
    for b_idx, b in enumerate(BACKGROUND):
        g = book.groups[b]
        v = op[has_bg[vp[op], b_idx] & (rng.random(len(op)) < 0.2)]
        choice = subtype[vp[v], b_idx % len(CHRONIC)] % len(g.conditions)
        ids = add_conditions(v, g.conditions[choice], source_of(g, choice))
        # NSAIDs (osteoarthritis) come only from the latent courses of the interaction hazard
        if len(g.ingredients) and b != NSAID_GROUP:
            rx = rng.random(len(v)) < 0.4
            add_drugs(
                v[rx],
                g,
                rng.integers(0, len(g.ingredients), int(rx.sum())),
                ids[rx],
                rng.integers(0, 1 << 30, int(rx.sum())),
            )

    # ---- routine care: visit codes, vaccines, screening, ECG, routine labs ----------------
    none = np.int64(0)
    em_op, em_ip, em_er = (
        book.cpt(ROUTINE_EM["op"]),
        book.cpt(ROUTINE_EM["ip"]),
        book.cpt(ROUTINE_EM_ER),
    )
    for codes, vt in ((em_op, 0), (em_ip, 1), (em_er, 2)):
        v = np.flatnonzero(vtype == vt)
        if len(codes):
            add_procs(v, _pick(rng, codes, len(v)), np.zeros(len(v), dtype=np.int64) + none)
    calendar = (
        pd.Timestamp(cfg.start_date).month
        - 1
        + np.floor((enrol_day[vp] + vday) / DAYS_PER_MONTH).astype(np.int64)
    ) % 12
    age_v = sim["age0"][vp] + vday / 365.25
    female = ~sim["male"][vp]
    for code, p in (
        ("90686", np.where((vtype == 0) & np.isin(calendar, (8, 9, 10)), 0.35, 0.0)),
        ("90732", np.where(vtype == 0, 0.01, 0.0)),
        ("77067", np.where((vtype == 0) & female & (age_v >= 50) & (age_v < 75), 0.04, 0.0)),
        ("45378", np.where((vtype == 0) & (age_v < 76), 0.01, 0.0)),
        ("93000", np.where(vtype == 0, 0.05, 0.5)),
        ("71046", np.where(vtype == 0, 0.02, 0.3)),
    ):
        concept = book.cpt([code])
        if len(concept):
            v = np.flatnonzero(rng.random(n_v) < p)
            add_procs(v, np.full(len(v), concept[0]), np.zeros(len(v), dtype=np.int64))
    vitals = np.array(
        [book.loinc_to_id[c] for c in VITALS if c in book.loinc_to_id], dtype=np.int64
    )
    panel = np.array([book.loinc_to_id[c] for c in PANEL if c in book.loinc_to_id], dtype=np.int64)
    take_vitals = np.flatnonzero((vtype == 0) & (rng.random(n_v) < 0.4))
    take_panel = np.flatnonzero(rng.random(n_v) < np.where(vtype == 0, 0.2, 1.0))
    for group, visits_ in ((vitals, take_vitals), (panel, take_panel)):
        if len(group):
            add_labs(np.repeat(visits_, len(group)), np.tile(group, len(visits_)))
    venipuncture = book.cpt(["36415"])
    if len(venipuncture):
        add_procs(
            take_panel,
            np.full(len(take_panel), venipuncture[0]),
            np.zeros(len(take_panel), dtype=np.int64),
        )
    for code, p in (("4548-4", 0.05), ("13457-7", 0.08), ("18262-6", 0.0)):
        if code in book.loinc_to_id and p > 0:
            v = np.flatnonzero((vtype == 0) & (rng.random(n_v) < p))
            add_labs(v, np.full(len(v), book.loinc_to_id[code]))

    # ---- interaction setting: NSAID courses and NT-proBNP follow-up (draws after all others) --
    if x is not None:
        g = book.groups[NSAID_GROUP]
        v = np.flatnonzero(vtrig == NSAID_TRIG)
        choice = rng.integers(0, len(g.conditions), len(v))
        ids = add_conditions(v, g.conditions[choice], source_of(g, choice))
        own = rng.integers(0, len(g.ingredients), n)  # each person's usual NSAID
        add_drugs(v, g, own[vp[v]], ids, rng.integers(0, 1 << 30, len(v)))
        bnp = book.loinc_to_id[BNP_TRAJECTORY[0]]
        v = np.flatnonzero((vtype != 2) & (rng.random(n_v) < INTERACTION["bnp_visit_share"]))
        add_labs(v, np.full(len(v), bnp))

    visits = _Visits(vp, vday, vtype, vtrig, vidx, visit_id, vdate, vend)
    rows = {"condition": conds, "drug": drugs, "procedure": procs, "measurement": meas}
    tables = _assemble(cfg, book, sim, rng, person_id, id_base, start, visits, rows, dx_vidx)
    truth = _truth(cfg, vocab, sim, person_id, start, dx_vidx, vdate)
    return SyntheticCohort(config=cfg, tables=tables, vocabulary=vocab, truth=truth)


def _first_per_visit(cols: dict[str, np.ndarray], prefer=None) -> dict[str, np.ndarray]:
    """Keep one row per (visit, concept), in first-seen order (``prefer`` False sorts first)."""
    rank = prefer(cols) if prefer is not None else np.zeros(len(cols["v"]), dtype=bool)
    order = np.lexsort((np.arange(len(rank)), rank, cols["concept"], cols["v"]))
    v, c = cols["v"][order], cols["concept"][order]
    first = np.ones(len(v), dtype=bool)
    first[1:] = (v[1:] != v[:-1]) | (c[1:] != c[:-1])
    keep = np.sort(order[first])
    return {k: val[keep] for k, val in cols.items()}


def _vector_clinical(g: _Group, ing_choice: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """Clinical drug of each chosen ingredient (the ingredient itself when it has none)."""
    sizes = np.array([len(c) for c in g.clinical])
    width = max(int(sizes.max()), 1)
    table = np.zeros((len(g.clinical), width), dtype=np.int64)
    for i, c in enumerate(g.clinical):
        table[i, :] = g.ingredients[i]  # an ingredient without clinical drugs stands for itself
        table[i, : len(c)] = c
    size = np.maximum(sizes[ing_choice], 1)
    return table[ing_choice, fixed % size]


def _lab_values(
    book: _Codebook, sim: dict, rng, mp, mday, mconcept, mv, vtrig, vidx, dx_vidx
) -> np.ndarray:
    """value = ref_mean + ref_sd * (0.6 patient effect + 0.8 noise + disease shifts)."""
    k_of = {d: i for i, d in enumerate(CHRONIC)}
    params = book.lab_params
    lab_ids = params.index.to_numpy()
    col = pd.Index(lab_ids).get_indexer(mconcept)
    person_effect = rng.standard_normal((sim["n"], len(lab_ids)))
    noise = rng.standard_normal(len(mp))
    z = 0.6 * person_effect[mp, col] + 0.8 * noise
    code_of = book.code
    for lab_id in np.unique(mconcept):
        effects = LAB_EFFECTS.get(code_of[lab_id])
        if not effects:
            continue
        rows = np.flatnonzero(mconcept == lab_id)
        for d, (shift, treated_shift) in effects.items():
            if d in k_of:
                k = k_of[d]
                on = sim["onset_day"][mp[rows], k] <= mday[rows]
                treated = sim["treat_flag"][mp[rows], k] & (vidx[mv[rows]] >= dx_vidx[mp[rows], k])
                z[rows] += shift * on + treated_shift * (on & treated)
            else:
                z[rows] += shift * (vtrig[mv[rows]] == ACUTE.index(d))
    x = sim["interaction"]
    if x is not None:  # the natriuretic peptides move along each person's latent slope
        rows = np.flatnonzero(np.isin(code_of.loc[mconcept].to_numpy(), BNP_TRAJECTORY))
        years = mday[rows] / 365.25 - INTERACTION["bnp_centre_years"]
        z[rows] += x.bnp_offset[mp[rows]] + x.bnp_slope[mp[rows]] * years
        z[rows] += (INTERACTION["bnp_noise_sd"] - 0.8) * noise[rows]  # a steadier assay
    p = params.iloc[col]
    value = p["ref_mean"].to_numpy() + p["ref_sd"].to_numpy() * z
    if x is not None:  # log-normal there, as natriuretic peptides are: no floor to pile up on
        cv = p["ref_sd"].to_numpy()[rows] / p["ref_mean"].to_numpy()[rows]
        value[rows] = p["ref_mean"].to_numpy()[rows] * np.exp(cv * z[rows])
    value = np.clip(value, p["min_value"].to_numpy(), p["max_value"].to_numpy())
    scale = 10.0 ** p["decimals"].to_numpy()
    return np.round(value * scale) / scale


@dataclass
class _Visits:
    """The kept visits, sorted by person and day (``vp`` indexes persons)."""

    vp: np.ndarray
    vday: np.ndarray
    vtype: np.ndarray
    vtrig: np.ndarray
    vidx: np.ndarray
    visit_id: np.ndarray
    vdate: np.ndarray
    vend: np.ndarray


def _assemble(
    cfg: SyntheticConfig,
    book: _Codebook,
    sim: dict,
    rng: np.random.Generator,
    person_id: np.ndarray,
    id_base: int,
    start: np.datetime64,
    visits: _Visits,
    rows: dict[str, _Rows],
    dx_vidx: np.ndarray,
) -> dict[str, pd.DataFrame]:
    vp, vday, vtype, vtrig, vidx = visits.vp, visits.vday, visits.vtype, visits.vtrig, visits.vidx
    visit_id, vdate, vend = visits.visit_id, visits.vdate, visits.vend
    conds, drugs, procs, meas = (rows[k] for k in ("condition", "drug", "procedure", "measurement"))
    n = sim["n"]
    code = book.code
    enrol_date = start + np.floor(sim["enrol_day"]).astype("timedelta64[D]")
    end_date = start + np.floor(sim["enrol_day"] + sim["obs_end"]).astype("timedelta64[D]")
    birth = pd.to_datetime(enrol_date) - pd.to_timedelta(sim["age0"] * 365.25, unit="D")
    birth = birth.floor("D")
    person = pd.DataFrame(
        {
            "person_id": person_id,
            "gender_concept_id": np.where(sim["male"], MALE, FEMALE).astype(np.int64),
            "year_of_birth": birth.year.astype(np.int64),
            "month_of_birth": birth.month.astype(np.int64),
            "day_of_birth": birth.day.astype(np.int64),
            "birth_datetime": birth,
            "race_concept_id": np.zeros(n, dtype=np.int64),
            "ethnicity_concept_id": np.zeros(n, dtype=np.int64),
            "person_source_value": pd.Categorical([f"{cfg.site}{i}" for i in person_id]),
            "gender_source_value": pd.Categorical(np.where(sim["male"], "M", "F")),
        }
    )
    observation_period = pd.DataFrame(
        {
            "observation_period_id": person_id,
            "person_id": person_id,
            "observation_period_start_date": pd.to_datetime(enrol_date),
            "observation_period_end_date": pd.to_datetime(end_date),
            "period_type_concept_id": np.full(n, EHR_TYPE, dtype=np.int64),
        }
    )
    visit_concept = np.array([VISIT_OP, VISIT_IP, VISIT_ER])[vtype]
    visit_occurrence = pd.DataFrame(
        {
            "visit_occurrence_id": visit_id,
            "person_id": person_id[vp],
            "visit_concept_id": visit_concept,
            "visit_start_date": pd.to_datetime(vdate),
            "visit_start_datetime": pd.to_datetime(vdate),
            "visit_end_date": pd.to_datetime(vend),
            "visit_end_datetime": pd.to_datetime(vend),
            "visit_type_concept_id": np.full(len(vp), EHR_TYPE, dtype=np.int64),
            "visit_source_value": pd.Categorical.from_codes(vtype, ["OP", "IP", "ER"]),
        }
    )

    def source_values(ids: np.ndarray) -> pd.Categorical:
        uniq, inv = np.unique(ids, return_inverse=True)
        names = [code.get(int(u), "") if u else "" for u in uniq]
        return (
            pd.Categorical.from_codes(inv, pd.Index(names).unique())
            if len(set(names)) == len(names)
            else pd.Categorical(np.array(names, dtype=object)[inv])
        )

    c = conds.concat(["v", "concept", "source", "id"])
    order = np.argsort(c["id"], kind="stable")
    c = {k: val[order] for k, val in c.items()}
    c_date = pd.to_datetime(vdate[c["v"]])
    condition_occurrence = pd.DataFrame(
        {
            "condition_occurrence_id": c["id"].astype(np.int64),
            "person_id": person_id[vp[c["v"]]],
            "condition_concept_id": c["concept"].astype(np.int64),
            "condition_start_date": c_date,
            "condition_start_datetime": c_date,
            "condition_type_concept_id": np.full(len(c_date), EHR_TYPE, dtype=np.int64),
            "visit_occurrence_id": visit_id[c["v"]],
            "condition_source_value": source_values(c["source"]),
            "condition_source_concept_id": c["source"].astype(np.int64),
        }
    )
    d = drugs.concat(["v", "concept", "link", "supply"])
    d_date = pd.to_datetime(vdate[d["v"]])
    drug_exposure = pd.DataFrame(
        {
            "drug_exposure_id": id_base + 1 + np.arange(len(d_date), dtype=np.int64),
            "person_id": person_id[vp[d["v"]]],
            "drug_concept_id": d["concept"].astype(np.int64),
            "drug_exposure_start_date": d_date,
            "drug_exposure_start_datetime": d_date,
            "drug_exposure_end_date": d_date + pd.to_timedelta(d["supply"], unit="D"),
            "drug_type_concept_id": np.full(len(d_date), EHR_TYPE, dtype=np.int64),
            "quantity": d["supply"].astype(float),
            "days_supply": d["supply"].astype(np.int64),
            "visit_occurrence_id": visit_id[d["v"]],
            "drug_source_value": source_values(d["concept"]),
            "drug_source_concept_id": d["concept"].astype(np.int64),
            SyntheticCohort.LINK_COLUMN: d["link"].astype(np.int64),
        }
    )
    # A procedure or lab is recorded once per visit: keep the first (linked procedures first).
    p = _first_per_visit(procs.concat(["v", "concept", "link"]), prefer=lambda c: c["link"] <= 0)
    p_date = pd.to_datetime(vdate[p["v"]])
    link = pd.array(np.where(p["link"] > 0, p["link"], 0), dtype="Int64")
    link[p["link"] <= 0] = pd.NA
    procedure_occurrence = pd.DataFrame(
        {
            "procedure_occurrence_id": id_base + 1 + np.arange(len(p_date), dtype=np.int64),
            "person_id": person_id[vp[p["v"]]],
            "procedure_concept_id": p["concept"].astype(np.int64),
            "procedure_date": p_date,
            "procedure_datetime": p_date,
            "procedure_type_concept_id": np.full(len(p_date), EHR_TYPE, dtype=np.int64),
            "visit_occurrence_id": visit_id[p["v"]],
            "procedure_source_value": source_values(p["concept"]),
            "procedure_source_concept_id": p["concept"].astype(np.int64),
            SyntheticCohort.LINK_COLUMN: link,
        }
    )
    m = _first_per_visit(meas.concat(["v", "concept"]))
    mv = m["v"].astype(np.int64)
    mconcept = m["concept"].astype(np.int64)
    values = _lab_values(book, sim, rng, vp[mv], vday[mv], mconcept, mv, vtrig, vidx, dx_vidx)
    params = book.lab_params.loc[mconcept]
    m_date = pd.to_datetime(vdate[mv])
    measurement = pd.DataFrame(
        {
            "measurement_id": id_base + 1 + np.arange(len(mv), dtype=np.int64),
            "person_id": person_id[vp[mv]],
            "measurement_concept_id": mconcept,
            "measurement_date": m_date,
            "measurement_datetime": m_date,
            "measurement_type_concept_id": np.full(len(mv), EHR_TYPE, dtype=np.int64),
            "value_as_number": values,
            "unit_concept_id": params["unit_concept_id"].to_numpy().astype(np.int64),
            "range_low": (params["ref_mean"] - 2 * params["ref_sd"]).to_numpy(),
            "range_high": (params["ref_mean"] + 2 * params["ref_sd"]).to_numpy(),
            "visit_occurrence_id": visit_id[mv],
            "measurement_source_value": source_values(mconcept),
            "measurement_source_concept_id": mconcept,
            "unit_source_value": source_values(
                params["unit_concept_id"].to_numpy().astype(np.int64)
            ),
        }
    )
    # Rows sorted by person and date, as an export would give them.
    for name, df, date_col in (
        ("condition", condition_occurrence, "condition_start_date"),
        ("drug", drug_exposure, "drug_exposure_start_date"),
        ("procedure", procedure_occurrence, "procedure_date"),
        ("measurement", measurement, "measurement_date"),
    ):
        del name
        df.sort_values(["person_id", date_col], kind="stable", inplace=True, ignore_index=True)
    died = sim["end_reason"] == "death"
    death_date = pd.to_datetime(
        start + np.floor(sim["enrol_day"][died] + sim["death_day"][died]).astype("timedelta64[D]")
    )
    death = pd.DataFrame(
        {
            "person_id": person_id[died],
            "death_date": death_date,
            "death_datetime": death_date,
            "death_type_concept_id": np.full(int(died.sum()), EHR_TYPE, dtype=np.int64),
            "cause_concept_id": np.zeros(int(died.sum()), dtype=np.int64),
        }
    )
    return {
        "person": person,
        "observation_period": observation_period,
        "visit_occurrence": visit_occurrence,
        "condition_occurrence": condition_occurrence,
        "drug_exposure": drug_exposure,
        "procedure_occurrence": procedure_occurrence,
        "measurement": measurement,
        "death": death,
    }


def _truth(cfg, vocab, sim, person_id, start, dx_vidx, vdate) -> Truth:
    k_of = {d: i for i, d in enumerate(CHRONIC)}

    def to_date(days: np.ndarray) -> pd.DatetimeIndex:
        finite = np.isfinite(days) & (days < sim["admin_day"])
        out = np.full(len(days), np.datetime64("NaT"), dtype="datetime64[D]")
        out[finite] = start + np.floor(sim["enrol_day"][finite] + days[finite]).astype(
            "timedelta64[D]"
        )
        return pd.to_datetime(out)

    enrol_date = start + np.floor(sim["enrol_day"]).astype("timedelta64[D]")
    persons = pd.DataFrame(
        {
            "person_id": person_id,
            "enrol_date": pd.to_datetime(enrol_date),
            "age_at_enrolment": sim["age0"],
            "male": sim["male"],
            "smoker": sim["smoker"],
            "obs_end_date": pd.to_datetime(
                start + np.floor(sim["enrol_day"] + sim["obs_end"]).astype("timedelta64[D]")
            ),
            "end_reason": pd.Categorical(sim["end_reason"], ["admin", "dropout", "death"]),
            "data_end_date": pd.to_datetime(
                start + np.floor(sim["enrol_day"] + sim["admin_day"]).astype("timedelta64[D]")
            ),
            "hf_date": to_date(sim["onset_day"][:, k_of["heart_failure"]]),
            "death_date": to_date(sim["death_day"]),
        }
    )
    baseline = pd.DataFrame(
        {
            "person_id": person_id,
            "age_per_decade": (sim["age0"] - 60.0) / 10.0,
            "male": sim["male"].astype(np.int8),
            "smoker": sim["smoker"].astype(np.int8),
            **{d: sim["prevalent"][:, k_of[d]].astype(np.int8) for d in DISEASES},
        }
    )
    frames = []
    for d, k in k_of.items():
        on = sim["onset_day"][:, k]
        has = np.isfinite(on) & (on < sim["admin_day"])
        idx = np.flatnonzero(has)
        dx = dx_vidx[idx, k]
        dx_date = np.full(len(idx), np.datetime64("NaT"), dtype="datetime64[D]")
        ok = dx < len(vdate)
        dx_date[ok] = vdate[dx[ok]]
        onset_date = start + np.floor(sim["enrol_day"][idx] + on[idx]).astype("timedelta64[D]")
        frames.append(
            pd.DataFrame(
                {
                    "person_id": person_id[idx],
                    "disease": d,
                    "onset_date": pd.to_datetime(onset_date),
                    "prevalent": sim["prevalent"][idx, k],
                    "diagnosed_date": pd.to_datetime(dx_date),
                }
            )
        )
    onsets = pd.concat(frames, ignore_index=True).sort_values(
        ["person_id", "onset_date"], ignore_index=True
    )
    scale = cfg.hazard_scale
    coefficients = {
        name: {k: (v if k == "intercept" else v * scale) for k, v in table.items()}
        for name, table in (("heart_failure", HF_LOG_HR), ("death", DEATH_LOG_HR))
    }
    x = sim["interaction"]
    terms: dict[str, np.ndarray] = {}
    if x is not None:
        state = INTERACTION["state_scale"]
        hf = coefficients["heart_failure"]
        hf |= {
            k: v * state for k, v in hf.items() if k not in ("intercept", "age_per_decade", "male")
        }
        hf |= {k: v * scale for k, v in HF_INTERACTION_LOG_HR.items()}
        terms = x.terms
        persons["bnp_slope"] = x.bnp_slope
        persons["nsaid_courses_per_year"] = x.nsaid_rate
    groups = vocab.annotation[["concept_id", "group", "role"]].copy()
    return Truth(
        persons=persons,
        baseline=baseline,
        onsets=onsets,
        hazard=sim["hazard"],
        concept_groups=groups,
        coefficients=coefficients,
        terms=terms,
        hazard_setting=cfg.hazard,
    )
