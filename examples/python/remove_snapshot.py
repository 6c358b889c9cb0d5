"""Remove a VM's snapshot through livemerge from a Python service (PyPI temporalio).

    python remove_snapshot.py VM_ID SNAPSHOT_ID [--direction forward] [--bandwidth BYTES_PER_SEC]

Connects with livemerge's own settings (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_TLS_CERT/KEY/CA/
SERVER_NAME or TEMPORAL_TLS=true, TEMPORAL_API_KEY), starts the removeSnapshot workflow by type name with
a JSON input, queries its `progress` while it runs and prints one JSON object per line on stdout:
{"progress": ...} on every change, then {"result": ...} (exit 0) or {"failure": {"type": ...}} (exit 1).
"""

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from temporalio.client import Client, TLSConfig, WorkflowFailureError
from temporalio.exceptions import ApplicationError

TASK_QUEUE = "livemerge-engine"


def tls_config() -> TLSConfig | bool | None:
    """mTLS as livemerge's workers read it (src/config.ts); None: plaintext, or TLS with an API key."""
    env = os.environ

    def read(name: str) -> bytes | None:
        path = env.get(name)
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    cert, key, ca = read("TEMPORAL_TLS_CERT"), read("TEMPORAL_TLS_KEY"), read("TEMPORAL_TLS_CA")
    server_name = env.get("TEMPORAL_TLS_SERVER_NAME") or None
    if (cert is None) != (key is None):
        raise SystemExit("TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY go together")
    if cert or ca or server_name:
        return TLSConfig(
            client_cert=cert, client_private_key=key, server_root_ca_cert=ca, domain=server_name
        )
    return True if env.get("TEMPORAL_TLS") == "true" else None


async def connect() -> Client:
    return await Client.connect(
        os.environ.get("TEMPORAL_ADDRESS", "127.0.0.1:7233"),
        namespace=os.environ.get("TEMPORAL_NAMESPACE", "default"),
        tls=tls_config(),
        api_key=os.environ.get("TEMPORAL_API_KEY") or None,
    )


def emit(**line: Any) -> None:
    print(json.dumps(line), flush=True)


async def remove_snapshot(client: Client, request: dict[str, Any]) -> dict[str, Any]:
    """Starts removeSnapshot (or joins the run already open for this snapshot) and waits for its result."""
    handle = await client.start_workflow(
        "removeSnapshot",  # the workflow type, by name: no livemerge code is needed here
        request,  # the JSON input; livemerge validates it (a bad one fails with InvalidRequest)
        id=f"remove-snapshot:{request['vmId']}:{request['snapshotId']}",
        task_queue=TASK_QUEUE,
    )
    result = asyncio.ensure_future(handle.result())
    last = None
    while True:
        done = result.done()
        # The progress query answers while the workflow runs and after it has closed.
        progress = await handle.query("progress")
        if progress != last:
            emit(progress=progress)
            last = progress
        if done:
            return result.result()  # raises WorkflowFailureError if the workflow failed
        await asyncio.wait([result], timeout=0.5)


async def main() -> int:
    parser = argparse.ArgumentParser(description="Remove a VM snapshot through livemerge.")
    parser.add_argument("vm_id")
    parser.add_argument("snapshot_id")
    parser.add_argument("--direction", help="backward (default) or forward")
    parser.add_argument("--bandwidth", type=int, help="bytes per second (live merges)")
    args = parser.parse_args()
    request: dict[str, Any] = {"vmId": args.vm_id, "snapshotId": args.snapshot_id}
    if args.direction is not None:
        request["direction"] = args.direction
    if args.bandwidth is not None:
        request["bandwidthBytesPerSec"] = args.bandwidth

    client = await connect()
    try:
        result = await remove_snapshot(client, request)
    except WorkflowFailureError as err:
        # livemerge fails with a non-retryable ApplicationError whose type names the cause (docs/api.md).
        cause = err.cause
        if not isinstance(cause, ApplicationError):
            raise
        emit(
            failure={
                "type": cause.type,
                "message": cause.message,
                "nonRetryable": cause.non_retryable,
                "details": list(cause.details),
            }
        )
        return 1
    emit(result=result)
    return 0


if __name__ == "__main__":
    code = asyncio.run(main())
    sys.stdout.flush()
    sys.stderr.flush()
    # The SDK's Rust threads can outlive the event loop and abort the interpreter's teardown ("Fatal Python
    # error: PyGILState_Release", SIGABRT after the result was printed: temporalio/sdk-python#300). Every
    # line is out and nothing is left to clean up: exit without the teardown.
    os._exit(code)
