"""One hub node of a Redis cluster, for the multi-process cluster tests, driven by stdin.

argv: <port> <redis url(s, comma separated)> <node id> [reuse] [handled] (handled: the
``ack="handled"`` policy). Users are API keys; a client's message is
forwarded to the user its message_dim names (a hub between users). Prints ``READY`` when
listening. Commands (one per line):

- ``stream <tag> <count> <pace> <user>...``: send ``<tag>:<n>`` for n in 0..count-1 to
  each user on "qq", round-robin, yielding ``pace`` seconds per round; ``SENT <tag>``.
- ``bcast <text>``: broadcast; ``BCAST <results>``.
- ``count``: ``COUNT <users> <connections>`` cluster-wide (presence read first).
- ``conns``: ``CONNS <json {uuid: node}>`` cluster-wide.
- ``local``: ``LOCAL <json [user ids connected to this node]>``.
- ``stats``: ``STATS <json cluster stats>``.
"""

import asyncio
import json
import sys

from maim_message.message import APIMessageBase, BaseMessageInfo, MessageDim, Seg
from maim_message.server import WebSocketServer, create_server_config


async def main() -> None:
    port, url, node_id = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    flags = sys.argv[4:]
    reuse = "reuse" in flags
    extra = {"ack": "handled"} if "handled" in flags else {}
    server: WebSocketServer

    async def forward(message: APIMessageBase, meta: dict) -> None:
        await server.send_message(message)

    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=port, reuse_port=reuse,
        on_auth_extract_user=lambda m: m["api_key"], on_message=forward,
        enable_connection_log=False, cluster_backend="redis",
        cluster_redis_url=url,  # several, comma separated: pairs sharded over them
        cluster_node_id=node_id, cluster_heartbeat_interval=0.2, cluster_node_ttl=1.0, **extra))
    await server.start()
    cluster = server.cluster
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode()
        if not line:
            break
        cmd, *args = line.split()
        if cmd == "stream":
            tag, count, pace, users = args[0], int(args[1]), float(args[2]), args[3:]
            for n in range(count):
                for user in users:
                    msg = APIMessageBase(BaseMessageInfo("qq", f"{tag}{n}", 1.0),
                                         Seg("text", f"{tag}:{n}"), MessageDim(user, "qq"))
                    await server.send_message(msg)
                await asyncio.sleep(pace)
            print(f"SENT {tag}", flush=True)
        elif cmd == "bcast":
            msg = APIMessageBase(BaseMessageInfo("qq", "b", 1.0), Seg("text", args[0]),
                                 MessageDim("server", "qq"))
            results = await server.broadcast_message(msg)
            print(f"BCAST {sum(results.values())}", flush=True)
        elif cmd in ("count", "conns"):
            await cluster.refresh()  # type: ignore[union-attr]
            if cmd == "count":
                conns = server.get_connections()
                print(f"COUNT {server.get_user_count()} {len(conns)}", flush=True)
            else:
                nodes = {u: i["node"] for u, i in server.get_connections().items()}
                print(f"CONNS {json.dumps(nodes)}", flush=True)
        elif cmd == "local":
            print(f"LOCAL {json.dumps(sorted(server.user_connections))}", flush=True)
        elif cmd == "stats":
            print(f"STATS {json.dumps(cluster.stats())}", flush=True)  # type: ignore[union-attr]
    await server.stop()


asyncio.run(main())
