"""Providers: HTTP clients of model servers (OpenAI-compatible chat completions) and the replies they return."""
