"""Drive Sluice's /mcp endpoint with the official MCP Python SDK (a client nobody here wrote).

Usage: client.py <gateway url> <api key>. Lists the tools, calls github__get_repo and a tool
with bad arguments, and prints one JSON object with what it saw, for the Rust test to check.
"""

import asyncio
import json
import sys

from mcp import ClientSession
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


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
