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


def test_it_keeps_the_schema_and_docs_closed_when_reads_are(anonymous_client, operator_client, settings, db):
    settings.OPEN_READS = False
    for path in ("/api/schema/", "/api/docs/"):
        refused = anonymous_client.get(path)
        assert refused.status_code == 401, path
        assert refused.json()["error"] == "not_authenticated"
        assert operator_client.get(path).status_code == 200, path


def test_it_documents_the_async_wait_with_every_answer():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/gpu/wait"]["post"]
    assert {"200", "202", "400", "401", "403", "404", "409", "503"} <= set(operation["responses"])
    assert operation["security"] == [{"tokenAuth": []}]  # tokens only: the view reads no session
    body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert (
        len(schema["components"]["schemas"][body.rsplit("/", 1)[1]]["oneOf"]) == 2
    )  # an acquire body, or {lease_id, timeout_seconds}
