"""The page a customer sees when opening the survey link: five-level questions, one comment.

Plain HTML with a few lines of script that post the answer as JSON to
``/surveys/{id}/answers``; no external assets (the page must work in any in-app browser).
"""

from __future__ import annotations

import html
import json
from typing import Any

TEXT = {
    "zh-CN": {
        "title": "服务满意度调查",
        "overall": "总体满意度",
        "product_quality": "产品质量",
        "service_efficiency": "服务效率",
        "price": "价格",
        "user_experience": "使用体验",
        "after_sales_service": "售后服务",
        "comment": "意见或建议",
        "send": "提交",
        "thanks": "感谢您的评价！",
        "closed": "此调查已关闭。",
        "scale": ["非常不满意", "不满意", "一般", "满意", "非常满意"],
    },
    "en": {
        "title": "How did we do?",
        "overall": "Overall",
        "product_quality": "Product quality",
        "service_efficiency": "Service efficiency",
        "price": "Price",
        "user_experience": "User experience",
        "after_sales_service": "After-sales service",
        "comment": "Anything to tell us?",
        "send": "Send",
        "thanks": "Thank you for your feedback!",
        "closed": "This survey is closed.",
        "scale": [
            "very dissatisfied",
            "dissatisfied",
            "neutral",
            "satisfied",
            "very satisfied",
        ],
    },
}

SCRIPT = """
document.getElementById('survey').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  const ratings = {};
  for (const [k, v] of form.entries()) if (k !== 'overall' && k !== 'comment') ratings[k] = +v;
  const body = {token: TOKEN, overall: +form.get('overall'), ratings,
                comment: form.get('comment') || ''};
  const r = await fetch(location.pathname + '/answers', {method: 'POST',
    headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  document.getElementById('survey').outerHTML = r.ok ? '<p>' + THANKS + '</p>'
    : '<p>' + (await r.text()) + '</p>';
});
"""


def _question(name: str, label: str, scale: list[str], required: bool) -> str:
    options = "".join(
        f'<label><input type="radio" name="{name}" value="{i}"'
        f"{' required' if required and i == 1 else ''}> {html.escape(text)}</label> "
        for i, text in enumerate(scale, start=1)
    )
    return f"<fieldset><legend>{html.escape(label)}</legend>{options}</fieldset>"


def survey_page(view: dict[str, Any], token: str) -> str:
    text = TEXT["zh-CN"] if str(view["language"]).startswith("zh") else TEXT["en"]
    scale = list(text["scale"])
    head = (
        '<!doctype html><html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(str(text['title']))}</title></head><body>"
        f"<h1>{html.escape(str(text['title']))}</h1>"
    )
    if view["state"] != "open":
        message = text["thanks"] if view["state"] == "answered" else text["closed"]
        return f"{head}<p>{html.escape(str(message))}</p></body></html>"
    questions = [_question("overall", str(text["overall"]), scale, True)]
    questions += [_question(d, str(text[d]), scale, False) for d in view["dimensions"]]
    return (
        f'{head}<form id="survey">{"".join(questions)}'
        f"<p><label>{html.escape(str(text['comment']))}<br>"
        '<textarea name="comment" maxlength="2000" rows="4" cols="50"></textarea></label></p>'
        f'<button type="submit">{html.escape(str(text["send"]))}</button></form>'
        f"<script>const TOKEN = {json.dumps(token)}; "
        f"const THANKS = {json.dumps(str(text['thanks']))};{SCRIPT}</script></body></html>"
    )
