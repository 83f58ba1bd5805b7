"""Model lifecycle: one state machine per model, admission queues, scheduling, swaps."""
