"""Train a model from the composed config:  python -m medpipe.train [overrides].
Continue one after a crash:  python -m medpipe.train resume=<run id | output folder | last>.

Returns the best value of `monitor` so that Hydra sweepers can optimise it.
"""

from __future__ import annotations

from typing import Any

from medpipe.entry import hydra_entry


@hydra_entry("train")
def main(c: dict[str, Any]) -> float | None:
    from medpipe.data.prepare import prepare_from_config
    from medpipe.data.processed import read_meta
    from medpipe.tracking.store import check_tracking

    check_tracking(c)  # an MLflow server that does not answer: one line, nothing prepared
    from medpipe.tracking.provenance import hydra_overrides
    from medpipe.tracking.sweep import finished_job

    if done := finished_job(hydra_overrides()):  # a resumed sweep: this job finished before
        print(f"sweep job finished before (MLflow run {done[0]}): skipped")
        return done[1]
    c.pop("sweep", None)
    resume = None
    if c.get("resume"):  # the run's saved config, with only the overrides a resume may change
        from medpipe.config import validate
        from medpipe.resuming import resume_config

        c, resume = resume_config(c, hydra_overrides())
        c = validate(c)  # checked again as saved (allow-listed targets, known keys)
    c.pop("resume", None)

    # numpy only: a bad data file fails before torch is imported; training reuses the folder
    folder = prepare_from_config(c)
    from medpipe.checks import check_run  # task kind, net and monitor against the data

    c, kind = check_run(c, read_meta(folder))
    from medpipe.pipeline import train

    return train(c, folder, kind, resume)


if __name__ == "__main__":
    main()
