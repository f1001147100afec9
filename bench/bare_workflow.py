"""The baseline of bench/case_throughput.py: a bare workflow of the same shape as a
Meldebescheinigung case (same number of activities, one Update, one Signal), doing no work.
Its own module, with nothing but temporalio imported, so the workflow sandbox loads it cheaply."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow

ACTIVITIES_PER_CASE = 13  # what a Meldebescheinigung case runs (see workflows/case.py)


@activity.defn(name="bare_step")
def bare_step(n: int) -> int:
    return n


@dataclass
class BareDecision:
    approve: bool


@workflow.defn(name="BareCase", sandboxed=True)
class BareCase:
    def __init__(self) -> None:
        self.decided = False
        self.paid = False

    @workflow.run
    async def run(self, n: int) -> int:
        for i in range(4):
            await workflow.execute_activity("bare_step", i, start_to_close_timeout=timedelta(seconds=30))
        await workflow.wait_condition(lambda: self.decided)
        for i in range(3):
            await workflow.execute_activity("bare_step", i, start_to_close_timeout=timedelta(seconds=30))
        await workflow.wait_condition(lambda: self.paid)
        for i in range(ACTIVITIES_PER_CASE - 7):
            await workflow.execute_activity("bare_step", i, start_to_close_timeout=timedelta(seconds=30))
        return n

    @workflow.update
    async def decide(self, d: BareDecision) -> str:
        self.decided = True
        return "ok"

    @workflow.signal
    def pay(self) -> None:
        self.paid = True

    @workflow.query
    def ready(self) -> bool:
        return True


async def serve(queue: str) -> None:
    """Run the bare worker until killed: a process of its own, like the case worker under
    `make run`, with the client the case worker has (same settings from the environment, same
    payload codec), so both runs pay the same encryption and connection costs."""
    import concurrent.futures

    from temporalio.worker import Worker

    from aktenlauf.settings import Settings
    from aktenlauf.temporal import connect

    client = await connect(Settings())
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        async with Worker(client, task_queue=queue, workflows=[BareCase], activities=[bare_step],
                          activity_executor=pool, max_concurrent_activities=16):
            print("ready", flush=True)
            await asyncio.Event().wait()


if __name__ == "__main__":
    import asyncio
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    asyncio.run(serve(sys.argv[1]))
