"""Config errors never show the value of a secret key (keys ending in _secret or _token)."""

import pytest

from common.config import ConfigError
from common.config.model import build, build_layers, is_secret, keys
from common.config.nodes import MODELS
from common.config.sources import env_name, from_env

SECRET_KEYS = [(cls, name) for cls in MODELS.values() for name in keys(cls) if is_secret(name)]
VALUE = "zq9-secret-value-0123456789"


def test_the_secret_keys_are_found():
    names = {name for _, name in SECRET_KEYS}
    assert {"admin_token", "publish_secret", "cluster_secret", "qos_secret", "play_secret"} <= names


@pytest.mark.parametrize(("cls", "name"), SECRET_KEYS, ids=lambda x: getattr(x, "kind", x))
@pytest.mark.parametrize("value", [1234567890123456789, [VALUE], {"v": VALUE}, "zq9"])
def test_a_bad_secret_value_is_not_shown(cls, name, value):
    with pytest.raises(ConfigError) as err:
        build(cls, {name: value}, source="node.toml")
    text = str(err.value)
    assert name in text  # the key is named...
    for part in ("1234567890", VALUE, "zq9"):  # ...its value is not
        assert part not in text


@pytest.mark.parametrize(("cls", "name"), SECRET_KEYS, ids=lambda x: getattr(x, "kind", x))
def test_a_bad_secret_from_the_environment_is_not_shown(cls, name):
    with pytest.raises(ConfigError) as err:
        build_layers(cls, from_env(cls, {env_name(cls, name): "zq9"}))
    assert name in str(err.value)
    assert "zq9" not in str(err.value)


def test_other_values_are_still_shown():
    with pytest.raises(ConfigError, match="got 'abc'"):
        build(MODELS["edge"], {"batch_ms": "abc"})
