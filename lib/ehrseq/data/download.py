"""Fetch the public OHDSI Eunomia OMOP CDM samples, verify them, and unpack their CSV tables.

The book never ships data: a reader runs :func:`download_eunomia` once and points
:func:`ehrseq.data.omop.load_omop` at the folder it returns. The archives are the zip files of
CSV tables published in https://github.com/OHDSI/EunomiaDatasets (``datasets/<name>/
<name>_<cdm version>.zip``, the same files the Eunomia R package downloads).

Every download is checked against a SHA-256 digest before it is kept. The registry below
leaves the digests *unknown* (``None``) on purpose: nobody has yet recorded them from a
verified download, and a guessed hash would be worse than none. With no digest the file is
kept, its digest is printed, and a warning says it is unverified; pass ``sha256=`` (or fill
the registry) to pin it.

Example::

    folder = download_eunomia("GiBleed", "data/eunomia")       # prints the digest, warns
    data = ehrseq.data.omop.load_omop(folder)
"""

from __future__ import annotations

import hashlib
import os
import shutil
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
    "ChecksumError",
    "EunomiaDataset",
    "download_eunomia",
    "sha256_file",
]

EUNOMIA_BASE_URL = "https://raw.githubusercontent.com/OHDSI/EunomiaDatasets/main/datasets"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class EunomiaDataset:
    """One registry entry.

    Attributes:
        name: the dataset name in EunomiaDatasets, e.g. ``"GiBleed"``.
        cdm_version: the OMOP CDM version of the archive.
        url: where the zip archive of CSV tables is published.
        sha256: the expected digest, or ``None`` while it is unknown (unverified download).
        description: one line for the reader.
    """

    name: str
    cdm_version: str
    url: str
    sha256: str | None
    description: str


EUNOMIA_DATASETS: dict[str, EunomiaDataset] = {
    "GiBleed": EunomiaDataset(
        "GiBleed",
        "5.3",
        f"{EUNOMIA_BASE_URL}/GiBleed/GiBleed_5.3.zip",
        None,  # unknown: record it from a verified download, never guess it
        "Synthea patients around NSAID use and GI bleeding (2,694 persons), Apache-2.0",
    ),
    "Synthea27Nj": EunomiaDataset(
        "Synthea27Nj",
        "5.4",
        f"{EUNOMIA_BASE_URL}/Synthea27Nj/Synthea27Nj_5.4.zip",
        None,  # unknown: record it from a verified download, never guess it
        "28 Synthea New Jersey patients with a vocabulary relationship graph, Apache-2.0",
    ),
}


class ChecksumError(ValueError):
    """A downloaded file's SHA-256 digest differs from the expected one."""


def sha256_file(path: str | Path) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _local_path(url: str) -> Path | None:
    """The file a local path or ``file://`` URL names; ``None`` for a network URL."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme in ("http", "https", "ftp"):
        return None
    return Path(url).expanduser()


def _fetch(url: str, target: Path, timeout: float) -> str:
    """Copy ``url`` to ``target`` while hashing it; return the digest."""
    digest = hashlib.sha256()
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
            digest.update(chunk)
            out.write(chunk)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
    return digest.hexdigest()


def _verify(name: str, got: str, expected: str | None, what: str) -> None:
    """Raise on a mismatch; print and warn when there is nothing to compare with."""
    if expected is None:
        print(f"{name}: sha256 {got} ({what})")
        warnings.warn(
            f"{name}: no expected sha256 is known, so {what} is UNVERIFIED; its sha256 is "
            f"{got}. Pass sha256=... to pin it.",
            UserWarning,
            stacklevel=3,
        )
        return
    if got.lower() != expected.strip().lower():
        raise ChecksumError(
            f"{name}: sha256 mismatch for {what}: expected {expected.strip().lower()}, got {got}"
        )


def _extract(archive: Path, folder: Path) -> None:
    """Unpack the table files of ``archive`` flat into ``folder`` (atomically)."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{archive} is not a zip archive: {err}") from err
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        with zf:
            bad = zf.testzip()
            if bad is not None:
                raise ValueError(f"{archive}: member {bad!r} is corrupt")
            seen: dict[str, str] = {}
            for info in zf.infolist():
                parts = Path(info.filename).parts
                base = parts[-1] if parts else ""
                if info.is_dir() or "__MACOSX" in parts or base.startswith(".") or not base:
                    continue
                key = base.lower()
                if key in seen:
                    raise ValueError(
                        f"{archive}: {info.filename!r} and {seen[key]!r} flatten to one file"
                    )
                seen[key] = info.filename
                with zf.open(info) as src, open(tmp / base, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
        tables = [p for p in tmp.iterdir() if p.name.lower().endswith((".csv", ".parquet"))]
        if not tables:
            raise ValueError(f"{archive}: no .csv or .parquet table files inside")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def download_eunomia(
    name: str,
    dest: str | Path,
    url: str | None = None,
    sha256: str | None = None,
    *,
    extract: bool = True,
    overwrite: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download an Eunomia archive, verify its SHA-256, and unpack its tables.

    The archive is written to ``dest/<archive name>.part`` while it is hashed and only
    renamed into place when the digest matches, so a failed or mismatching download never
    leaves a partial or unverified file under the final name. Members are unpacked flat
    (folders inside the zip and ``__MACOSX`` entries dropped) into ``dest/<name>/``.

    Args:
        name: a key of :data:`EUNOMIA_DATASETS` (case-insensitive) or, with ``url``, any
            name for the folder.
        dest: the folder to download into (created if needed).
        url: where to fetch from: ``http(s)://``, ``file://`` or a local path; default the
            registry's URL.
        sha256: the expected digest; default the registry's. When both are ``None`` the
            digest is printed and a ``UserWarning`` says the download is unverified.
        extract: unpack the archive and return the table folder; else return the archive.
        overwrite: fetch and unpack again even if the folder or archive exists.
        timeout: seconds to wait for a network connection.

    Returns:
        the folder of table files (``extract=True``) or the archive path.

    Raises:
        ValueError: for an unknown name without ``url``, or an archive that is not a zip of
            table files.
        ChecksumError: (a ``ValueError``) when the digest differs; nothing is kept.
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
    expected = sha256 if sha256 is not None else (entry.sha256 if entry else None)
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    archive_name = Path(urllib.parse.urlparse(url).path).name or f"{name}.zip"
    if not archive_name.lower().endswith(".zip"):
        archive_name = f"{name}.zip"
    archive = dest / archive_name
    folder = dest / name
    if extract and folder.is_dir() and not overwrite and any(folder.iterdir()):
        return folder
    if archive.is_file() and not overwrite:
        try:
            _verify(name, sha256_file(archive), expected, f"the cached {archive}")
        except ChecksumError as err:
            raise ChecksumError(f"{err}; pass overwrite=True to fetch it again") from None
    else:
        part = archive.with_name(archive.name + ".part")
        try:
            got = _fetch(url, part, timeout)
            _verify(name, got, expected, f"the download from {url}")
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, archive)
    if not extract:
        return archive
    _extract(archive, folder)
    return folder
