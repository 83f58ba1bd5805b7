"""Where the client commands find a running gateway, and the key they send it."""

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "LLAMA_SUPERVISOR_URL"
KEY_ENV = "LLAMA_SUPERVISOR_ADMIN_KEY"
