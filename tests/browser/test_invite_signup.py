"""Inviting and joining in the browser: Alice makes an invite link, a new person signs up with it."""

from __future__ import annotations

from browser_support import log_in

from webapp.accounts.models import Membership, Role
from webapp.audit.models import AuditEvent

NEW_PASSWORD = "erin-has-a-long-passphrase"


def test_alice_invites_and_a_new_person_signs_up_and_sees_the_project(
    alice_project, start_servers, chromium, monkeypatch
):
    # Playwright's sync API runs an event loop in this thread; the reads below are plain sync code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    page.get_by_role("link", name="Teams").click()
    page.get_by_role("link", name="browser-team").click()
    page.select_option("#id_role", "member")
    page.get_by_role("button", name="Create invite link").click()
    link = page.locator("#invite-url").inner_text().strip()
    assert link.startswith(base + "/invites/inv_")
    page.screenshot(path="/tmp/runwright-team-page.png", full_page=True)
    page.get_by_role("button", name="Log out").click()

    page.goto(link)
    page.screenshot(path="/tmp/runwright-invite.png", full_page=True)
    page.fill("#id_username", "erin")
    page.fill("#id_password", NEW_PASSWORD)
    page.fill("#id_password_again", NEW_PASSWORD)
    page.get_by_role("button", name="Create account and join").click()
    page.wait_for_url(f"{base}/teams/{alice_project.team_id}/")
    assert "you joined as member" in page.locator(".messages").inner_text()
    page.screenshot(path="/tmp/runwright-team-joined.png", full_page=True)
    page.get_by_role("link", name="browser project").click()
    page.wait_for_url(f"{base}/projects/{alice_project.id}/")
    assert page.get_by_role("heading", name="browser project").is_visible()

    # The link was for one person: a second visit says so.
    page.goto(link)
    assert "already used" in page.locator(".form-errors").inner_text()
    erin = Membership.objects.get(team=alice_project.team, user__username="erin")
    assert erin.role == Role.MEMBER
    assert AuditEvent.objects.filter(action="member.joined", actor_label="erin").exists()
    assert js_errors == []


def test_tokens_page_and_audit_log_render(alice_project, start_servers, chromium, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    page.get_by_role("link", name="alice").click()
    page.fill("#id_name", "notebook")
    page.fill("#id_expires_in_days", "30")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#token-secret").inner_text().strip()
    assert secret.startswith("rw_") and page.locator("#tokens").get_by_text("notebook").is_visible()
    page.screenshot(path="/tmp/runwright-tokens.png", full_page=True)
    page.goto(f"{base}/teams/{alice_project.team_id}/audit/?action=token.created")
    assert page.locator("#audit-events").get_by_text("token.created").count() == 1
    page.goto(f"{base}/teams/{alice_project.team_id}/audit/?from=someday")
    assert "from: must be a date" in page.locator(".form-errors").inner_text()
    page.goto(f"{base}/teams/{alice_project.team_id}/audit/")
    page.screenshot(path="/tmp/runwright-audit.png", full_page=True)
    page.goto(f"{base}/teams/")
    page.fill("#id_name", "second team")
    page.get_by_role("button", name="Create team").click()
    assert "you are its admin" in page.locator(".messages").inner_text()
    page.get_by_role("banner").get_by_role("link", name="Teams").click()
    page.screenshot(path="/tmp/runwright-teams.png", full_page=True)
    assert js_errors == []
