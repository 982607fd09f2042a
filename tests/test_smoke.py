from tests.support import bearer, login, register


def test_register_login_me(client):
    register(client)
    tokens = login(client)
    response = client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    assert response.get_json()["balance"]["available_balance"] == "0.00"
