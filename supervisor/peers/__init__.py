"""Peers: other OpenAI-compatible servers whose models the gateway serves too, health-checked
(``peer.py``), found by name and leased for the relay (``directory.py``)."""
