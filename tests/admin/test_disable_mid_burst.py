"""Disabling a user under load, on a real server: their access key is refused
from the next request, while the streams already running finish and settle."""
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.support import HOUSE_OPENAI, admin, bearer, live_service, live_user, readme_ledger_query

IN_FLIGHT = 4
MODEL = "openai/gpt-4o-mini"


def _stream(url, key):
    with httpx.stream("POST", f"{url}/v1/chat/completions", headers=bearer(key), timeout=60,
                      json={"model": MODEL, "stream": True, "max_tokens": 50,
                            "messages": [{"role": "user", "content": "Hi"}]}) as answer:
        return answer.status_code, answer.read().decode()


def test_a_disabled_users_key_is_refused_mid_burst_while_their_streams_settle(app, client, database, openai_stub):
    openai_stub.reset()
    root = admin(app, client)
    with live_service(database, OPENAI_BASE_URL=f"{openai_stub.url}/v1", OPENAI_API_KEY=HOUSE_OPENAI) as live:
        headers, user_id = live_user(live.url, "5.00")
        key = httpx.post(f"{live.url}/api/v1/access-keys", json={"name": "batch"}, headers=headers).json()["key"]
        gate = openai_stub.behaviour.hold_answers()
        try:
            with ThreadPoolExecutor(IN_FLIGHT * 2) as callers:
                running = [callers.submit(_stream, live.url, key) for _ in range(IN_FLIGHT)]
                assert openai_stub.wait_for_requests(IN_FLIGHT)
                disabled = httpx.post(f"{live.url}/api/v1/admin/users/{user_id}/disable",
                                      json={"reason": "card reported stolen"}, headers=bearer(root))
                assert disabled.status_code == 200, disabled.text
                refused = [callers.submit(_stream, live.url, key) for _ in range(IN_FLIGHT)]
                assert [future.result()[0] for future in refused] == [401] * IN_FLIGHT
                gate.set()
                finished = [future.result() for future in running]
        finally:
            gate.set()
        assert all(status == 200 and "data: [DONE]" in text for status, text in finished)
        assert len(openai_stub.requests) == IN_FLIGHT  # the refused calls reached no provider
    # Every stream that ran was settled: nothing stays held, and the ledger adds up.
    assert database.query("SELECT count(*) FILTER (WHERE type = 'hold'), count(*) FILTER (WHERE type = 'release')"
                          " FROM transactions WHERE user_id = %s", (user_id,)) == [(IN_FLIGHT, IN_FLIGHT)]
    assert database.query("SELECT held_balance FROM user_balance WHERE user_id = %s", (user_id,)) == [(0,)]
    assert database.query(readme_ledger_query()) == []
