"""The sign-in settings (SPEC 8.2): PUBLIC_URL required (https) in production, the identity
provider's settings all or none, bad values stopping start-up by name, never by value."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from app.config import Settings
from app.errors import ConfigError

PRODUCTION = {"app_env": "production", "cron_secret": "c" * 40, "suppression_key": "s" * 32}


@pytest.mark.parametrize("url", [None, "http://calls.example"])
def test_production_needs_an_https_public_url(
    make_settings: Callable[..., Settings], url: str | None
) -> None:
    with pytest.raises(ConfigError, match="PUBLIC_URL"):
        make_settings(**PRODUCTION, public_url=url).check_server_ready()
    make_settings(**PRODUCTION, public_url="https://calls.example/").check_server_ready()


def test_public_url_is_the_origin_and_the_links_base(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(public_url="https://calls.example/callqueue/")
    assert settings.base_url == "https://calls.example/callqueue"
    assert settings.public_origin == "https://calls.example"


def test_the_identity_provider_needs_all_three_settings(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(ConfigError, match="OIDC_CLIENT_ID or OIDC_CLIENT_SECRET"):
        make_settings(oidc_issuer="https://login.example", oidc_client_id="x").check_server_ready()
    make_settings(
        oidc_issuer="https://login.example", oidc_client_id="x", oidc_client_secret="y"
    ).check_server_ready()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("public_url", "calls.example"),
        ("oidc_issuer", "ftp://login.example"),
        ("session_idle_minutes", "0"),
        ("session_max_hours", "100000"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(
    make_settings: Callable[..., Settings], name: str, value: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(**{name: value})
    assert name.upper() in caught.value.detail
    assert value not in caught.value.detail or value.isdigit()


def test_the_client_secret_never_shows(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        oidc_issuer="https://login.example", oidc_client_id="x", oidc_client_secret="hush-hush"
    )
    assert "hush-hush" not in repr(settings) and "hush-hush" not in str(settings.model_dump())
