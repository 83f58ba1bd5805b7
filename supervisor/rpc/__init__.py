"""llama.cpp RPC workers: ``ggml-rpc-server`` processes on other machines whose devices take a
model's layers (``--rpc``). The addresses the gateway accepts (``address``), asking a worker
what memory it has (``probe``), the checks before a load (``workers``), and running one
worker under supervision (``worker``, ``binary``)."""
