"""Config models: every key through every source (TOML, environment, flags), precedence, and
errors that name the key and where it was given."""

from __future__ import annotations

import argparse
import json
import math
import tomllib
from dataclasses import asdict

import pytest

from common.config import (
    MODELS,
    BalancerConfig,
    ConfigError,
    EdgeConfig,
    OriginConfig,
    env_name,
    keys,
    load,
)
from common.config.flags import add_config_arguments, config_values
from common.config.toml import dumps, value_text

HOOKS = ("on_publish", "on_unpublish", "on_play", "on_play_done", "on_record_done")
PUBLISH_SECRET = "publish-secret-0123456789"
QOS_SECRET = "qos-secret-0123456789"
SPECIAL = {
    "on_republish": "reject",
    "policy": "p2c",
    "overflow": "queue",
    "log_level": "debug",
    "balancer": "127.0.0.1:9",
    "node_id": "node-7",
    "public_host": "cdn.example.org",
    "parents": ["rtmp://127.0.0.1:1", "http://127.0.0.1:2"],
    "hls_parents": ["http://127.0.0.1:3"],
    "hls_apps": ["live", "tv"],
    "record_dir": "/var/lib/livecdn/rec",
    "record_apps": ["live"],
    "record_format": "mp4",
    "hls_mode": "package",
    "push": ["live=rtmp://127.0.0.1:4/live", "live=rtmps://relay.example/live"],
    "pull_static": ["live/cam=rtmp://127.0.0.1:5/app/cam"],
    "pull_on_demand": ["ext=http://127.0.0.1:6/live/{name}.flv"],
    **{hook: f"https://auth.example/{hook}" for hook in HOOKS},
    "cors_origins": ["https://a.example", "null"],
    "play_secret": "x-play-secret-0123456789",
    "admin_token": "x-admin-token-0123456789",
    "qos_secret": "x-qos-secret-0123456789",
    "publish_secret": "x-publish-secret-0123456789",
    "classes": {"gold": {"rate_mbps": 0.25, "ceil_mbps": 1.0}, "basic": {"rate_mbps": 0.1}},
}


def sample(cls: type, name: str) -> object:
    """A valid value of key `name`, different from its default."""
    if name in SPECIAL:
        return SPECIAL[name]
    key = keys(cls)[name]
    if key.type is bool:
        return not key.default
    if key.type is int:
        return key.default + 1
    if key.type is float:
        return key.default + 0.5
    return f"x-{name}"


def samples(cls: type) -> dict[str, object]:
    """A valid value, other than the default, for every key of `cls`."""
    return {name: sample(cls, name) for name in keys(cls)}


def text(value: object) -> str:
    """`value` as a user types it in the environment or on the command line."""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value if isinstance(value, str) else value_text(value)


def parser(cls: type) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(exit_on_error=False)
    add_config_arguments(p, cls)
    return p


MODEL_LIST = list(MODELS.values())


def test_every_node_kind_has_a_model() -> None:
    assert {cls.kind for cls in MODEL_LIST} == {"origin", "edge", "balancer"}


@pytest.mark.parametrize("cls", MODEL_LIST, ids=lambda c: c.kind)
def test_samples_differ_from_defaults(cls) -> None:
    defaults, sampled = asdict(cls()), samples(cls)
    assert all(sampled[k] != defaults[k] for k in defaults)


@pytest.mark.parametrize("cls", MODEL_LIST, ids=lambda c: c.kind)
def test_every_key_from_a_toml_file(cls, tmp_path) -> None:
    path = tmp_path / f"{cls.kind}.toml"
    path.write_text(dumps(samples(cls)))
    assert asdict(load(cls, path, environ={})) == samples(cls)


@pytest.mark.parametrize("cls", MODEL_LIST, ids=lambda c: c.kind)
def test_every_key_from_the_environment(cls) -> None:
    environ = {env_name(cls, k): text(v) for k, v in samples(cls).items()}
    assert env_name(EdgeConfig, "batch_ms") == "LIVECDN_EDGE_BATCH_MS"
    assert asdict(load(cls, environ=environ)) == samples(cls)


@pytest.mark.parametrize("cls", MODEL_LIST, ids=lambda c: c.kind)
def test_every_key_from_its_generated_flag(cls) -> None:
    argv = [arg for k, v in samples(cls).items() for arg in flag_args(cls, k, v)]
    args = parser(cls).parse_args(argv)
    assert asdict(load(cls, cli=config_values(args, cls), environ={})) == samples(cls)


def flag_args(cls: type, name: str, value: object) -> list[str]:
    flag = keys(cls)[name].flag
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    return [flag, text(value)]


def test_old_flag_names_still_work() -> None:
    args = parser(EdgeConfig).parse_args(
        ["--rtmp", "0", "--http", "1", "--parent", "rtmp://a:1", "--parent", "http://b:2",
         "--linger", "3", "--no-gop-cache", "--stall-timeout", "4", "--log-level", "debug",
         "--node-id", "e", "--capacity-viewers", "5", "--public-host", "h", "--weight", "2"]
    )  # fmt: skip
    assert config_values(args, EdgeConfig) == {
        "rtmp_port": 0, "http_port": 1, "parents": ["rtmp://a:1", "http://b:2"],
        "linger_seconds": 3.0, "gop_cache": False, "stall_timeout": 4.0, "log_level": "debug",
        "node_id": "e", "capacity_viewers": 5, "public_host": "h", "weight": 2.0,
    }  # fmt: skip
    origin = parser(OriginConfig).parse_args(["--secret", PUBLISH_SECRET, "--clock-stamps",
                                              "--on-republish", "reject"])  # fmt: skip
    assert config_values(origin, OriginConfig) == {
        "publish_secret": PUBLISH_SECRET, "clock_stamps": True, "on_republish": "reject"
    }  # fmt: skip
    balancer = parser(BalancerConfig).parse_args(["--control", "7", "--policy", "p2c"])
    assert config_values(balancer, BalancerConfig) == {"control_port": 7, "policy": "p2c"}


def test_help_says_unit_and_default() -> None:
    help_text = " ".join(parser(EdgeConfig).format_help().split())
    assert (
        "--batch-ms MS the longest new frames wait for a large fan-out's next write (a few "
        "viewers get each frame at once) (ms; default 250.0)" in help_text
    )
    assert "--rtmp-port N, --rtmp N RTMP port (0: any free port) (default 1936)" in help_text


def test_precedence_defaults_file_environment_flags(tmp_path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(
        'parents = ["rtmp://h:1"]\nbatch_ms = 10\nidle_timeout = 11\nslow_timeout = 12\n'
    )
    env = {"LIVECDN_EDGE_IDLE_TIMEOUT": "21", "LIVECDN_EDGE_SLOW_TIMEOUT": "22"}
    config = load(EdgeConfig, path, cli={"slow_timeout": 32.0}, environ=env)
    assert (config.batch_ms, config.idle_timeout, config.slow_timeout) == (10.0, 21.0, 32.0)
    assert config.handshake_timeout == 10.0  # the default


def test_lists_and_tables_in_toml_inline_syntax_too() -> None:
    env = {"LIVECDN_EDGE_PARENTS": '["rtmp://h:1"]', "LIVECDN_EDGE_QOS_SECRET": QOS_SECRET,
           "LIVECDN_EDGE_CLASSES": "{ gold = { rate_mbps = 1, ceil_mbps = 2 } }"}  # fmt: skip
    assert load(EdgeConfig, environ=env).classes == {"gold": {"rate_mbps": 1, "ceil_mbps": 2}}


@pytest.mark.parametrize(
    ("env", "message"),
    [({"LIVECDN_EDGE_BATCH_MS": "fast"},
      "environment LIVECDN_EDGE_BATCH_MS: batch_ms must be a number, got 'fast'"),
     ({"LIVECDN_EDGE_GOP_CACHE": "perhaps"},
      "environment LIVECDN_EDGE_GOP_CACHE: gop_cache must be true or false, got 'perhaps'"),
     ({"LIVECDN_EDGE_RTMP_PORT": "70000"},
      "environment LIVECDN_EDGE_RTMP_PORT: rtmp_port 70000 is not a TCP port"),
     ({"LIVECDN_EDGE_PARENTS": "rtmp://h:1"},
      "environment LIVECDN_EDGE_PARENTS: parents must be a list of strings, got 'rtmp://h:1'"),
     ({"LIVECDN_EDGE_BATCHMS": "20"}, "environment: LIVECDN_EDGE_BATCHMS names no edge key")],
)  # fmt: skip
def test_environment_errors_name_the_variable_and_the_key(env, message) -> None:
    with pytest.raises(ConfigError) as info:
        load(EdgeConfig, cli={"parents": ["rtmp://h:1"]}, environ=env)
    assert message in str(info.value)


def test_file_errors_name_the_file_and_the_key(tmp_path) -> None:
    path = tmp_path / "origin.toml"
    path.write_text("gop_cahce = false\n")
    with pytest.raises(ConfigError, match=f"{path}: unknown key\\(s\\) gop_cahce"):
        load(OriginConfig, path, environ={})
    path.write_text('hls_window = "six"\n')
    with pytest.raises(ConfigError, match=f"{path}: hls_window must be an integer, got 'six'"):
        load(OriginConfig, path, environ={})
    path.write_text("publisher_grace = 900\n")
    with pytest.raises(
        ConfigError, match=f"{path}: publisher_grace must be a finite number in 0..600"
    ):
        load(OriginConfig, path, environ={})


def test_flag_errors_name_the_flag() -> None:
    with pytest.raises(
        argparse.ArgumentError, match="command line --batch-ms: batch_ms must be a number"
    ):
        parser(EdgeConfig).parse_args(["--batch-ms", "x"])
    with pytest.raises(ConfigError, match="command line --policy: policy must be one of"):
        load(BalancerConfig, cli={"policy": "random"}, environ={})


@pytest.mark.parametrize(
    ("cls", "values", "message"),
    [(EdgeConfig, {}, "an edge needs at least one parent"),
     (EdgeConfig, {"parents": ["ftp://x"]}, "must be an rtmp://, rtmps://, http:// or https:// URL"),
     (EdgeConfig, {"parents": ["rtmp://h:1"], "classes": {"a": {"rate_mbps": 1}}}, "need a qos_secret"),
     (EdgeConfig, {"parents": ["rtmp://h:1"], "qos_secret": QOS_SECRET, "capacity_mbps": 1.0,
                   "classes": {"a": {"rate_mbps": 2}}}, "more than capacity_mbps"),
     (OriginConfig, {"max_message_size": 1 << 24}, "max_message_size must be a finite number in 1..16777215"),
     (OriginConfig, {"balancer": "nohost"}, "balancer:"),
     (OriginConfig, {"log_level": "loud"}, "log_level must be one of"),
     (BalancerConfig, {"forget_after": 1.0}, "forget_after (1 s) must be at least heartbeat_timeout"),
     (BalancerConfig, {"hash_balance_factor": math.nan}, "hash_balance_factor must be a finite number in 1..100"),
     (EdgeConfig, {"parents": ["rtmp://h:1"], "hls_cache_bytes": -5}, "hls_cache_bytes must be a finite number in 0..1099511627776"),
     (EdgeConfig, {"parents": ["rtmp://h:1"], "max_lag_ms": -1}, "max_lag_ms must be a finite number in 1..3600000"),
     (EdgeConfig, {"parents": ["rtmp://h:1"], "http_max_header_bytes": 0}, "http_max_header_bytes must be a finite number in 256..1048576"),
     (EdgeConfig, {"parents": ["rtmp://h:1"], "batch_ms": 0.0}, "batch_ms must be a number > 0 and <= 10000"),
     (OriginConfig, {"hls_apps": ["live", "../etc"]}, "hls_apps: app '../etc' has characters outside"),
     (OriginConfig, {"hls_apps": [""]}, "hls_apps: empty app"),
     (OriginConfig, {"publish_secret": "s3cret"}, "publish_secret: must be at least 16 characters"),
     (OriginConfig, {"admin_token": "a"}, "admin_token: must be at least 16 characters"),
     (BalancerConfig, {"admin_token": "x" * 15}, "admin_token: must be at least 16 characters"),
     (BalancerConfig, {"qos_secret": "q"}, "qos_secret: must be at least 16 characters"),
     (EdgeConfig, {"parents": ["rtmp://h:1"], "qos_secret": "k"}, "qos_secret: must be at least 16 characters")],
)  # fmt: skip
def test_invalid_values_are_refused(cls, values, message) -> None:
    with pytest.raises(ConfigError) as info:
        load(cls, cli=values, environ={})
    assert message in str(info.value)


def test_every_numeric_key_has_a_range() -> None:
    """No number a model accepts is unbounded: each numeric key refuses a huge value and a
    negative one (which a bare type check would let through)."""
    for model in MODELS.values():
        for key in keys(model).values():
            if key.type not in (int, float):
                continue
            for value in (-1, 1 << 62):
                values = {"parents": ["rtmp://h:1"]} if model is EdgeConfig else {}
                with pytest.raises(ConfigError, match=key.name):
                    load(model, cli={**values, key.name: key.type(value)}, environ={})


def test_log_level_is_case_insensitive() -> None:
    assert load(OriginConfig, cli={"log_level": "WARNING"}, environ={}).log_level == "WARNING"


def test_toml_writer_round_trips_odd_values() -> None:
    values = {
        "s": 'quote " backslash \\ tab \t nl \n del \x7f é 😀',
        "f": 1e-7, "big": 2.0**70, "inf": math.inf, "i": -3, "b": False,
        "l": ["a", "b c"], "empty": {}, "t": {"with space": {"rate_mbps": 0.5}, "x": {}},
    }  # fmt: skip
    assert tomllib.loads(dumps(values)) == values
