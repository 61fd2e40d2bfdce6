"""De-identified DICOM copies (`python -m medpipe.deidentify in=DIR out=DIR`).

dicognito does the work: it replaces names, ids, UIDs, addresses and equipment names with
consistent pseudonyms (one Anonymizer per run, so one original patient, study or series maps to
one pseudonym across all files and patient-grouped splits still work) and shifts every date and
time by one offset (intervals between a patient's studies are kept). medpipe then enforces the one
list (medpipe.privacy.identifiers): any attribute of Table E.1-1 that dicognito left as it was
(descriptions, comments, patient sex, age, weight, device serial numbers, ...) is removed, or
emptied where the profile does not allow removal; private tags, curves and overlay data are
removed. Pixel data and the attributes a model reads (Rows, PixelSpacing, Rescale*, Window*, ...)
are not in the profile and are copied unchanged. Burned-in text inside the pixels is not touched
(the Clean Pixel Data option is not applied).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence

from medpipe.errors import ConfigError
from medpipe.privacy.identifiers import identifiers, is_identifier

# DeidentificationMethodCodeSequence: CID 7050 (De-identification Method), coding scheme DCM
BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
MODIFIED_DATES = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")


def method_lines() -> list[str]:
    """DeidentificationMethod values (LO: at most 64 characters each)."""
    import dicognito

    return [
        "medpipe deidentify",
        f"dicognito {dicognito.__version__}",
        "DICOM PS3.15 Basic Profile, dates shifted",
    ]


@dataclass
class Summary:
    written: int = 0
    skipped: int = 0  # not DICOM
    failed: list[str] = field(default_factory=list)  # "<relative path>: <reason>"

    def line(self, out: Path) -> str:
        text = (
            f"deidentify: {self.written} files written to {out}, {self.skipped} non-DICOM skipped"
        )
        text += f", {len(self.failed)} failed"
        if self.failed:
            text += (
                " (" + "; ".join(self.failed[:5]) + ("; ..." if len(self.failed) > 5 else "") + ")"
            )
        return text


def folder_problems(src: Path, out: Path, force: bool) -> list[str]:
    """in must be a folder; out must not be in (or inside it), nor contain it; an existing
    non-empty out needs force=true."""
    if not src.is_dir():
        return [f"in: folder not found: {src}"]
    s, o = src.resolve(), out.resolve()
    if o == s or s in o.parents:
        return [f"out: {o} is inside in ({s}); write the copies to a folder outside the originals"]
    if o in s.parents:
        return [f"out: {o} contains in ({s}); write the copies to a folder outside the originals"]
    if o.exists() and not o.is_dir():
        return [f"out: {o} exists and is not a folder"]
    if o.is_dir() and any(o.iterdir()) and not force:
        return [f"out: {o} exists and is not empty; force=true replaces it"]
    return []


def _enforce_profile(ds: Dataset, before: dict[tuple, object]) -> None:
    """Remove (or empty) every listed attribute that the anonymizer left with its original value,
    and private tags, curves and overlays; nested sequences too."""
    table = identifiers()

    def visit(d: Dataset, path: tuple) -> None:
        for elem in list(d):
            key = (*path, elem.tag)
            if elem.tag.is_private or is_identifier(elem.tag) and elem.tag not in table:
                del d[elem.tag]
                continue
            ident = table.get(elem.tag)
            if elem.VR == "SQ":
                if ident is not None and ident.removed:
                    del d[elem.tag]
                else:
                    for i, item in enumerate(elem.value):
                        visit(item, (*key, i))
                continue
            if ident is None or elem.value in (None, "", b"") or before.get(key) != elem.value:
                continue
            if ident.removed:
                del d[elem.tag]
            else:
                elem.value = Sequence() if elem.VR == "SQ" else ""  # Z: zero length

    visit(ds, ())


def _values(ds: Dataset) -> dict[tuple, object]:
    """The listed attributes' values, by their path through sequences."""
    table, out = identifiers(), {}

    def visit(d: Dataset, path: tuple) -> None:
        for elem in d:
            key = (*path, elem.tag)
            if elem.VR == "SQ":
                for i, item in enumerate(elem.value):
                    visit(item, (*key, i))
            elif elem.tag in table:
                out[key] = elem.value

    visit(ds, ())
    return out


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def deidentify_file(path: Path, dest: Path, anonymizer) -> None:
    ds = pydicom.dcmread(path)  # InvalidDicomError: not DICOM (no preamble, no DICM)
    before = _values(ds)
    anonymizer.anonymize(ds)
    _enforce_profile(ds, before)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = method_lines()
    ds.DeidentificationMethodCodeSequence = Sequence(
        [_code(*BASIC_PROFILE), _code(*MODIFIED_DATES)]
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest)


def deidentify(src: Path, out: Path, force: bool = False, seed: str | None = None) -> Summary:
    """Copy every DICOM file under `src` de-identified to the same relative path under `out`.

    Written to a temporary folder next to `out` and renamed into place at the end: an error that
    stops the run leaves no half-written `out`. A file that cannot be read or written is counted
    as failed with its reason; the others are still written.
    """
    from dicognito.anonymizer import Anonymizer

    if problems := folder_problems(src, out, force):
        raise ConfigError(problems)
    src, out = src.resolve(), out.resolve()
    # seed: the same seed gives the same pseudonyms and date shift in a later run (keep it secret,
    # like a salt); null: a fresh random one each run
    anonymizer = Anonymizer(seed=seed)
    summary = Summary()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            rel = path.relative_to(src)
            try:
                deidentify_file(path, tmp / rel, anonymizer)
                summary.written += 1
            except InvalidDicomError:
                summary.skipped += 1
            except Exception as err:  # noqa: BLE001 - reported per file, the others go on
                (tmp / rel).unlink(missing_ok=True)
                reason = " ".join(str(err).split()) or type(err).__name__
                summary.failed.append(f"{rel}: {reason[:200]}")
        if out.exists():  # force=true: replace it (checked empty or forced above)
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary
