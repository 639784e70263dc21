"""Assistant: the steps of a send, the responders and models it asks, streaming, and the token quota."""
