"""A local HTTP server that answers like the Kubeflow Pipelines v2beta1 REST API, for the client tests.

No KFP API server can run here (it needs Kubernetes, Argo Workflows and a database), so this one stand-in is
allowed. It is strict where the real server is: every JSON request body must be the API's own model from the
kfp-server-api package (an unknown field, a wrong type or an enum value the model does not allow is a 400, as
from the real server's gateway), every pipeline spec uploaded or sent inline must parse as KFP's PipelineSpec
and PlatformSpec protobufs with unknown fields refused, and a run's parameters must be inputs of its pipeline.
It keeps what it was sent (`requests`) so tests can look at every body.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kfp_server_api
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

API = "/apis/v2beta1"
_SERIALIZE = kfp_server_api.ApiClient().sanitize_for_serialization


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def strict_model(name: str, data: Any) -> Any:
    """`data` (a JSON value) as the kfp-server-api model `name`; anything the model does not define is refused."""
    model = getattr(kfp_server_api.models, name)
    if getattr(model, "allowable_values", None):  # an enum
        if data not in model.allowable_values:
            raise Refused(400, f"{name}: {data!r} is not one of {model.allowable_values}")
        return data
    if not isinstance(data, dict):
        raise Refused(400, f"{name} must be an object, got {type(data).__name__}")
    attributes = {json_name: attr for attr, json_name in model.attribute_map.items()}
    unknown = set(data) - set(attributes)
    if unknown:
        raise Refused(400, f"{name} has no field {sorted(unknown)}")
    values = {attributes[key]: _typed(model.openapi_types[attributes[key]], value) for key, value in data.items()}
    return model(**values)


def _typed(kind: str, value: Any) -> Any:
    if value is None:
        return None
    container = re.fullmatch(r"(list)\[(.+)\]|(dict)\(str, (.+)\)", kind)
    if container and container.group(1):
        if not isinstance(value, list):
            raise Refused(400, f"expected a list for {kind}, got {value!r}")
        return [_typed(container.group(2), item) for item in value]
    if container:
        if not isinstance(value, dict):
            raise Refused(400, f"expected an object for {kind}, got {value!r}")
        return {key: _typed(container.group(4), item) for key, item in value.items()}
    simple = {"str": str, "bool": bool, "int": int, "float": (int, float), "datetime": str, "object": object}
    if kind in simple:
        if not isinstance(value, simple[kind]) or (kind == "int" and isinstance(value, bool)):
            raise Refused(400, f"expected {kind}, got {value!r}")
        return value
    return strict_model(kind, value)


def strict_spec(document: dict) -> pipeline_spec_pb2.PipelineSpec:
    """A run's inline spec (`{pipeline_spec, platform_spec}` or a bare spec) or an uploaded YAML's documents."""
    spec, platform = (
        (document["pipeline_spec"], document.get("platform_spec")) if "pipeline_spec" in document else (document, None)
    )
    try:
        parsed = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
        if platform is not None:
            json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)
    except json_format.ParseError as err:
        raise Refused(400, f"invalid pipeline spec: {err}") from err
    return parsed


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any  # the parsed JSON, the uploaded YAML's text, or None


@dataclass
class StandIn:
    """The server's state; `token` makes it require `Authorization: Bearer <token>`; `refuse_with` answers every
    API request with that status; `multi_user` is what its health check reports."""

    token: str | None = None
    refuse_with: int | None = None
    multi_user: bool = False
    final_state: str = "SUCCEEDED"
    requests: list[Recorded] = field(default_factory=list)
    experiments: dict[str, Any] = field(default_factory=dict)
    pipelines: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)  # version id -> V2beta1PipelineVersion
    specs: dict[str, pipeline_spec_pb2.PipelineSpec] = field(default_factory=dict)  # version id -> its spec
    runs: dict[str, Any] = field(default_factory=dict)
    recurring: dict[str, Any] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    def bodies(self) -> str:
        """Everything the client sent, as one text (for looking for what must never be sent)."""
        return json.dumps([[r.method, r.path, r.query, r.body] for r in self.requests], default=str)

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]

    # -- the API ---------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict, headers: dict, raw: bytes) -> tuple[int, Any]:
        body = self._body(headers, raw)
        self.requests.append(Recorded(method, path, query, headers, body if not isinstance(body, tuple) else body[1]))
        if self.refuse_with:
            raise Refused(self.refuse_with, "refused by the stand-in")
        if self.token and headers.get("authorization") != f"Bearer {self.token}":
            raise Refused(401, "Unauthorized: missing or wrong bearer token")
        for pattern, verb, answer in self._routes():
            match = re.fullmatch(API + pattern, path)
            if match and verb == method:
                return 200, _SERIALIZE(answer(query, body, *match.groups()))
        raise Refused(404, f"no route {method} {path}")

    def _body(self, headers: dict, raw: bytes) -> Any:
        kind = headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {kind}\r\n\r\n".encode() + raw
            )
            files = {
                part.get_param("name", header="content-disposition"): part.get_content()
                for part in message.iter_parts()
            }
            return ("upload", files)
        return json.loads(raw) if raw else None

    def _routes(self):
        return [
            ("/healthz", "GET", lambda q, b: kfp_server_api.V2beta1GetHealthzResponse(multi_user=self.multi_user)),
            ("/experiments", "GET", lambda q, b: self._list(self.experiments, q, "experiments", "ListExperiments")),
            ("/experiments", "POST", self._create_experiment),
            ("/pipelines", "GET", lambda q, b: self._list(self.pipelines, q, "pipelines", "ListPipelines")),
            ("/pipelines", "POST", self._create_pipeline),
            ("/pipelines/([^/]+)/versions", "GET", self._list_versions),
            ("/pipelines/upload_version", "POST", self._upload_version),
            ("/runs", "POST", self._create_run),
            ("/runs/([^/:]+)", "GET", self._get_run),
            ("/recurringruns", "POST", self._create_recurring),
            (
                "/recurringruns",
                "GET",
                lambda q, b: self._list(self.recurring, q, "recurring_runs", "ListRecurringRuns"),
            ),
            ("/recurringruns/([^/:]+)", "DELETE", self._delete_recurring),
        ]

    def _list(self, store: dict, query: dict, key: str, response: str) -> Any:
        items = list(store.values())
        if "filter" in query:
            (predicate,) = json.loads(query["filter"][0])["predicates"]
            assert predicate["key"] == "display_name" and predicate["operation"] in ("EQUALS", 1), predicate
            items = [item for item in items if item.display_name == predicate["stringValue"]]
        model = getattr(kfp_server_api, f"V2beta1{response}Response")
        return model(**{key: items, "total_size": len(items)})

    def _create_experiment(self, query, body):
        experiment = strict_model("V2beta1Experiment", body)
        experiment.experiment_id = self.new_id("experiment")
        self.experiments[experiment.experiment_id] = experiment
        return experiment

    def _create_pipeline(self, query, body):
        pipeline = strict_model("V2beta1Pipeline", body)
        pipeline.pipeline_id = self.new_id("pipeline")
        self.pipelines[pipeline.pipeline_id] = pipeline
        return pipeline

    def _list_versions(self, query, body, pipeline_id):
        if pipeline_id not in self.pipelines:
            raise Refused(404, f"no pipeline {pipeline_id}")
        mine = {key: v for key, v in self.versions.items() if v.pipeline_id == pipeline_id}
        return self._list(mine, query, "pipeline_versions", "ListPipelineVersions")

    def _upload_version(self, query, body):
        allowed = {"name", "display_name", "pipelineid", "description", "tags"}
        if set(query) - allowed or not isinstance(body, tuple) or set(body[1]) != {"uploadfile"}:
            raise Refused(400, f"upload_version takes {sorted(allowed)} and one uploadfile")
        pipeline_id = query["pipelineid"][0]
        if pipeline_id not in self.pipelines:
            raise Refused(404, f"no pipeline {pipeline_id}")
        spec, *platform = yaml.safe_load_all(body[1]["uploadfile"])
        version = kfp_server_api.V2beta1PipelineVersion(
            pipeline_id=pipeline_id,
            pipeline_version_id=self.new_id("version"),
            name=query["name"][0],
            display_name=query["display_name"][0],
            description=query.get("description", [""])[0],
            tags=json.loads(query.get("tags", ["{}"])[0]),
        )
        self.specs[version.pipeline_version_id] = strict_spec(
            {"pipeline_spec": spec, "platform_spec": platform[0]} if platform else spec
        )
        self.versions[version.pipeline_version_id] = version
        return version

    def _spec_of(self, reference, inline) -> pipeline_spec_pb2.PipelineSpec:
        if (reference is None) == (inline is None):
            raise Refused(400, "give either pipeline_version_reference or pipeline_spec")
        if inline is not None:
            return strict_spec(inline)
        if reference.pipeline_version_id not in self.specs:
            raise Refused(404, f"no pipeline version {reference.pipeline_version_id}")
        return self.specs[reference.pipeline_version_id]

    def _check_parameters(self, spec: pipeline_spec_pb2.PipelineSpec, config) -> None:
        given = set((config.parameters or {}) if config else {})
        known = set(spec.root.input_definitions.parameters)
        if given - known:
            raise Refused(400, f"the pipeline has no inputs {sorted(given - known)}")

    def _create_run(self, query, body):
        run = strict_model("V2beta1Run", body)
        if run.experiment_id not in self.experiments:
            raise Refused(404, f"no experiment {run.experiment_id}")
        self._check_parameters(self._spec_of(run.pipeline_version_reference, run.pipeline_spec), run.runtime_config)
        run.run_id, run.state = self.new_id("run"), "PENDING"
        self.runs[run.run_id] = run
        return run

    def _get_run(self, query, body, run_id):
        if run_id not in self.runs:
            raise Refused(404, f"no run {run_id}")
        run = self.runs[run_id]
        run.state = {"PENDING": "RUNNING", "RUNNING": self.final_state}.get(run.state, run.state)
        return run

    def _create_recurring(self, query, body):
        recurring = strict_model("V2beta1RecurringRun", body)
        if recurring.experiment_id not in self.experiments:
            raise Refused(404, f"no experiment {recurring.experiment_id}")
        self._check_parameters(
            self._spec_of(recurring.pipeline_version_reference, recurring.pipeline_spec), recurring.runtime_config
        )
        recurring.recurring_run_id = self.new_id("recurring")
        self.recurring[recurring.recurring_run_id] = recurring
        return recurring

    def _delete_recurring(self, query, body, recurring_id):
        if self.recurring.pop(recurring_id, None) is None:
            raise Refused(404, f"no recurring run {recurring_id}")
        return {}


class _Handler(BaseHTTPRequestHandler):
    standin: StandIn

    def _answer(self) -> None:
        parts = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {key.lower(): value for key, value in self.headers.items()}
        try:
            status, payload = self.standin.handle(self.command, parts.path, parse_qs(parts.query), headers, raw)
        except Refused as err:
            status, payload = err.status, {"code": err.status, "message": str(err)}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args) -> None:  # the test output stays readable
        pass


def serve(standin: StandIn) -> tuple[ThreadingHTTPServer, str]:
    """Serve `standin` on a free loopback port in a thread; (server, its URL). Call server.shutdown() after."""
    handler = type("Handler", (_Handler,), {"standin": standin})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
