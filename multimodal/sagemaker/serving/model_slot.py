"""The model of one server process and its thread (``ModelSlot``): loaded and warmed up there by a trial
prediction (``warm_up``), then used there for every request, one at a time; and the watchdog of a prediction
that runs too long (``Watchdog``)."""
from __future__ import annotations

import base64
import io
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from .errors import NotReady
from .kinds import is_model, kind_of
from .records import model_output

# the logger of the app this came out of: the server's log lines keep their names
log = logging.getLogger("multimodal.sagemaker.serving.app")


class ModelSlot:
    """The model of this process and its thread: loaded and warmed up there, then used there by ``run``."""

    def __init__(self, source: Any, *, on_failure: Callable[[BaseException], None] | None = None,
                 on_ready: Callable[[], None] | None = None, load_timeout: float | None = None,
                 description: str = "the model", check: Callable[[Any], None] | None = None) -> None:
        if is_model(source):
            self._loader: Callable[[], Any] = lambda: source
        elif callable(source):
            self._loader = source
        else:
            raise TypeError("create_app needs a fitted model (a classifier with predict_proba or a regression "
                            "model) or a callable that loads one")
        self._check = check
        self.model: Any = None
        self.error: BaseException | None = None
        self.description = description
        self.load_seconds: float | None = None
        self._ready = threading.Event()
        self._done = threading.Event()
        self._on_failure = on_failure
        self._on_ready = on_ready
        self._load_timeout = load_timeout
        self._started = False
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    @property
    def state(self) -> str:
        if self._ready.is_set():
            return "ready"
        return "failed" if self.error is not None else "loading"

    def start(self, background: bool = True) -> None:
        if self._started:
            return
        self._started = True
        loading = self._thread.submit(self._load)
        if not background:
            loading.result()
            return
        if self._load_timeout:
            timer = threading.Timer(self._load_timeout, self._check_timeout)
            timer.daemon = True
            timer.start()

    def _check_timeout(self) -> None:
        if not self._done.is_set():
            self._fail(TimeoutError(f"loading {self.description} and its trial prediction took more than "
                                    f"{self._load_timeout:g} s"))

    def _load(self) -> None:
        started = time.monotonic()
        try:
            model = self._loader()
            log.info("model loaded in %.1f s; trial prediction…", time.monotonic() - started)
            if self._check is not None:
                self._check(model)
            warm_up(model)
        except BaseException as exc:  # noqa: BLE001 — any failure to load must stop the server
            self._fail(exc)
            return
        self.model = model
        self.load_seconds = time.monotonic() - started
        self._done.set()
        self._ready.set()
        log.info("model ready in %.1f s (%s)", self.load_seconds, kind_of(model).describe())
        if self._on_ready is not None:
            self._on_ready()

    def _fail(self, exc: BaseException) -> None:
        if self._done.is_set():
            return
        self.error = exc
        self._done.set()
        log.critical("cannot serve %s: %s: %s", self.description, type(exc).__name__, exc, exc_info=exc)
        if self._on_failure is not None:
            self._on_failure(exc)

    def run(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function(*args)`` on the model thread, after any request before it."""
        try:
            future = self._thread.submit(function, *args)
        except RuntimeError:  # closed (a multi-model endpoint unloaded it) after the request found it
            raise NotReady(f"{self.description} was unloaded") from None
        return future.result()

    def close(self, wait: bool = True) -> None:
        """Drop the model (a multi-model endpoint's unload) once the requests already running have finished, or
        at once with ``wait=False`` (a load that failed or timed out: its thread ends when the load does)."""
        self._thread.shutdown(wait=wait)
        self.model = None
        self._ready.clear()

    def wait(self, timeout: float | None) -> Any:
        self._done.wait(timeout)
        if self._ready.is_set():
            return self.model
        if self.error is not None:
            raise NotReady(f"the model failed to load: {type(self.error).__name__}: {self.error}")
        raise NotReady("the model is still loading")


def _tiny_png() -> str:
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 120, 40)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def warm_up(model: Any) -> None:
    """A trial prediction: an all-missing row and a filled synthetic row, then a single filled row.

    It proves the model can predict and pays the first-call costs (Keras tracing, AutoGluon's feature
    generators, the image encoder) before /ping turns 200. Raises if the model cannot predict.
    """
    import numpy as np
    import pandas as pd

    kind = kind_of(model)
    schema = model.schema_
    modality = {c.name: c.modality for c in schema.columns}
    filled = {"text": "warm up", "num": "1", "cat": "warm up", "image": _tiny_png()}
    header = schema.prediction_header
    empty = {c: "" for c in header}
    full = {c: filled.get(modality.get(c), "warm-up") for c in header}
    for rows in ([empty, full], [full]):
        frame = pd.DataFrame(rows, dtype=object)
        values = model_output(model, kind, frame, None)
        # unless finite, with one number (regression) or one per class for each row: the model cannot serve
        kind.check_trial(values, len(frame), bool(np.isfinite(values).all()))


class Watchdog:
    """Calls ``on_hang`` when one prediction runs longer than ``timeout`` (gunicorn times out silent workers, not long requests)."""

    def __init__(self, timeout: float | None, on_hang: Callable[[float], None] | None) -> None:
        self.timeout = timeout
        self.on_hang = on_hang
        self._since: float | None = None
        self._fired = False
        if timeout and on_hang is not None:
            threading.Thread(target=self._run, name="request-watchdog", daemon=True).start()

    def __enter__(self) -> "Watchdog":
        self._since = time.monotonic()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._since = None

    def _run(self) -> None:
        while not self._fired:
            time.sleep(min(1.0, self.timeout / 4))
            since = self._since
            if since is not None and time.monotonic() - since > self.timeout:
                self._fired = True
                log.critical("a prediction has run for more than %.0f s (the request timeout)", self.timeout)
                self.on_hang(time.monotonic() - since)
