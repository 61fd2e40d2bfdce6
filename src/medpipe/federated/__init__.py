"""Federated learning with Flower: `python -m medpipe.federate fl.clients=4 ...`.

medpipe.federate prepares the data once, splits its training split among the clients
(medpipe.federated.partition), writes one job file and starts a Flower federation on 127.0.0.1 with
Flower's deployment engine: a SuperLink and one SuperNode process per client
(medpipe.federated.processes). The Flower App it submits is medpipe's own ServerApp
(medpipe.federated.server_app: FedAvg or FedProx, the global model evaluated on the real validation
and test splits every round) and ClientApp (medpipe.federated.client_app: the medpipe task trained
on the client's shard). MLflow: one parent run, a child run per client (medpipe.federated.tracking).
"""
