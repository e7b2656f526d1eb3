"""URLs fit to print: their query strings hidden.

A query is a credential as often as not: presigned storage URLs (``X-Amz-Signature=``), upload
session state (``_state=``), tokens some registries put in a Location. ``--debug`` logs show the
scheme, host and path, and only the names of the query's parameters.
"""

from __future__ import annotations

import logging
import re

_URL_QUERY = re.compile(r"(\bhttps?://[^\s?#\"'<>]+)\?([^\s#\"'<>]*)")


def redact(text: str) -> str:
    """``text`` with the value of every URL query parameter replaced by ``...``."""
    return _URL_QUERY.sub(_hide, text)


def _hide(match: re.Match[str]) -> str:
    names = [part.split("=", 1)[0] for part in match.group(2).split("&") if part]
    return match.group(1) + "?" + "&".join(f"{name}=..." for name in names)


class RedactQueries(logging.Filter):
    """A handler filter: every record's message is printed with its URL queries hidden."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = redact(message)
        if hidden != message:
            record.msg, record.args = hidden, None
        return True
