"""livecdn topologies: see issue 5."""
