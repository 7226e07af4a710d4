"""The livecdn balancer: routes viewers to healthy edges (302 or /api/route) from the edges' heartbeats."""
