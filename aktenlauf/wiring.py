"""Building the eAkte's clients from the settings, in one place for the API, the worker,
the CLI and the tests (eakte/ itself never sees the settings)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from aktenlauf.settings import Settings
from eakte.aktenplan import load_aktenplan
from eakte.blobstore import BlobStore
from eakte.db import make_engine, make_session_factory
from eakte.seal import Seal, open_seal
from intake.catalog import Catalog, load_catalog


def blob_store(settings: Settings) -> BlobStore:
    return BlobStore(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key, settings.s3_bucket,
                     secure=settings.s3_secure, region=settings.s3_region)


def session_factory(settings: Settings) -> sessionmaker[Session]:
    return make_session_factory(make_engine(settings.database_url))


def catalog(settings: Settings) -> Catalog:
    """The service catalog, checked against the Aktenplan (both data files from the settings)."""
    return load_catalog(settings.catalog_path, load_aktenplan(settings.aktenplan_path))


def document_seal(settings: Settings, authority_name: str) -> Seal:
    """The authority's electronic seal for issued documents: the configured key and certificate,
    or in dev/test a development seal created once under <VAR_DIR>/seal/ (refused in production)."""
    passphrase = settings.seal_key_passphrase.get_secret_value().encode() or None
    return open_seal(settings.seal_key_path, settings.seal_cert_path, passphrase, dev_dir=settings.var_dir / "seal",
                     name=authority_name, production=settings.environment == "production")
