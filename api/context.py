"""What the API needs at run time, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, TypeVar
from collections.abc import Callable

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from temporalio.client import Client

from aktenlauf.errors import Unavailable
from aktenlauf.settings import Settings
from eakte.audit import ReadAuditWindow
from eakte.blobstore import BlobStore
from intake.catalog import Catalog

T = TypeVar("T")


@dataclass
class ApiContext:
    settings: Settings
    catalog: Catalog
    sessions: sessionmaker[Session]
    store: BlobStore
    temporal: Client | None = None
    read_audit: ReadAuditWindow = field(default_factory=lambda: ReadAuditWindow(0))

    def client(self) -> Client:
        if self.temporal is None:
            raise Unavailable("Temporal is not connected yet")
        return self.temporal

    async def db(self, fn: Callable[[Session], T]) -> T:
        """Run `fn` in one transaction on a worker thread."""

        def work() -> T:
            with self.sessions() as session, session.begin():
                return fn(session)

        return await run_in_threadpool(work)


async def get_ctx(request: Request) -> ApiContext:  # async: a sync dependency would cost a thread hop
    return request.app.state.ctx  # type: ignore[no-any-return]


Ctx = Annotated[ApiContext, Depends(get_ctx)]
