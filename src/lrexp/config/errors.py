"""The error of a configuration value that is not allowed."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration value that is not allowed: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r}: {allowed}")
