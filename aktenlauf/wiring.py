"""Building the eAkte's clients from the settings, in one place for the API, the worker,
the CLI and the tests (eakte/ itself never sees the settings)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from aktenlauf.settings import Settings
from eakte.aktenplan import load_aktenplan
from eakte.blobstore import BlobStore
from eakte.db import make_engine, make_session_factory
from intake.catalog import Catalog, load_catalog


def blob_store(settings: Settings) -> BlobStore:
    return BlobStore(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key, settings.s3_bucket,
                     secure=settings.s3_secure, region=settings.s3_region)


def session_factory(settings: Settings) -> sessionmaker[Session]:
    return make_session_factory(make_engine(settings.database_url))


def catalog(settings: Settings) -> Catalog:
    """The service catalog, checked against the Aktenplan (both data files from the settings)."""
    return load_catalog(settings.catalog_path, load_aktenplan(settings.aktenplan_path))
