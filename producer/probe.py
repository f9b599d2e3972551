"""`python -m producer probe URL`: print an agent's devices and data items, as a first check
that an agent is reachable and what it offers before pointing the service at it."""
from __future__ import annotations

import sys

from producer.mtconnect.client import AgentClient, AgentUnreachable
from producer.mtconnect.documents import AgentError, DocumentError


def probe_cli(args) -> int:
    verify = args.ca_bundle or True
    with AgentClient(args.url, verify=verify, timeout=(args.timeout, args.timeout)) as client:
        try:
            document = client.probe()
        except (AgentUnreachable, DocumentError, AgentError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    header = document.header
    print(f"agent {client.base_url}: MTConnect {document.mtconnect_version}, sender {header.sender}, "
          f"instanceId {header.instance_id}, {len(document.devices)} devices, {len(document.data_items)} data items")
    for device in document.devices:
        print(f"\n{device['device_name']}  uuid={device['device_uuid']}  "
              f"{device.get('manufacturer') or ''} {device.get('model') or ''}".rstrip())
        for item in device["data_items"]:
            detail = " ".join(
                f"{key}={item[key]}" for key in ("sub_type", "units") if item.get(key)
            )
            print(f"  {item['category']:<9} {item['type']:<28} {item['id']:<32} {item.get('name') or '':<16} "
                  f"[{item['component']}] {detail}".rstrip())
    return 0
