"""The MLflow Model Registry: register the best run's model under a name and point an alias at it
(`python -m medpipe.compare experiment=NAME register=<name> [alias=champion]`).

"Best" is what `medpipe.compare` lists first with the same settings (its selection, sort key and
order; medpipe.evaluation.compare_runs); listed runs that cannot be served are passed over with a
note: a run that did not finish, a sweep or cross-validation parent (a summary of its jobs), and a
run trained with `log_model=false`. Training logs every run's model as an MLflow 3 LoggedModel
named `model` (medpipe.outputs); its version is registered from `models:/<model_id>`, the address
MLflow itself falls back to for `runs:/<run_id>/model`, with the run id kept as the version's
lineage. Registering a run that already has a version under that name reuses the version.

The name checks and the store check import nothing heavy; MLflow is imported when registering.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from medpipe.errors import ConfigError

if TYPE_CHECKING:
    from medpipe.evaluation.compare_runs import Comparison

MODEL_NAME = "model"  # the name medpipe.outputs logs each run's model under
DEFAULT_ALIAS = "champion"
# Model version tags: where the version came from and why it was chosen.
RUN_TAG, EXPERIMENT_TAG = "medpipe.run_id", "medpipe.experiment"
SORT_TAG, VALUE_TAG, ORDER_TAG = "medpipe.sort", "medpipe.sort_value", "medpipe.order"
# MLflow's own link from a LoggedModel to its registered versions (the UI's "Registered versions").
MODEL_VERSIONS_TAG = "mlflow.modelVersions"
# MLflow refuses '/' and ':'; '@', '?' and '#' would break the address models:/<name>@<alias>.
_BAD_NAME_CHARS = "/:@?#"
_ALIAS = re.compile(r"^[\w\-]+$")  # MLflow's alias rule, plus: not 'latest', not a version (v3)
_VERSION_ALIAS = re.compile(r"^[vV]\d+$")
_MAX_NOTES = 5


def name_problems(name: object, alias: object) -> list[str]:
    """One line per problem of the registered model name and alias (MLflow's rules, checked
    before anything is read)."""
    problems = []
    if not isinstance(name, str) or not name.strip():
        problems.append(
            f"register: a registered model name, e.g. register=pneumonia (got {name!r})"
        )
    elif bad := sorted({c for c in name if c in _BAD_NAME_CHARS}):
        problems.append(
            f"register: '{name}' is not a valid registered model name: no {' '.join(bad)} "
            "(the model is addressed as models:/<name>@<alias>)"
        )
    elif name != name.strip():
        problems.append(f"register: '{name}' begins or ends with white space")
    if alias is None:
        return problems
    if not isinstance(alias, str) or not _ALIAS.match(alias) or len(alias) > 255:
        problems.append(
            f"alias: {alias!r} is not a valid alias: letters, digits, _ and - (up to 255), "
            "or null for none"
        )
    elif alias.lower() == "latest" or _VERSION_ALIAS.match(alias):
        problems.append(
            f"alias: '{alias}' is reserved by MLflow (latest, v<number>); choose another"
        )
    return problems


def store_problem(uri: str) -> str | None:
    """Why the tracking store `uri` cannot hold registered models, or None.

    MLflow 3 keeps its Model Registry in a database store (the embedded sqlite one) or behind a
    tracking server; its plain file store (`file:` or a folder such as ./mlruns) is in maintenance
    mode and refused unless MLFLOW_ALLOW_FILE_STORE=true."""
    scheme = urlparse(uri).scheme
    if scheme not in ("", "file") and len(scheme) > 1:  # one letter: a Windows drive
        return None
    if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("true", "1"):
        return None
    return (
        f"register: the tracking store {uri} is a plain file store, which MLflow 3 serves no Model "
        "Registry from; use the embedded sqlite store (unset MLFLOW_TRACKING_URI and tracking_uri) "
        "or a tracking server, or move the runs with `mlflow migrate-filestore`"
    )


@dataclass
class Registered:
    """A registered model version and the run it came from."""

    name: str
    version: str
    alias: str | None
    previous: str | None  # the version the alias pointed at before, if another one
    run_id: str
    run_name: str
    sort: str
    value: Any  # the run's value of the sort key, as compare shows it
    source: str  # models:/<model_id>
    reused: bool = False  # the run already had a version under this name
    skipped: list[str] = field(default_factory=list)  # why better-ranked runs were passed over

    @property
    def uri(self) -> str:
        """The address to load or serve the version by."""
        if self.alias:
            return f"models:/{self.name}@{self.alias}"
        return f"models:/{self.name}/{self.version}"

    def line(self) -> str:
        value = self.value
        value = f"{value:.4f}" if isinstance(value, float) else "-" if value is None else value
        what = "already registered as" if self.reused else "registered"
        if not self.alias:
            alias = "no alias"
        elif self.previous:
            alias = f"alias {self.alias} (moved from version {self.previous})"
        else:
            alias = f"alias {self.alias}"
        return (
            f"{what} '{self.name}' version {self.version}, {alias}: run {self.run_id} "
            f"({self.run_name}), {self.sort} {value}; use {self.uri}"
        )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def servable_model(client: Any, run: Any) -> tuple[str | None, str]:
    """(`models:/<model_id>` of the run's READY LoggedModel named `model`, the newest if several;
    else None and why not)."""
    from medpipe.evaluation.compare_runs import CV_TAG, SWEEP_TAG

    tags = run.data.tags
    if tags.get(SWEEP_TAG) == "true" or tags.get(CV_TAG) == "true":
        return None, "a sweep or cross-validation parent (its jobs hold the models)"
    if run.info.status != "FINISHED":
        return None, f"status {run.info.status}"
    outputs = getattr(getattr(run, "outputs", None), "model_outputs", None) or []
    models = [client.get_logged_model(o.model_id) for o in outputs]
    mine = [m for m in models if m.name == MODEL_NAME]
    ready = [m for m in mine if str(getattr(m.status, "name", m.status)) == "READY"]
    if not ready:
        return None, (
            "its logged model is not READY" if mine else "no logged model (log_model=false)"
        )
    best = max(ready, key=lambda m: m.creation_timestamp or 0)
    return f"models:/{best.model_id}", ""


def _existing_version(client: Any, name: str, run_id: str, source: str) -> Any | None:
    """The version of `name` already registered from this run's model, if any."""
    versions = client.search_model_versions(f"run_id = '{run_id}'")
    mine = [v for v in versions if v.name == name and v.source == source]
    return max(mine, key=lambda v: int(v.version)) if mine else None


@contextlib.contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's database registry looks a `models:/<model_id>` source up through the global
    tracking URI, not its client's (a TODO in MLflow 3.17's SqlAlchemyStore): without this it
    finds no model, after creating ./mlflow.db in the working folder. The previous URI is put
    back."""
    import mlflow

    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # None: unset again


def _link_logged_model(client: Any, model_id: str, name: str, version: str) -> None:
    """Record the version on the LoggedModel, as mlflow.register_model does (the UI shows it)."""
    import json

    model = client.get_logged_model(model_id)
    links = json.loads(model.tags.get(MODEL_VERSIONS_TAG) or "[]")
    entry = {"name": name, "version": int(version)}  # as MLflow writes it
    if not any(e.get("name") == name and str(e.get("version")) == str(version) for e in links):
        client.set_logged_model_tags(model_id, {MODEL_VERSIONS_TAG: json.dumps([*links, entry])})


def register_best(
    comparison: Comparison,
    name: str,
    alias: str | None = DEFAULT_ALIAS,
    note: Callable[[str], None] | None = None,
) -> Registered:
    """Register the model of the first run of `comparison` (compare_runs with top=None) that has
    one; `note(text)` is told about each better-ranked run passed over. ConfigError (one line) when
    no listed run has a model or the store refuses."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if problems := name_problems(name, alias):
        raise ConfigError(problems)
    if problem := store_problem(comparison.uri):
        raise ConfigError(problem)
    client = MlflowClient(comparison.uri, registry_uri=comparison.uri)
    rows = comparison.rows(short_ids=False)
    skipped: list[str] = []
    chosen, source = None, None
    try:
        for rank, (run, row) in enumerate(zip(comparison.runs, rows, strict=True), 1):
            source, why = servable_model(client, run)
            if source:
                chosen = (run, row)
                break
            skipped.append(f"#{rank} {run.info.run_name} ({run.info.run_id[:8]}): {why}")
    except MlflowException as err:
        raise ConfigError(
            f"register: cannot read the runs' logged models at {comparison.uri}: {_first_line(err)}"
        ) from None
    if note is not None:
        for text in skipped[:_MAX_NOTES]:
            note(f"register: passed over {text}")
        if len(skipped) > _MAX_NOTES:
            note(f"register: ... and {len(skipped) - _MAX_NOTES} more runs passed over")
    if chosen is None or source is None:
        raise ConfigError(
            f"register: no run of experiment '{comparison.experiment}' "
            f"({len(comparison.runs)} listed) has a logged model to register; train one with "
            "log_model=true (the default)"
        )
    run, row = chosen
    run_id, value = run.info.run_id, row.get(comparison.sort)
    tags = {
        RUN_TAG: run_id,
        EXPERIMENT_TAG: comparison.experiment,
        SORT_TAG: comparison.sort,
        VALUE_TAG: repr(value) if isinstance(value, float) else str(value),
        ORDER_TAG: comparison.order,
    }
    description = (
        f"The best run of experiment '{comparison.experiment}' by {comparison.sort} "
        f"({comparison.order}): {run.info.run_name} ({run_id})"
    )
    model_id = source.removeprefix("models:/")
    try:
        try:
            client.create_registered_model(name)
        except MlflowException as err:
            if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        version = _existing_version(client, name, run_id, source)
        reused = version is not None
        if version is None:
            with _global_tracking_uri(comparison.uri):
                version = client.create_model_version(
                    name,
                    source,
                    run_id=run_id,
                    tags=tags,
                    description=description,
                    model_id=model_id,
                )
        else:
            for key, text in tags.items():
                client.set_model_version_tag(name, version.version, key, text)
        _link_logged_model(client, model_id, name, str(version.version))
        previous = None
        if alias:
            try:
                held = client.get_model_version_by_alias(name, alias)
                previous = None if str(held.version) == str(version.version) else str(held.version)
            except MlflowException:
                previous = None  # the alias is new
            client.set_registered_model_alias(name, alias, str(version.version))
    except MlflowException as err:
        raise ConfigError(
            f"register: MLflow at {comparison.uri} could not register the model of run {run_id} "
            f"as '{name}': {_first_line(err)}"
        ) from None
    return Registered(
        name=name,
        version=str(version.version),
        alias=alias or None,
        previous=previous,
        run_id=run_id,
        run_name=run.info.run_name,
        sort=comparison.sort,
        value=value,
        source=source,
        reused=reused,
        skipped=skipped,
    )
