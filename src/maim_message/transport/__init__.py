"""Transports: thin I/O shells that move WebSocket frames between sockets and the core."""
