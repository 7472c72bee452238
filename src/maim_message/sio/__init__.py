"""The 0.7.x wire (Socket.IO v5 over Engine.IO v4) as a dialect of the shared machinery.

``packets`` and ``session`` are sans-I/O (bytes in, events out); ``server`` is the hub's
Engine.IO endpoint, ``mux`` routes a transport's traffic between it and the hub, ``socket``
is an accepted 0.7 client as the hub sees it, ``asgi`` mounts the endpoint in a host
application, ``client`` lets our clients reach 0.7.x servers. See docs/architecture.md
("Two generations on one port") and ../shared/spec/wire-0.7.md.
"""
