"""What every part of the lifecycle reads: the settings in force and the placer made from them
(a configuration reload replaces both at once), the observer of lifecycle events, and the
clock."""

from __future__ import annotations

from dataclasses import dataclass

from supervisor.clock import Clock
from supervisor.config import Settings
from supervisor.lifecycle.events import LifecycleEvents
from supervisor.lifecycle.placer import Placer


@dataclass
class LifecycleContext:
    settings: Settings
    placer: Placer
    events: LifecycleEvents
    clock: Clock
