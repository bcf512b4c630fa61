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
