"""`--json-log`: one JSON object per log line, for machines (log shippers, the lab drills).

Every line has `ts` (epoch seconds), `level`, `logger` and `message`. Lines about the watchdog's
decisions also carry `event` and that event's fields, passed as `extra=fields(EVENT, ...)`:
- `health`: a target changed state (`target`, `state`, `error`);
- `note`: a failure deliberately not acted on, e.g. isolation (`code`, `note`, `about`);
- `decision`: what the loop decided (`action`, `code`, `reason`, `dry_run`, `failed_hosts`,
  `failed_nodes`, `isolated`, `plan` as `mac-watchdog plan --json` prints it).
`code` is a `watchdog.reasons.Reason` value: match on it, not on the message.
"""

from __future__ import annotations

import json
import logging
from typing import Any

FIELDS_ATTR = "mac_fields"


def fields(event: str, **data: Any) -> dict[str, Any]:
    """`extra=` for a log call: the event name and its fields (ignored by the text format)."""
    return {FIELDS_ATTR: {"event": event, **data}}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname,
                                 "logger": record.name, "message": record.getMessage()}
        entry.update(getattr(record, FIELDS_ATTR, {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))
