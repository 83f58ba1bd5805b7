"""What models exist: the registry (models directories scanned, names resolved), the catalog
(the registry in force, and which model a request means), each GGUF file's header (``gguf``),
its projector (``projectors``), the memory it will need and the machine's free memory
(``memory``), and the demo model (``demo``)."""
