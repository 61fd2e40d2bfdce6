"""Look for patient identifiers in a folder or an MLflow run (`python -m medpipe.privacy scan`).

The values looked for come from the DICOM sources the data was made from (`dicom=`): every
attribute of the one list (medpipe.privacy.identifiers) that has a value, read with pydicom. A
value is searched case-insensitively as a whole token (not inside a longer word or number), and
so are a person name's `^`-separated parts and its "Last, First" form. Left out as too generic to
mean anything: values under 3 characters and values that are only digits and punctuation (weights,
"000Y", "----"), except dates, times and UIDs, and values the same file also carries in an
attribute the profile keeps (an InstitutionName equal to the Manufacturer). Text files are read whole; DICOM files in the target
have their attributes read (so a de-identified copy is checked too), numpy arrays of text (record
ids) their strings; other binary files (checkpoints, sample arrays, images) are counted as not
read.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from medpipe.privacy.identifiers import identifiers

MIN_LENGTH = 3
_DATE_VRS = ("DA", "DT", "TM")


@dataclass(frozen=True)
class Needle:
    attribute: str  # the DICOM keyword (or tag) it came from
    value: str
    pattern: re.Pattern


def mask(value: str) -> str:
    """First and last character, the rest as *: enough to recognise it, not to read it."""
    return value[0] + "*" * (len(value) - 2) + value[-1] if len(value) > 2 else "*" * len(value)


def _pattern(value: str) -> re.Pattern:
    # a token of its own: not part of a longer word or number (a time inside a UID or a float)
    edge = r"[0-9.]" if not re.search(r"[A-Za-z]", value) else r"[A-Za-z0-9_]"
    return re.compile(rf"(?<!{edge}){re.escape(value)}(?!{edge})", re.IGNORECASE)


def _forms(vr: str, value: str) -> list[str]:
    """The strings to look for: a person name also as its parts and as "Last, First"."""
    value = value.strip()
    if vr != "PN":
        return [value]
    parts = [p.strip() for p in value.split("^") if p.strip()]
    forms = [value, *parts]
    if len(parts) >= 2:
        forms += [f"{parts[0]}, {parts[1]}", f"{parts[1]} {parts[0]}"]
    return forms


def _worth_looking_for(vr: str, value: str) -> bool:
    if len(value) < MIN_LENGTH:
        return False
    if vr in _DATE_VRS:
        return sum(ch.isdigit() for ch in value) >= 6  # a full date or time
    if vr == "UI":
        return True
    return bool(re.search(r"[A-Za-z]", value))


def needles_from_dicom(folder: Path) -> tuple[list[Needle], int]:
    """The identifying values of every DICOM file under `folder`, and how many files were read."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    table = identifiers()
    found: dict[str, Needle] = {}
    files = 0
    paths = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError):
            continue
        files += 1
        elems = list(ds.iterall()) + list(getattr(ds, "file_meta", None) or [])
        # a value the file also carries in an attribute the profile keeps is not identifying
        # on its own: MR_small's InstitutionName is its Manufacturer, TOSHIBA
        kept = {
            str(e.value).strip().lower()
            for e in elems
            if e.VR not in ("SQ", "UI")
            and e.tag not in table
            and not e.tag.is_private
            and e.tag.group != 0x0002
            and isinstance(e.value, str)
        }
        for elem in elems:
            if elem.VR == "SQ" or (
                elem.tag not in table and elem.keyword != "MediaStorageSOPInstanceUID"
            ):
                continue
            values = (
                elem.value
                if isinstance(elem.value, (list, pydicom.multival.MultiValue))
                else [elem.value]
            )
            for v in values:
                text = str(v or "")
                for form in _forms(elem.VR, text):
                    if form.lower() in kept:
                        continue
                    if _worth_looking_for(elem.VR, form) and form.lower() not in found:
                        name = elem.keyword or str(elem.tag)
                        found[form.lower()] = Needle(name, form, _pattern(form))
    return list(found.values()), files


def needles_from_names(names: list[str]) -> list[Needle]:
    """Needles for names that may identify someone on their own, such as the stems of a data
    folder's file names (`DOE^JOHN_12345` of DOE^JOHN_12345.png): each a whole token."""
    return [Needle("file name", n, _pattern(n)) for n in dict.fromkeys(names) if n]


@dataclass
class Finding:
    where: str
    attribute: str
    value: str

    def line(self) -> str:
        return f"{self.where}: {self.attribute} value found ({mask(self.value)})"

    def record(self) -> dict:
        return {"where": self.where, "attribute": self.attribute, "masked": mask(self.value)}


@dataclass
class Scan:
    needles: list[Needle]
    findings: list[Finding] = field(default_factory=list)
    read: int = 0  # texts and DICOM files searched
    not_read: list[str] = field(default_factory=list)  # binary files

    def text(self, where: str, text: str) -> None:
        self.read += 1
        for n in self.needles:
            if n.pattern.search(text):
                self.findings.append(Finding(where, n.attribute, n.value))

    def file(self, path: Path, where: str) -> None:
        data = path.read_bytes()
        if b"\0" not in data[:8192]:
            self.text(where, data.decode("utf-8", errors="replace"))
        elif not self._strings(path, where) and not self._dicom(path, where):
            self.not_read.append(where)

    def _strings(self, path: Path, where: str) -> bool:
        """A numpy array of text (a processed folder's `<split>_ids.npy`) is read as its lines."""
        if path.suffix != ".npy":
            return False
        import numpy as np

        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError):
            return False
        if arr.dtype.kind not in "US":
            return False
        self.text(where, "\n".join(str(v) for v in np.ravel(arr).tolist()))
        return True

    def _dicom(self, path: Path, where: str) -> bool:
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not DICOM: a binary file we cannot read
            return False
        lines = [
            f"{e.keyword or e.tag}={e.value}"
            for e in [*ds.iterall(), *(getattr(ds, "file_meta", None) or [])]
            if e.VR not in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN")
        ]
        self.text(where, "\n".join(lines))
        return True

    def folder(self, folder: Path, label: str) -> None:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            self.file(path, f"{label}/{path.relative_to(folder).as_posix()}")

    def summary(self, target: str) -> str:
        what = "identifier found" if len(self.findings) == 1 else "identifiers found"
        extra = f", {len(self.not_read)} binary files not read" if self.not_read else ""
        return (
            f"privacy scan: {len(self.findings)} {what} in {target} "
            f"({len(self.needles)} values looked for, {self.read} texts and files searched{extra})"
        )


def scan_run(scan: Scan, uri: str, run_id: str) -> None:
    """A run's params, tags, metric names, dataset inputs and every artifact."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from medpipe.errors import ConfigError

    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except Exception as err:  # noqa: BLE001 - one line: the run is not in this store
        raise ConfigError(
            f"target: run {run_id} not found in {uri} ({type(err).__name__})"
        ) from None
    for key, value in run.data.params.items():
        scan.text(f"run {run_id} param {key}", f"{key}\n{value}")
    for key, value in run.data.tags.items():
        scan.text(f"run {run_id} tag {key}", f"{key}\n{value}")
    for key in run.data.metrics:
        scan.text(f"run {run_id} metric name", key)
    for d in run.inputs.dataset_inputs if run.inputs else []:
        ds = d.dataset
        body = "\n".join(
            str(x) for x in (ds.name, ds.digest, ds.source_type, ds.source, ds.schema, ds.profile)
        )
        tags = "\n".join(f"{t.key}={t.value}" for t in d.tags)
        scan.text(f"run {run_id} dataset input {ds.name}", f"{body}\n{tags}")
    with tempfile.TemporaryDirectory(prefix="medpipe-scan-") as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, tracking_uri=uri, dst_path=tmp)
        scan.folder(Path(local), f"run {run_id} artifacts")
