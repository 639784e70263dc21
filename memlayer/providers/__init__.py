"""Providers: HTTP clients of model servers (OpenAI-compatible chat completions and embeddings) and what they return."""
