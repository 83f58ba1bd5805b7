"""The operator's web console at ``/ui/``: static files served by the gateway itself
(``routes.py``), plain HTML, CSS and ES modules in ``static/``, nothing from another origin."""
