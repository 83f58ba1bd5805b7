"""The Anthropic Messages surface (``/v1/messages``): its error shape and documentation models."""
