"""Drive Sluice's /mcp endpoint with the official MCP Python SDK (a client nobody here wrote).

Usage: client.py <gateway url> <api key>. Lists the tools, calls github__get_repo and a tool
with bad arguments, and prints one JSON object with what it saw, for the Rust test to check.
With a third argument `follow`: prints the tools, waits for the server's
`notifications/tools/list_changed` and prints the tools again.
"""

import asyncio
import json
import sys

from mcp import ClientSession, types
from mcp.client.streamable_http import streamablehttp_client


async def main(url: str, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with streamablehttp_client(f"{url}/mcp", headers=headers) as (read, write, _):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            ok = await session.call_tool("github__get_repo", {"owner": "acme", "repo": "webapp"})
            bad = await session.call_tool("github__get_repo", {"owner": 5})
            print(
                json.dumps(
                    {
                        "server": init.serverInfo.name,
                        "protocol": init.protocolVersion,
                        "tools": sorted(tool.name for tool in tools.tools),
                        "ok_error": ok.isError,
                        "ok_text": ok.content[0].text,
                        "bad_error": bad.isError,
                        "bad_text": bad.content[0].text,
                    }
                )
            )


async def follow(url: str, key: str) -> None:
    """Print the tools, then wait for the server to say they changed and print them again."""
    changed = asyncio.Event()

    async def on_message(message) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ToolListChangedNotification
        ):
            changed.set()

    headers = {"Authorization": f"Bearer {key}"}
    async with streamablehttp_client(f"{url}/mcp", headers=headers) as (read, write, _):
        async with ClientSession(read, write, message_handler=on_message) as session:
            await session.initialize()
            tools = await session.list_tools()
            print(json.dumps({"tools": sorted(tool.name for tool in tools.tools)}), flush=True)
            await asyncio.wait_for(changed.wait(), timeout=60)
            tools = await session.list_tools()
            print(json.dumps({"notified": True, "tools": sorted(tool.name for tool in tools.tools)}), flush=True)


if __name__ == "__main__":
    if sys.argv[3:] == ["follow"]:
        asyncio.run(follow(sys.argv[1], sys.argv[2]))
    else:
        asyncio.run(main(sys.argv[1], sys.argv[2]))
