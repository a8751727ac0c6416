"""Tests of ehrseq.data.download against local zip archives built in tmp_path (no network)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from ehrseq.data.download import (
    EUNOMIA_BASE_URL,
    EUNOMIA_DATASETS,
    ChecksumError,
    download_eunomia,
    sha256_file,
)
from ehrseq.data.omop import load_omop, open_cdm

PERSON = "PERSON_ID,GENDER_CONCEPT_ID,YEAR_OF_BIRTH\n1,8507,1950\n2,8532,1960\n"
OBSERVATION_PERIOD = (
    "OBSERVATION_PERIOD_ID,PERSON_ID,OBSERVATION_PERIOD_START_DATE,OBSERVATION_PERIOD_END_DATE\n"
    "1,1,2000-01-01,2020-12-31\n2,2,2000-01-01,2020-12-31\n"
)
CONDITION = (
    "CONDITION_OCCURRENCE_ID,PERSON_ID,CONDITION_CONCEPT_ID,CONDITION_START_DATE\n"
    "1,1,201826,2010-01-01\n2,2,320128,2011-05-06\n"
)


def make_zip(path: Path, folder: str = "GiBleed_5.3") -> Path:
    """A zip laid out like the Eunomia archives: CSVs in a folder, plus macOS debris."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{folder}/", "")
        zf.writestr(f"{folder}/PERSON.csv", PERSON)
        zf.writestr(f"{folder}/OBSERVATION_PERIOD.csv", OBSERVATION_PERIOD)
        zf.writestr(f"{folder}/CONDITION_OCCURRENCE.csv", CONDITION)
        zf.writestr(f"__MACOSX/{folder}/._PERSON.csv", "junk")
        zf.writestr(f"{folder}/.DS_Store", "junk")
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_registry_leaves_hashes_unknown():
    assert set(EUNOMIA_DATASETS) == {"GiBleed", "Synthea27Nj"}
    for entry in EUNOMIA_DATASETS.values():
        assert entry.sha256 is None  # never guessed
        assert entry.url.startswith(EUNOMIA_BASE_URL)
        assert entry.url.endswith(f"/{entry.name}/{entry.name}_{entry.cdm_version}.zip")


def test_download_verified_from_path_and_file_url(tmp_path, recwarn):
    archive = make_zip(tmp_path / "GiBleed_5.3.zip")
    expected = digest(archive)
    assert sha256_file(archive) == expected
    folder = download_eunomia("gibleed", tmp_path / "a", url=str(archive), sha256=expected)
    assert folder == tmp_path / "a" / "GiBleed"
    assert sorted(p.name for p in folder.iterdir()) == [
        "CONDITION_OCCURRENCE.csv",
        "OBSERVATION_PERIOD.csv",
        "PERSON.csv",
    ]
    assert (tmp_path / "a" / "GiBleed_5.3.zip").is_file()
    assert not list((tmp_path / "a").glob("*.part"))
    assert not [w for w in recwarn if "UNVERIFIED" in str(w.message)]
    # the folder reads as a CDM (upper-case names normalised)
    data = load_omop(open_cdm(folder), mode="strict")
    assert len(data.events) == 2 and data.person["person_id"].tolist() == [1, 2]
    # file:// URLs work too, and upper-case hex digests are accepted
    folder = download_eunomia(
        "GiBleed", tmp_path / "b", url=archive.as_uri(), sha256=expected.upper()
    )
    assert (folder / "PERSON.csv").read_text() == PERSON


def test_checksum_mismatch_raises_and_leaves_nothing(tmp_path):
    archive = make_zip(tmp_path / "GiBleed_5.3.zip")
    dest = tmp_path / "dest"
    with pytest.raises(ChecksumError, match="sha256 mismatch") as info:
        download_eunomia("GiBleed", dest, url=str(archive), sha256="0" * 64)
    assert isinstance(info.value, ValueError)
    assert "0" * 64 in str(info.value) and digest(archive) in str(info.value)
    assert list(dest.iterdir()) == []  # no partial, no archive, no folder


def test_unknown_hash_prints_and_warns(tmp_path, capsys):
    archive = make_zip(tmp_path / "GiBleed_5.3.zip")
    with pytest.warns(UserWarning, match="UNVERIFIED"):
        folder = download_eunomia("GiBleed", tmp_path / "dest", url=str(archive))
    assert digest(archive) in capsys.readouterr().out
    assert (folder / "PERSON.csv").is_file()


def test_cache_and_overwrite(tmp_path):
    archive = make_zip(tmp_path / "Synthea27Nj_5.4.zip", folder="Synthea27Nj")
    expected = digest(archive)
    dest = tmp_path / "dest"
    folder = download_eunomia("Synthea27Nj", dest, url=str(archive), sha256=expected)
    # an existing folder is reused without touching the source
    again = download_eunomia("Synthea27Nj", dest, url=str(tmp_path / "gone.zip"), sha256=expected)
    assert again == folder
    # a cached archive is verified before it is unpacked again
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    with pytest.raises(ChecksumError, match="overwrite=True"):
        download_eunomia("Synthea27Nj", dest, url=str(archive), sha256="f" * 64)
    # overwrite fetches again
    zip_only = download_eunomia(
        "Synthea27Nj", dest, url=str(archive), sha256=expected, extract=False, overwrite=True
    )
    assert zip_only == dest / "Synthea27Nj_5.4.zip" and digest(zip_only) == expected


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="unknown Eunomia dataset"):
        download_eunomia("MIMIC", tmp_path)
    with pytest.raises(FileNotFoundError):
        download_eunomia("GiBleed", tmp_path / "d1", url=str(tmp_path / "missing.zip"))
    assert not list((tmp_path / "d1").iterdir())
    not_zip = tmp_path / "GiBleed_5.3.zip"
    not_zip.write_text("this is not a zip")
    with pytest.raises(ValueError, match="not a zip archive"):
        download_eunomia("GiBleed", tmp_path / "d2", url=str(not_zip), sha256=digest(not_zip))
    assert not (tmp_path / "d2" / "GiBleed").exists()
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("README.txt", "no tables")
    with pytest.raises(ValueError, match="no .csv or .parquet"):
        download_eunomia("Mine", tmp_path / "d3", url=str(empty), sha256=digest(empty))
    assert sorted(p.name for p in (tmp_path / "d3").iterdir()) == ["empty.zip"]
