"""Triton's Prometheus metrics, scraped before and after a run and reported as the difference."""

from __future__ import annotations

import logging
import re
import time
import urllib.error
import urllib.request

from .defaults import SCRAPE_POLL_S, SCRAPE_TIMEOUT_S

log = logging.getLogger(__name__)

_COUNTERS = {
    "nv_inference_request_success": "requests",
    "nv_inference_request_failure": "request_failures",
    "nv_inference_count": "inferences",
    "nv_inference_exec_count": "executions",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_compute_input_duration_us": "compute_input_us",
    "nv_inference_compute_infer_duration_us": "compute_infer_us",
    "nv_inference_compute_output_duration_us": "compute_output_us",
}
_LINE = re.compile(r'^(\w+)\{([^}]*)\}\s+([0-9.eE+-]+)$')


def scrape(url: str, model: str, timeout_s: float = SCRAPE_TIMEOUT_S) -> dict[str, float] | None:
    """Cumulative counters of ``model`` (all versions summed); None when the endpoint is unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as e:
        log.warning("metrics unavailable at %s (%s); the report will lack server figures", url, e)
        return None
    values = dict.fromkeys(_COUNTERS.values(), 0.0)
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and m.group(1) in _COUNTERS and f'model="{model}"' in m.group(2):
            values[_COUNTERS[m.group(1)]] += float(m.group(3))
    return values


def scrape_after(url: str, model: str, before: dict[str, float] | None, answered: int,
                 timeout_s: float = SCRAPE_TIMEOUT_S) -> dict[str, float] | None:
    """:func:`scrape` once the server has counted the ``answered`` inferences since ``before``:
    Triton counts a request after sending its response, so a scrape right after the last answer
    can miss it. Gives the last scrape if the count is not reached within ``timeout_s``."""
    target = (before["inferences"] if before else 0.0) + answered
    deadline = time.monotonic() + timeout_s
    while True:
        values = scrape(url, model)
        if values is None or values["inferences"] >= target or time.monotonic() > deadline:
            return values
        time.sleep(SCRAPE_POLL_S)


def server_report(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, float] | None:
    """What the server did during the run, from two scrapes."""
    if before is None or after is None:
        return None
    d = {k: after[k] - before[k] for k in after}
    requests = d["requests"] or 1
    compute_us = d["compute_input_us"] + d["compute_infer_us"] + d["compute_output_us"]
    return {
        "inferences": int(d["inferences"]),
        "executions": int(d["executions"]),
        "avg_batch_size": round(d["inferences"] / d["executions"], 2) if d["executions"] else 0.0,
        "requests": int(d["requests"]),
        "request_failures": int(d["request_failures"]),
        # Triton records queue and compute time per request; a request carries a client batch.
        "queue_ms_per_request": round(d["queue_us"] / requests / 1000, 3),
        "compute_ms_per_request": round(compute_us / requests / 1000, 3),
        "compute_ms_per_inference": round(compute_us / max(d["inferences"], 1) / 1000, 3),
        "compute_s": round(compute_us / 1e6, 3),
    }
