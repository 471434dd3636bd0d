"""``kefu-feedback``: run the feedback service (consumers, loops, HTTP API) in one process."""

from __future__ import annotations

from kefu_shared.serve import serve

from kefu_feedback.bootstrap import SERVICE, create_app
from kefu_feedback.settings import FeedbackSettings


def main() -> None:
    # serve() = load_settings(FeedbackSettings) + JSON logs + uvicorn with graceful shutdown.
    serve(SERVICE, FeedbackSettings, create_app)


if __name__ == "__main__":
    main()
