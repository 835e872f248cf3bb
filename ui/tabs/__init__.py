"""The tabs: each module has build() (the components) and wire() (the events)."""
