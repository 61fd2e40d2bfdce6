"""medpipe's Flower ServerApp: runs medpipe.federated.server.run_server on the job named in the
run config (written by medpipe.federate); a failure is written to the job's result file."""

from __future__ import annotations

import traceback

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    from medpipe.federated.job import Job
    from medpipe.federated.server import run_server
    from medpipe.outputs import write_json

    job = Job.read(str(context.run_config["job"]))
    try:
        run_server(grid, job)
    except BaseException as err:
        write_json(
            job.result_path,
            {
                "status": "failed",
                "error": f"{type(err).__name__}: {err}"[:2000],
                "traceback": traceback.format_exc()[-5000:],
            },
        )
        raise
