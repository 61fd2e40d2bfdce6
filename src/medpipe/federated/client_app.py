"""medpipe's Flower ClientApp: trains the global model on this SuperNode's shard.

The SuperNode says which shard it holds (`--node-config "partition-id=<i> num-partitions=<n>"`);
the run config names the job file medpipe.federate wrote (medpipe.federated.job).
"""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    from medpipe.federated.job import Job
    from medpipe.federated.local import train_local

    job = Job.read(str(context.run_config["job"]))
    client = int(context.node_config["partition-id"])
    config = msg.content["config"]
    arrays, metrics = train_local(
        job,
        client,
        int(config.get("server-round", 0)),
        msg.content["arrays"],
        float(config.get("proximal-mu", 0.0)),
    )
    content = RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)
