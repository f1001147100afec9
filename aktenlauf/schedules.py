"""The Temporal Schedule that starts a disposal (Aussonderung) round every day.

``ensure_disposal_schedule`` creates it or brings an existing one up to date (idempotent; the
worker calls it at start, ``aktenlauf eakte schedule`` on demand). Disabled by setting
``DISPOSAL_SCHEDULE_ENABLED=false``: the schedule then stays, paused, with a note saying why.
"""

from __future__ import annotations

import structlog
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleDescription,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from aktenlauf.settings import Settings
from workflows import disposal_contracts as d
from workflows.disposal import DisposalWorkflow

log = structlog.get_logger(__name__)


def disposal_schedule(settings: Settings) -> Schedule:
    enabled = settings.disposal_schedule_enabled
    return Schedule(
        action=ScheduleActionStartWorkflow(
            DisposalWorkflow.run, d.DisposalInput(confirm_days=settings.disposal_confirm_days),
            id=f"{settings.disposal_schedule_id}-round", task_queue=settings.task_queue),  # + scheduled time
        spec=ScheduleSpec(
            calendars=[ScheduleCalendarSpec(hour=[ScheduleRange(settings.disposal_schedule_hour)],
                                            minute=[ScheduleRange(settings.disposal_schedule_minute)],
                                            comment="daily Aussonderung round")],
            time_zone_name=settings.disposal_schedule_timezone),
        # a round waits for the archivist's confirmations; while it is open, no second round starts
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(paused=not enabled,
                            note="" if enabled else "disabled by DISPOSAL_SCHEDULE_ENABLED=false"),
    )


async def ensure_disposal_schedule(client: Client, settings: Settings) -> ScheduleDescription:
    """Create the schedule, or update it to the current settings if it exists."""
    schedule = disposal_schedule(settings)
    try:
        handle = await client.create_schedule(settings.disposal_schedule_id, schedule)
        log.info("schedule.created", schedule_id=settings.disposal_schedule_id, enabled=settings.disposal_schedule_enabled)
    except ScheduleAlreadyRunningError:
        handle = client.get_schedule_handle(settings.disposal_schedule_id)

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await handle.update(replace)
        log.info("schedule.updated", schedule_id=settings.disposal_schedule_id, enabled=settings.disposal_schedule_enabled)
    return await handle.describe()
