"""The HTTP floor: the cheapest ext_authz HTTP service (200, one header), on the same asyncio
protocol and parser (httptools) as mtls-authz's http_listen: what the transport costs before
mtls-authz does any work. `make bench` runs it beside mtls-authz with the same load."""

from __future__ import annotations

import argparse
import asyncio

import httptools

RESPONSE = b"HTTP/1.1 200 OK\r\nx-floor: 1\r\ncontent-length: 0\r\n\r\n"


class Floor(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.transport.write(RESPONSE)


async def serve(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    server = await asyncio.get_running_loop().create_server(Floor, host, int(port))
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    asyncio.run(serve(parser.parse_args().listen))


if __name__ == "__main__":
    main()
