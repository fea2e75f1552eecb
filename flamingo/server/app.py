"""The HTTP surface of ``flamingo serve`` (CONTRACT §7), on aiohttp.web.

This module owns the routes, bearer-token authentication, request validation and the answers
rollout controllers read (Argo Rollouts ``web`` metrics, Flagger webhooks, Kayenta readers,
Prometheus). Runs themselves go through `flamingo.server.executor` to the one engine.

Why aiohttp.web: it is already flamingo's HTTP client and the demo targets' server, it is a
maintained production server (keep-alive, request size limits, graceful shutdown on
SIGINT/SIGTERM), and it serves from the asyncio loop the webhooks wait on - no second stack.

Hostile input: every route but ``GET /healthz`` wants ``Authorization: Bearer $FLAMINGO_TOKEN``
(or the token as the password of Basic credentials, for Flagger; compared in constant time,
checked before a body is read); bodies are capped at `MAX_BODY`
bytes (413); a body must be a JSON object with known keys (400); run ids are 32 hex digits and
never reach a file path or a query otherwise (404); unknown stages are 404 on routes that name
one and 400 in a body. Nothing is queued or run unless the whole request was valid.
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from flamingo.errors import InputError
from flamingo.server.executor import Executor, gate_without_run
from flamingo.server.metrics import registry_for
from flamingo.server.store import RunRecord, StageBusy, Store

__all__ = ["MAX_BODY", "build_app"]

#: The largest request body read; a Flagger webhook body is ~1 KiB.
MAX_BODY = 64 * 1024
#: How long a Flagger webhook with ``run: "true"`` waits for its run by default (seconds):
#: under Flagger's default webhook timeout (10s); ``metadata.timeout`` asks for longer.
FLAGGER_WAIT = 8.0
#: The longest wait a webhook may ask for (``metadata.timeout``).
FLAGGER_WAIT_MAX = 15 * 60.0
#: The longest ``-k`` expression accepted (it is compiled, not evaluated as code).
MAX_KEYWORD = 1000

_RUN_KEYS = ("stage", "k", "tags", "shard")

STORE = web.AppKey("store", Store)
EXECUTOR = web.AppKey("executor", Executor)
STAGES = web.AppKey("stages", tuple)
TOKEN = web.AppKey("token", bytes)
REGISTRY = web.AppKey("registry", object)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


# --------------------------------------------------------------------------------------------
# Middleware: authentication first, then errors as one-line JSON
# --------------------------------------------------------------------------------------------


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method in ("GET", "HEAD") and request.path == "/healthz":
        return await handler(request)
    if not _token_matches(request.headers.get("Authorization", ""), request.app[TOKEN]):
        response = _error(401, "missing or wrong bearer token")
        response.headers["WWW-Authenticate"] = 'Bearer realm="flamingo"'
        return response
    return await handler(request)


def _token_matches(header: str, expected: bytes) -> bool:
    """``Bearer TOKEN``; or ``Basic`` whose password is TOKEN, for clients that can carry a
    credential only in the URL (Flagger's webhooks have no headers, fluxcd/flagger#1192; Go's
    HTTP client turns ``http://flamingo:TOKEN@host/...`` into Basic). Constant-time compare."""
    scheme, _, credentials = header.strip().partition(" ")
    offered = credentials.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(offered, validate=True)
        except ValueError:
            return False
        offered = decoded.partition(b":")[2]
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(offered, expected)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object ({} for an empty body); 400/413 otherwise."""
    raw = await request.read()  # aiohttp raises 413 past client_max_size
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(reason=f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(reason="the body must be a JSON object")
    return data


def _stage(request: web.Request) -> str:
    stage = request.match_info["stage"]
    if stage != "default" and stage not in request.app[STAGES]:
        raise web.HTTPNotFound(reason=f"unknown stage '{stage}'")
    return stage


def _record(request: web.Request) -> RunRecord:
    record = request.app[STORE].get(request.match_info["id"])  # an invalid id is no run
    if record is None:
        raise web.HTTPNotFound(reason="no such run")
    return record


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def _run_request(data: dict[str, Any], stages: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """Validate a ``POST /runs`` body: the stage and the selection (400 on anything odd)."""
    from flamingo.select import compile_keyword, parse_shard

    unknown = sorted(set(data) - set(_RUN_KEYS))
    if unknown:
        raise web.HTTPBadRequest(
            reason=f"unknown key '{unknown[0]}' (known: {', '.join(_RUN_KEYS)})"
        )
    stage = data.get("stage")
    if stage is None:
        stage = "default"
    if not isinstance(stage, str) or (stage != "default" and stage not in stages):
        known = ", ".join(("default", *stages))
        raise web.HTTPBadRequest(reason=f"unknown stage {json.dumps(stage)} (stages: {known})")
    request: dict[str, Any] = {}
    keyword = data.get("k")
    if keyword is not None:
        if not isinstance(keyword, str) or len(keyword) > MAX_KEYWORD:
            raise web.HTTPBadRequest(
                reason=f"k: expected a string of at most {MAX_KEYWORD} characters"
            )
        try:
            compile_keyword(keyword)
        except InputError as exc:
            raise web.HTTPBadRequest(reason=f"k: {exc}") from None
        request["k"] = keyword
    tags = data.get("tags")
    if tags is not None:
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            raise web.HTTPBadRequest(reason="tags: expected a list of non-empty strings")
        request["tags"] = tags
    shard = data.get("shard")
    if shard is not None:
        if not isinstance(shard, str):
            raise web.HTTPBadRequest(reason='shard: expected "K/N"')
        try:
            parse_shard(shard)
        except InputError as exc:
            raise web.HTTPBadRequest(reason=f"shard: {exc}") from None
        request["shard"] = shard
    return stage, request


def _start(app: web.Application, stage: str, request: dict[str, Any]) -> RunRecord:
    record = app[STORE].create(stage, request)  # StageBusy: the caller answers 409
    app[EXECUTOR].submit(record)
    return record


async def post_run(request: web.Request) -> web.Response:
    stage, selection = _run_request(await _body(request), request.app[STAGES])
    try:
        record = _start(request.app, stage, selection)
    except StageBusy as busy:
        return _error(409, str(busy), id=busy.run_id, url=f"/runs/{busy.run_id}")
    url = f"/runs/{record.id}"
    return web.json_response(
        {"id": record.id, "url": url, "status": record.status, "stage": stage},
        status=202,
        headers={"Location": url},
    )


def _status_view(record: RunRecord, live: dict[str, Any] | None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": record.id,
        "stage": record.stage,
        "status": record.status,
        "request": record.request,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "gate_url": f"/runs/{record.id}/gate",
    }
    if record.status == "done" and record.gate is not None:
        totals = record.gate.get("totals", {})
        view["progress"] = {"cases": totals.get("cases", 0), "totals": totals}
        view["verdict"] = record.verdict
    else:
        view["progress"] = live or {"cases": 0}
    return view


async def get_run(request: web.Request) -> web.Response:
    record = _record(request)
    return web.json_response(_status_view(record, request.app[EXECUTOR].progress(record.id)))


def _gate(app: web.Application, record: RunRecord) -> dict[str, Any]:
    if record.status == "done" and record.gate is not None:
        return record.gate
    live = app[EXECUTOR].progress(record.id) or {}
    reason = f"run {record.id} is {record.status}"
    if "total" in live:
        reason += f" ({live.get('cases', 0)} cases judged so far; {live['total']} selected)"
    return gate_without_run(record, reason, complete=False, totals=live.get("totals"))


async def get_run_gate(request: web.Request) -> web.Response:
    return web.json_response(_gate(request.app, _record(request)))


async def get_stage_gate(request: web.Request) -> web.Response:
    stage = _stage(request)
    record = request.app[STORE].latest_finished(stage)
    if record is None or record.gate is None:
        return _error(404, f"stage '{stage}' has no finished run")
    return web.json_response(record.gate)


# --------------------------------------------------------------------------------------------
# Flagger webhooks
# --------------------------------------------------------------------------------------------


def _flagger_body(data: dict[str, Any]) -> dict[str, str]:
    """Flagger's ``{"name", "namespace", "phase", "metadata"}``; the metadata, checked."""
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise web.HTTPBadRequest(reason="metadata: expected an object of strings")
    for key in ("name", "namespace", "phase"):
        if key in data and not isinstance(data[key], str):
            raise web.HTTPBadRequest(reason=f"{key}: expected a string")
    return metadata


def _wait_seconds(metadata: dict[str, str]) -> float:
    from flamingo.load.validate import _At, _duration

    text = metadata.get("timeout")
    if text is None:
        return FLAGGER_WAIT
    try:
        seconds = _duration(text, _At("metadata", "timeout", 0, 0))
    except InputError:
        raise web.HTTPBadRequest(
            reason="metadata.timeout: expected a duration such as '60s'"
        ) from None
    return min(seconds, FLAGGER_WAIT_MAX)


def _answer(stage: str, record: RunRecord | None, *, rollback: bool) -> web.Response:
    """200 or 412 with a one-line reason, by the stage's latest finished run."""
    if record is None or record.gate is None:
        return _error(412, f"stage '{stage}' has no finished run")
    passed = record.verdict == "pass"
    summary = {"stage": stage, "run": record.id, "verdict": record.verdict}
    if passed != rollback:  # a pass for a gate hook, a fail/error for the rollback hook
        return web.json_response({"ok": True, **summary})
    if rollback:
        line = f"stage '{stage}' run {record.id} passed: no rollback"
    else:
        reason = str(record.gate.get("reason") or "").strip()  # every gate document says why
        line = f"stage '{stage}' run {record.id}: {record.verdict}" + (
            f": {reason.splitlines()[0]}" if reason else ""
        )
    return web.json_response({"ok": False, "reason": line, **summary}, status=412)


async def post_flagger(request: web.Request) -> web.Response:
    stage = _stage(request)
    metadata = _flagger_body(await _body(request))
    app = request.app
    if metadata.get("run", "").lower() == "true":
        wait = _wait_seconds(metadata)
        record = app[STORE].active(stage)
        if record is None:
            try:
                record = _start(app, stage, {})
            except StageBusy as busy:  # started by someone else in between: wait for that one
                record = app[STORE].get(busy.run_id)
                assert record is not None
        if not await app[EXECUTOR].wait(record.id, wait):
            line = f"stage '{stage}' run {record.id} is still running after {wait:g}s"
            return web.json_response({"ok": False, "reason": line, "run": record.id}, status=412)
        return _answer(stage, app[STORE].get(record.id), rollback=False)
    return _answer(stage, app[STORE].latest_finished(stage), rollback=False)


async def post_flagger_rollback(request: web.Request) -> web.Response:
    stage = _stage(request)
    _flagger_body(await _body(request))
    return _answer(stage, request.app[STORE].latest_finished(stage), rollback=True)


# --------------------------------------------------------------------------------------------
# Health and metrics
# --------------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])  # type: ignore[arg-type]
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def build_app(
    store: Store, executor: Executor, stages: tuple[str, ...], token: str
) -> web.Application:
    """The application; the caller starts ``executor`` and serves it."""
    if not token:
        raise ValueError("an empty token would let anyone in")
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_json_errors, _authenticate])
    app[STORE] = store
    app[EXECUTOR] = executor
    app[STAGES] = stages
    app[TOKEN] = token.encode("utf-8", "surrogateescape")
    app[REGISTRY] = registry_for(store)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/runs", post_run)
    app.router.add_get("/runs/{id}", get_run)
    app.router.add_get("/runs/{id}/gate", get_run_gate)
    app.router.add_get("/stages/{stage}/gate", get_stage_gate)
    app.router.add_post("/flagger/{stage}", post_flagger)
    app.router.add_post("/flagger/{stage}/rollback", post_flagger_rollback)
    app.router.add_get("/metrics", metrics)
    return app
