"""The API surfaces, one package each: routes (thin), dialect (pure translation: parse requests,
shape replies and errors) and documentation models together. Shared here: each surface's error
formatters (``errors``), the relayed routes' declarations (``relayed``), the one form field the
gateway reads (``form``), the OpenAPI document (``openapi``, ``schemas``) and the routes'
accessors of the app's services (``services``)."""
