"""Record a workflow's history into tests/histories/ for the replay test.

Run a case through a running stack (e.g. `make run` and the README walkthrough), then:
    .venv/bin/python tests/histories/record.py <workflow id> <name>
The payloads stay encrypted with the stack's PAYLOAD_KEYS (the development key under
`make run`); the replay test decodes them with the same key.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aktenlauf.settings import Settings  # noqa: E402
from aktenlauf.temporal import connect  # noqa: E402


async def main(workflow_id: str, name: str) -> None:
    client = await connect(Settings())
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    out = Path(__file__).parent / f"{name}.json"
    out.write_text(history.to_json())
    print(f"wrote {out} ({len(history.events)} events)")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
