"""Write the synthetic cohort's vocabulary (``data/vocabulary/``) from the curated spec below.

    .venv/bin/python scripts/make_vocabulary.py          # rewrite the four files
    .venv/bin/python scripts/make_vocabulary.py --check  # exit 1 if a committed file differs

The spec is the source of truth; the CSV files and ``README.md`` it writes are committed, and
``tests/test_vocabulary.py`` checks that this script reproduces them byte for byte.

Every code below is a real code of its code system (SNOMED CT, ICD-10-CM, RxNorm, ATC, LOINC,
CPT-4, ICD-10-PCS, UCUM), kept only where the code and its name could be confirmed; the
``description`` of each concept is the book's own one-sentence wording. Concept ids are local
(OMOP reserves ids above 2,000,000,000 for local concepts), allocated in one block per
vocabulary in the order of this file, except six standard OMOP ids the generator uses directly.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "data" / "vocabulary"

VALID_START, VALID_END = "1970-01-01", "2099-12-31"

CONCEPT_COLUMNS = [
    "concept_id",
    "concept_name",
    "domain_id",
    "vocabulary_id",
    "concept_class_id",
    "standard_concept",
    "concept_code",
    "valid_start_date",
    "valid_end_date",
    "invalid_reason",
    "description",
]
RELATIONSHIP_COLUMNS = [
    "concept_id_1",
    "concept_id_2",
    "relationship_id",
    "valid_start_date",
    "valid_end_date",
    "invalid_reason",
]
ANNOTATION_COLUMNS = [
    "concept_id",
    "group",
    "role",
    "unit_concept_id",
    "ref_mean",
    "ref_sd",
    "min_value",
    "max_value",
    "decimals",
]

# First id of each vocabulary's block (the block's concepts get base + 1, base + 2, ...).
ID_BLOCKS = {
    "SNOMED": 2_000_001_000,
    "ICD10CM": 2_000_002_000,
    "RxNorm": 2_000_003_000,
    "ATC": 2_000_004_000,
    "LOINC": 2_000_005_000,
    "CPT4": 2_000_006_000,
    "ICD10PCS": 2_000_007_000,
    "UCUM": 2_000_008_000,
}

# The kind of each group (see README.md): what the generator does with it.
CHRONIC = (
    "hypertension",
    "type2_diabetes",
    "hyperlipidemia",
    "obesity",
    "chronic_kidney_disease",
    "coronary_artery_disease",
    "atrial_fibrillation",
    "copd",
    "depression",
    "heart_failure",
)
ACUTE = (
    "pneumonia",
    "urinary_tract_infection",
    "influenza",
    "acute_myocardial_infarction",
    "fracture",
    "gastroenteritis",
)
BENIGN = (
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
ROUTINE = ("routine",)
GROUPS = (*CHRONIC, *ACUTE, *BENIGN, *ROUTINE)


# --------------------------------------------------------------------------------------------
# Spec records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One code: its code, name, and a one-sentence description."""

    code: str
    name: str
    description: str


@dataclass(frozen=True)
class Condition:
    """A standard SNOMED diagnosis, its ICD-10-CM source codes, and its ``Is a`` parent."""

    snomed: Term
    icd: tuple[Term, ...]
    parent: str | None = None  # SNOMED code; None = the group's parent (if any)
    finding: bool = False  # concept class Clinical Finding instead of Disorder


@dataclass(frozen=True)
class Drug:
    """An RxNorm ingredient, its ATC 4th-level class, and its RxNorm clinical drugs."""

    ingredient: Term
    atc: Term
    clinical: tuple[Term, ...]


@dataclass(frozen=True)
class Lab:
    """A LOINC measurement with its unit and reference distribution in a healthy adult."""

    term: Term
    concept_class: str  # Lab Test, Clinical Observation or Survey
    unit: str  # UCUM code, one of UNITS
    mean: float
    sd: float
    min_value: float
    max_value: float
    decimals: int


@dataclass(frozen=True)
class Group:
    """Everything one latent group contributes to the vocabulary."""

    name: str
    parent: Term | None = None  # SNOMED grouping concept, never recorded itself
    conditions: tuple[Condition, ...] = ()
    drugs: tuple[Drug, ...] = ()
    labs: tuple[Lab, ...] = ()
    cpt: tuple[Term, ...] = ()
    pcs: tuple[Term, ...] = ()


T = Term


def icd(code: str, name: str, description: str) -> tuple[Term, ...]:
    return (Term(code, name, description),)


# --------------------------------------------------------------------------------------------
# Units (UCUM) and the standard OMOP concepts the generator uses by id
# --------------------------------------------------------------------------------------------

UNITS: tuple[Term, ...] = (
    T("mm[Hg]", "millimeter mercury column", "Pressure unit used for blood pressure readings."),
    T("/min", "per minute", "Rate unit used for heart rate and respiratory rate."),
    T("Cel", "degree Celsius", "Temperature unit used for body temperature."),
    T("%", "percent", "Unit for a fraction expressed out of one hundred."),
    T("kg", "kilogram", "Mass unit used for body weight."),
    T("cm", "centimeter", "Length unit used for body height and waist circumference."),
    T("kg/m2", "kilogram per square meter", "Unit of the body mass index."),
    T("g/dL", "gram per deciliter", "Mass concentration unit used for hemoglobin and albumin."),
    T("10*3/uL", "thousand per microliter", "Count unit used for white cells and platelets."),
    T("mmol/L", "millimole per liter", "Molar concentration unit used for electrolytes."),
    T("mg/dL", "milligram per deciliter", "Mass concentration unit used for most chemistries."),
    T("U/L", "unit per liter", "Enzyme activity unit used for liver enzymes."),
    T(
        "mL/min/{1.73_m2}",
        "milliliter per minute per 1.73 square meter",
        "Unit of the estimated glomerular filtration rate normalised to body surface area.",
    ),
    T("mg/g", "milligram per gram", "Ratio unit used for urine albumin per gram of creatinine."),
    T("mg/L", "milligram per liter", "Mass concentration unit used for C reactive protein."),
    T("{INR}", "international normalized ratio", "Dimensionless ratio of prothrombin times."),
    T("s", "second", "Time unit used for clotting times."),
    T("L", "liter", "Volume unit used for lung volumes."),
    T("{score}", "score", "Dimensionless unit for a questionnaire score."),
    T("pg/mL", "picogram per milliliter", "Mass concentration unit used for natriuretic peptides."),
    T("ng/mL", "nanogram per milliliter", "Mass concentration unit used for cardiac biomarkers."),
    T("ng/dL", "nanogram per deciliter", "Mass concentration unit used for free thyroxine."),
    T(
        "m[IU]/L",
        "milli-international unit per liter",
        "Activity concentration unit used for thyroid stimulating hormone.",
    ),
)

# (concept_id, name, domain, vocabulary, class, code, description)
STANDARD = (
    (8507, "MALE", "Gender", "Gender", "Gender", "M", "Male administrative gender."),
    (8532, "FEMALE", "Gender", "Gender", "Gender", "F", "Female administrative gender."),
    (
        9201,
        "Inpatient Visit",
        "Visit",
        "Visit",
        "Visit",
        "IP",
        "A stay in hospital of at least one night under inpatient care.",
    ),
    (
        9202,
        "Outpatient Visit",
        "Visit",
        "Visit",
        "Visit",
        "OP",
        "A visit to a clinic or office that does not involve a hospital stay.",
    ),
    (
        9203,
        "Emergency Room Visit",
        "Visit",
        "Visit",
        "Visit",
        "ER",
        "A visit to an emergency department without admission.",
    ),
    (
        32817,
        "EHR",
        "Type Concept",
        "Type Concept",
        "Type Concept",
        "EHR",
        "Provenance stating that a record was taken from an electronic health record.",
    ),
)


# --------------------------------------------------------------------------------------------
# Chronic diseases
# --------------------------------------------------------------------------------------------

HYPERTENSION = Group(
    "hypertension",
    parent=T(
        "38341003",
        "Hypertensive disorder, systemic arterial",
        "Grouping concept for sustained raised pressure in the systemic arteries.",
    ),
    conditions=(
        Condition(
            T(
                "59621000",
                "Essential hypertension",
                "Raised arterial blood pressure without an identifiable secondary cause.",
            ),
            icd(
                "I10",
                "Essential (primary) hypertension",
                "ICD-10-CM code for primary hypertension, the most common hypertension code.",
            ),
        ),
        Condition(
            T(
                "31992008",
                "Secondary hypertension",
                "Raised blood pressure caused by another disorder such as renal or endocrine disease.",
            ),
            icd(
                "I15.9",
                "Secondary hypertension, unspecified",
                "ICD-10-CM code for hypertension due to another condition, cause not specified.",
            ),
        ),
        Condition(
            T(
                "64715009",
                "Hypertensive heart disease",
                "Heart disease such as left ventricular hypertrophy caused by longstanding hypertension.",
            ),
            icd(
                "I11.9",
                "Hypertensive heart disease without heart failure",
                "ICD-10-CM code for heart involvement from hypertension without heart failure.",
            ),
        ),
        Condition(
            T(
                "38481006",
                "Hypertensive renal disease",
                "Kidney damage attributed to longstanding high blood pressure.",
            ),
            icd(
                "I12.9",
                "Hypertensive chronic kidney disease with stage 1 through stage 4 chronic kidney "
                "disease, or unspecified chronic kidney disease",
                "ICD-10-CM code for hypertensive kidney disease short of end-stage disease.",
            ),
        ),
    ),
    drugs=(
        Drug(
            T("29046", "lisinopril", "Angiotensin-converting enzyme inhibitor taken once daily."),
            T("C09AA", "ACE inhibitors, plain", "ATC class of single-agent ACE inhibitors."),
            (
                T(
                    "314076",
                    "lisinopril 10 MG Oral Tablet",
                    "Common starting tablet strength of lisinopril.",
                ),
                T(
                    "314077",
                    "lisinopril 20 MG Oral Tablet",
                    "Common maintenance tablet strength of lisinopril.",
                ),
            ),
        ),
        Drug(
            T("17767", "amlodipine", "Long-acting dihydropyridine calcium channel blocker."),
            T(
                "C08CA",
                "Dihydropyridine derivatives",
                "ATC class of vascular-selective calcium channel blockers.",
            ),
            (
                T("197361", "amlodipine 5 MG Oral Tablet", "Usual daily tablet of amlodipine."),
                T("308135", "amlodipine 10 MG Oral Tablet", "Maximum daily tablet of amlodipine."),
            ),
        ),
        Drug(
            T(
                "5487",
                "hydrochlorothiazide",
                "Thiazide diuretic used as first-line treatment of hypertension.",
            ),
            T("C03AA", "Thiazides, plain", "ATC class of single-agent thiazide diuretics."),
            (
                T(
                    "310798",
                    "hydrochlorothiazide 25 MG Oral Tablet",
                    "Standard daily tablet of hydrochlorothiazide.",
                ),
            ),
        ),
        Drug(
            T("52175", "losartan", "Angiotensin II receptor blocker taken once daily."),
            T(
                "C09CA",
                "Angiotensin II receptor blockers (ARBs), plain",
                "ATC class of single-agent angiotensin receptor blockers.",
            ),
            (
                T(
                    "979492",
                    "losartan potassium 50 MG Oral Tablet",
                    "Usual daily tablet of losartan.",
                ),
                T(
                    "979480",
                    "losartan potassium 100 MG Oral Tablet",
                    "Maximum daily tablet of losartan.",
                ),
            ),
        ),
    ),
    labs=(
        Lab(
            T(
                "8478-0",
                "Mean blood pressure",
                "Average arterial pressure over the cardiac cycle, raised in hypertension.",
            ),
            "Clinical Observation",
            "mm[Hg]",
            91.0,
            10.0,
            40.0,
            200.0,
            0,
        ),
    ),
    cpt=(
        T(
            "93784",
            "Ambulatory blood pressure monitoring for 24 hours or longer",
            "Automated blood pressure recording over at least a day with analysis and report.",
        ),
        T(
            "99473",
            "Self-measured blood pressure, patient education and device calibration",
            "Training a patient to measure blood pressure at home with a validated device.",
        ),
    ),
)

TYPE2_DIABETES = Group(
    "type2_diabetes",
    parent=T(
        "73211009",
        "Diabetes mellitus",
        "Grouping concept for chronic hyperglycaemia from deficient insulin secretion or action.",
    ),
    conditions=(
        Condition(
            T(
                "44054006",
                "Type 2 diabetes mellitus",
                "Diabetes from insulin resistance with relative insulin deficiency, usually in adults.",
            ),
            icd(
                "E11.9",
                "Type 2 diabetes mellitus without complications",
                "ICD-10-CM code for type 2 diabetes with no recorded complication.",
            ),
        ),
        Condition(
            T(
                "230572002",
                "Neuropathy due to diabetes mellitus",
                "Peripheral nerve damage caused by chronic hyperglycaemia.",
            ),
            icd(
                "E11.40",
                "Type 2 diabetes mellitus with diabetic neuropathy, unspecified",
                "ICD-10-CM code for type 2 diabetes complicated by neuropathy of unspecified type.",
            ),
        ),
        Condition(
            T(
                "127013003",
                "Disorder of kidney due to diabetes mellitus",
                "Diabetic kidney disease with albuminuria and falling filtration over years.",
            ),
            icd(
                "E11.21",
                "Type 2 diabetes mellitus with diabetic nephropathy",
                "ICD-10-CM code for type 2 diabetes complicated by kidney disease.",
            ),
        ),
        Condition(
            T(
                "4855003",
                "Retinopathy due to diabetes mellitus",
                "Damage to the retinal vessels caused by diabetes.",
            ),
            icd(
                "E11.319",
                "Type 2 diabetes mellitus with unspecified diabetic retinopathy without macular edema",
                "ICD-10-CM code for type 2 diabetes with retinopathy and no macular oedema.",
            ),
        ),
    ),
    drugs=(
        Drug(
            T(
                "6809",
                "metformin",
                "Biguanide that lowers hepatic glucose output, first-line in type 2 diabetes.",
            ),
            T("A10BA", "Biguanides", "ATC class of biguanide blood glucose lowering drugs."),
            (
                T(
                    "861007",
                    "metformin hydrochloride 500 MG Oral Tablet",
                    "Immediate-release metformin tablet taken with meals.",
                ),
                T(
                    "860975",
                    "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
                    "Once-daily extended-release metformin tablet.",
                ),
            ),
        ),
        Drug(
            T(
                "4821",
                "glipizide",
                "Sulfonylurea that stimulates insulin release from the pancreas.",
            ),
            T("A10BB", "Sulfonylureas", "ATC class of sulfonylurea insulin secretagogues."),
            (T("310490", "glipizide 5 MG Oral Tablet", "Usual starting tablet of glipizide."),),
        ),
        Drug(
            T(
                "593411",
                "sitagliptin",
                "Dipeptidyl peptidase 4 inhibitor that enhances incretin action.",
            ),
            T(
                "A10BH",
                "Dipeptidyl peptidase 4 (DPP-4) inhibitors",
                "ATC class of gliptins.",
            ),
            (
                T(
                    "665033",
                    "sitagliptin 100 MG Oral Tablet",
                    "Standard once-daily tablet of sitagliptin.",
                ),
            ),
        ),
    ),
    labs=(
        Lab(
            T(
                "4548-4",
                "Hemoglobin A1c/Hemoglobin.total in Blood",
                "Glycated haemoglobin reflecting average glucose over about three months.",
            ),
            "Lab Test",
            "%",
            5.4,
            0.35,
            3.5,
            18.0,
            1,
        ),
        Lab(
            T(
                "1558-6",
                "Fasting glucose [Mass/volume] in Serum or Plasma",
                "Plasma glucose measured after an overnight fast.",
            ),
            "Lab Test",
            "mg/dL",
            92.0,
            9.0,
            40.0,
            500.0,
            0,
        ),
    ),
    cpt=(
        T(
            "92250",
            "Fundus photography with interpretation and report",
            "Retinal photographs taken to screen for diabetic eye disease.",
        ),
        T(
            "97802",
            "Medical nutrition therapy, initial assessment and intervention, each 15 minutes",
            "First individual dietitian session on diet and weight for a chronic disease.",
        ),
        T(
            "82947",
            "Glucose, quantitative, blood (except reagent strip)",
            "Laboratory measurement of blood glucose.",
        ),
    ),
)

HYPERLIPIDEMIA = Group(
    "hyperlipidemia",
    parent=T(
        "55822004",
        "Hyperlipidemia",
        "Grouping concept for raised blood cholesterol or triglycerides.",
    ),
    conditions=(
        Condition(
            T(
                "13644009",
                "Hypercholesterolemia",
                "Raised blood cholesterol, mainly carried in low density lipoprotein.",
            ),
            icd(
                "E78.00",
                "Pure hypercholesterolemia, unspecified",
                "ICD-10-CM code for isolated high cholesterol of unspecified type.",
            ),
        ),
        Condition(
            T(
                "302870006",
                "Hypertriglyceridemia",
                "Raised blood triglycerides, often with obesity or diabetes.",
            ),
            icd(
                "E78.1",
                "Pure hyperglyceridemia",
                "ICD-10-CM code for isolated high triglycerides.",
            ),
        ),
        Condition(
            T(
                "267434003",
                "Mixed hyperlipidemia",
                "Raised cholesterol and triglycerides together.",
            ),
            icd(
                "E78.2",
                "Mixed hyperlipidemia",
                "ICD-10-CM code for combined raised cholesterol and triglycerides.",
            ),
        ),
    ),
    drugs=(
        Drug(
            T("83367", "atorvastatin", "High-potency statin that lowers LDL cholesterol."),
            T(
                "C10AA",
                "HMG CoA reductase inhibitors",
                "ATC class of statins.",
            ),
            (
                T(
                    "617310",
                    "atorvastatin 20 MG Oral Tablet",
                    "Moderate-intensity atorvastatin dose.",
                ),
                T("617311", "atorvastatin 40 MG Oral Tablet", "High-intensity atorvastatin dose."),
            ),
        ),
        Drug(
            T("36567", "simvastatin", "Statin taken in the evening to lower LDL cholesterol."),
            T(
                "C10AA",
                "HMG CoA reductase inhibitors",
                "ATC class of statins.",
            ),
            (
                T(
                    "312961",
                    "simvastatin 20 MG Oral Tablet",
                    "Moderate-intensity simvastatin dose.",
                ),
                T("198211", "simvastatin 40 MG Oral Tablet", "Higher simvastatin dose."),
            ),
        ),
        Drug(
            T("301542", "rosuvastatin", "High-potency statin with a long half-life."),
            T(
                "C10AA",
                "HMG CoA reductase inhibitors",
                "ATC class of statins.",
            ),
            (
                T(
                    "859747",
                    "rosuvastatin calcium 10 MG Oral Tablet",
                    "Moderate-intensity rosuvastatin dose.",
                ),
            ),
        ),
    ),
    labs=(
        Lab(
            T(
                "13457-7",
                "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation",
                "LDL cholesterol calculated from total cholesterol, HDL and triglycerides.",
            ),
            "Lab Test",
            "mg/dL",
            110.0,
            30.0,
            20.0,
            400.0,
            0,
        ),
        Lab(
            T(
                "18262-6",
                "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay",
                "LDL cholesterol measured directly rather than calculated.",
            ),
            "Lab Test",
            "mg/dL",
            110.0,
            30.0,
            20.0,
            400.0,
            0,
        ),
        Lab(
            T(
                "2093-3",
                "Cholesterol [Mass/volume] in Serum or Plasma",
                "Total serum cholesterol across all lipoproteins.",
            ),
            "Lab Test",
            "mg/dL",
            190.0,
            35.0,
            80.0,
            500.0,
            0,
        ),
    ),
    cpt=(
        T(
            "82465",
            "Cholesterol, serum or whole blood, total",
            "Laboratory measurement of total cholesterol on its own.",
        ),
        T(
            "83721",
            "Lipoprotein, direct measurement; LDL cholesterol",
            "Laboratory measurement of LDL cholesterol by a direct method.",
        ),
        T("84478", "Triglycerides", "Laboratory measurement of serum triglycerides."),
    ),
)

OBESITY = Group(
    "obesity",
    parent=T("414916001", "Obesity", "Grouping concept for excess body fat that impairs health."),
    conditions=(
        Condition(
            T(
                "238136002",
                "Morbid obesity",
                "Severe obesity, usually a body mass index of 40 or more.",
            ),
            icd(
                "E66.01",
                "Morbid (severe) obesity due to excess calories",
                "ICD-10-CM code for severe obesity from excess energy intake.",
            ),
        ),
        Condition(
            T(
                "190966007",
                "Extreme obesity with alveolar hypoventilation",
                "Obesity hypoventilation syndrome with daytime hypercapnia.",
            ),
            icd(
                "E66.2",
                "Morbid (severe) obesity with alveolar hypoventilation",
                "ICD-10-CM code for severe obesity with hypoventilation.",
            ),
        ),
        Condition(
            T(
                "162864005",
                "Body mass index 30+ - obesity",
                "Finding of a body mass index of 30 or more.",
            ),
            icd(
                "Z68.30",
                "Body mass index [BMI] 30.0-30.9, adult",
                "ICD-10-CM code recording an adult body mass index between 30.0 and 30.9.",
            ),
            finding=True,
        ),
        Condition(
            T(
                "408512008",
                "Body mass index 40+ - severely obese",
                "Finding of a body mass index of 40 or more.",
            ),
            icd(
                "Z68.41",
                "Body mass index [BMI] 40.0-44.9, adult",
                "ICD-10-CM code recording an adult body mass index between 40.0 and 44.9.",
            ),
            parent="238136002",
            finding=True,
        ),
    ),
    drugs=(
        Drug(
            T("37925", "orlistat", "Lipase inhibitor that reduces absorption of dietary fat."),
            T(
                "A08AB",
                "Peripherally acting antiobesity products",
                "ATC class of weight-loss drugs that act in the gut.",
            ),
            (
                T(
                    "314153",
                    "orlistat 120 MG Oral Capsule",
                    "Prescription-strength orlistat capsule taken with meals.",
                ),
            ),
        ),
        Drug(
            T("8152", "phentermine", "Sympathomimetic appetite suppressant for short-term use."),
            T(
                "A08AA",
                "Centrally acting antiobesity products",
                "ATC class of weight-loss drugs that act on appetite centres.",
            ),
            (
                T(
                    "803353",
                    "phentermine hydrochloride 37.5 MG Oral Tablet",
                    "Once-daily phentermine tablet.",
                ),
            ),
        ),
    ),
    labs=(
        Lab(
            T(
                "8280-0",
                "Waist Circumference at umbilicus by Tape measure",
                "Waist measured with a tape at the level of the navel.",
            ),
            "Clinical Observation",
            "cm",
            92.0,
            12.0,
            50.0,
            200.0,
            1,
        ),
    ),
    cpt=(
        T(
            "43644",
            "Laparoscopic gastric bypass with Roux-en-Y gastroenterostomy",
            "Bariatric operation that bypasses most of the stomach.",
        ),
        T(
            "43775",
            "Laparoscopic longitudinal gastrectomy (sleeve gastrectomy)",
            "Bariatric operation that removes most of the greater curve of the stomach.",
        ),
        T(
            "97803",
            "Medical nutrition therapy, re-assessment and intervention, each 15 minutes",
            "Follow-up individual dietitian session on diet and weight.",
        ),
    ),
)

CHRONIC_KIDNEY_DISEASE = Group(
    "chronic_kidney_disease",
    parent=T(
        "709044004",
        "Chronic kidney disease",
        "Grouping concept for kidney damage or reduced filtration lasting three months or more.",
    ),
    conditions=(
        Condition(
            T(
                "700378005",
                "Chronic kidney disease stage 3A",
                "Moderately reduced kidney function with an eGFR of 45 to 59.",
            ),
            icd(
                "N18.31",
                "Chronic kidney disease, stage 3a",
                "ICD-10-CM code for chronic kidney disease stage 3a.",
            ),
        ),
        Condition(
            T(
                "700379002",
                "Chronic kidney disease stage 3B",
                "Moderately to severely reduced kidney function with an eGFR of 30 to 44.",
            ),
            icd(
                "N18.32",
                "Chronic kidney disease, stage 3b",
                "ICD-10-CM code for chronic kidney disease stage 3b.",
            ),
        ),
        Condition(
            T(
                "431857002",
                "Chronic kidney disease stage 4",
                "Severely reduced kidney function with an eGFR of 15 to 29.",
            ),
            icd(
                "N18.4",
                "Chronic kidney disease, stage 4 (severe)",
                "ICD-10-CM code for chronic kidney disease stage 4.",
            ),
        ),
        Condition(
            T(
                "433146000",
                "Chronic kidney disease stage 5",
                "Kidney failure with an eGFR below 15.",
            ),
            icd(
                "N18.5",
                "Chronic kidney disease, stage 5",
                "ICD-10-CM code for chronic kidney disease stage 5 not on dialysis.",
            ),
        ),
        Condition(
            T(
                "46177005",
                "End-stage renal disease",
                "Kidney failure that needs dialysis or a transplant.",
            ),
            icd(
                "N18.6",
                "End stage renal disease",
                "ICD-10-CM code for end-stage kidney disease.",
            ),
        ),
    ),
    drugs=(
        Drug(
            T(
                "1545653",
                "empagliflozin",
                "Sodium-glucose co-transporter 2 inhibitor that slows loss of kidney function.",
            ),
            T(
                "A10BK",
                "Sodium-glucose co-transporter 2 (SGLT2) inhibitors",
                "ATC class of gliflozins.",
            ),
            (
                T(
                    "1545658",
                    "empagliflozin 10 MG Oral Tablet",
                    "Once-daily empagliflozin tablet.",
                ),
            ),
        ),
        Drug(
            T(
                "24947",
                "ferrous sulfate",
                "Oral iron salt used for iron deficiency and renal anaemia.",
            ),
            T(
                "B03AA",
                "Iron bivalent, oral preparations",
                "ATC class of oral ferrous iron preparations.",
            ),
            (
                T(
                    "310325",
                    "ferrous sulfate 325 MG Oral Tablet",
                    "Standard oral iron tablet.",
                ),
            ),
        ),
    ),
    labs=(
        Lab(
            T(
                "33914-3",
                "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum or "
                "Plasma by Creatinine-based formula (MDRD)",
                "Kidney filtration estimated from serum creatinine with the MDRD equation.",
            ),
            "Lab Test",
            "mL/min/{1.73_m2}",
            95.0,
            15.0,
            2.0,
            150.0,
            0,
        ),
        Lab(
            T(
                "62238-1",
                "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, "
                "Plasma or Blood by Creatinine-based formula (CKD-EPI)",
                "Kidney filtration estimated from serum creatinine with the CKD-EPI equation.",
            ),
            "Lab Test",
            "mL/min/{1.73_m2}",
            95.0,
            15.0,
            2.0,
            150.0,
            0,
        ),
        Lab(
            T(
                "14959-1",
                "Microalbumin/Creatinine [Mass Ratio] in Urine",
                "Urine albumin per gram of creatinine, an early marker of kidney damage.",
            ),
            "Lab Test",
            "mg/g",
            10.0,
            8.0,
            0.0,
            5000.0,
            1,
        ),
    ),
    cpt=(
        T(
            "82043",
            "Albumin; urine (eg, microalbumin), quantitative",
            "Laboratory measurement of albumin in urine.",
        ),
        T(
            "90935",
            "Hemodialysis procedure with single evaluation",
            "One session of haemodialysis with one physician evaluation.",
        ),
        T(
            "76770",
            "Ultrasound, retroperitoneal, real time with image documentation; complete",
            "Complete ultrasound of the kidneys and retroperitoneum.",
        ),
    ),
)

CORONARY_ARTERY_DISEASE = Group(
    "coronary_artery_disease",
    parent=T(
        "414545008",
        "Ischemic heart disease",
        "Grouping concept for heart disease caused by reduced coronary blood flow.",
    ),
    conditions=(
        Condition(
            T(
                "53741008",
                "Coronary arteriosclerosis",
                "Atherosclerotic narrowing of the coronary arteries.",
            ),
            icd(
                "I25.10",
                "Atherosclerotic heart disease of native coronary artery without angina pectoris",
                "ICD-10-CM code for coronary artery disease without angina.",
            ),
        ),
        Condition(
            T(
                "194828000",
                "Angina pectoris",
                "Chest pain on exertion from transient myocardial ischaemia.",
            ),
            icd(
                "I20.9",
                "Angina pectoris, unspecified",
                "ICD-10-CM code for angina of unspecified type.",
            ),
        ),
        Condition(
            T(
                "4557003",
                "Preinfarction syndrome",
                "Unstable angina with pain at rest or rapidly worsening pain.",
            ),
            icd("I20.0", "Unstable angina", "ICD-10-CM code for unstable angina."),
            parent="194828000",
        ),
        Condition(
            T(
                "1755008",
                "Old myocardial infarction",
                "A healed myocardial infarction diagnosed in the past.",
            ),
            icd(
                "I25.2",
                "Old myocardial infarction",
                "ICD-10-CM code for a past myocardial infarction without current symptoms.",
            ),
        ),
    ),
    drugs=(
        Drug(
            T("1191", "aspirin", "Cyclooxygenase inhibitor used at low dose as an antiplatelet."),
            T(
                "B01AC",
                "Platelet aggregation inhibitors excl. heparin",
                "ATC class of antiplatelet drugs.",
            ),
            (
                T(
                    "243670",
                    "aspirin 81 MG Oral Tablet",
                    "Low-dose aspirin tablet for secondary prevention.",
                ),
            ),
        ),
        Drug(
            T(
                "32968",
                "clopidogrel",
                "P2Y12 receptor antagonist that inhibits platelet aggregation.",
            ),
            T(
                "B01AC",
                "Platelet aggregation inhibitors excl. heparin",
                "ATC class of antiplatelet drugs.",
            ),
            (
                T(
                    "309362",
                    "clopidogrel 75 MG Oral Tablet",
                    "Daily maintenance tablet of clopidogrel.",
                ),
            ),
        ),
        Drug(
            T(
                "6918",
                "metoprolol",
                "Cardioselective beta blocker that reduces heart rate and angina.",
            ),
            T(
                "C07AB",
                "Beta blocking agents, selective",
                "ATC class of beta-1 selective beta blockers.",
            ),
            (
                T(
                    "866427",
                    "24 HR metoprolol succinate 25 MG Extended Release Oral Tablet",
                    "Once-daily extended-release metoprolol tablet.",
                ),
                T(
                    "866514",
                    "metoprolol tartrate 50 MG Oral Tablet",
                    "Twice-daily immediate-release metoprolol tablet.",
                ),
            ),
        ),
    ),
    labs=(
        Lab(
            T(
                "30522-7",
                "C reactive protein [Mass/volume] in Serum or Plasma by High sensitivity method",
                "Low-level C reactive protein used as a marker of cardiovascular risk.",
            ),
            "Lab Test",
            "mg/L",
            1.5,
            1.2,
            0.1,
            100.0,
            1,
        ),
        Lab(
            T(
                "10835-7",
                "Lipoprotein a [Mass/volume] in Serum or Plasma",
                "Inherited atherogenic lipoprotein measured once to refine coronary risk.",
            ),
            "Lab Test",
            "mg/dL",
            20.0,
            18.0,
            0.0,
            300.0,
            0,
        ),
    ),
    cpt=(
        T(
            "93015",
            "Cardiovascular stress test with continuous ECG monitoring, supervision, "
            "interpretation and report",
            "Exercise or pharmacological stress test to look for inducible ischaemia.",
        ),
        T(
            "93458",
            "Coronary angiography with left heart catheterization",
            "Catheter-based imaging of the coronary arteries with left heart pressures.",
        ),
        T(
            "92928",
            "Percutaneous transcatheter placement of intracoronary stent(s), single major "
            "coronary artery or branch",
            "Elective coronary stent placement in one major vessel.",
        ),
    ),
)

ATRIAL_FIBRILLATION = Group(
    "atrial_fibrillation",
    parent=T(
        "698247007",
        "Cardiac arrhythmia",
        "Grouping concept for disorders of heart rate or rhythm.",
    ),
    conditions=(
        Condition(
            T(
                "49436004",
                "Atrial fibrillation",
                "Irregular heart rhythm from chaotic atrial electrical activity.",
            ),
            icd(
                "I48.91",
                "Unspecified atrial fibrillation",
                "ICD-10-CM code for atrial fibrillation of unspecified type.",
            ),
        ),
        Condition(
            T(
                "282825002",
                "Paroxysmal atrial fibrillation",
                "Atrial fibrillation that stops on its own, usually within seven days.",
            ),
            icd(
                "I48.0",
                "Paroxysmal atrial fibrillation",
                "ICD-10-CM code for self-terminating atrial fibrillation.",
            ),
            parent="49436004",
        ),
        Condition(
            T(
                "440059007",
                "Persistent atrial fibrillation",
                "Atrial fibrillation lasting more than seven days or needing cardioversion.",
            ),
            icd(
                "I48.19",
                "Other persistent atrial fibrillation",
                "ICD-10-CM code for persistent atrial fibrillation that is not longstanding.",
            ),
            parent="49436004",
        ),
        Condition(
            T(
                "426749004",
                "Chronic atrial fibrillation",
                "Longstanding atrial fibrillation in which rhythm control is no longer pursued.",
            ),
            icd(
                "I48.20",
                "Chronic atrial fibrillation, unspecified",
                "ICD-10-CM code for chronic atrial fibrillation of unspecified type.",
            ),
            parent="49436004",
        ),
        Condition(
            T(
                "5370000",
                "Atrial flutter",
                "Regular atrial tachycardia from a macro re-entrant circuit.",
            ),
            icd(
                "I48.92",
                "Unspecified atrial flutter",
                "ICD-10-CM code for atrial flutter of unspecified type.",
            ),
        ),
    ),
    drugs=(
        Drug(
            T("1364430", "apixaban", "Direct factor Xa inhibitor used to prevent stroke."),
            T("B01AF", "Direct factor Xa inhibitors", "ATC class of oral factor Xa inhibitors."),
            (
                T("1364445", "apixaban 5 MG Oral Tablet", "Standard twice-daily apixaban tablet."),
                T("1364435", "apixaban 2.5 MG Oral Tablet", "Reduced-dose apixaban tablet."),
            ),
        ),
        Drug(
            T("11289", "warfarin", "Vitamin K antagonist anticoagulant monitored by the INR."),
            T("B01AA", "Vitamin K antagonists", "ATC class of coumarin anticoagulants."),
            (T("855332", "warfarin sodium 5 MG Oral Tablet", "Common warfarin tablet strength."),),
        ),
        Drug(
            T(
                "3443",
                "diltiazem",
                "Non-dihydropyridine calcium channel blocker used for rate control.",
            ),
            T(
                "C08DB",
                "Benzothiazepine derivatives",
                "ATC class of diltiazem-type calcium channel blockers.",
            ),
            (
                T(
                    "830861",
                    "24 HR diltiazem hydrochloride 120 MG Extended Release Oral Capsule",
                    "Once-daily extended-release diltiazem capsule.",
                ),
            ),
        ),
        Drug(
            T("703", "amiodarone", "Class III antiarrhythmic used for rhythm control."),
            T("C01BD", "Antiarrhythmics, class III", "ATC class of potassium channel blockers."),
            (
                T(
                    "833528",
                    "amiodarone hydrochloride 200 MG Oral Tablet",
                    "Standard amiodarone maintenance tablet.",
                ),
            ),
        ),
    ),
    labs=(
        Lab(
            T(
                "6301-6",
                "INR in Platelet poor plasma by Coagulation assay",
                "International normalised ratio used to monitor warfarin.",
            ),
            "Lab Test",
            "{INR}",
            1.0,
            0.08,
            0.8,
            10.0,
            1,
        ),
        Lab(
            T(
                "5902-2",
                "Prothrombin time (PT)",
                "Clotting time of the extrinsic pathway in seconds.",
            ),
            "Lab Test",
            "s",
            12.0,
            0.7,
            9.0,
            60.0,
            1,
        ),
    ),
    cpt=(
        T(
            "92960",
            "Cardioversion, elective, electrical conversion of arrhythmia; external",
            "Planned external electrical shock to restore sinus rhythm.",
        ),
        T(
            "93224",
            "External electrocardiographic recording up to 48 hours with analysis and report",
            "Holter monitoring of the heart rhythm for up to two days.",
        ),
        T(
            "93656",
            "Comprehensive electrophysiologic evaluation with ablation of atrial fibrillation "
            "by pulmonary vein isolation",
            "Catheter ablation that electrically isolates the pulmonary veins.",
        ),
    ),
)

COPD = Group(
    "copd",
    parent=T(
        "13645005",
        "Chronic obstructive lung disease",
        "Grouping concept for persistent airflow limitation from airway and lung damage.",
    ),
    conditions=(
        Condition(
            T(
                "195951007",
                "Acute exacerbation of chronic obstructive airways disease",
                "Worsening of breathlessness, cough and sputum beyond day-to-day variation in COPD.",
            ),
            icd(
                "J44.1",
                "Chronic obstructive pulmonary disease with (acute) exacerbation",
                "ICD-10-CM code for an exacerbation of COPD.",
            ),
        ),
        Condition(
            T(
                "196001008",
                "Chronic obstructive pulmonary disease with acute lower respiratory infection",
                "COPD complicated by an acute chest infection.",
            ),
            icd(
                "J44.0",
                "Chronic obstructive pulmonary disease with (acute) lower respiratory infection",
                "ICD-10-CM code for COPD with a lower respiratory tract infection.",
            ),
        ),
        Condition(
            T(
                "87433001",
                "Pulmonary emphysema",
                "Permanent enlargement of the air spaces with destruction of alveolar walls.",
            ),
            icd(
                "J43.9",
                "Emphysema, unspecified",
                "ICD-10-CM code for emphysema of unspecified type.",
            ),
        ),
        Condition(
            T(
                "68328006",
                "Centriacinar emphysema",
                "Emphysema centred on the respiratory bronchioles, typical of smokers.",
            ),
            icd(
                "J43.2",
                "Centrilobular emphysema",
                "ICD-10-CM code for centrilobular emphysema.",
            ),
            parent="87433001",
        ),
        Condition(
            T(
                "4981000",
                "Panacinar emphysema",
                "Emphysema destroying whole acini, typical of alpha-1 antitrypsin deficiency.",
            ),
            icd(
                "J43.1",
                "Panlobular emphysema",
                "ICD-10-CM code for panlobular emphysema.",
            ),
            parent="87433001",
        ),
    ),
    drugs=(
        Drug(
            T(
                "435",
                "albuterol",
                "Short-acting beta-2 agonist bronchodilator for relief of breathlessness.",
            ),
            T(
                "R03AC",
                "Selective beta-2-adrenoreceptor agonists",
                "ATC class of inhaled beta-2 agonist bronchodilators.",
            ),
            (
                T(
                    "745679",
                    "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
                    "Albuterol reliever inhaler delivering 90 micrograms per puff.",
                ),
            ),
        ),
        Drug(
            T("8640", "prednisone", "Oral corticosteroid used in short courses for exacerbations."),
            T("H02AB", "Glucocorticoids", "ATC class of systemic glucocorticoids."),
            (
                T(
                    "312615",
                    "prednisone 20 MG Oral Tablet",
                    "Prednisone tablet used for a short burst.",
                ),
                T("198145", "prednisone 10 MG Oral Tablet", "Lower-strength prednisone tablet."),
            ),
        ),
    ),
    labs=(
        Lab(
            T(
                "19926-5",
                "FEV1/FVC",
                "Ratio of forced expiratory volume in one second to forced vital capacity.",
            ),
            "Clinical Observation",
            "%",
            78.0,
            5.0,
            20.0,
            100.0,
            0,
        ),
        Lab(
            T("20150-9", "FEV1", "Volume of air forcibly exhaled in the first second."),
            "Clinical Observation",
            "L",
            3.2,
            0.7,
            0.3,
            7.0,
            2,
        ),
    ),
    cpt=(
        T(
            "94010",
            "Spirometry, including graphic record, total and timed vital capacity and "
            "expiratory flow rates",
            "Basic spirometry to measure airflow limitation.",
        ),
        T(
            "94060",
            "Bronchodilation responsiveness, spirometry pre- and post-bronchodilator",
            "Spirometry repeated after a bronchodilator to test reversibility.",
        ),
        T(
            "94640",
            "Pressurized or nonpressurized inhalation treatment for acute airway obstruction",
            "Nebulised or inhaled bronchodilator treatment given in clinic.",
        ),
    ),
)

DEPRESSION = Group(
    "depression",
    parent=T(
        "35489007",
        "Depressive disorder",
        "Grouping concept for disorders of persistent low mood and loss of interest.",
    ),
    conditions=(
        Condition(
            T(
                "370143000",
                "Major depressive disorder",
                "Episodes of depressed mood or anhedonia lasting at least two weeks.",
            ),
            icd(
                "F32.9",
                "Major depressive disorder, single episode, unspecified",
                "ICD-10-CM code for a single depressive episode of unspecified severity.",
            ),
        ),
        Condition(
            T(
                "66344007",
                "Recurrent major depression",
                "Major depressive disorder with two or more separate episodes.",
            ),
            icd(
                "F33.9",
                "Major depressive disorder, recurrent, unspecified",
                "ICD-10-CM code for recurrent depression of unspecified severity.",
            ),
            parent="370143000",
        ),
        Condition(
            T(
                "78667006",
                "Dysthymia",
                "Chronic low-grade depressed mood lasting two years or more.",
            ),
            icd(
                "F34.1", "Dysthymic disorder", "ICD-10-CM code for persistent depressive disorder."
            ),
        ),
    ),
    drugs=(
        Drug(
            T("36437", "sertraline", "Selective serotonin reuptake inhibitor antidepressant."),
            T(
                "N06AB",
                "Selective serotonin reuptake inhibitors",
                "ATC class of SSRI antidepressants.",
            ),
            (
                T("312941", "sertraline 50 MG Oral Tablet", "Usual starting tablet of sertraline."),
                T("312938", "sertraline 100 MG Oral Tablet", "Higher-dose sertraline tablet."),
            ),
        ),
        Drug(
            T("321988", "escitalopram", "Selective serotonin reuptake inhibitor antidepressant."),
            T(
                "N06AB",
                "Selective serotonin reuptake inhibitors",
                "ATC class of SSRI antidepressants.",
            ),
            (T("349332", "escitalopram 10 MG Oral Tablet", "Usual daily tablet of escitalopram."),),
        ),
        Drug(
            T(
                "42347",
                "bupropion",
                "Noradrenaline and dopamine reuptake inhibitor antidepressant.",
            ),
            T(
                "N06AX",
                "Other antidepressants",
                "ATC class of antidepressants outside the main groups.",
            ),
            (
                T(
                    "993541",
                    "24 HR bupropion hydrochloride 150 MG Extended Release Oral Tablet",
                    "Once-daily extended-release bupropion tablet.",
                ),
            ),
        ),
        Drug(
            T("10737", "trazodone", "Sedating serotonin antagonist and reuptake inhibitor."),
            T(
                "N06AX",
                "Other antidepressants",
                "ATC class of antidepressants outside the main groups.",
            ),
            (
                T(
                    "856377",
                    "trazodone hydrochloride 50 MG Oral Tablet",
                    "Low-dose trazodone tablet, often taken at night.",
                ),
            ),
        ),
    ),
    labs=(
        Lab(
            T(
                "44261-6",
                "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]",
                "Depression severity score from 0 to 27 from a nine-item questionnaire.",
            ),
            "Survey",
            "{score}",
            3.0,
            3.0,
            0.0,
            27.0,
            0,
        ),
        Lab(
            T(
                "55758-7",
                "Patient Health Questionnaire 2 item (PHQ-2) total score [Reported]",
                "Depression screening score from 0 to 6 from a two-item questionnaire.",
            ),
            "Survey",
            "{score}",
            0.5,
            0.8,
            0.0,
            6.0,
            0,
        ),
    ),
    cpt=(
        T(
            "90791",
            "Psychiatric diagnostic evaluation",
            "Initial assessment of a mental health problem by a clinician.",
        ),
        T(
            "90834",
            "Psychotherapy, 45 minutes with patient",
            "One individual psychotherapy session of about 45 minutes.",
        ),
        T(
            "96127",
            "Brief emotional/behavioral assessment with scoring and documentation, per "
            "standardized instrument",
            "Scoring of a standard screening questionnaire such as the PHQ-9.",
        ),
    ),
)

HEART_FAILURE = Group(
    "heart_failure",
    parent=T(
        "84114007",
        "Heart failure",
        "Grouping concept for inability of the heart to pump enough blood at normal pressures.",
    ),
    conditions=(
        Condition(
            T(
                "42343007",
                "Congestive heart failure",
                "Heart failure with fluid congestion of the lungs or periphery.",
            ),
            icd(
                "I50.9",
                "Heart failure, unspecified",
                "ICD-10-CM code for heart failure of unspecified type, including congestive "
                "heart failure not otherwise specified.",
            ),
        ),
        Condition(
            T(
                "417996009",
                "Systolic heart failure",
                "Heart failure with reduced left ventricular ejection fraction.",
            ),
            icd(
                "I50.20",
                "Unspecified systolic (congestive) heart failure",
                "ICD-10-CM code for systolic heart failure of unspecified acuity.",
            ),
        ),
        Condition(
            T(
                "418304008",
                "Diastolic heart failure",
                "Heart failure with preserved ejection fraction and impaired filling.",
            ),
            icd(
                "I50.30",
                "Unspecified diastolic (congestive) heart failure",
                "ICD-10-CM code for diastolic heart failure of unspecified acuity.",
            ),
        ),
        Condition(
            T(
                "85232009",
                "Left heart failure",
                "Failure of the left ventricle causing pulmonary congestion.",
            ),
            icd(
                "I50.1",
                "Left ventricular failure, unspecified",
                "ICD-10-CM code for left ventricular failure.",
            ),
        ),
    ),
    drugs=(
        Drug(
            T("4603", "furosemide", "Loop diuretic that relieves fluid overload."),
            T("C03CA", "Sulfonamides, plain", "ATC class of single-agent loop diuretics."),
            (
                T("313988", "furosemide 40 MG Oral Tablet", "Common furosemide tablet strength."),
                T("310429", "furosemide 20 MG Oral Tablet", "Low-dose furosemide tablet."),
            ),
        ),
        Drug(
            T(
                "9997",
                "spironolactone",
                "Mineralocorticoid receptor antagonist that improves survival in heart failure.",
            ),
            T("C03DA", "Aldosterone antagonists", "ATC class of aldosterone antagonist diuretics."),
            (
                T(
                    "313096",
                    "spironolactone 25 MG Oral Tablet",
                    "Usual daily tablet of spironolactone.",
                ),
            ),
        ),
        Drug(
            T(
                "1656328",
                "sacubitril",
                "Neprilysin inhibitor given with valsartan as an angiotensin receptor-neprilysin inhibitor.",
            ),
            T(
                "C09DX",
                "Angiotensin II receptor blockers (ARBs), other combinations",
                "ATC class that holds sacubitril with valsartan.",
            ),
            (
                T(
                    "1656349",
                    "sacubitril 49 MG / valsartan 51 MG Oral Tablet",
                    "Middle-strength sacubitril and valsartan tablet.",
                ),
                T(
                    "1656354",
                    "sacubitril 97 MG / valsartan 103 MG Oral Tablet",
                    "Target-strength sacubitril and valsartan tablet.",
                ),
            ),
        ),
        Drug(
            T(
                "20352",
                "carvedilol",
                "Beta and alpha-1 blocker that improves survival in heart failure.",
            ),
            T(
                "C07AG",
                "Alpha and beta blocking agents",
                "ATC class of mixed alpha and beta blockers.",
            ),
            (
                T("200031", "carvedilol 6.25 MG Oral Tablet", "Low starting tablet of carvedilol."),
                T("200033", "carvedilol 25 MG Oral Tablet", "Target tablet of carvedilol."),
            ),
        ),
    ),
    labs=(
        Lab(
            T(
                "30934-4",
                "Natriuretic peptide B [Mass/volume] in Serum or Plasma",
                "B-type natriuretic peptide released by stretched ventricles.",
            ),
            "Lab Test",
            "pg/mL",
            30.0,
            20.0,
            0.0,
            5000.0,
            0,
        ),
        Lab(
            T(
                "33762-6",
                "Natriuretic peptide.B prohormone N-Terminal [Mass/volume] in Serum or Plasma",
                "N-terminal pro-BNP, the inactive fragment released with BNP.",
            ),
            "Lab Test",
            "pg/mL",
            80.0,
            60.0,
            5.0,
            35000.0,
            0,
        ),
        Lab(
            T(
                "10230-1",
                "Left ventricular Ejection fraction",
                "Share of left ventricular volume ejected with each beat.",
            ),
            "Clinical Observation",
            "%",
            60.0,
            5.0,
            5.0,
            80.0,
            0,
        ),
    ),
    cpt=(
        T(
            "93306",
            "Echocardiography, transthoracic, real-time with image documentation (2D), "
            "complete, with spectral and color flow Doppler",
            "Complete transthoracic echocardiogram with Doppler.",
        ),
        T(
            "93308",
            "Echocardiography, transthoracic, real-time with image documentation (2D); "
            "follow-up or limited study",
            "Limited or follow-up transthoracic echocardiogram.",
        ),
    ),
)


# --------------------------------------------------------------------------------------------
# Acute episodes
# --------------------------------------------------------------------------------------------

PNEUMONIA = Group(
    "pneumonia",
    conditions=(
        Condition(
            T("233604007", "Pneumonia", "Infection and inflammation of the lung parenchyma."),
            icd(
                "J18.9",
                "Pneumonia, unspecified organism",
                "ICD-10-CM code for pneumonia with no organism identified.",
            ),
        ),
        Condition(
            T("53084003", "Bacterial pneumonia", "Pneumonia caused by a bacterial infection."),
            icd(
                "J15.9",
                "Unspecified bacterial pneumonia",
                "ICD-10-CM code for bacterial pneumonia of unspecified organism.",
            ),
            parent="233604007",
        ),
        Condition(
            T("75570004", "Viral pneumonia", "Pneumonia caused by a viral infection."),
            icd(
                "J12.9",
                "Viral pneumonia, unspecified",
                "ICD-10-CM code for viral pneumonia of unspecified virus.",
            ),
            parent="233604007",
        ),
        Condition(
            T(
                "233607000",
                "Pneumococcal pneumonia",
                "Pneumonia caused by Streptococcus pneumoniae.",
            ),
            icd(
                "J13",
                "Pneumonia due to Streptococcus pneumoniae",
                "ICD-10-CM code for pneumococcal pneumonia.",
            ),
            parent="53084003",
        ),
    ),
    drugs=(
        Drug(
            T(
                "18631",
                "azithromycin",
                "Macrolide antibiotic that covers atypical respiratory pathogens.",
            ),
            T("J01FA", "Macrolides", "ATC class of macrolide antibacterials."),
            (
                T(
                    "308460",
                    "azithromycin 250 MG Oral Tablet",
                    "Azithromycin tablet used in five-day courses.",
                ),
                T(
                    "248656",
                    "azithromycin 500 MG Oral Tablet",
                    "Azithromycin tablet used in three-day courses.",
                ),
            ),
        ),
        Drug(
            T("2193", "ceftriaxone", "Third-generation cephalosporin given by injection."),
            T(
                "J01DD",
                "Third-generation cephalosporins",
                "ATC class of third-generation cephalosporins.",
            ),
            (
                T(
                    "1665021",
                    "ceftriaxone 1000 MG Injection",
                    "One-gram vial of ceftriaxone for injection.",
                ),
            ),
        ),
    ),
    labs=(
        Lab(
            T(
                "1988-5",
                "C reactive protein [Mass/volume] in Serum or Plasma",
                "Acute phase protein that rises with infection and inflammation.",
            ),
            "Lab Test",
            "mg/L",
            2.0,
            1.5,
            0.1,
            500.0,
            1,
        ),
        Lab(
            T(
                "33959-8",
                "Procalcitonin [Mass/volume] in Serum or Plasma",
                "Marker that rises mainly in bacterial infection.",
            ),
            "Lab Test",
            "ng/mL",
            0.05,
            0.03,
            0.01,
            200.0,
            2,
        ),
    ),
    cpt=(
        T(
            "87040",
            "Culture, bacterial; blood, aerobic, with isolation and presumptive identification "
            "of isolates",
            "Blood culture to detect bacteraemia.",
        ),
    ),
    pcs=(
        T(
            "5A1945Z",
            "Respiratory Ventilation, 24-96 Consecutive Hours",
            "ICD-10-PCS code for invasive mechanical ventilation lasting one to four days.",
        ),
    ),
)

URINARY_TRACT_INFECTION = Group(
    "urinary_tract_infection",
    conditions=(
        Condition(
            T(
                "68566005",
                "Urinary tract infectious disease",
                "Bacterial infection of the urinary tract.",
            ),
            icd(
                "N39.0",
                "Urinary tract infection, site not specified",
                "ICD-10-CM code for a urinary tract infection without a stated site.",
            ),
        ),
        Condition(
            T(
                "68226007",
                "Acute cystitis",
                "Acute infection of the bladder with dysuria and frequency.",
            ),
            icd(
                "N30.00",
                "Acute cystitis without hematuria",
                "ICD-10-CM code for acute cystitis without blood in the urine.",
            ),
            parent="68566005",
        ),
        Condition(
            T(
                "36689008",
                "Acute pyelonephritis",
                "Acute bacterial infection of the kidney with fever and flank pain.",
            ),
            icd("N10", "Acute pyelonephritis", "ICD-10-CM code for acute pyelonephritis."),
            parent="68566005",
        ),
    ),
    drugs=(
        Drug(
            T("7454", "nitrofurantoin", "Urinary antiseptic used for uncomplicated cystitis."),
            T("J01XE", "Nitrofuran derivatives", "ATC class of nitrofuran antibacterials."),
            (
                T(
                    "1648755",
                    "nitrofurantoin, macrocrystals 25 MG / nitrofurantoin, monohydrate 75 MG "
                    "Oral Capsule",
                    "Twice-daily modified-release nitrofurantoin capsule.",
                ),
            ),
        ),
        Drug(
            T("2551", "ciprofloxacin", "Fluoroquinolone antibiotic used for pyelonephritis."),
            T("J01MA", "Fluoroquinolones", "ATC class of fluoroquinolone antibacterials."),
            (T("309309", "ciprofloxacin 500 MG Oral Tablet", "Twice-daily ciprofloxacin tablet."),),
        ),
    ),
    cpt=(
        T(
            "81001",
            "Urinalysis, by dip stick or tablet reagent, automated, with microscopy",
            "Automated urine dipstick with microscopy of the sediment.",
        ),
        T(
            "87086",
            "Culture, bacterial; quantitative colony count, urine",
            "Urine culture with a colony count.",
        ),
    ),
)

INFLUENZA = Group(
    "influenza",
    conditions=(
        Condition(
            T("6142004", "Influenza", "Acute respiratory infection caused by an influenza virus."),
            icd(
                "J11.1",
                "Influenza due to unidentified influenza virus with other respiratory "
                "manifestations",
                "ICD-10-CM code for clinically diagnosed influenza without a virus identified.",
            ),
        ),
        Condition(
            T(
                "442438000",
                "Influenza caused by Influenza A virus",
                "Influenza in which an influenza A virus was identified.",
            ),
            icd(
                "J10.1",
                "Influenza due to other identified influenza virus with other respiratory "
                "manifestations",
                "ICD-10-CM code for laboratory-confirmed seasonal influenza.",
            ),
            parent="6142004",
        ),
    ),
    drugs=(
        Drug(
            T("260101", "oseltamivir", "Neuraminidase inhibitor that shortens influenza illness."),
            T(
                "J05AH",
                "Neuraminidase inhibitors",
                "ATC class of influenza neuraminidase inhibitors.",
            ),
            (
                T(
                    "261315",
                    "oseltamivir 75 MG Oral Capsule",
                    "Twice-daily oseltamivir capsule for adults.",
                ),
            ),
        ),
    ),
    cpt=(
        T(
            "87804",
            "Infectious agent antigen detection by immunoassay with direct optical observation; "
            "influenza",
            "Rapid point-of-care influenza antigen test.",
        ),
    ),
)

ACUTE_MYOCARDIAL_INFARCTION = Group(
    "acute_myocardial_infarction",
    conditions=(
        Condition(
            T(
                "57054005",
                "Acute myocardial infarction",
                "Death of heart muscle from sudden loss of coronary blood flow.",
            ),
            icd(
                "I21.9",
                "Acute myocardial infarction, unspecified",
                "ICD-10-CM code for acute myocardial infarction of unspecified type.",
            ),
        ),
        Condition(
            T(
                "401303003",
                "Acute ST segment elevation myocardial infarction",
                "Myocardial infarction with ST elevation from complete coronary occlusion.",
            ),
            icd(
                "I21.3",
                "ST elevation (STEMI) myocardial infarction of unspecified site",
                "ICD-10-CM code for STEMI without a stated site.",
            ),
            parent="57054005",
        ),
        Condition(
            T(
                "401314000",
                "Acute non-ST segment elevation myocardial infarction",
                "Myocardial infarction with raised troponin but no ST elevation.",
            ),
            icd(
                "I21.4",
                "Non-ST elevation (NSTEMI) myocardial infarction",
                "ICD-10-CM code for NSTEMI.",
            ),
            parent="57054005",
        ),
    ),
    drugs=(
        Drug(
            T("5224", "heparin", "Unfractionated heparin given by infusion or injection."),
            T("B01AB", "Heparin group", "ATC class of heparins."),
            (
                T(
                    "1361615",
                    "heparin sodium, porcine 5000 UNT/ML Injectable Solution",
                    "Concentrated heparin solution for injection.",
                ),
            ),
        ),
        Drug(
            T("67108", "enoxaparin", "Low molecular weight heparin given subcutaneously."),
            T("B01AB", "Heparin group", "ATC class of heparins."),
            (
                T(
                    "854235",
                    "0.4 ML enoxaparin sodium 100 MG/ML Prefilled Syringe",
                    "Prefilled syringe holding 40 milligrams of enoxaparin.",
                ),
            ),
        ),
    ),
    labs=(
        Lab(
            T(
                "10839-9",
                "Troponin I.cardiac [Mass/volume] in Serum or Plasma",
                "Cardiac troponin I released by injured heart muscle.",
            ),
            "Lab Test",
            "ng/mL",
            0.01,
            0.008,
            0.0,
            100.0,
            3,
        ),
        Lab(
            T(
                "13969-1",
                "Creatine kinase.MB [Mass/volume] in Serum or Plasma",
                "Heart-specific creatine kinase isoenzyme.",
            ),
            "Lab Test",
            "ng/mL",
            2.5,
            1.2,
            0.0,
            500.0,
            1,
        ),
    ),
    cpt=(
        T(
            "92941",
            "Percutaneous transluminal revascularization of acute total/subtotal occlusion "
            "during acute myocardial infarction",
            "Emergency coronary angioplasty of the culprit artery during an infarction.",
        ),
    ),
    pcs=(
        T(
            "02703DZ",
            "Dilation of Coronary Artery, One Artery with Intraluminal Device, Percutaneous "
            "Approach",
            "ICD-10-PCS code for inpatient angioplasty with a stent in one coronary artery.",
        ),
    ),
)

FRACTURE = Group(
    "fracture",
    parent=T("125605004", "Fracture of bone", "Grouping concept for a break in a bone."),
    conditions=(
        Condition(
            T(
                "5913000",
                "Fracture of neck of femur",
                "Hip fracture through the femoral neck, typical after a fall in older adults.",
            ),
            icd(
                "S72.009A",
                "Fracture of unspecified part of neck of unspecified femur, initial encounter "
                "for closed fracture",
                "ICD-10-CM code for a closed femoral neck fracture at first treatment.",
            ),
        ),
        Condition(
            T("65966004", "Fracture of forearm", "Fracture of the radius, the ulna, or both."),
            icd(
                "S52.90XA",
                "Unspecified fracture of unspecified forearm, initial encounter for closed "
                "fracture",
                "ICD-10-CM code for a closed forearm fracture at first treatment.",
            ),
        ),
        Condition(
            T(
                "33737001",
                "Fracture of rib",
                "Fracture of one or more ribs, usually after a fall or blow.",
            ),
            icd(
                "S22.39XA",
                "Fracture of one rib, unspecified side, initial encounter for closed fracture",
                "ICD-10-CM code for a single closed rib fracture at first treatment.",
            ),
        ),
        Condition(
            T(
                "58150001",
                "Fracture of clavicle",
                "Fracture of the collarbone, usually after a fall.",
            ),
            icd(
                "S42.009A",
                "Fracture of unspecified part of unspecified clavicle, initial encounter for "
                "closed fracture",
                "ICD-10-CM code for a closed clavicle fracture at first treatment.",
            ),
        ),
    ),
    drugs=(
        Drug(
            T("7804", "oxycodone", "Strong opioid analgesic for severe acute pain."),
            T(
                "N02AA",
                "Natural opium alkaloids",
                "ATC class of natural and semisynthetic opioids.",
            ),
            (
                T(
                    "1049621",
                    "oxycodone hydrochloride 5 MG Oral Tablet",
                    "Immediate-release oxycodone tablet.",
                ),
            ),
        ),
        Drug(
            T("10689", "tramadol", "Weak opioid analgesic with serotonergic effects."),
            T("N02AX", "Other opioids", "ATC class of opioids outside the main groups."),
            (
                T(
                    "835603",
                    "tramadol hydrochloride 50 MG Oral Tablet",
                    "Immediate-release tramadol tablet.",
                ),
            ),
        ),
    ),
    cpt=(
        T(
            "73502",
            "Radiologic examination, hip, unilateral, with pelvis when performed; 2-3 views",
            "Plain radiographs of one hip to diagnose a fracture.",
        ),
        T(
            "27236",
            "Open treatment of femoral fracture, proximal end, neck, internal fixation or "
            "prosthetic replacement",
            "Surgical repair or replacement for a femoral neck fracture.",
        ),
    ),
)

GASTROENTERITIS = Group(
    "gastroenteritis",
    conditions=(
        Condition(
            T(
                "25374005",
                "Gastroenteritis",
                "Inflammation of the stomach and intestines with vomiting and diarrhoea.",
            ),
            icd(
                "A09",
                "Infectious gastroenteritis and colitis, unspecified",
                "ICD-10-CM code for presumed infectious diarrhoea without an organism.",
            ),
        ),
        Condition(
            T("34095006", "Dehydration", "Loss of body water, here from vomiting and diarrhoea."),
            icd("E86.0", "Dehydration", "ICD-10-CM code for dehydration."),
        ),
    ),
    drugs=(
        Drug(
            T(
                "6922",
                "metronidazole",
                "Nitroimidazole antimicrobial active against anaerobes and protozoa.",
            ),
            T(
                "P01AB",
                "Nitroimidazole derivatives",
                "ATC class of nitroimidazole antiprotozoals.",
            ),
            (
                T(
                    "311681",
                    "metronidazole 500 MG Oral Tablet",
                    "Standard oral metronidazole tablet.",
                ),
            ),
        ),
    ),
    cpt=(
        T(
            "96360",
            "Intravenous infusion, hydration; initial, 31 minutes to 1 hour",
            "First hour of intravenous fluids for dehydration.",
        ),
    ),
)


# --------------------------------------------------------------------------------------------
# Benign background conditions (no effect on outcomes)
# --------------------------------------------------------------------------------------------

LOW_BACK_PAIN = Group(
    "low_back_pain",
    conditions=(
        Condition(
            T(
                "279039007",
                "Low back pain",
                "Pain in the lumbar region, usually mechanical and self-limiting.",
            ),
            icd(
                "M54.50",
                "Low back pain, unspecified",
                "ICD-10-CM code for low back pain without further detail.",
            ),
            finding=True,
        ),
        Condition(
            T("23056005", "Sciatica", "Pain radiating down the leg along the sciatic nerve."),
            icd(
                "M54.30",
                "Sciatica, unspecified side",
                "ICD-10-CM code for sciatica without a stated side.",
            ),
        ),
    ),
    drugs=(
        Drug(
            T("21949", "cyclobenzaprine", "Centrally acting skeletal muscle relaxant."),
            T(
                "M03BX",
                "Other centrally acting agents",
                "ATC class of centrally acting muscle relaxants outside the main groups.",
            ),
            (
                T(
                    "828348",
                    "cyclobenzaprine hydrochloride 10 MG Oral Tablet",
                    "Cyclobenzaprine tablet taken at night.",
                ),
            ),
        ),
    ),
)

ALLERGIC_RHINITIS = Group(
    "allergic_rhinitis",
    conditions=(
        Condition(
            T(
                "61582004",
                "Allergic rhinitis",
                "Nasal inflammation with sneezing and congestion triggered by allergens.",
            ),
            icd(
                "J30.9",
                "Allergic rhinitis, unspecified",
                "ICD-10-CM code for allergic rhinitis of unspecified cause.",
            ),
        ),
        Condition(
            T(
                "367498001",
                "Seasonal allergic rhinitis",
                "Hay fever triggered by pollens in particular seasons.",
            ),
            icd(
                "J30.2",
                "Other seasonal allergic rhinitis",
                "ICD-10-CM code for seasonal allergic rhinitis.",
            ),
            parent="61582004",
        ),
    ),
    drugs=(
        Drug(
            T("20610", "cetirizine", "Second-generation oral antihistamine."),
            T("R06AE", "Piperazine derivatives", "ATC class of piperazine antihistamines."),
            (
                T(
                    "1014676",
                    "cetirizine hydrochloride 5 MG Oral Tablet",
                    "Low-strength cetirizine tablet.",
                ),
            ),
        ),
    ),
)

OSTEOARTHRITIS = Group(
    "osteoarthritis",
    conditions=(
        Condition(
            T(
                "396275006",
                "Osteoarthritis",
                "Degenerative joint disease with cartilage loss and joint pain.",
            ),
            icd(
                "M19.90",
                "Unspecified osteoarthritis, unspecified site",
                "ICD-10-CM code for osteoarthritis of an unstated joint.",
            ),
        ),
        Condition(
            T("239873007", "Osteoarthritis of knee", "Degenerative disease of the knee joint."),
            icd(
                "M17.9",
                "Osteoarthritis of knee, unspecified",
                "ICD-10-CM code for knee osteoarthritis.",
            ),
            parent="396275006",
        ),
        Condition(
            T("239872002", "Osteoarthritis of hip", "Degenerative disease of the hip joint."),
            icd(
                "M16.9",
                "Osteoarthritis of hip, unspecified",
                "ICD-10-CM code for hip osteoarthritis.",
            ),
            parent="396275006",
        ),
    ),
    # NSAIDs: the synthetic cohort's "interaction" hazard raises heart-failure risk after a
    # recent course in a patient with kidney disease (ehrseq.data.synthetic).
    drugs=(
        Drug(
            T("5640", "ibuprofen", "Non-steroidal anti-inflammatory drug (NSAID) for joint pain."),
            T("M01AE", "Propionic acid derivatives", "ATC class of propionic acid NSAIDs."),
            (
                T(
                    "197805",
                    "ibuprofen 400 MG Oral Tablet",
                    "Prescription-strength ibuprofen tablet.",
                ),
            ),
        ),
        Drug(
            T("7258", "naproxen", "Longer-acting propionic acid NSAID for joint pain."),
            T("M01AE", "Propionic acid derivatives", "ATC class of propionic acid NSAIDs."),
            (T("198014", "naproxen 500 MG Oral Tablet", "Twice-daily naproxen tablet."),),
        ),
    ),
)

GERD = Group(
    "gerd",
    conditions=(
        Condition(
            T(
                "235595009",
                "Gastroesophageal reflux disease",
                "Reflux of stomach contents into the oesophagus causing heartburn.",
            ),
            icd(
                "K21.9",
                "Gastro-esophageal reflux disease without esophagitis",
                "ICD-10-CM code for reflux disease without oesophagitis.",
            ),
        ),
    ),
)

HEADACHE = Group(
    "headache",
    conditions=(
        Condition(
            T("25064002", "Headache", "Pain in the head without a more specific diagnosis."),
            icd(
                "R51.9",
                "Headache, unspecified",
                "ICD-10-CM code for headache without further detail.",
            ),
            finding=True,
        ),
        Condition(
            T(
                "37796009",
                "Migraine",
                "Recurrent throbbing headache often with nausea and sensitivity to light.",
            ),
            icd(
                "G43.909",
                "Migraine, unspecified, not intractable, without status migrainosus",
                "ICD-10-CM code for ordinary migraine without complications.",
            ),
        ),
        Condition(
            T(
                "398057008",
                "Tension-type headache",
                "Band-like bilateral headache without migraine features.",
            ),
            icd(
                "G44.209",
                "Tension-type headache, unspecified, not intractable",
                "ICD-10-CM code for tension-type headache.",
            ),
        ),
    ),
    drugs=(
        Drug(
            T("161", "acetaminophen", "Simple analgesic and antipyretic."),
            T("N02BE", "Anilides", "ATC class of paracetamol-type analgesics."),
            (
                T(
                    "313782",
                    "acetaminophen 325 MG Oral Tablet",
                    "Regular-strength acetaminophen tablet.",
                ),
            ),
        ),
    ),
)

INSOMNIA = Group(
    "insomnia",
    conditions=(
        Condition(
            T(
                "193462001",
                "Insomnia",
                "Difficulty falling or staying asleep with daytime impairment.",
            ),
            icd(
                "G47.00",
                "Insomnia, unspecified",
                "ICD-10-CM code for insomnia of unspecified type.",
            ),
        ),
    ),
    drugs=(
        Drug(
            T("39993", "zolpidem", "Short-acting non-benzodiazepine hypnotic."),
            T(
                "N05CF",
                "Benzodiazepine related drugs",
                "ATC class of non-benzodiazepine hypnotics.",
            ),
            (
                T(
                    "854873",
                    "zolpidem tartrate 10 MG Oral Tablet",
                    "Standard zolpidem tablet taken at bedtime.",
                ),
                T("854876", "zolpidem tartrate 5 MG Oral Tablet", "Low-dose zolpidem tablet."),
            ),
        ),
    ),
)

DERMATITIS = Group(
    "dermatitis",
    conditions=(
        Condition(
            T("24079001", "Atopic dermatitis", "Chronic itchy eczema associated with atopy."),
            icd(
                "L20.9",
                "Atopic dermatitis, unspecified",
                "ICD-10-CM code for atopic dermatitis.",
            ),
        ),
        Condition(
            T(
                "238575004",
                "Allergic contact dermatitis",
                "Eczema from a delayed allergy to a substance touching the skin.",
            ),
            icd(
                "L23.9",
                "Allergic contact dermatitis, unspecified cause",
                "ICD-10-CM code for allergic contact dermatitis.",
            ),
        ),
        Condition(
            T(
                "110979008",
                "Irritant contact dermatitis",
                "Skin inflammation from direct damage by an irritant.",
            ),
            icd(
                "L24.9",
                "Irritant contact dermatitis, unspecified cause",
                "ICD-10-CM code for irritant contact dermatitis.",
            ),
        ),
    ),
)

HYPOTHYROIDISM = Group(
    "hypothyroidism",
    conditions=(
        Condition(
            T("40930008", "Hypothyroidism", "Underactive thyroid with low thyroid hormone levels."),
            icd(
                "E03.9",
                "Hypothyroidism, unspecified",
                "ICD-10-CM code for hypothyroidism of unspecified cause.",
            ),
        ),
        Condition(
            T(
                "21983002",
                "Hashimoto thyroiditis",
                "Autoimmune thyroiditis, the commonest cause of hypothyroidism.",
            ),
            icd("E06.3", "Autoimmune thyroiditis", "ICD-10-CM code for autoimmune thyroiditis."),
        ),
        Condition(
            T(
                "54823002",
                "Subclinical hypothyroidism",
                "Raised thyroid stimulating hormone with normal free thyroxine.",
            ),
            icd(
                "E03.8",
                "Other specified hypothyroidism",
                "ICD-10-CM code for other specified hypothyroidism.",
            ),
            parent="40930008",
        ),
    ),
    labs=(
        Lab(
            T(
                "3016-3",
                "Thyrotropin [Units/volume] in Serum or Plasma",
                "Thyroid stimulating hormone, the first test of thyroid function.",
            ),
            "Lab Test",
            "m[IU]/L",
            1.8,
            0.9,
            0.01,
            100.0,
            2,
        ),
        Lab(
            T(
                "3024-7",
                "Thyroxine (T4) free [Mass/volume] in Serum or Plasma",
                "Unbound thyroxine available to tissues.",
            ),
            "Lab Test",
            "ng/dL",
            1.2,
            0.2,
            0.1,
            7.0,
            2,
        ),
    ),
)

ANXIETY = Group(
    "anxiety",
    conditions=(
        Condition(
            T("197480006", "Anxiety disorder", "Excessive worry or fear that impairs daily life."),
            icd(
                "F41.9",
                "Anxiety disorder, unspecified",
                "ICD-10-CM code for anxiety disorder of unspecified type.",
            ),
        ),
        Condition(
            T(
                "21897009",
                "Generalized anxiety disorder",
                "Persistent excessive worry about many things for six months or more.",
            ),
            icd("F41.1", "Generalized anxiety disorder", "ICD-10-CM code for generalised anxiety."),
            parent="197480006",
        ),
        Condition(
            T(
                "371631005",
                "Panic disorder",
                "Recurrent unexpected panic attacks with anticipatory fear.",
            ),
            icd(
                "F41.0",
                "Panic disorder [episodic paroxysmal anxiety]",
                "ICD-10-CM code for panic disorder.",
            ),
            parent="197480006",
        ),
    ),
    drugs=(
        Drug(
            T("5553", "hydroxyzine", "Sedating antihistamine used for short-term anxiety."),
            T(
                "N05BB",
                "Diphenylmethane derivatives",
                "ATC class of diphenylmethane anxiolytics.",
            ),
            (
                T(
                    "995258",
                    "hydroxyzine hydrochloride 25 MG Oral Tablet",
                    "Hydroxyzine tablet taken as needed.",
                ),
            ),
        ),
    ),
)

SINUSITIS = Group(
    "sinusitis",
    conditions=(
        Condition(
            T(
                "15805002",
                "Acute sinusitis",
                "Inflammation of the paranasal sinuses lasting less than four weeks.",
            ),
            icd(
                "J01.90",
                "Acute sinusitis, unspecified",
                "ICD-10-CM code for acute sinusitis of an unstated sinus.",
            ),
        ),
        Condition(
            T(
                "40055000",
                "Chronic sinusitis",
                "Sinus inflammation lasting twelve weeks or more.",
            ),
            icd(
                "J32.9",
                "Chronic sinusitis, unspecified",
                "ICD-10-CM code for chronic sinusitis of an unstated sinus.",
            ),
        ),
    ),
    drugs=(
        Drug(
            T(
                "723",
                "amoxicillin",
                "Aminopenicillin antibiotic for common respiratory infections.",
            ),
            T(
                "J01CA",
                "Penicillins with extended spectrum",
                "ATC class of aminopenicillins and related penicillins.",
            ),
            (
                T("308191", "amoxicillin 500 MG Oral Capsule", "Standard amoxicillin capsule."),
                T("308194", "amoxicillin 875 MG Oral Tablet", "Twice-daily amoxicillin tablet."),
            ),
        ),
    ),
)

CONJUNCTIVITIS = Group(
    "conjunctivitis",
    conditions=(
        Condition(
            T("9826008", "Conjunctivitis", "Inflammation of the conjunctiva causing a red eye."),
            icd(
                "H10.9",
                "Unspecified conjunctivitis",
                "ICD-10-CM code for conjunctivitis of unstated type.",
            ),
        ),
    ),
)

VITAMIN_D_DEFICIENCY = Group(
    "vitamin_d_deficiency",
    conditions=(
        Condition(
            T(
                "34713006",
                "Vitamin D deficiency",
                "Low vitamin D stores, usually from little sunlight.",
            ),
            icd(
                "E55.9",
                "Vitamin D deficiency, unspecified",
                "ICD-10-CM code for vitamin D deficiency.",
            ),
        ),
    ),
    labs=(
        Lab(
            T(
                "62292-8",
                "25-Hydroxyvitamin D2+25-Hydroxyvitamin D3 [Mass/volume] in Serum or Plasma",
                "Total 25-hydroxyvitamin D, the usual measure of vitamin D status.",
            ),
            "Lab Test",
            "ng/mL",
            30.0,
            10.0,
            3.0,
            150.0,
            0,
        ),
    ),
)


# --------------------------------------------------------------------------------------------
# Routine care everyone gets
# --------------------------------------------------------------------------------------------


def _lab(code, name, cls, unit, mean, sd, lo, hi, dec, description) -> Lab:
    return Lab(T(code, name, description), cls, unit, mean, sd, lo, hi, dec)


ROUTINE_CARE = Group(
    "routine",
    labs=(
        _lab(
            "8480-6",
            "Systolic blood pressure",
            "Clinical Observation",
            "mm[Hg]",
            120.0,
            15.0,
            60.0,
            250.0,
            0,
            "Peak arterial pressure during ventricular contraction.",
        ),
        _lab(
            "8462-4",
            "Diastolic blood pressure",
            "Clinical Observation",
            "mm[Hg]",
            76.0,
            10.0,
            30.0,
            150.0,
            0,
            "Arterial pressure between heartbeats.",
        ),
        _lab(
            "8867-4",
            "Heart rate",
            "Clinical Observation",
            "/min",
            72.0,
            11.0,
            30.0,
            200.0,
            0,
            "Number of heartbeats per minute.",
        ),
        _lab(
            "9279-1",
            "Respiratory rate",
            "Clinical Observation",
            "/min",
            15.0,
            2.5,
            6.0,
            60.0,
            0,
            "Number of breaths per minute.",
        ),
        _lab(
            "8310-5",
            "Body temperature",
            "Clinical Observation",
            "Cel",
            36.8,
            0.35,
            33.0,
            42.0,
            1,
            "Core body temperature.",
        ),
        _lab(
            "59408-5",
            "Oxygen saturation in Arterial blood by Pulse oximetry",
            "Clinical Observation",
            "%",
            97.5,
            1.5,
            70.0,
            100.0,
            0,
            "Share of haemoglobin carrying oxygen measured by a finger probe.",
        ),
        _lab(
            "29463-7",
            "Body weight",
            "Clinical Observation",
            "kg",
            80.0,
            17.0,
            30.0,
            250.0,
            1,
            "Weight of the whole body.",
        ),
        _lab(
            "8302-2",
            "Body height",
            "Clinical Observation",
            "cm",
            170.0,
            10.0,
            130.0,
            210.0,
            1,
            "Standing height.",
        ),
        _lab(
            "39156-5",
            "Body mass index (BMI) [Ratio]",
            "Clinical Observation",
            "kg/m2",
            27.5,
            5.5,
            12.0,
            70.0,
            1,
            "Weight in kilograms divided by the square of height in metres.",
        ),
        _lab(
            "718-7",
            "Hemoglobin [Mass/volume] in Blood",
            "Lab Test",
            "g/dL",
            14.0,
            1.4,
            4.0,
            22.0,
            1,
            "Oxygen-carrying protein concentration in whole blood.",
        ),
        _lab(
            "4544-3",
            "Hematocrit [Volume Fraction] of Blood by Automated count",
            "Lab Test",
            "%",
            42.0,
            4.0,
            15.0,
            65.0,
            1,
            "Share of blood volume taken up by red cells.",
        ),
        _lab(
            "6690-2",
            "Leukocytes [#/volume] in Blood by Automated count",
            "Lab Test",
            "10*3/uL",
            7.0,
            1.8,
            0.5,
            50.0,
            1,
            "White blood cell count.",
        ),
        _lab(
            "777-3",
            "Platelets [#/volume] in Blood by Automated count",
            "Lab Test",
            "10*3/uL",
            250.0,
            55.0,
            10.0,
            1000.0,
            0,
            "Platelet count.",
        ),
        _lab(
            "2951-2",
            "Sodium [Moles/volume] in Serum or Plasma",
            "Lab Test",
            "mmol/L",
            140.0,
            2.5,
            110.0,
            170.0,
            0,
            "Serum sodium, the main extracellular cation.",
        ),
        _lab(
            "2823-3",
            "Potassium [Moles/volume] in Serum or Plasma",
            "Lab Test",
            "mmol/L",
            4.2,
            0.35,
            2.0,
            8.0,
            1,
            "Serum potassium, raised in kidney failure.",
        ),
        _lab(
            "2075-0",
            "Chloride [Moles/volume] in Serum or Plasma",
            "Lab Test",
            "mmol/L",
            103.0,
            3.0,
            80.0,
            130.0,
            0,
            "Serum chloride, the main extracellular anion.",
        ),
        _lab(
            "2028-9",
            "Carbon dioxide, total [Moles/volume] in Serum or Plasma",
            "Lab Test",
            "mmol/L",
            25.0,
            2.5,
            8.0,
            45.0,
            0,
            "Total carbon dioxide, mostly bicarbonate.",
        ),
        _lab(
            "3094-0",
            "Urea nitrogen [Mass/volume] in Serum or Plasma",
            "Lab Test",
            "mg/dL",
            14.0,
            4.0,
            2.0,
            150.0,
            0,
            "Blood urea nitrogen, a waste product cleared by the kidneys.",
        ),
        _lab(
            "2160-0",
            "Creatinine [Mass/volume] in Serum or Plasma",
            "Lab Test",
            "mg/dL",
            0.95,
            0.2,
            0.3,
            15.0,
            2,
            "Serum creatinine, rising as kidney filtration falls.",
        ),
        _lab(
            "2345-7",
            "Glucose [Mass/volume] in Serum or Plasma",
            "Lab Test",
            "mg/dL",
            95.0,
            12.0,
            40.0,
            600.0,
            0,
            "Plasma glucose taken at any time of day.",
        ),
        _lab(
            "17861-6",
            "Calcium [Mass/volume] in Serum or Plasma",
            "Lab Test",
            "mg/dL",
            9.5,
            0.4,
            6.0,
            14.0,
            1,
            "Total serum calcium.",
        ),
        _lab(
            "1751-7",
            "Albumin [Mass/volume] in Serum or Plasma",
            "Lab Test",
            "g/dL",
            4.3,
            0.35,
            1.5,
            6.0,
            1,
            "Main plasma protein made by the liver.",
        ),
        _lab(
            "1742-6",
            "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
            "Lab Test",
            "U/L",
            25.0,
            10.0,
            3.0,
            1000.0,
            0,
            "Liver enzyme released by injured hepatocytes.",
        ),
        _lab(
            "1920-8",
            "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
            "Lab Test",
            "U/L",
            24.0,
            8.0,
            5.0,
            1000.0,
            0,
            "Enzyme from liver and muscle released by cell injury.",
        ),
        _lab(
            "2085-9",
            "Cholesterol in HDL [Mass/volume] in Serum or Plasma",
            "Lab Test",
            "mg/dL",
            52.0,
            13.0,
            15.0,
            120.0,
            0,
            "High density lipoprotein cholesterol, the protective fraction.",
        ),
        _lab(
            "2571-8",
            "Triglyceride [Mass/volume] in Serum or Plasma",
            "Lab Test",
            "mg/dL",
            120.0,
            50.0,
            30.0,
            2000.0,
            0,
            "Serum triglycerides from the lipid panel.",
        ),
    ),
    cpt=(
        T(
            "99203",
            "Office or other outpatient visit, new patient, low medical decision making",
            "First office visit of a new patient with a low-complexity problem.",
        ),
        T(
            "99204",
            "Office or other outpatient visit, new patient, moderate medical decision making",
            "First office visit of a new patient with a moderately complex problem.",
        ),
        T(
            "99212",
            "Office or other outpatient visit, established patient, straightforward medical decision making",
            "Short office visit of a known patient with a simple problem.",
        ),
        T(
            "99213",
            "Office or other outpatient visit, established patient, low medical decision making",
            "Office visit of a known patient with a low-complexity problem.",
        ),
        T(
            "99214",
            "Office or other outpatient visit, established patient, moderate medical decision making",
            "Office visit of a known patient with a moderately complex problem.",
        ),
        T(
            "99215",
            "Office or other outpatient visit, established patient, high medical decision making",
            "Office visit of a known patient with a highly complex problem.",
        ),
        T(
            "99396",
            "Periodic comprehensive preventive medicine reevaluation, established patient, 40-64 years",
            "Annual check-up of a known adult aged 40 to 64.",
        ),
        T(
            "99397",
            "Periodic comprehensive preventive medicine reevaluation, established patient, 65 years and older",
            "Annual check-up of a known adult aged 65 or older.",
        ),
        T(
            "99221",
            "Initial hospital inpatient or observation care, straightforward or low medical decision making",
            "Admission assessment of a low-complexity inpatient.",
        ),
        T(
            "99222",
            "Initial hospital inpatient or observation care, moderate medical decision making",
            "Admission assessment of a moderately complex inpatient.",
        ),
        T(
            "99223",
            "Initial hospital inpatient or observation care, high medical decision making",
            "Admission assessment of a highly complex inpatient.",
        ),
        T(
            "99231",
            "Subsequent hospital inpatient or observation care, straightforward or low medical decision making",
            "Daily ward round of a stable inpatient.",
        ),
        T(
            "99232",
            "Subsequent hospital inpatient or observation care, moderate medical decision making",
            "Daily ward round of an inpatient needing moderate attention.",
        ),
        T(
            "99233",
            "Subsequent hospital inpatient or observation care, high medical decision making",
            "Daily ward round of an unstable or complex inpatient.",
        ),
        T(
            "99238",
            "Hospital inpatient or observation discharge day management, 30 minutes or less",
            "Discharge of an inpatient taking half an hour or less.",
        ),
        T(
            "99283",
            "Emergency department visit, low medical decision making",
            "Emergency visit for a low-complexity problem.",
        ),
        T(
            "99284",
            "Emergency department visit, moderate medical decision making",
            "Emergency visit for a moderately complex problem.",
        ),
        T(
            "99285",
            "Emergency department visit, high medical decision making",
            "Emergency visit for a highly complex or life-threatening problem.",
        ),
        T(
            "36415",
            "Collection of venous blood by venipuncture",
            "Drawing a blood sample from a vein.",
        ),
        T(
            "80053",
            "Comprehensive metabolic panel",
            "Panel of electrolytes, glucose, kidney and liver tests.",
        ),
        T(
            "80048",
            "Basic metabolic panel (Calcium, total)",
            "Panel of electrolytes, glucose, calcium and kidney tests.",
        ),
        T(
            "85025",
            "Blood count; complete (CBC), automated, with automated differential WBC count",
            "Full blood count with automated white cell differential.",
        ),
        T("80061", "Lipid panel", "Panel of total cholesterol, HDL cholesterol and triglycerides."),
        T(
            "83036",
            "Hemoglobin; glycosylated (A1C)",
            "Laboratory measurement of glycated haemoglobin.",
        ),
        T(
            "84443",
            "Thyroid stimulating hormone (TSH)",
            "Laboratory measurement of thyroid stimulating hormone.",
        ),
        T(
            "90686",
            "Influenza virus vaccine, quadrivalent (IIV4), split virus, preservative free, 0.5 mL dosage, for intramuscular use",
            "Seasonal influenza vaccine given into muscle.",
        ),
        T(
            "90732",
            "Pneumococcal polysaccharide vaccine, 23-valent (PPSV23), adult or immunosuppressed patient dosage",
            "Pneumococcal vaccine covering 23 serotypes.",
        ),
        T("90471", "Immunization administration, one vaccine", "Giving one vaccine by injection."),
        T(
            "77067",
            "Screening mammography, bilateral (2-view study of each breast), including computer-aided detection when performed",
            "Two-view screening mammogram of both breasts.",
        ),
        T(
            "45378",
            "Colonoscopy, flexible; diagnostic",
            "Flexible colonoscopy, here used for colorectal cancer screening.",
        ),
        T(
            "93000",
            "Electrocardiogram, routine ECG with at least 12 leads; with interpretation and report",
            "Resting twelve-lead electrocardiogram.",
        ),
        T(
            "71046",
            "Radiologic examination, chest; 2 views",
            "Frontal and lateral chest radiograph.",
        ),
    ),
)


SPEC: tuple[Group, ...] = (
    HYPERTENSION,
    TYPE2_DIABETES,
    HYPERLIPIDEMIA,
    OBESITY,
    CHRONIC_KIDNEY_DISEASE,
    CORONARY_ARTERY_DISEASE,
    ATRIAL_FIBRILLATION,
    COPD,
    DEPRESSION,
    HEART_FAILURE,
    PNEUMONIA,
    URINARY_TRACT_INFECTION,
    INFLUENZA,
    ACUTE_MYOCARDIAL_INFARCTION,
    FRACTURE,
    GASTROENTERITIS,
    LOW_BACK_PAIN,
    ALLERGIC_RHINITIS,
    OSTEOARTHRITIS,
    GERD,
    HEADACHE,
    INSOMNIA,
    DERMATITIS,
    HYPOTHYROIDISM,
    ANXIETY,
    SINUSITIS,
    CONJUNCTIVITIS,
    VITAMIN_D_DEFICIENCY,
    ROUTINE_CARE,
)


# --------------------------------------------------------------------------------------------
# Build the tables
# --------------------------------------------------------------------------------------------


class _Builder:
    def __init__(self) -> None:
        self.concepts: list[dict] = []
        self.ann: list[dict] = []
        self.rel: set[tuple[int, int, str]] = set()
        self.by_code: dict[tuple[str, str], int] = {}
        self.next_id = dict(ID_BLOCKS)

    def concept(
        self,
        vocab: str,
        term: Term,
        domain: str,
        cls: str,
        standard: str,
        group: str | None,
        role: str | None,
        lab: Lab | None = None,
    ) -> int:
        key = (vocab, term.code)
        if key in self.by_code:  # a shared concept, e.g. one ATC class for three statins
            cid = self.by_code[key]
            old = next(c for c in self.concepts if c["concept_id"] == cid)
            if (old["concept_name"], old["description"]) != (term.name, term.description):
                raise ValueError(f"{vocab} {term.code} is spelled two ways in the spec")
            return cid
        self.next_id[vocab] += 1
        cid = self.next_id[vocab]
        self.by_code[key] = cid
        self.concepts.append(
            {
                "concept_id": cid,
                "concept_name": term.name,
                "domain_id": domain,
                "vocabulary_id": vocab,
                "concept_class_id": cls,
                "standard_concept": standard,
                "concept_code": term.code,
                "valid_start_date": VALID_START,
                "valid_end_date": VALID_END,
                "invalid_reason": "",
                "description": term.description,
            }
        )
        if role is not None:
            row = {"concept_id": cid, "group": group, "role": role}
            if lab is not None:
                row |= {
                    "unit_concept_id": self.by_code[("UCUM", lab.unit)],
                    "ref_mean": lab.mean,
                    "ref_sd": lab.sd,
                    "min_value": lab.min_value,
                    "max_value": lab.max_value,
                    "decimals": lab.decimals,
                }
            self.ann.append(row)
        return cid

    def is_a(self, child: int, parent: int) -> None:
        self.rel.add((child, parent, "Is a"))
        self.rel.add((parent, child, "Subsumes"))

    def maps_to(self, source: int, target: int) -> None:
        self.rel.add((source, target, "Maps to"))
        self.rel.add((target, source, "Mapped from"))


def icd_class(code: str) -> str:
    """OMOP's ICD10CM concept class: characters without the dot, all leaves are billable."""
    return f"{len(code.replace('.', ''))}-char billing code"


def build() -> dict[str, pd.DataFrame]:
    """The three vocabulary tables, built from :data:`SPEC`."""
    b = _Builder()
    for cid, name, domain, vocab, cls, code, desc in STANDARD:
        b.concepts.append(
            {
                "concept_id": cid,
                "concept_name": name,
                "domain_id": domain,
                "vocabulary_id": vocab,
                "concept_class_id": cls,
                "standard_concept": "S",
                "concept_code": code,
                "valid_start_date": VALID_START,
                "valid_end_date": VALID_END,
                "invalid_reason": "",
                "description": desc,
            }
        )
    for unit in UNITS:
        b.concept("UCUM", unit, "Unit", "Unit", "S", None, None)

    for g in SPEC:
        parent_id = None
        if g.parent is not None:
            parent_id = b.concept(
                "SNOMED", g.parent, "Condition", "Disorder", "S", g.name, "condition_parent"
            )
        for cond in g.conditions:
            cls = "Clinical Finding" if cond.finding else "Disorder"
            cid = b.concept("SNOMED", cond.snomed, "Condition", cls, "S", g.name, "condition")
            if cond.parent is not None:
                b.is_a(cid, b.by_code[("SNOMED", cond.parent)])
            elif parent_id is not None:
                b.is_a(cid, parent_id)
            for src in cond.icd:
                sid = b.concept(
                    "ICD10CM", src, "Condition", icd_class(src.code), "", g.name, "condition_source"
                )
                b.maps_to(sid, cid)
        for drug in g.drugs:
            atc_id = b.concept("ATC", drug.atc, "Drug", "ATC 4th", "C", g.name, "drug_class")
            ing_id = b.concept(
                "RxNorm", drug.ingredient, "Drug", "Ingredient", "S", g.name, "drug_ingredient"
            )
            b.is_a(ing_id, atc_id)
            for clin in drug.clinical:
                clin_id = b.concept(
                    "RxNorm", clin, "Drug", "Clinical Drug", "S", g.name, "drug_clinical"
                )
                b.is_a(clin_id, ing_id)
        for lab in g.labs:
            b.concept(
                "LOINC", lab.term, "Measurement", lab.concept_class, "S", g.name, "measurement", lab
            )
        for proc in g.cpt:
            b.concept("CPT4", proc, "Procedure", "CPT4", "S", g.name, "procedure")
        for proc in g.pcs:
            b.concept("ICD10PCS", proc, "Procedure", "ICD10PCS", "S", g.name, "procedure_pcs")

    concept = pd.DataFrame(b.concepts, columns=CONCEPT_COLUMNS).sort_values("concept_id")
    for cid in concept.loc[concept["standard_concept"] == "S", "concept_id"]:
        b.maps_to(int(cid), int(cid))  # OMOP: every standard concept maps to itself
    order = {"Is a": 0, "Subsumes": 1, "Maps to": 2, "Mapped from": 3}
    rel = pd.DataFrame(
        sorted(b.rel, key=lambda r: (order[r[2]], r[0], r[1])),
        columns=["concept_id_1", "concept_id_2", "relationship_id"],
    )
    rel["valid_start_date"], rel["valid_end_date"], rel["invalid_reason"] = (
        VALID_START,
        VALID_END,
        "",
    )
    ann = pd.DataFrame(b.ann, columns=ANNOTATION_COLUMNS).sort_values("concept_id")
    for col in ("unit_concept_id", "decimals"):
        ann[col] = ann[col].astype("Int64")
    return {
        "concept": concept.reset_index(drop=True),
        "concept_relationship": rel[RELATIONSHIP_COLUMNS],
        "concept_annotation": ann.reset_index(drop=True),
    }


# --------------------------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------------------------

README_HEAD = """\
# The synthetic cohort's vocabulary

This folder is the vocabulary of the synthetic OMOP cohort that every chapter of the book runs
on. It was written by hand for the book: a small, clinically sensible set of concepts from real
code systems, laid out as OMOP CDM 5.4 vocabulary tables. `ehrseq.data.concepts` reads it and
`ehrseq.data.synthetic` draws the cohort from it.

**Do not edit the CSV files or this README by hand.** They are written by
`scripts/make_vocabulary.py` from the curated spec inside it, and `tests/test_vocabulary.py`
checks that the script reproduces them byte for byte:

    .venv/bin/python scripts/make_vocabulary.py          # rewrite the files
    .venv/bin/python scripts/make_vocabulary.py --check  # fail if they differ

## Files

| file | content |
| --- | --- |
| `concept.csv` | OMOP CDM 5.4 `CONCEPT` columns, plus `description`: one plain-English sentence per concept, written for the book. |
| `concept_relationship.csv` | OMOP `CONCEPT_RELATIONSHIP`: `Is a` / `Subsumes`, `Maps to` / `Mapped from`. |
| `concept_annotation.csv` | The generator's ground truth, one row per clinical concept: its latent `group`, its `role`, and for measurements the unit and a healthy-adult reference distribution (`ref_mean`, `ref_sd`, `min_value`, `max_value`, `decimals`). A model never sees this file. |

## Reference distributions

`ref_mean` and `ref_sd` describe a healthy adult and were chosen by hand from usual adult
reference intervals, so that the mean plus or minus two standard deviations spans roughly the
interval; `min_value` and `max_value` are plausible physiological limits the generator clips
to, and `decimals` is the precision a laboratory would report. Skewed analytes (C reactive
protein, troponin, natriuretic peptides) are only crudely described by a mean and a standard
deviation; the generator, not this table, decides how diseases shift them.

## Codes

Every `concept_code` is a real code of its code system: SNOMED CT (conditions), ICD-10-CM
(diagnosis source codes), RxNorm (ingredients and clinical drugs), ATC (4th-level drug classes),
LOINC (measurements), CPT-4 and ICD-10-PCS (procedures), UCUM (units). Codes were kept only
where the code and its name could be confirmed, against published value sets and code lists
(the eCQM value sets above all) or, for a handful of very common codes, from long familiarity;
anything uncertain was left out rather than guessed. The tests guard against
typing slips with the checksums the code systems carry: the Verhoeff check digit of SNOMED CT
identifiers and the mod-10 check digit of LOINC codes. Concept names follow each code system's
own name (RxNorm and LOINC names verbatim); CPT-4 names are short descriptors written for the
book, not the AMA's descriptors.

This is teaching material, not a terminology release: SNOMED CT, LOINC, CPT-4 and the other
code systems belong to their owners, and real use of them needs the owners' licences (SNOMED
International, Regenstrief Institute for LOINC, the American Medical Association for CPT-4).

## Concept ids

Concept ids are local: OMOP reserves ids above 2,000,000,000 for local concepts. Each
vocabulary has its own block, allocated in the order of the spec:

| vocabulary | ids from |
| --- | --- |
{id_blocks}

Six standard OMOP concepts keep their OMOP ids, because the generator writes them directly:
8507 (MALE) and 8532 (FEMALE) in `Gender`, 9201 (Inpatient Visit, `IP`), 9202 (Outpatient
Visit, `OP`) and 9203 (Emergency Room Visit, `ER`) in `Visit`, and 32817 (EHR) in
`Type Concept` (its `concept_code` here is a local placeholder). Local ids stay the same as long as
new concepts are only ever added after the last group of the spec; code that needs a particular
concept should look it up by vocabulary and code (`Vocabulary.by_code`) rather than by id.

## Groups and roles

Each clinical concept belongs to one latent group of the generator:

{group_bullets}
- `routine`: visit codes, screening, vaccines, vital signs and routine laboratory tests that
  everyone gets. A laboratory test that one disease shifts (HbA1c, eGFR, LDL, BNP, troponin,
  FEV1/FVC, PHQ-9, CRP, ...) belongs to that disease's group; tests that several diseases move
  (glucose, creatinine, blood pressure, BMI, ...) stay in `routine` and the generator shifts
  them in code.

The `role` of a concept says what it is within its group:

| role | meaning |
| --- | --- |
| `condition` | standard SNOMED CT diagnosis that the generator records |
| `condition_source` | ICD-10-CM source code; `Maps to` exactly one `condition` of the same group |
| `condition_parent` | SNOMED CT grouping concept, never recorded itself; the conditions below it are `Is a` it |
| `drug_ingredient` | RxNorm ingredient |
| `drug_clinical` | RxNorm clinical drug (ingredient, strength, dose form); `Is a` its ingredient |
| `drug_class` | ATC 4th-level class; the ingredients are `Is a` it |
| `measurement` | LOINC measurement with its unit and reference distribution |
| `procedure` | CPT-4 procedure |
| `procedure_pcs` | ICD-10-PCS inpatient procedure |

## Relationships, and the simplifications

- `Is a` (child to parent) and its reverse `Subsumes`: SNOMED CT conditions under their parent
  condition; RxNorm clinical drugs under their ingredient; ingredients under their ATC class.
  The hierarchy is a small hand-made slice, not SNOMED CT's polyhierarchy: each condition has
  one parent here.
- The OHDSI vocabularies express the two drug links differently: a clinical drug reaches its
  ingredient through `RxNorm has ing` (and `RxNorm ing of`), and an ATC class reaches RxNorm
  through `ATC - RxNorm` (and `RxNorm - ATC`). This vocabulary simplifies both to `Is a` /
  `Subsumes`, so that one relationship answers every "what is this an instance of" question.
- A multi-ingredient drug is linked to the one ingredient the book is about: sacubitril and
  valsartan tablets are `Is a` sacubitril only.
- `Maps to` (and its reverse `Mapped from`) from each ICD-10-CM source code to its standard
  SNOMED CT condition, and, as in OMOP, from every standard concept to itself. Each ICD-10-CM
  code here maps to exactly one condition; real mappings are sometimes one-to-many.
- Every concept is valid from {start} to {end} and none is invalid;
  real codes have their own validity histories (several ICD-10-CM codes here were introduced
  after 2015).

## Counts

Generated from the files:

{counts}

By group and role:

{group_counts}
"""


def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(map(str, r)) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def readme(tables: dict[str, pd.DataFrame]) -> str:
    """README.md: the static text with the count tables filled in from ``tables``."""
    c = tables["concept"]
    counts = (
        c.groupby(["vocabulary_id", "domain_id"], sort=True).size().rename("concepts").reset_index()
    )
    total = pd.DataFrame([{"vocabulary_id": "all", "domain_id": "", "concepts": len(c)}])
    counts = pd.concat([counts, total], ignore_index=True)
    a = tables["concept_annotation"]
    roles = [
        "condition_parent",
        "condition",
        "condition_source",
        "drug_class",
        "drug_ingredient",
        "drug_clinical",
        "measurement",
        "procedure",
        "procedure_pcs",
    ]
    by_group = (
        pd.crosstab(a["group"], a["role"]).reindex(index=list(GROUPS), columns=roles).fillna(0)
    ).astype(int)
    by_group.insert(0, "group", by_group.index)
    by_group["all"] = by_group[roles].sum(axis=1)
    blocks = pd.DataFrame([{"vocabulary": k, "ids from": v + 1} for k, v in ID_BLOCKS.items()])
    return README_HEAD.format(
        id_blocks="\n".join(_md_table(blocks).splitlines()[2:]),
        group_bullets="\n".join(
            textwrap.fill(
                f"- {label}: " + ", ".join(f"`{g}`" for g in groups) + tail,
                width=96,
                subsequent_indent="  ",
                break_on_hyphens=False,
            )
            for label, groups, tail in (
                ("chronic diseases", CHRONIC, "; `heart_failure` is the outcome."),
                ("acute episodes", ACUTE, "."),
                ("benign background conditions, with no effect on any outcome", BENIGN, "."),
            )
        ),
        start=VALID_START,
        end=VALID_END,
        counts=_md_table(counts),
        group_counts=_md_table(by_group),
    )


def render() -> dict[str, str]:
    """File name -> exact file content for every file the script writes."""
    tables = build()
    out = {
        f"{name}.csv": df.to_csv(index=False, lineterminator="\n") for name, df in tables.items()
    }
    out["README.md"] = readme(tables)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--out", type=Path, default=OUT, help="output folder")
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        stale = [
            name
            for name, text in files.items()
            if not (args.out / name).is_file()
            or (args.out / name).read_text(encoding="utf-8") != text
        ]
        for name in stale:
            print(f"{args.out / name} differs from scripts/make_vocabulary.py", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text, encoding="utf-8")
    print(f"wrote {', '.join(files)} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
