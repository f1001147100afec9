"""Custom search attributes (Keyword) the case workflows upsert, for listing in Temporal."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

STATUS = SearchAttributeKey.for_keyword("AktenlaufStatus")
SERVICE = SearchAttributeKey.for_keyword("AktenlaufService")
DEPARTMENT = SearchAttributeKey.for_keyword("AktenlaufDepartment")
STEP = SearchAttributeKey.for_keyword("AktenlaufStep")
AKTENZEICHEN = SearchAttributeKey.for_keyword("Aktenzeichen")

ALL = {k.name: "Keyword" for k in (STATUS, SERVICE, DEPARTMENT, STEP, AKTENZEICHEN)}
