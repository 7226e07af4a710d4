"""The origin's relay settings as the operator writes them, parsed and checked once:
push targets ("app=rtmp://host/app"), static pulls ("app/name=rtmp://host/app/name") and
on-demand pull templates ("app=rtmp://host/app/{name}")."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from common.config.model import Check
from common.proto.streamkey import StreamKey, StreamKeyError, check_part

PUSH_SCHEMES = ("rtmp", "rtmps")
PULL_SCHEMES = ("rtmp", "rtmps", "http", "https")
NAME = "{name}"


class RelaySpecError(ValueError):
    """A relay setting that cannot work; the message says why."""


@dataclass(frozen=True)
class Source:
    """Where a pull reads: `parent` (scheme://host:port[/prefix]) plus app and name, as
    `common.serve.feeds.open_feed` opens them, and the URL's query (sent as is)."""

    url: str
    parent: str
    app: str
    name: str
    query: str = ""


@dataclass(frozen=True)
class PushTarget:
    """Each live stream of `app` is published to `url`/NAME."""

    app: str
    url: str

    def url_for(self, name: str) -> str:
        """The publish URL of stream `name` (a validated stream name)."""
        return f"{self.url.rstrip('/')}/{quote(name, safe='')}"


@dataclass(frozen=True)
class StaticPull:
    """Stream app/name is pulled from `source` while the origin runs."""

    key: StreamKey
    source: Source


@dataclass(frozen=True)
class PullTemplate:
    """A viewer of `app`/NAME, not live, starts a pull from `template` with NAME in {name}."""

    app: str
    template: str

    def source(self, name: str) -> Source:
        """The source of stream `name` (a validated stream name)."""
        return source(self.template.replace(NAME, quote(name, safe="")))


def _split(item: str, what: str) -> tuple[str, str]:
    left, sep, url = item.partition("=")
    if not sep or not left or not url:
        raise RelaySpecError(f"{item!r} is not {what}=URL")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise RelaySpecError(f"{item!r}: the URL has spaces or control characters")
    return left.strip(), url.strip()


def _app(app: str) -> str:
    try:
        return check_part(app, "app")
    except StreamKeyError as exc:
        raise RelaySpecError(f"app {app!r}: {exc}") from None


def _parts(url: str, schemes: tuple[str, ...]):
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise RelaySpecError(f"{url!r}: {exc}") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise RelaySpecError(f"{url!r} is not a {' or '.join(s + '://' for s in schemes)} URL")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise RelaySpecError(f"{url!r}: {exc}") from None
    return parts


def source(url: str) -> Source:
    """A pull source: rtmp(s)://host[:port]/app/name[?query] or
    http(s)://host[:port][/prefix]/app/name.flv[?query]; app and name fit the stream-key
    grammar (they are percent-decoded)."""
    parts = _parts(url, PULL_SCHEMES)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    rtmp = parts.scheme in ("rtmp", "rtmps")
    if rtmp and len(segments) != 2:
        raise RelaySpecError(f"{url!r}: an RTMP source is rtmp://host/app/name")
    if not rtmp and (len(segments) < 2 or not segments[-1].endswith(".flv")):
        raise RelaySpecError(f"{url!r}: an HTTP-FLV source is http://host/.../app/name.flv")
    app, name = segments[-2], segments[-1].removesuffix(".flv") if not rtmp else segments[-1]
    try:
        StreamKey.parse(app, name)
    except StreamKeyError as exc:
        raise RelaySpecError(f"{url!r}: {exc}") from None
    default = {"rtmp": 1935, "rtmps": 443, "http": 80, "https": 443}[parts.scheme]
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    prefix = "".join(f"/{quote(s, safe='')}" for s in segments[:-2])
    parent = f"{parts.scheme}://{host}:{parts.port or default}{prefix}"
    return Source(url, parent, app, name, parts.query)


def push_target(item: str) -> PushTarget:
    """'app=rtmp(s)://host[:port]/app' (streams go to that URL/NAME)."""
    app, url = _split(item, "app")
    parts = _parts(url, PUSH_SCHEMES)
    if not parts.path.strip("/") or parts.query or parts.fragment:
        raise RelaySpecError(f"{url!r}: a push target is rtmp://host[:port]/app (no query)")
    return PushTarget(_app(app), url)


def static_pull(item: str) -> StaticPull:
    """'app/name=URL' (a `source`)."""
    key_text, url = _split(item, "app/name")
    try:
        key = StreamKey.from_text(key_text)
    except StreamKeyError as exc:
        raise RelaySpecError(f"{key_text!r}: {exc}") from None
    return StaticPull(key, source(url))


def pull_template(item: str) -> PullTemplate:
    """'app=URL' whose URL holds {name} once (and no other braces)."""
    app, url = _split(item, "app")
    rest = url.replace(NAME, "")
    if url.count(NAME) != 1 or "{" in rest or "}" in rest:
        raise RelaySpecError(f"{url!r}: an on-demand source holds {NAME} once")
    template = PullTemplate(_app(app), url)
    template.source("name")  # checks the rest of the URL
    return template


def items(parse) -> Check:
    """A config check: every item of a list setting parses with `parse`, apps at most once."""

    def check(key: str, value: list[str]) -> str | None:
        seen = set()
        for item in value:
            try:
                parsed = parse(item)
            except RelaySpecError as exc:
                return f"{key}: {exc}"
            ident = getattr(parsed, "key", None) or getattr(parsed, "app", None)
            if parse is not push_target and ident in seen:
                return f"{key}: {ident} appears twice"
            seen.add(ident)
        return None

    return check
