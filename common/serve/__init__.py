"""What a node that serves viewers is made of: the play node, the fan-out, RTMP connections, metrics, CLI."""
