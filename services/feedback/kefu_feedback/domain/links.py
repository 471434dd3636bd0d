"""Survey links: the URL in the invitation, signed so that only its recipient can answer.

Survey ids are predictable (``inquiry-<id>``); the token is an HMAC of the id under the
service's secret, so nobody can answer (or read) a survey whose link they did not receive.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote


class SurveyLinks:
    def __init__(self, base_url: str, secret: str) -> None:
        self._base_url = base_url.rstrip("/")
        self._secret = secret.encode()

    def token(self, survey_id: str) -> str:
        return hmac.new(self._secret, survey_id.encode(), hashlib.sha256).hexdigest()[:32]

    def url(self, survey_id: str) -> str:
        return f"{self._base_url}/surveys/{quote(survey_id, safe='')}?token={self.token(survey_id)}"

    def verify(self, survey_id: str, token: str) -> bool:
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
        return hmac.compare_digest(self.token(survey_id).encode(), token.encode())
