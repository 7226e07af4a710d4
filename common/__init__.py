"""Code shared by every livecdn node, in layers: proto (sans-IO), media, net, config, serve (see docs/DESIGN.md)."""
