"""NUL characters are refused at the HTTP edge with 422 naming where (the store, FerretDB on
PostgreSQL, cannot hold them and answered a 500)."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from kefu_shared.http_limits import BodySizeLimit
from kefu_shared.http_text import RefuseNulCharacters
from kefu_shared.mongo import make_client
from pydantic import BaseModel


class Article(BaseModel):
    question: str
    keywords: list[str]


def _app(mongodb_uri: str) -> FastAPI:
    app = FastAPI()
    app.add_middleware(RefuseNulCharacters)
    app.add_middleware(BodySizeLimit, max_bytes=4096)
    articles = make_client(mongodb_uri, app_name="nul-test")["nul_test"]["articles"]

    @app.post("/articles")
    async def post_article(article: Article) -> dict[str, Any]:
        await articles.replace_one({"_id": article.question}, article.model_dump(), upsert=True)
        return {"stored": True}

    @app.get("/articles/{article_id}")
    async def get_article(article_id: str, lang: str = "zh") -> dict[str, Any]:
        return {"found": await articles.find_one({"_id": article_id}) is not None}

    return app


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kefu")


async def test_a_nul_in_a_body_string_is_a_422_naming_the_field(mongodb_uri: str) -> None:
    async with _client(_app(mongodb_uri)) as http:
        r = await http.post("/articles", json={"question": "发货?", "keywords": ["a", "b\x00"]})
        ok = await http.post("/articles", json={"question": "发货?", "keywords": ["发货"]})
    assert r.status_code == 422
    assert [d["loc"] for d in r.json()["detail"]] == [["body", "keywords", 1]]
    assert ok.status_code == 200, ok.text  # the body is replayed to the app intact


async def test_a_nul_in_the_path_or_a_query_parameter_is_a_422(mongodb_uri: str) -> None:
    async with _client(_app(mongodb_uri)) as http:
        in_path = await http.get("/articles/a%00b")
        in_query = await http.get("/articles/a", params={"lang": "z\x00h"})
        fine = await http.get("/articles/a", params={"lang": "zh"})
    assert (in_path.status_code, in_path.json()["detail"][0]["loc"]) == (422, ["path"])
    assert (in_query.status_code, in_query.json()["detail"][0]["loc"]) == (422, ["query", "lang"])
    assert fine.json() == {"found": False}
