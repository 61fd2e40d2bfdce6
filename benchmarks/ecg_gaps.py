"""A PhysioNet 2017 folder with missing samples, to try `data.preprocess.missing` on real ECGs.

Copies a folder of A*.mat records and REFERENCE.csv (default: the shared validation set,
../shared/data/ecg/physionet2017_validation beside the repository) to `out`, removing `--fraction`
of each record's samples in gaps of random length (`--min-gap`..`--max-gap` seconds) placed at
random until the fraction is reached (seeded). A removed sample is NaN in the record's `val`,
written as float64 (the original int16 adu values elsewhere) with scipy.io.savemat; the .hea files
and REFERENCE.csv are copied unchanged.

    python -m benchmarks.ecg_gaps OUT [--source DIR] [--fraction 0.1] [--seed 0] [--records N]
    python -m medpipe.train data=physionet2017 data.path=OUT data.preprocess.missing=zero_and_mask
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from benchmarks.common import REPO

DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "ecg" / "physionet2017_validation"
FS = 300.0  # PhysioNet 2017 records; a .hea beside the record says otherwise


def record_rate(mat: Path) -> float:
    """The rate in the record's WFDB header (second field of its first line), else 300 Hz."""
    hea = mat.with_suffix(".hea")
    if hea.is_file():
        fields = hea.read_text(errors="replace").split("\n", 1)[0].split()
        try:
            return float(fields[2].split("/")[0])
        except (IndexError, ValueError):
            pass
    return FS


def gap_mask(
    n: int, fraction: float, min_len: int, max_len: int, rng: np.random.Generator
) -> np.ndarray:
    """A boolean mask of n samples, `fraction` of them (rounded) True in random gaps.

    Gaps of a random length in [min_len, max_len] go at random places (they may overlap or
    touch) until the fraction is reached; the last is cut short so that it is reached exactly.
    """
    target = int(round(fraction * n))
    target = min(target, n - 1)  # keep one observed sample: a wholly missing record has no signal
    gone = np.zeros(n, bool)
    while gone.sum() < target:
        length = int(rng.integers(min_len, max_len + 1))
        start = int(rng.integers(0, max(1, n - length + 1)))
        span = np.arange(start, min(n, start + length))
        new = span[~gone[span]]
        gone[new[: target - int(gone.sum())]] = True
    return gone


def main(argv: list[str] | None = None) -> None:
    from scipy.io import loadmat, savemat

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write (created; files in it are replaced)")
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    ap.add_argument("--fraction", type=float, default=0.1, help="share of samples removed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-gap", type=float, default=0.2, help="seconds")
    ap.add_argument("--max-gap", type=float, default=2.0, help="seconds")
    ap.add_argument("--records", type=int, default=None, help="only the first N listed records")
    args = ap.parse_args(argv)
    if not 0 <= args.fraction < 1:
        ap.error("--fraction: between 0 and 1 (1 would leave no sample)")
    if not 0 < args.min_gap <= args.max_gap:
        ap.error("--min-gap/--max-gap: 0 < min <= max seconds")
    ref = args.source / "REFERENCE.csv"
    if not ref.is_file():
        ap.error(f"{ref}: not found; --source is a PhysioNet 2017 folder (A*.mat, REFERENCE.csv)")
    lines = [line for line in ref.read_text().splitlines() if line.strip()]
    if args.records is not None:
        lines = lines[: args.records]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "REFERENCE.csv").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(args.seed)
    total = removed = 0
    for line in lines:
        name = line.split(",")[0].strip()
        mat = args.source / f"{name}.mat"
        val = np.asarray(loadmat(mat)["val"], np.float64)
        fs = record_rate(mat)
        lo, hi = (max(1, int(round(s * fs))) for s in (args.min_gap, args.max_gap))
        gone = gap_mask(val.shape[-1], args.fraction, lo, hi, rng)
        val[:, gone] = np.nan
        savemat(args.out / f"{name}.mat", {"val": val})
        if mat.with_suffix(".hea").is_file():
            shutil.copy2(mat.with_suffix(".hea"), args.out / f"{name}.hea")
        total += val.shape[-1]
        removed += int(gone.sum())
    print(
        f"wrote {len(lines)} record(s) to {args.out} (from {args.source}): {removed} of {total} "
        f"samples ({removed / max(total, 1):.1%}) set to NaN in gaps of {args.min_gap}-"
        f"{args.max_gap} s, seed {args.seed}"
    )


if __name__ == "__main__":
    main()
