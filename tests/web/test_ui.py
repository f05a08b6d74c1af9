"""The web UI in real Chromium against a real ``trustcam run`` (file camera, zone, enter_zone rule).

One story, in order: first-start setup with the setup token → the admin must enrol TOTP → sign out → sign in with
password + TOTP → the live MJPEG moves → an event appears in the timeline → mark it false positive with a note →
the verdict survives a reload and shows in the API → a viewer created in the UI sees only its camera and no admin
screen. Screenshots of each step go to test-artifacts/ui/.
"""

from __future__ import annotations

import time

from web_helpers import Totp, natural_width, shot, video_plays

ADMIN, ADMIN_PW = "admin", "harbor-lantern-quietly-97-tides"
VIEWER, VIEWER_PW = "vera", "copper-meadow-sparrow-41-dusk"
NOTE = "a coat on the chair, not a person"






def sign_in(page, username: str, password: str) -> None:
    page.locator("#login-form").wait_for()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_ui_story(running_server, browser) -> None:
    server = running_server
    assert server.setup_token, f"no setup token in {server.data_dir}:\n{server.log_tail()}"
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems: list[str] = []  # JavaScript exceptions and CSP violations: the UI must have none
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: problems.append(msg.text)
            if msg.type == "error" and "Content Security Policy" in msg.text else None)

    # 1. First start: the setup token creates the admin, who must enrol TOTP before anything else.
    page.goto(server.url + "/")
    page.locator("#setup-form").wait_for()  # no user yet: the login screen switched to the first-start form
    page.get_by_label("Setup token").fill(server.setup_token)
    page.get_by_label("Administrator username").fill(ADMIN)
    page.get_by_label("Password", exact=True).fill(ADMIN_PW)
    page.get_by_label("Password again").fill(ADMIN_PW)
    shot(page, "01-setup")
    page.get_by_role("button", name="Create administrator").click()

    page.locator("#mfa-secret").wait_for()
    assert page.locator("#nav a").count() == 0  # nothing else is offered before enrolment
    qr = page.locator("svg.qr").bounding_box()  # drawn, not just present
    assert qr and qr["width"] >= 150 and qr["height"] >= 150, qr
    totp = Totp(page.locator("#mfa-secret").inner_text().strip())
    shot(page, "02-mfa-enrol")
    page.get_by_label("Code from the app").fill(totp.code())
    page.get_by_role("button", name="Confirm").click()
    page.locator("#recovery-codes").wait_for()
    assert page.locator("#recovery-codes li").count() >= 8
    shot(page, "03-recovery-codes")
    page.get_by_role("button", name="I have saved them").click()
    page.locator("#live-video, #live-img").first.wait_for()

    # 2. Sign out, sign in again with password + TOTP.
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, ADMIN, "wrong-password-for-sure-123")
    page.locator(".flash.error").wait_for()  # the server's detail is shown
    shot(page, "04-login-refused")
    page.get_by_label("Password").fill(ADMIN_PW)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Authentication code").fill(totp.code())
    shot(page, "05-login-totp")
    page.get_by_role("button", name="Verify").click()

    # 3. Live view: low-latency video (MSE over WebSocket) that plays, and the camera's health.
    video = page.locator("#live-video")
    video.wait_for()
    assert page.locator("#whoami").inner_text() == f"{ADMIN} (admin)"
    assert page.locator("#camera-list li").count() == 2
    video_plays(video)  # the person clip plays: frames are presented, time advances
    # ... and the MJPEG fallback: a real, moving picture
    page.goto(server.url + "/#/live/office?mode=mjpeg")
    img = page.locator("#live-img")
    img.wait_for()
    assert natural_width(img) > 0
    first = img.screenshot()
    deadline = time.monotonic() + 15
    while img.screenshot() == first:  # the person clip plays: the picture changes within seconds
        assert time.monotonic() < deadline, "the live picture did not change in 15 s"
        time.sleep(0.5)
    assert "connected" in page.locator("#live-health").inner_text()
    shot(page, "06-live")

    # 4. Events timeline: the person entering the table zone becomes an event (the page follows new events).
    page.get_by_role("link", name="Events", exact=True).click()
    page.locator("#event-list .event-row").first.wait_for(timeout=90_000)
    row = page.locator("#event-list .event-row").first
    assert "person" in row.inner_text() and "office" in row.inner_text()
    assert natural_width(row.locator("img.thumb"), 15) > 0
    shot(page, "07-events")

    # 5. Review: mark it false positive with a note; it survives a reload and shows in the API.
    event_id = row.get_attribute("data-id")
    row.locator("a").click()
    page.locator("#event-detail").wait_for()
    page.get_by_label("false positive").check()
    page.get_by_label("Note").fill(NOTE)
    page.get_by_role("button", name="Save verdict").click()
    page.locator("#review-state", has_text="false positive").wait_for()
    page.reload()
    page.locator("#review-state", has_text="false positive").wait_for()
    assert NOTE in page.locator("#review-state").inner_text()
    shot(page, "08-event-reviewed")
    answer = context.request.get(f"{server.url}/api/events/{event_id}").json()
    assert answer["review"]["verdict"] == "false_positive" and answer["review"]["note"] == NOTE, answer
    assert answer["review"]["user"] == ADMIN

    # 6. Admin screens: health, an API token (shown once, works), the audit log and its chain check.
    page.get_by_role("link", name="Alerts & health").click()
    page.locator("#health-table tbody tr").first.wait_for()
    assert page.locator("#health-table tbody tr").count() == 2
    assert "connected" in page.locator("#health-table").inner_text()
    # the canary's first probe runs 15-30 s after start (by camera): its result is a badge (page refreshes every 10 s)
    page.locator("#health-table tr[data-camera=office] .canary-cell .canary").wait_for(timeout=60_000)
    page.locator("#dead-letter-table", has_text="every alert was delivered").wait_for()  # fetched after the page
    shot(page, "09-alerts-health")
    page.get_by_role("link", name="API tokens").click()
    page.get_by_label("Token name").fill("ui-test")
    page.get_by_label("Your password").fill(ADMIN_PW)
    page.locator("#token-form").get_by_label("Code from the app").fill(totp.code())
    page.get_by_role("button", name="Create token").click()
    token = page.locator("#new-token").inner_text().strip()
    assert token.startswith("tc_")
    page.locator("#token-table", has_text="ui-test").wait_for()
    with server.client(headers={"Authorization": f"Bearer {token}"}) as api:
        assert api.get("/api/me").json()["username"] == ADMIN
    page.get_by_role("link", name="Audit").click()
    page.locator("#audit-table", has_text="review_event").wait_for()
    page.get_by_role("button", name="Verify chain").click()
    page.locator("#verify-result", has_text="intact").wait_for()
    shot(page, "10-audit")

    # 7. A viewer created in the UI, granted the office camera only.
    page.get_by_role("link", name="Users").click()
    page.locator("#user-form").wait_for()
    page.get_by_label("Username").fill(VIEWER)
    page.get_by_label("Initial password").fill(VIEWER_PW)
    page.get_by_label("Role", exact=True).select_option("viewer")
    page.locator("#user-form").get_by_label("office").check()
    page.get_by_role("button", name="Create user").click()
    page.locator(f"#user-table tr[data-user={VIEWER}]").wait_for()
    shot(page, "11-users")
    page.get_by_role("button", name="Sign out").click()

    sign_in(page, VIEWER, VIEWER_PW)
    page.locator("#live-video, #live-img").first.wait_for()
    assert page.locator("#whoami").inner_text() == f"{VIEWER} (viewer)"
    assert page.locator("#camera-list li").all_inner_texts()[0].startswith("office")
    assert page.locator("#camera-list li").count() == 1
    nav = page.locator("#nav").inner_text()
    assert "Events" in nav and not any(word in nav for word in ("Users", "API tokens", "Audit"))
    shot(page, "12-viewer-live")
    page.goto(server.url + "/#/users")  # typed by hand: refused, back to live
    page.locator("#live-video, #live-img").first.wait_for()
    assert page.locator("#user-form").count() == 0
    # The server is the authority: the other camera does not exist for the viewer; admin routes are forbidden.
    assert context.request.get(f"{server.url}/api/cameras/yard/snapshot.jpg").status == 404
    assert context.request.get(f"{server.url}/api/users").status == 403
    page.get_by_role("link", name="Events", exact=True).click()
    page.locator("#event-list .event-row").first.wait_for()
    assert all("office" in t for t in page.locator("#event-list .event-row").all_inner_texts())
    assert page.locator("#save-verdict").count() == 0
    shot(page, "13-viewer-events")
    assert not problems, problems
    context.close()
