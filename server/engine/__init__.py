"""The engine: one thread that admits, schedules and steps jobs on the device and emits events."""
