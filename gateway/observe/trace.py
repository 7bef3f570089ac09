"""W3C Trace Context (https://www.w3.org/TR/trace-context/): the caller's trace id goes into the request's
log line, and ``traceparent``/``tracestate`` go on to vLLM unchanged, so its spans (when it exports any) join
the caller's trace. The gateway starts no spans of its own and invents no trace ids: without a valid
``traceparent`` nothing is logged or forwarded."""

from __future__ import annotations

import re
from dataclasses import dataclass

# version-traceid-parentid-flags, lowercase hex. Versions after 00 may append fields; ff is invalid.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
# list-members of printable ASCII, at most 512 characters (the spec's limit for what must be propagated)
_TRACESTATE = re.compile(r"[\x20-\x7e]{0,512}")


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    traceparent: str
    tracestate: str | None


def parse_traceparent(traceparent: str, tracestate: str | None) -> TraceContext | None:
    """The context to log and forward; None when ``traceparent`` is not a valid one (the spec: ignore it)."""
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None:
        return None
    version, trace_id, parent_id, _, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"} or set(parent_id) == {"0"}:
        return None
    if tracestate is not None and not _TRACESTATE.fullmatch(tracestate):
        tracestate = None  # the spec: a malformed tracestate is dropped, not passed on
    return TraceContext(trace_id, match.group(0), tracestate)
