"""The one list of identifying DICOM attributes medpipe knows: DICOM PS3.15 Annex E, Table E.1-1
(the Basic Application Level Confidentiality Profile), as the `dicom-anonymizer` package ships it
(`dicomanonymizer.dicom_anonymization_databases.dicomfields_2026c`, generated from the DICOM
standard 2026c). Both `python -m medpipe.privacy scan` (the values it looks for) and
`python -m medpipe.deidentify` (what must be gone from a copy) read it from here.

The table is taken from that package rather than typed in by hand: it has 650-odd rows and the
standard adds rows every edition. Each attribute keeps the profile's action code: D (replace with a
dummy value), Z (empty or dummy), X (remove), U (replace the UID), and their combinations.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as _table
from pydicom.datadict import keyword_for_tag
from pydicom.tag import BaseTag, Tag

SOURCE = "DICOM PS3.15 Table E.1-1 (2026c), from dicom-anonymizer 2.1.0"

# dicom-anonymizer's category names -> the profile's action codes
_ACTIONS = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}


@dataclass(frozen=True)
class Identifier:
    """One row of the profile: the tag, its DICOM keyword ('' for a retired tag pydicom does not
    name) and the action the profile takes on it."""

    tag: BaseTag
    keyword: str
    action: str

    @property
    def removed(self) -> bool:
        """The profile may remove the attribute (X): a copy need not carry it at all."""
        return self.action.startswith("X")


@cache
def identifiers() -> dict[BaseTag, Identifier]:
    """Every attribute of Table E.1-1 with a single tag, by tag."""
    out: dict[BaseTag, Identifier] = {}
    for category, action in _ACTIONS.items():
        for entry in getattr(_table, category):
            if len(entry) == 2:  # the 4-tuples are repeating groups: see REPEATING_GROUPS
                tag = Tag(*entry)
                out[tag] = Identifier(tag, keyword_for_tag(tag) or "", action)
    return out


def by_keyword() -> dict[str, Identifier]:
    """The named attributes of the profile, by DICOM keyword (PatientName, StudyInstanceUID, ...)."""
    return {i.keyword: i for i in identifiers().values() if i.keyword}


def in_repeating_group(tag: BaseTag) -> bool:
    """Curve data (50xx,xxxx) and overlay data and comments (60xx,3000) / (60xx,4000), which the
    profile removes (its rows with group masks)."""
    group, element = tag.group, tag.element
    return (group & 0xFF00) == 0x5000 or (
        (group & 0xFF00) == 0x6000 and element in (0x3000, 0x4000)
    )


def is_identifier(tag: BaseTag) -> bool:
    """The attribute is in the profile (a listed tag, a curve or overlay, or a private tag, which
    the Basic Profile removes unless an option retains safe ones)."""
    return tag in identifiers() or in_repeating_group(tag) or tag.is_private
