"""Calls ShouldRateLimit through a client generated from Envoy's published protos (the
`xds-protos` package), as Envoy's rate limit filter does, and prints every answer as one JSON
line per call. Usage: should_rate_limit.py ADDRESS CALLS_JSON, where CALLS_JSON is a list of
{"domain": str, "descriptors": [[[key, value], ...], ...], "hits": int}."""

import json
import sys

import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc


def main() -> None:
    address, calls = sys.argv[1], json.loads(sys.argv[2])
    with grpc.insecure_channel(address) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        for call in calls:
            request = rls_pb2.RateLimitRequest(
                domain=call["domain"],
                hits_addend=call.get("hits", 0),
                descriptors=[
                    ratelimit_pb2.RateLimitDescriptor(
                        entries=[
                            ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v)
                            for k, v in entries
                        ]
                    )
                    for entries in call["descriptors"]
                ],
            )
            try:
                answer = stub.ShouldRateLimit(request, timeout=10)
            except grpc.RpcError as e:
                print(json.dumps({"error": e.code().name, "message": e.details()}))
                continue
            print(
                json.dumps(
                    {
                        "overall": rls_pb2.RateLimitResponse.Code.Name(answer.overall_code),
                        "statuses": [
                            {
                                "code": rls_pb2.RateLimitResponse.Code.Name(s.code),
                                "reset_seconds": s.duration_until_reset.seconds,
                            }
                            for s in answer.statuses
                        ],
                        "headers": {h.key: h.value for h in answer.response_headers_to_add},
                    }
                )
            )


if __name__ == "__main__":
    main()
