"""Look for patient identifiers:  python -m medpipe.privacy scan target=DIR|runs:/<run_id>
dicom=DIR [output=report.json].

Reports each identifying value of the DICOM sources (`dicom=`) found in the target, masked, one
line each, and a summary line; exits 1 when anything was found, 0 when clean, 2 on a config error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from medpipe.entry import hydra_entry
from medpipe.errors import ConfigError

COMMANDS = ("scan",)


@hydra_entry("privacy")
def _scan(c: dict[str, Any]) -> int:
    from medpipe.privacy.scanning import Scan, needles_from_dicom, scan_run

    target = str(c["target"])
    needles, files = needles_from_dicom(Path(str(c["dicom"])).expanduser())
    if not files:
        raise ConfigError(f"dicom: no DICOM file under {Path(str(c['dicom'])).resolve()}")
    scan = Scan(needles)
    if target.startswith("runs:/"):
        from medpipe.tracking.store import tracking_uri

        uri = tracking_uri(c.get("tracking_uri"), str(c["paths"]["mlflow_dir"]))
        scan_run(scan, uri, target.removeprefix("runs:/").strip("/"))
    else:
        folder = Path(target).expanduser()
        if folder.is_file():
            scan.file(folder, folder.name)
        else:
            scan.folder(folder, folder.as_posix())
    for finding in scan.findings:
        print(finding.line())
    print(scan.summary(target))
    if c.get("output"):
        report = {
            "target": target,
            "values_looked_for": len(scan.needles),
            "searched": scan.read,
            "not_read": scan.not_read,
            "findings": [f.record() for f in scan.findings],
        }
        out = Path(str(c["output"])).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    if scan.findings:
        sys.exit(1)
    return 0


def main() -> Any:
    args = sys.argv[1:]
    # the command is the first bare word (not a key=value, not the value of --cfg/-c job|all)
    words = [
        a
        for i, a in enumerate(args)
        if not a.startswith("-") and "=" not in a and (i == 0 or args[i - 1] not in ("--cfg", "-c"))
    ]
    command = words[0] if words else None
    if command in COMMANDS:
        args.remove(command)
    elif not {"--help", "-h", "--hydra-help"} & set(args):
        print(
            f"medpipe: error: privacy: give a command: {', '.join(COMMANDS)} "
            f"(python -m medpipe.privacy scan target=DIR|runs:/<run_id> dicom=DIR)",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.argv[1:] = args
    return _scan()


if __name__ == "__main__":
    main()
