"""Counters, structured logs and OpenTelemetry spans.

Counters go to Ray's metrics (Prometheus, `ray_` prefix) and to an in-process tally that actors
report in their status. Spans wrap whole chunks and requests, never single events; with the exporter
set to `none` (the default) they cost a no-op context manager.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import time
from collections import Counter as Tally
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from cdp_actors.storage.lmdb_env import open_private

if TYPE_CHECKING:
    from cdp_actors.config import WorkspaceConfig

TALLY: Tally[str] = Tally()
_ray_counters: dict[tuple[str, tuple[str, ...]], Any] = {}
_tracer: trace.Tracer | None = None


def count(name: str, value: int = 1, **tags: str) -> None:
    if value <= 0:
        return
    TALLY[name] += value
    key = (name, tuple(sorted(tags)))
    counter = _ray_counters.get(key)
    if counter is None:
        counter = _ray_counter(name, key[1])
        _ray_counters[key] = counter
    if counter is not None:
        counter.inc(value, tags=tags or None)


def _ray_counter(name: str, tag_keys: tuple[str, ...]) -> Any:
    try:
        from ray.util.metrics import Counter

        return Counter(name, description=name.replace("_", " "), tag_keys=tag_keys)
    except Exception:  # outside a Ray worker (unit tests, the baseline): the local tally is enough
        return None


class _NoSpan:
    """What `span` yields while tracing is off: free to enter, ignores attributes."""

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_attribute(self, key: str, value: Any) -> None:
        return None


_NO_SPAN = _NoSpan()


def span(name: str, **attributes: Any) -> Any:
    """A span around a chunk or request; nothing at all (not even OpenTelemetry's no-op) while tracing is off."""
    if _tracer is None:
        return _NO_SPAN
    return _tracer.start_as_current_span(name, attributes=attributes)


class JsonLinesSpanExporter(SpanExporter):
    """Appends one JSON object per finished span to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(open_private(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "a") as out:
            for item in spans:
                context = item.context
                assert context is not None  # the SDK's spans always have one; ReadableSpan's type allows None
                record = {
                    "name": item.name,
                    "trace_id": f"{context.trace_id:032x}",
                    "span_id": f"{context.span_id:016x}",
                    "start_ns": item.start_time,
                    "end_ns": item.end_time,
                    "attributes": dict(item.attributes or {}),
                    "service": item.resource.attributes.get("service.name"),
                }
                out.write(json.dumps(record) + "\n")
        return SpanExportResult.SUCCESS


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "component": self.component,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def collect_less_often() -> None:
    """Keep what is loaded so far out of the collector's sight, and collect the young generation every 10,000
    allocations instead of 700. A forwarder holds thousands of rows with their coroutines alive at once, and
    with CPython's defaults it spent 40% of its time in the collector re-scanning them."""
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def setup_process(config: WorkspaceConfig, data_dir: str | Path, component: str) -> None:
    """Structured logs to stderr, fewer garbage collections and, if configured, a span exporter for this process."""
    global _tracer
    collect_less_often()
    root = logging.getLogger("cdp_actors")
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter(component))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    telemetry = config.telemetry
    if telemetry.exporter == "none" or _tracer is not None:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"cdp.{component}"}))
    if telemetry.exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        path = Path(data_dir) / telemetry.file
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    _tracer = provider.get_tracer("cdp_actors")


def now_ms() -> int:
    return int(time.time() * 1000)
