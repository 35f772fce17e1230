"""OpenAI-compatible HTTP server: FastAPI routes in front of an AsyncLLM (see `build_app`)."""
