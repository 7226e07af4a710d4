"""Sans-IO RTMP: handshake, chunk stream, messages, server and client sessions."""
