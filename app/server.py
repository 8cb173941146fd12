"""``elfscreen serve``: the API with its job runner, in one process (embedded) or in front of Celery."""
from __future__ import annotations

import uvicorn

from elfscreen.app.api import create_app
from elfscreen.app.config import Settings


def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the API on ``host:port`` until interrupted. With no ``ELFSCREEN_BROKER_URL`` the jobs run in
    this process (SQLite store ``elfscreen-jobs.db`` unless ``ELFSCREEN_DB_URL`` names another)."""
    uvicorn.run(create_app(Settings.from_env()), host=host, port=port, log_level="info")

