"""The floors: the cheapest possible grpc.aio Check servicer (OK with one header), and with
`--answer FILE` the same-bytes floor: a generic handler that answers every Check with the bytes
in FILE (mtls-authz's own serialized CheckResponse for the benchmark's request) without parsing
or serializing anything.

What Python gRPC costs before mtls-authz does any work; `make bench` runs them beside
mtls-authz with the same load.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2

RESPONSE = external_auth_pb2.CheckResponse(
    status=status_pb2.Status(code=code_pb2.OK),
    ok_response=external_auth_pb2.OkHttpResponse(
        headers=[base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key="x-floor", value="1"))]
    ),
)


class Floor(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    async def Check(self, request: Any, context: Any) -> Any:
        return RESPONSE


def same_bytes(answer: bytes) -> grpc.GenericRpcHandler:
    async def check(request: bytes, context: Any) -> bytes:
        return answer

    return grpc.method_handlers_generic_handler(
        "envoy.service.auth.v3.Authorization",
        {"Check": grpc.unary_unary_rpc_method_handler(check)},  # bytes in, bytes out
    )


async def serve(listen: str, answer: bytes | None) -> None:
    server = grpc.aio.server()
    if answer is None:
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(Floor(), server)
    else:
        server.add_generic_rpc_handlers((same_bytes(answer),))
    server.add_insecure_port(listen)
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--answer", type=Path, help="Answer these bytes to every Check.")
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.answer.read_bytes() if args.answer else None))


if __name__ == "__main__":
    main()
