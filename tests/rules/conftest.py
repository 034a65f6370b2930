"""The calling rules' tests start from the contract's default calling hours (the suite's other
tests run with the window always open, whatever the hour)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from app.config import Settings


@pytest.fixture
def make_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    default_hours = Settings.model_fields["calling_hours"].default

    def make(**overrides: Any) -> Settings:
        return make_settings(**{"calling_hours": default_hours, **overrides})

    return make
