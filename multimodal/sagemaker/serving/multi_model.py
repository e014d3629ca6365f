"""Multi-model endpoints (``SAGEMAKER_MULTI_MODEL=true``): SageMaker's model API over the models of one process.

SageMaker downloads each model to ``/opt/ml/models/<name>/model`` and then asks the container to load it
(``POST /models``), lists (``GET /models``, paginated), describes (``GET /models/<name>``), unloads
(``DELETE /models/<name>``) and invokes (``POST /models/<name>/invoke``) it. Every model gets a ``ModelSlot``
of its own (loaded and warmed up on its thread, as a single model is) and answers exactly as a single-model
endpoint does: the same parsing, checks, bad-record mode and response bytes (``app.Service.respond``);
predictions of different models take turns, so the process stays within its compute threads.

The models share one memory budget, the resident memory (RSS) of the process: a load is refused with 507
(SageMaker then unloads models it has not used lately and asks again) when the process is over the budget
already, when the model's files would take it over, or when it is over once the model is loaded (the model is
dropped again). Unloading waits for the model's running requests, then frees its memory back to the system.
"""
from __future__ import annotations

import base64
import binascii
import ctypes
import gc
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from flask import Flask, Response, jsonify, request

from multimodal.core.artifact import CONFIG_FILE
from multimodal.core.resources import directory_size

from .app import Service, flask_app
from .errors import BadRequest, Conflict, InsufficientMemory, NotFound, NotReady
from .model_slot import ModelSlot, Watchdog
from .server_settings import MIB, ServerSettings

log = logging.getLogger(__name__)

TARGET_MODEL_HEADER = "X-Amzn-SageMaker-Target-Model"  # the TargetModel of InvokeEndpoint, for the log
PAGE_SIZE = 100  # models per page of GET /models unless ?limit= says otherwise
MAX_PAGE_SIZE = 1000


def resident_bytes() -> int:
    """This process's resident memory (RSS)."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system, so that RSS falls after an unload."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the memory is reused by later loads instead
        pass


@dataclass
class Entry:
    name: str
    url: str
    slot: ModelSlot
    memory_bytes: int = 0  # RSS growth while it loaded

    def describe(self) -> dict[str, Any]:
        return {"modelName": self.name, "modelUrl": self.url, "state": self.slot.state,
                "loadSeconds": self.slot.load_seconds, "memoryMB": round(self.memory_bytes / MIB, 1)}


class Models:
    """The models of this process by name, loaded on request within ``memory_limit`` bytes of RSS."""

    def __init__(self, loader: Callable[[Path], Any], settings: ServerSettings, memory_limit: int,
                 rss: Callable[[], int] = resident_bytes) -> None:
        self.loader, self.settings, self.memory_limit, self.rss = loader, settings, memory_limit, rss
        self.entries: dict[str, Entry] = {}
        self.lock = threading.Lock()

    def load(self, name: str, url: str) -> Entry:
        """Load and warm up the model at ``url`` as ``name``; the request waits, /ping does not."""
        self._refuse_loaded(name)
        directory = Path(url)
        if not (directory / CONFIG_FILE).is_file():
            raise NotFound(f"no model at {url!r}: {CONFIG_FILE} not found there (the url must be the directory "
                           "SageMaker extracted the model's model.tar.gz into)")
        before, files = self.rss(), directory_size(directory)
        if before + files > self.memory_limit:
            raise InsufficientMemory(self._over_budget(name, f"its files ({files / MIB:.0f} MB) would take "
                                                             f"the process from {before / MIB:.0f} MB"))
        slot = ModelSlot(lambda: self.loader(directory), load_timeout=self.settings.load_timeout,
                         description=f"model {name} ({url})", check=self.settings.check_model)
        entry = Entry(name, url, slot)
        with self.lock:
            self._refuse_loaded(name)
            self.entries[name] = entry
        started = time.monotonic()
        slot.start()
        timeout = self.settings.load_timeout
        try:  # the slot's own timer fails the load at its timeout; a second more lets that outcome arrive first
            slot.wait(None if timeout is None else timeout + 1)
        except NotReady as exc:
            self._drop(entry, wait=False)
            raise NotReady(f"model {name} cannot be served: {exc.message.removeprefix('the model ')}") from None
        after = self.rss()
        entry.memory_bytes = max(after - before, 0)
        if after > self.memory_limit:
            self._drop(entry)
            raise InsufficientMemory(self._over_budget(name, f"loaded, it took the process to {after / MIB:.0f} MB"))
        log.info("model %s loaded from %s in %.1f s (%+.0f MB; process %.0f MB of a %.0f MB budget, %d model(s))",
                 name, url, time.monotonic() - started, entry.memory_bytes / MIB, after / MIB,
                 self.memory_limit / MIB, len(self.entries))
        return entry

    def _refuse_loaded(self, name: str) -> None:
        entry = self.entries.get(name)
        if entry is not None:
            raise Conflict(f"model {name} is already loaded (from {entry.url})")

    def _over_budget(self, name: str, how: str) -> str:
        return (f"not enough memory for model {name}: {how}, over the budget of {self.memory_limit / MIB:.0f} MB "
                f"(MULTIMODAL_MODELS_MEMORY_MB) with {len(self.entries)} model(s) loaded; unload some")

    def get(self, name: str) -> Entry:
        with self.lock:
            entry = self.entries.get(name)
        if entry is None:
            raise NotFound(f"model {name} is not loaded: load it with POST /models first")
        return entry

    def unload(self, name: str) -> None:
        entry = self.get(name)
        before = self.rss()
        self._drop(entry)
        log.info("model %s unloaded (process %.0f MB → %.0f MB, %d model(s) left)", name, before / MIB,
                 self.rss() / MIB, len(self.entries))

    def _drop(self, entry: Entry, wait: bool = True) -> None:
        with self.lock:
            if self.entries.get(entry.name) is entry:
                del self.entries[entry.name]
        entry.slot.close(wait)
        release_memory()

    def page(self, token: str | None, limit: int) -> tuple[list[Entry], str | None]:
        """Ready models in name order after the one ``token`` names, at most ``limit``; the next page's token."""
        after = decode_token(token) if token else None
        with self.lock:
            ready = sorted((e for e in self.entries.values() if e.slot.state == "ready"), key=lambda e: e.name)
        if after is not None:
            ready = [e for e in ready if e.name > after]
        return ready[:limit], (encode_token(ready[limit - 1].name) if len(ready) > limit else None)


def encode_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode("ascii")


def decode_token(token: str) -> str:
    try:
        return base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise BadRequest(f"next_page_token {token!r} is not one this server gave") from None


class _MultiModelService(Service):
    """The routes of SageMaker's model API over ``Models``."""

    def __init__(self, models: Models, settings: ServerSettings, watchdog: Watchdog) -> None:
        super().__init__(None, settings, watchdog, None)
        self.models = models

    def ping_state(self) -> tuple[int, str]:
        return 200, f"ready: {len(self.models.entries)} model(s) loaded\n"

    def load(self) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("model_name"), str) or \
                not isinstance(body.get("url"), str) or not body["model_name"] or not body["url"]:
            raise BadRequest('expected a JSON object {"model_name": "<name>", "url": "/opt/ml/models/<name>/model"}')
        entry = self.models.load(body["model_name"], body["url"])
        return jsonify({"status": f"model {entry.name} loaded", **entry.describe()})

    def list(self) -> Response:
        raw = request.args.get("limit", str(PAGE_SIZE))
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
            raise BadRequest(f"limit={raw!r}: expected an integer from 1 to {MAX_PAGE_SIZE}")
        entries, token = self.models.page(request.args.get("next_page_token"), int(raw))
        answer: dict[str, Any] = {"models": [{"modelName": e.name, "modelUrl": e.url} for e in entries]}
        if token is not None:
            answer["nextPageToken"] = token
        return jsonify(answer)

    def describe(self, name: str) -> Response:
        return jsonify(self.models.get(name).describe())

    def unload(self, name: str) -> Response:
        self.models.unload(name)
        return jsonify({"status": f"model {name} unloaded"})

    def invoke(self, name: str) -> Response:
        target = request.headers.get(TARGET_MODEL_HEADER)
        return self.respond(self.models.get(name).slot, f"{name} ({target})" if target else name)

    def invocations(self) -> Response:
        raise NotFound("this is a multi-model endpoint (SAGEMAKER_MULTI_MODEL=true): invoke a loaded model with "
                       "POST /models/<name>/invoke")


def create_multi_model_app(loader: Callable[[Path], Any], *, settings: ServerSettings | None = None,
                           memory_limit: int, on_hang: Callable[[float], None] | None = None,
                           rss: Callable[[], int] = resident_bytes) -> Flask:
    """The Flask app of a multi-model endpoint: ``loader(directory)`` loads one model; the loaded models may
    take the process to ``memory_limit`` bytes of RSS."""
    settings = settings or ServerSettings()
    models = Models(loader, settings, memory_limit, rss)
    service = _MultiModelService(models, settings, Watchdog(settings.request_timeout, on_hang))
    app = flask_app(settings, service)
    app.extensions["multimodal.models"] = models
    app.add_url_rule("/models", view_func=service.load, methods=["POST"])
    app.add_url_rule("/models", view_func=service.list, methods=["GET"])
    app.add_url_rule("/models/<path:name>", view_func=service.describe, methods=["GET"])
    app.add_url_rule("/models/<path:name>", view_func=service.unload, methods=["DELETE"])
    app.add_url_rule("/models/<path:name>/invoke", view_func=service.invoke, methods=["POST"])
    return app
