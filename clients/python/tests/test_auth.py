"""Checks the Python client against a server configured with `[auth]` tokens: run by
tests/tests/python.rs with SLUICE_ADDR and SLUICE_TOKEN set. Exits non-zero on the first failed
check."""

import asyncio
import os
import sys

import grpc
import sluice


def main() -> None:
    token = os.environ["SLUICE_TOKEN"]
    # The token from the environment: acquire, report and status all pass.
    client = sluice.Client()
    with client.acquire("llm", tokens=10) as permit:
        permit.report(status=200, headers={})
    assert client.status("llm").limits[0].used == 1
    # A wrong token is refused with UNAUTHENTICATED.
    stranger = sluice.Client(token="not-the-token-0123456789")
    try:
        stranger.acquire("llm", tokens=10)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e.code()
    else:
        raise AssertionError("a wrong token was accepted")

    # The asyncio client, with the token as an argument.
    async def run() -> None:
        async with sluice.AsyncClient(token=token).acquire("llm", tokens=10) as permit:
            await permit.report(status=200, headers={})

    asyncio.run(run())
    assert client.status("llm").limits[0].used == 2
    print("ok")


if __name__ == "__main__":
    main()
