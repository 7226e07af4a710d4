"""The same simulated players against nginx-rtmp (RTMP and its HLS), when it is installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import trio

from tests.conftest import ffmpeg_publish

MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("nginx") is None or not MODULE.exists(),
        reason="needs nginx and libnginx-mod-rtmp (apt-get install -y nginx libnginx-mod-rtmp)",
    ),
]


def nginx_conf(tmp: Path, hls: Path, rtmp: int, http: int) -> Path:
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
load_module {MODULE};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
rtmp {{ server {{ listen 127.0.0.1:{rtmp}; application live {{
    live on; hls on; hls_path {hls}; hls_fragment 1s; hls_playlist_length 6s; }} }} }}
http {{ access_log off; client_body_temp_path {tmp}/cb; proxy_temp_path {tmp}/px;
    fastcgi_temp_path {tmp}/fc; uwsgi_temp_path {tmp}/uw; scgi_temp_path {tmp}/sc;
    server {{ listen 127.0.0.1:{http}; location /hls {{ alias {hls}; }} }} }}
""")
    return conf


async def load(url: str, out: Path) -> dict:
    proc = await trio.run_process(
        [sys.executable, "-m", "topology", "load", "--url", url, "--players", "20",
         "--duration", "8", "--ramp", "1", "--out", str(out)],
        capture_stdout=True, capture_stderr=True,
    )  # fmt: skip
    assert b"played 20, never played 0" in proc.stdout, proc.stdout.decode()
    return json.loads((out / "load.json").read_text())["summary"]


async def test_the_load_command_plays_nginx_rtmp_and_its_hls(nursery, clip, tmp_path, held_ports):
    rtmp, http = held_ports.take(), held_ports.take()
    # nginx's workers drop privileges: the fragments live where they may read and write
    hls = Path(tempfile.mkdtemp(prefix="livecdn-nginx-hls-"))
    hls.chmod(0o1777)
    nginx = subprocess.Popen(["nginx", "-c", str(nginx_conf(tmp_path, hls, rtmp, http)),
                              "-p", str(tmp_path)], stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        with trio.fail_after(10):  # a hang guard: nginx listens
            while True:
                try:
                    await (await trio.open_tcp_stream("127.0.0.1", rtmp)).aclose()
                    break
                except OSError:
                    await trio.sleep(0.1)
        await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{rtmp}/live/n")
        summaries: dict[str, dict] = {}

        async def hls_load() -> None:
            playlist = hls / "n.m3u8"
            with trio.fail_after(20):  # a few HLS fragments
                while not playlist.exists() or playlist.read_text().count("#EXTINF") < 3:
                    await trio.sleep(0.2)
            summaries["hls"] = await load(f"http://127.0.0.1:{http}/hls/n.m3u8", tmp_path / "hls")

        async with trio.open_nursery() as loads:  # both at once: each mostly waits
            loads.start_soon(hls_load)
            with trio.fail_after(20):  # the stream is live at nginx: its first fragment
                while not (hls / "n.m3u8").exists():
                    await trio.sleep(0.1)
            summaries["rtmp"] = await load(f"rtmp://127.0.0.1:{rtmp}/live/n", tmp_path / "rtmp")
        s = summaries["rtmp"]
        assert s["players_with_failures"] == 0 and s["players_with_stalls"] == 0, s
        # measured (JSON keys); how it compares with ours: bench/load_vs_nginx.sh
        assert s["ttff_s"]["95"] > 0, s["ttff_s"]
        s = summaries["hls"]
        assert s["players_with_failures"] == 0 and s["kbps_mean"] > 0, s
    finally:
        nginx.terminate()
        nginx.wait()
        shutil.rmtree(hls, ignore_errors=True)
    nursery.cancel_scope.cancel()
