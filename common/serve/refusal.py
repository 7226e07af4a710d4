"""Why a node refused a connection or request: the labels of connections_refused_total."""

from __future__ import annotations

from enum import StrEnum


class Refusal(StrEnum):
    """A refusal's reason, as counted in `livecdn_connections_refused_total{reason}`."""

    BAD_NAME = "bad_name"
    BAD_CLASS_TOKEN = "bad_class_token"
    ORIGIN = "origin"  # a WebSocket from a page whose origin cors_origins does not list
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    PROTOCOL_ERROR = "protocol_error"
    CONNECTION_LIMIT = "connection_limit"
    PUBLISH_NOT_ALLOWED = "publish_not_allowed"
    AUTH = "auth"
    BANNED = "banned"
    PUBLISHER_LIMIT = "publisher_limit"
    ALREADY_PUBLISHING = "already_publishing"
    NOT_OWNER = "not_owner"
    PLAY_TOKEN = "play_token"
    """A play without a valid signed play URL (play_secret)."""
    NOT_AN_EDGE = "not_an_edge"
    """A play at an origin with edges_only without a valid pull token (cluster_secret)."""
    STREAM_LIMIT = "stream_limit"
    HOOK = "hook"
    """An on_publish or on_play hook refused, failed or did not answer in time."""
    DRAINING = "draining"
    """A new play or publish while the node drains before it stops (SIGTERM)."""
