"""The dispatch channel decision (activities.dispatch.choose_channel): the workflow's explicit
channel, else the applicant's choice when allowed and feasible, else the catalog's first
feasible channel, else the portal; and which rule decided."""

from __future__ import annotations

from email.message import EmailMessage

from activities.dispatch import Reach, choose_channel, infeasible, message_id_for, SmtpMailer

ALL = ["portal", "email", "post", "webhook"]
FULL = Reach(email=True, address=True, notify_url=True)


def test_the_applicants_choice_wins_when_the_service_allows_it_and_it_is_feasible() -> None:
    d = choose_channel(ALL, "post", FULL)
    assert (d.channel, d.rule, d.skipped) == ("post", "applicant_choice", ())


def test_without_a_choice_the_catalogs_default_is_used() -> None:
    d = choose_channel(["post", "portal", "email"], None, FULL)
    assert (d.channel, d.rule) == ("post", "catalog_default")


def test_a_choice_the_service_does_not_offer_falls_back_to_the_catalog_order() -> None:
    d = choose_channel(["portal", "email"], "post", FULL)
    assert (d.channel, d.rule) == ("portal", "catalog_default")
    assert d.skipped == ("post: not offered for this service",)


def test_email_needs_an_address_and_falls_back_to_the_next_feasible_channel() -> None:
    d = choose_channel(["email", "post", "portal"], "email", Reach(email=False, address=True))
    assert (d.channel, d.rule) == ("post", "catalog_fallback")
    assert "email: the applicant gave no e-mail address" in d.skipped


def test_post_needs_address_lines_and_webhook_a_notify_url() -> None:
    d = choose_channel(["post", "webhook", "email"], None, Reach(email=True))
    assert (d.channel, d.rule) == ("email", "catalog_fallback")
    assert d.skipped == ("post: the applicant gave no postal address", "webhook: the integrator gave no notify_url")


def test_the_portal_is_the_last_resort_even_when_the_service_does_not_list_it() -> None:
    d = choose_channel(["email", "post"], "email", Reach())
    assert (d.channel, d.rule) == ("portal", "portal_fallback")
    assert len(d.skipped) == 2 and "portal" in d.describe()


def test_email_is_not_feasible_without_an_smtp_server_or_for_a_document_that_is_no_pdf() -> None:
    assert infeasible("email", Reach(email=True, smtp=False)) == "no SMTP server configured"
    assert infeasible("email", Reach(email=True, pdf=False)) == "the document is not a PDF"
    assert infeasible("post", Reach(address=True, pdf=False)) == "the document is not a PDF"
    assert infeasible("portal", Reach()) is None
    assert infeasible("fax", FULL) == "unknown channel"


def test_an_explicit_channel_from_the_workflow_comes_first_when_feasible() -> None:
    d = choose_channel(["portal"], "email", FULL, explicit="webhook")
    assert (d.channel, d.rule) == ("webhook", "workflow")
    d = choose_channel(["portal", "email"], "email", Reach(email=True), explicit="webhook")
    assert (d.channel, d.rule) == ("email", "applicant_choice")


def test_a_channel_that_failed_for_good_is_never_chosen_again() -> None:
    d = choose_channel(ALL, "email", FULL, exclude={"email"})
    assert (d.channel, d.rule) == ("portal", "catalog_default")
    assert d.skipped == ("email: failed",)
    d = choose_channel(["webhook", "email"], None, FULL, exclude={"webhook", "email"})
    assert (d.channel, d.rule) == ("portal", "portal_fallback")


def test_the_message_id_is_the_same_for_every_send_of_one_dispatch() -> None:
    key = "case-1:dispatch:doc-1:email"
    assert message_id_for(key, "stadt.example") == message_id_for(key, "stadt.example")
    assert message_id_for(key, "stadt.example") != message_id_for(key + "x", "stadt.example")
    msg = EmailMessage()
    msg["Message-ID"] = message_id_for(key, SmtpMailer("h", 25, "Stadt <post@stadt.example>").domain)
    assert msg["Message-ID"].endswith("@stadt.example>")
