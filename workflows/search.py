"""Custom search attributes the case workflows upsert, for listing in Temporal."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

STATUS = SearchAttributeKey.for_keyword("AktenlaufStatus")
SERVICE = SearchAttributeKey.for_keyword("AktenlaufService")
DEPARTMENT = SearchAttributeKey.for_keyword("AktenlaufDepartment")
STEP = SearchAttributeKey.for_keyword("AktenlaufStep")
AKTENZEICHEN = SearchAttributeKey.for_keyword("Aktenzeichen")
#: the processing deadline while it runs (unset while the case waits for the citizen): "overdue" filters
DEADLINE = SearchAttributeKey.for_datetime("AktenlaufDeadline")

#: name → indexed value type, as the dev server's --search-attribute and the operator API want them
ALL = {**{k.name: "Keyword" for k in (STATUS, SERVICE, DEPARTMENT, STEP, AKTENZEICHEN)}, DEADLINE.name: "Datetime"}
