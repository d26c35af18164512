"""The HTTP floors: the cheapest ext_authz HTTP service (200, one header), on the same asyncio
protocol and parser (httptools) as mtls-authz's http_listen, and with `--answer FILE` the
same-bytes floor: every request answered with the bytes in FILE (mtls-authz's own whole
response to the benchmark's request, status line to body). What the transport costs before
mtls-authz does any work. `make bench` runs them beside mtls-authz with the same load."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import httptools

RESPONSE = b"HTTP/1.1 200 OK\r\nx-floor: 1\r\ncontent-length: 0\r\n\r\n"


class Floor(asyncio.Protocol):
    answer = RESPONSE

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.transport.write(self.answer)


async def serve(listen: str, answer: bytes | None) -> None:
    if answer is not None:
        Floor.answer = answer
    host, _, port = listen.rpartition(":")
    server = await asyncio.get_running_loop().create_server(Floor, host, int(port))
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--answer", type=Path, help="Answer these bytes to every request.")
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.answer.read_bytes() if args.answer else None))


if __name__ == "__main__":
    main()
