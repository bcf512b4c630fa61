import yaml


def test_it_serves_an_openapi_schema_with_the_seed_paths(anonymous_client, db):
    response = anonymous_client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    assert "/health" in schema["paths"]
    assert "/api/events/" in schema["paths"]


def test_it_serves_the_docs_page_without_a_cdn(anonymous_client, db):
    response = anonymous_client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page
    assert "cdn." not in page and "jsdelivr" not in page


def test_it_serves_the_admin_stylesheet_itself(client, db):
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"/*")


def test_it_keeps_the_schema_and_docs_closed_when_reads_are(anonymous_client, operator_client, settings, db):
    settings.OPEN_READS = False
    for path in ("/api/schema/", "/api/docs/"):
        refused = anonymous_client.get(path)
        assert refused.status_code == 401, path
        assert refused.json()["error"] == "not_authenticated"
        assert operator_client.get(path).status_code == 200, path
