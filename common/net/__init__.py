"""The trio runtime: connections, the HTTP server and client, the RTMP client, the control reporter, containment."""
