"""The OpenAI surface (``/v1``): the model list and statistics (``routes``), its shapes and error
events (``dialect``, ``responses``) and documentation models (``schemas``). Its inference routes
are relayed (``relay.table``)."""
