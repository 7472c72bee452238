"""Legacy API of maim-message 0.6.8: ``MessageServer``, ``MessageClient``, ``Router``.

A dialect on the project's shared machinery, not a second stack. Layout (sans-I/O core
first, thin asyncio shells after):

- ``tcp_framing`` / ``tcp_protocol``: the legacy TCP framing and its state machines (pure).
- ``crypto``: X25519 / HKDF-SHA256 / ChaCha20-Poly1305 session and replay guard (pure).
- ``dispatch``: handler registry and the ``process_message`` rules (tasks on the shared
  ``runtime.callbacks.HandlerTasks``).
- ``platforms``: tokens and routing by platform, over any framing's peers.
- ``ws_app``: the WebSocket dialect as a ``ServerApp`` of ``transport/``; ``ws_server``
  serves it standalone (asyncio shell) or mounted on FastAPI/Starlette (ASGI shell).
- ``tcp_server`` / ``tcp_client``: the TCP mode's asyncio streams.
- ``reconnect`` (loop on the shared ``runtime.reconnect.ReconnectPolicy``),
  ``ws_transport``: client transports.
- ``server`` (``MessageServer``), ``ws_client`` (``MessageClient``), ``router``
  (``Router``, ``RouteConfig``, ``TargetConfig``), ``converter`` (``MessageConverter``).

JSON goes through ``core.codec`` (``dumps_compat``/``loads_compat``), TLS through the
shared builders of ``server.tls`` and ``client.tls``. Nothing is imported here so that
``import maim_message`` stays cheap.
"""
