"""livecdn origin: RTMP ingest, GOP cache, HTTP-FLV and RTMP play, HTTP API."""
