"""The decision core: pure logic with no I/O and no wire formats.

A transport hands it a `CheckInput` and renders the `Verdict` it returns; revocation sources sit
behind a protocol. It imports no grpc, protobuf, aiohttp or redis (`make lint` enforces it).
"""
