"""serve: the web chat page in a real browser (Debian's headless chromium over the DevTools protocol).

Logs in with the API key, sends a message, watches the reply stream in, checks the conversation is kept in the
browser, and saves a phone-sized screenshot under the test's temp folder. Skips, saying why, only where no
chromium can be found (.ci/run installs it)."""

from __future__ import annotations

import json

import pytest

from tests.support.browser import Browser, find_browser
from tests.support.serve import API_KEY, FakeResponder, running, serve_project


def test_page_login_send_and_streamed_reply(tmp_path):
    binary = find_browser()
    if binary is None:
        pytest.skip("no chromium found: install it with `apt-get install -y chromium` (.ci/run does)")
    cfg = serve_project(tmp_path)
    fake = FakeResponder(step_s=0.03)
    with running(cfg, fake) as srv:
        browser = Browser(binary)
        try:
            browser.goto(srv.url + "/")
            browser.wait("!document.getElementById('login-view').hidden")
            browser.type_into("#key", "sk-not-the-key")
            browser.evaluate("document.getElementById('login').click()")
            browser.wait("document.getElementById('status').textContent.length > 0")  # wrong key: refused
            assert browser.evaluate("document.getElementById('composer').hidden") is True

            browser.evaluate("document.getElementById('key').value = ''")
            browser.type_into("#key", API_KEY)
            browser.press_enter()
            browser.wait("!document.getElementById('composer').hidden")
            info = browser.evaluate("document.getElementById('title').textContent + '|' + "
                                    "document.getElementById('info').textContent")
            assert "S1" in info and "model_latest" in info and "7" in info  # pseudonym, model id, step

            browser.type_into("#msg", "오늘 저녁 뭐 먹을까?")
            browser.press_enter()
            browser.wait("document.querySelector('.msg.bot') && document.querySelector('.msg.bot').dataset.done")
            bot = browser.evaluate("document.querySelector('.msg.bot').textContent")
            chunks = int(browser.evaluate("document.querySelector('.msg.bot').dataset.chunks"))
            assert bot == "1|?까을먹 뭐 녁저 늘오"
            assert chunks > 3  # it arrived piece by piece, not in one block
            assert browser.evaluate("document.querySelector('.msg.user').textContent") == "오늘 저녁 뭐 먹을까?"
            stored = json.loads(browser.evaluate("localStorage.getItem('chatbot.conversation')"))
            assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
            assert fake.calls[-1][0] == [("user", "오늘 저녁 뭐 먹을까?")]

            # a second message carries the conversation so far (it lives in the browser)
            browser.type_into("#msg", "좋아")
            browser.press_enter()
            browser.wait("document.querySelectorAll('.msg.bot').length === 2 && "
                         "document.querySelectorAll('.msg.bot')[1].dataset.done")
            assert [r for r, _ in fake.calls[-1][0]] == ["user", "bot", "user"]
            shot = browser.screenshot(tmp_path / "serve-page.png")
            data = shot.read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
            print(f"screenshot: {shot}")

            browser.evaluate("document.getElementById('lang').click()")  # the other language's labels
            labels = browser.evaluate("document.getElementById('send').textContent + '|' + "
                                      "document.getElementById('new').textContent")
            assert labels in ("보내기|새 대화", "Send|New chat")
            browser.evaluate("document.getElementById('new').click()")
            assert browser.evaluate("document.querySelectorAll('.msg').length") == 0
        finally:
            browser.close()
