"""Model lifecycle: which children run, and every change to them.

``model.py`` is one model in one role (its state machine, its child, its request queue);
``table.py`` holds them all; ``manager.py`` wires the rest behind one object: ``eviction.py``
(LRU room-making), ``starts.py`` (placed starts, restarts with backoff), ``watch.py``
(liveness, idle-unload and placement loops), ``status.py`` (snapshots for the routes),
``reload.py`` (configuration reload); ``placer.py`` decides where each child runs. Time comes
from an injected ``supervisor.clock.Clock``."""
