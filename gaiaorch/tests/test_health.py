def test_it_answers_health_without_auth(anonymous_client, db):
    response = anonymous_client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["service"] == "gaia-orchestrator"
    assert "version" in body and "timestamp" in body


def test_it_does_not_redirect_paths_without_a_trailing_slash(anonymous_client, db):
    response = anonymous_client.get("/health/")
    assert response.status_code == 404
