"""The one exception type for problems a user can fix, and how the CLI shows them."""

from __future__ import annotations

import logging
import re


class UserError(Exception):
    """A problem the user can fix: bad input, a missing step, a bad setting.

    The CLI prints it as one line ``error: <message>`` and exits with code 2 (``--verbose`` adds the
    traceback); the message names the file / row / field / setting and says how to fix it.
    """


# scheme://user:password@host -> scheme://user:****@host (Redis, Kafka and Feast URLs may carry a password)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s'\"]*):(?P<password>[^@\s'\"/]+)@")


def mask_secrets(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``****``."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:****@", text)


class SecretMaskingFilter(logging.Filter):
    """Masks URL passwords in every log record a handler writes (a Redis URL may hold one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
