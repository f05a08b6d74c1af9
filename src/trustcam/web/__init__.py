"""The HTTPS server: REST API (FastAPI routers) and the plain, build-free web UI in ``static/``."""
