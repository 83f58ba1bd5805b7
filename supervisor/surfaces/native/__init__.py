"""llama.cpp's own routes at the root (``/completion``, ``/tokenize``, ``/slots`` …): documentation
models only, since every one of them is relayed (``relay.table``)."""
