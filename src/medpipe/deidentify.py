"""De-identified DICOM copies:  python -m medpipe.deidentify in=DIR out=DIR [force=true].

Every DICOM file under `in` is copied, de-identified with dicognito and checked against the DICOM
PS3.15 Basic Profile (medpipe.privacy.deidentifying), to the same relative path under `out`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from medpipe.entry import hydra_entry


@hydra_entry("deidentify")
def main(c: dict[str, Any]) -> int:
    from medpipe.privacy.deidentifying import deidentify

    out = Path(str(c["out"])).expanduser()
    summary = deidentify(Path(str(c["in"])).expanduser(), out, bool(c["force"]), c.get("seed"))
    print(summary.line(out.resolve()))
    if summary.failed:
        sys.exit(1)
    return 0


if __name__ == "__main__":
    main()
