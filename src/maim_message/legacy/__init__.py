"""Legacy API of maim-message 0.6.8: ``MessageServer``, ``MessageClient``, ``Router``.

Layout (sans-I/O core first, thin asyncio shells after):

- ``tcp_framing``: length-prefixed TCP frame codec (pure).
- ``crypto``: X25519 / HKDF-SHA256 / ChaCha20-Poly1305 session and replay guard (pure).
- ``jsoncodec``: JSON text <-> Python values for legacy frames (pure).
- ``dispatch``: handler registry and the ``process_message`` rules (pure apart from tasks).
- ``registry``: platform -> connection table shared by every server transport.
- ``ws_server`` / ``asgi`` / ``tcp_server``: server transports.
- ``ws_transport`` / ``tcp_client``: client transports.
- ``server`` (``MessageServer``), ``ws_client`` (``MessageClient``), ``router``
  (``Router``, ``RouteConfig``, ``TargetConfig``), ``converter`` (``MessageConverter``).

Nothing is imported here so that ``import maim_message`` stays cheap.
"""
