"""Identifiers that reach the agent from outside: camera ids and playback session ids.

One home for their rules, so that the API, the recordings layout, the session store and
the OpenAPI document agree on what is valid.
"""

from __future__ import annotations

import re
import secrets

from .errors import BadRequest

# ASCII only ([0-9], not \d, which also matches other scripts' digits).
CAMERA_ID_PATTERN = r"[A-Za-z0-9_.\-]{1,128}"
SESSION_ID_PATTERN = r"pbs_[0-9a-f]{32}"
CAMERA_ID = re.compile(CAMERA_ID_PATTERN)
SESSION_ID = re.compile(SESSION_ID_PATTERN)

CAMERA_ID_RULE = "1 to 128 letters, digits, '-', '_' or '.'"


def check_camera_id(value: object, field: str = "camera id") -> str:
    """`value` as a camera id, or BadRequest naming `field`."""
    if not isinstance(value, str) or not CAMERA_ID.fullmatch(value) or value in (".", ".."):
        raise BadRequest(f"{field} must be {CAMERA_ID_RULE}")
    return value


def check_session_id(value: str) -> str:
    """`value` as a session id, or BadRequest; checked before anything touches the disk."""
    if not SESSION_ID.fullmatch(value):
        raise BadRequest("session id must be pbs_ followed by 32 lowercase hex digits")
    return value


def new_session_id() -> str:
    """A fresh session id: `pbs_` and 128 bits from the operating system's CSPRNG."""
    return "pbs_" + secrets.token_hex(16)
