"""The livecdn edge: pulls each stream from its parents only on demand and serves HTTP-FLV, HLS and RTMP."""
