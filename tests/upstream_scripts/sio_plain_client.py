"""A plain python-socketio client (no maim_message), driven over JSON lines (see api_common).

It follows wire-0.7.md §8.2, the 0.7 external-client guide: headers ``x-apikey``,
``x-platform``, ``x-uuid`` on the first request, Socket.IO path ``/ws``, one event
``"message"`` whose argument is a maim envelope; it acks every received message that has a
``msg_id`` with a ``sys_ack`` envelope. Run by the 0.7.5 virtualenv's interpreter, which
has python-socketio: ``python sio_plain_client.py '<json options>'`` with options ``url``
(http://host:port), ``api_key``, ``platform``, ``uuid``, ``transports`` (list).

Events: ``received`` (an envelope from the server), ``disconnected``.
Commands: ``connect``, ``emit`` (an envelope), ``state``, ``disconnect``, ``exit``.
"""

import asyncio
import json
import sys
import time
import uuid

from api_common import emit, hard_exit, serve_commands


def main():
    opts = json.loads(sys.argv[1])
    import socketio  # imported here: the protocol module must not need it

    sio = socketio.AsyncClient(reconnection=False)
    conn_uuid = opts.get("uuid") or f"plain-{uuid.uuid4().hex[:8]}"

    @sio.on("message")
    async def on_message(data):
        emit({"event": "received", "envelope": data})
        if isinstance(data, dict) and data.get("msg_id") and data.get("type") != "sys_ack":
            await sio.emit("message", {
                "ver": 1, "msg_id": f"ack_{uuid.uuid4().hex}", "type": "sys_ack",
                "meta": {"uuid": conn_uuid, "acked_msg_id": data["msg_id"],
                         "timestamp": time.time()},
                "payload": {"status": "received", "client_timestamp": time.time()},
            })

    @sio.event
    async def disconnect(*args):
        emit({"event": "disconnected"})

    @sio.event
    async def connect_error(data):
        emit({"event": "connect_error", "data": data})

    async def connect(cmd):
        headers = {"x-apikey": opts["api_key"], "x-platform": opts.get("platform", "plain"),
                   "x-uuid": conn_uuid}
        try:
            await sio.connect(opts["url"], headers=headers, socketio_path="/ws",
                              transports=opts.get("transports") or ["polling", "websocket"],
                              wait_timeout=10)
        except socketio.exceptions.ConnectionError as exc:
            return {"connected": False, "error": str(exc)}
        return {"connected": sio.connected, "transport": sio.transport(), "uuid": conn_uuid}

    async def send(cmd):
        await sio.emit("message", cmd["envelope"])
        return {"ok": True}

    async def state(cmd):
        return {"connected": sio.connected, "transport": sio.transport() if sio.connected
                else None}

    async def disconnect_cmd(cmd):
        await sio.disconnect()
        return {"ok": True}

    async def run():
        emit({"event": "hello", "socketio": socketio.__file__, "python": sys.version})
        emit("READY")
        await serve_commands({"connect": connect, "emit": send, "state": state,
                              "disconnect": disconnect_cmd})

    try:
        asyncio.run(run())
    finally:
        hard_exit(0)


if __name__ == "__main__":
    main()
