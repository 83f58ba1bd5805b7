"""Bringing model files in: pulls over HTTP (``POST /api/v2/models/pull``) and imports from a
folder (``POST /v1/import``).

    source.py     which URLs may be fetched: schemes, ``hf://``, the addresses a host resolves to
    names.py      the file name a model is stored under, and the sha256 a client may give
    request.py    what a pull's or an import's JSON body asks
    transfer.py   one download into a ``.part`` file: redirects, resume, limits, the GGUF magic
    install.py    a validated file into the first models directory, atomically
    imports.py    which paths may be imported (``import_dirs``), and the copy
    progress.py   one pull's state as its followers see it, and its rate
    service.py    ``Pulls``: the running pulls, each a task of its own, and their events
"""
