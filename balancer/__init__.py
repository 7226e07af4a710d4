"""livecdn balancer: see issue 5."""
