"""Code shared by every livecdn node: protocol cores, the Stream, HTTP, metrics, config."""
