"""An origin with workers = 2 (real processes) keeps what one origin promises: a host's
max_publishers_per_ip counted on the node, on_publish asked only about a publish the node
would take, a kick's ban kept for a worker restarted after it, and a reloaded max_streams
applied to the node's ownership table."""

from __future__ import annotations

import os
import re
import signal

import pytest
import trio

from common.net.httpclient import fetch
from common.net.rtmpclient import RtmpClient, RtmpClientError
from tests.hookserver import start_hooks
from tests.media import publish_synthetic, synthetic_publish
from tests.origin.test_workers import HANG, start_node, worker_pid

pytestmark = pytest.mark.slow

TRIES = 12  # publishes tried: each lands on either worker


async def try_publish(url: str) -> str | None:
    """None if the publish was accepted (then closed), else the refusal."""
    client = await RtmpClient.connect(url)
    try:
        with trio.fail_after(HANG):
            await client.publish()
        return None
    except RtmpClientError as exc:
        return str(exc)
    finally:
        client.close()


async def test_max_publishers_per_ip_holds_for_the_node(nursery):
    """One origin refuses a host's second stream with max_publishers_per_ip = 1; so does the
    node whichever worker the second lands on (before, each worker counted only its own
    publishers, so the node took one per worker)."""
    proc, log, rtmp, http = await start_node(nursery, "--max-publishers-per-ip", "1")
    try:
        async with trio.open_nursery() as publishing:
            await publish_synthetic(publishing, f"rtmp://127.0.0.1:{rtmp}/live/first")
            await log.wait_for("publish live/first from")
            accepted = []
            for i in range(TRIES):  # an accepted publisher is kept publishing
                client = await RtmpClient.connect(f"rtmp://127.0.0.1:{rtmp}/live/more{i}")
                try:
                    with trio.fail_after(HANG):
                        await client.publish()
                except RtmpClientError:
                    client.close()
                    continue
                accepted.append(f"more{i}")
                publishing.start_soon(synthetic_publish, client)
            publishing.cancel_scope.cancel()
        assert accepted == [], f"a second stream of one host was accepted: {accepted}"
    finally:
        proc.kill()


async def test_a_refused_second_publish_is_not_put_to_on_publish(nursery):
    """One origin refuses a second publish of a live name before it asks on_publish (the
    hook is asked only about publishes the origin would accept); on a worker that does not
    own the name the claim comes first now (before, the hook was asked first, allowed it,
    and the publish was then refused: the hook service saw publishes that never happened)."""
    hooks = await start_hooks(nursery)
    proc, log, rtmp, http = await start_node(nursery, "--on-publish", hooks.url())
    try:
        url = f"rtmp://127.0.0.1:{rtmp}/live/h"
        async with trio.open_nursery() as publishing:
            await publish_synthetic(publishing, url)
            await log.wait_for("publish live/h from")
            for _ in range(6):
                assert await try_publish(url) is not None  # refused, on either worker
            publishing.cancel_scope.cancel()
        asked = len(hooks.of("on_publish"))
        assert asked == 1, f"on_publish asked {asked} times for one publish: {hooks.calls}"
    finally:
        proc.kill()


async def test_a_kick_ban_survives_a_worker_restart(nursery):
    """A kick with ?ban=60 bans the name on every worker and in the node's ownership table,
    so a worker that dies and restarts (with no bans of its own) refuses it too."""
    proc, log, rtmp, http = await start_node(nursery)
    try:
        url = f"rtmp://127.0.0.1:{rtmp}/live/k"
        async with trio.open_nursery() as publishing:
            await publish_synthetic(publishing, url)
            await log.wait_for("publish live/k from")
            kicked = await fetch("DELETE", f"http://127.0.0.1:{http}/api/streams/live/k?ban=60")
            assert kicked.status == 200, kicked
            publishing.cancel_scope.cancel()
        pid = worker_pid(log, 1)
        os.kill(pid, signal.SIGKILL)
        with trio.fail_after(HANG):
            while len(re.findall(r"origin worker 1 \(pid \d+\) up", log.text)) < 2:
                await trio.sleep(0.05)
        outcomes = [await try_publish(url) for _ in range(TRIES)]
        accepted = outcomes.count(None)
        assert accepted == 0, f"{accepted} of {TRIES} publishes accepted within the ban: {outcomes}"
    finally:
        proc.kill()


async def test_a_reloaded_max_streams_holds_for_the_node(nursery, tmp_path):
    """max_streams is reloadable: after SIGHUP raises it from 1 to 3 a second stream is
    taken, on one origin as on the node (each claim carries its worker's max_streams; before,
    the table kept the limit it started with and refused it)."""
    conf = tmp_path / "origin.toml"
    conf.write_text("max_streams = 1\n")
    proc, log, rtmp, http = await start_node(nursery, "--config", str(conf))
    try:
        async with trio.open_nursery() as publishing:
            await publish_synthetic(publishing, f"rtmp://127.0.0.1:{rtmp}/live/one")
            await log.wait_for("publish live/one from")
            conf.write_text("max_streams = 3\n")
            proc.send_signal(signal.SIGHUP)
            with trio.fail_after(HANG):
                while log.text.count("config reloaded: applied") < 2:
                    await trio.sleep(0.05)
            refusals = []
            for i in range(4):  # on either worker
                client = await RtmpClient.connect(f"rtmp://127.0.0.1:{rtmp}/live/two{i}")
                try:
                    with trio.fail_after(HANG):
                        await client.publish()
                except RtmpClientError as exc:
                    refusals.append(str(exc))
                    client.close()
                    continue
                publishing.start_soon(synthetic_publish, client)
                break
            publishing.cancel_scope.cancel()
        assert len(refusals) < 4, f"a second stream refused under max_streams = 3: {refusals}"
    finally:
        proc.kill()


async def viewers_kept_across_a_move(nursery, args: tuple[str, ...], name: str, arrive, landed):
    """Publish live/NAME on a node started with `args`, with four HTTP-FLV viewers (on
    either worker); `arrive(publishing, url, pub)` brings a new publisher (returns it), tried
    until the log says `landed` (skipped if it never does); then every viewer gets frames
    after the move and none was cut off."""
    from tests.edge.test_workers import Playing

    proc, log, rtmp, http = await start_node(nursery, *args)
    try:
        url = f"rtmp://127.0.0.1:{rtmp}/live/{name}"
        async with trio.open_nursery() as publishing:
            pub = await publish_synthetic(publishing, url)
            await log.wait_for(f"publish live/{name} from")
            plays = []
            for _ in range(4):
                play = Playing(f"http://127.0.0.1:{http}/live/{name}.flv")
                await publishing.start(play.run)
                await play.viewer.wait_frames(5, HANG)
                plays.append(play)
            for _ in range(24):  # new publishers, until one lands on the other worker
                pub = await arrive(publishing, url, pub)
                if landed in log.text:
                    break
                await trio.sleep(0.3)
            else:
                pytest.skip(f"never {landed!r}: every new publisher landed on the owner")
            await log.wait_for("moved to worker")
            for play in plays:  # frames after the move, on every worker
                await play.viewer.wait_frames(len(play.viewer.video) + 10, HANG)
            ended = sum(p.ended for p in plays)
            publishing.cancel_scope.cancel()
        assert ended == 0, f"{ended} of {len(plays)} viewers cut off by the move"
    finally:
        proc.kill()


async def test_viewers_are_kept_when_the_publisher_comes_back_on_another_worker(nursery):
    """One origin keeps a stream's viewers while its publisher is away for less than
    publisher_grace and resumes it when the publisher is back. On a node the publisher's
    new connection may land on another worker: the stream moves there (the old owner goes
    on as a mirror of it, the new owner takes its mirror as the publish), and every viewer,
    on either worker, goes on getting frames."""

    async def come_back(publishing, url, pub):
        pub.close()  # its connection breaks: viewers wait publisher_grace (10 s)
        await trio.sleep(0.3)
        return await publish_synthetic(publishing, url)

    await viewers_kept_across_a_move(
        nursery, ("--publisher-grace", "10"), "g", come_back, "is back on another worker"
    )


async def test_viewers_are_kept_when_a_takeover_lands_on_another_worker(nursery):
    """With on_republish = "takeover" one origin hands a live stream to its new publisher,
    viewers kept; on a node the new publisher may land on another worker, and the stream
    moves there with its viewers on either worker."""

    async def take_over(publishing, url, pub):
        return await publish_synthetic(publishing, url)

    await viewers_kept_across_a_move(
        nursery, ("--on-republish", "takeover"), "t", take_over, "is taken over on another worker"
    )
